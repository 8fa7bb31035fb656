//! TCACHE.SET / GET / MGET / DEL / TAGS, and TCACHE.APPLY (the replication form).

use std::os::raw::{c_char, c_long};

use redis_module::{raw, Context, ContextFlags, NotifyEvent, RedisString, RedisValue};

use super::{bytes, entry_or_wrongtype, read, slot, Slot};
use crate::core::entry::{decode, encode, sort_tags, Entry};
use crate::core::index::{Old, NO_EXPIRE};
use crate::core::lease::Refusal;
use crate::core::options::{
    check_limits, parse_in_range, parse_set_options, Condition, TTL_MAX, TTL_MIN,
};
use crate::errors::{Error, Reply};
use crate::glue::api;
use crate::glue::blocking;
use crate::state::config;
use crate::state::gates;
use crate::state::indexes;
use crate::state::leases;
use crate::state::seq;
use crate::state::stats;

/// TCACHE.SET key value ttl [NX | XX] [GATE name] [LEASE token] [SWR seconds] [TAGS tag [tag ...]]
pub fn set(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() < 4 {
        return Err(Error::WrongArity);
    }
    let ttl_s = parse_in_range(args[3].as_slice(), TTL_MIN, TTL_MAX)?;
    let rest = bytes(&args[4..]);
    let mut opts = parse_set_options(&rest)?;
    let value = args[2].as_slice();
    sort_tags(&mut opts.tags);
    check_limits(&config::limits(), value.len(), &opts.tags, opts.tags.len())?;
    gates::check_for_set(args[1].as_slice(), opts.gate, value)?;
    let now = api::now_ms();
    if let Some(token) = opts.lease {
        let db = api::selected_db(ctx);
        match leases::redeem(db, args[1].as_slice(), token, &opts.tags, now) {
            Ok(()) => {}
            // Not the holder: the lease, if any, is someone else's and goes on.
            Err(Refusal::NoLease | Refusal::WrongToken) => return Ok(RedisValue::Null),
            // The holder's write is refused and its lease is over: the waiters
            // are handed over now, not when their timeout runs out.
            Err(_) => {
                blocking::hand_over(ctx, db, args[1].as_slice());
                return Ok(RedisValue::Null);
            }
        }
    }
    let mut entry = Entry::cache(value, &opts.tags, seq::next()).ok_or(Error::EntryTooLarge)?;
    let mut ttl_ms = ttl_s * 1000;
    if let Some(swr) = opts.swr {
        entry.stale_at_ms = now + ttl_ms;
        ttl_ms += swr * 1000;
    }
    write_entry(ctx, &args[1], entry, ttl_ms, opts.condition)
}

/// Stores `entry` under `name` for `ttl_ms`, unless the key holds another type
/// (WRONGTYPE) or `condition` is not met (nil); indexes, notifies, replicates.
pub fn write_entry(
    ctx: &Context,
    name: &RedisString,
    entry: Entry,
    ttl_ms: i64,
    condition: Condition,
) -> Reply {
    if condition != Condition::Always {
        // Decide on a read-only look: a write refused by NX/XX must not count as
        // a modification for WATCH or client tracking.
        let exists = match read(ctx, name.as_slice(), &ctx.open_key(name)) {
            Slot::Entry(_) => true,
            Slot::Missing => false,
            Slot::Other => return Err(Error::WrongType),
        };
        if exists == (condition == Condition::Nx) {
            return Ok(RedisValue::Null);
        }
    }
    let mut key = api::EntryKey::open_write(ctx, name);
    if key.holds_other_type() {
        return Err(Error::WrongType);
    }
    let blob = encode(&entry);
    // Replicas and the index get the absolute expiry exactly as stored.
    let expire_at = api::now_ms() + ttl_ms;
    let db = api::selected_db(ctx);
    // Re-index while the old entry is still readable: an overwrite updates
    // its record in place (`set_entry` then overwrites the entry itself).
    let at = indexes::with_db(db, |ix| {
        let old = key.entry().map(|e| Old {
            space: e.space(),
            tags: e.tags(),
            id: e.index_id.get(),
        });
        ix.upsert(
            name.as_slice(),
            old,
            entry.space(),
            entry.tags(),
            expire_at,
            entry.seq,
        )
    })
    .ok_or(Error::IndexBusy)?
    .ok_or(Error::IndexFull)?;
    entry.index_id.set(at.id);
    if let Err(e) = key.set_entry(entry) {
        // Not stored (the key could not be written): undo the index record.
        indexes::with_db(db, |ix| ix.forget_key(name.as_slice()));
        return Err(Error::NotStored(e));
    }
    key.expire(expire_at, ttl_ms);
    drop(key);
    // Any other lease on the key is void now; waiters wake up to the value.
    leases::revoke(db, name.as_slice());
    blocking::signal_stored(db, name);
    api::notify(ctx, NotifyEvent::MODULE, c"tcache.set", name);
    api::replicate_apply(ctx, name, &blob, Some(expire_at));
    stats::SETS.incr();
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// A stale entry (soft-expired) reads as a miss outside TCACHE.FETCH.
pub fn is_stale_now(e: &Entry) -> bool {
    e.stale_at_ms != 0 && super::fetch::is_stale(e, api::now_ms())
}

/// Replies with a bulk string straight from the entry, without a copy.
pub fn reply_value(ctx: &Context, e: &Entry) {
    let value = e.value();
    raw::reply_with_string_buffer(ctx.ctx, value.as_ptr().cast::<c_char>(), value.len());
}

/// TCACHE.MGET key [key ...]
pub fn mget(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() < 2 {
        return Err(Error::WrongArity);
    }
    raw::reply_with_array(ctx.ctx, (args.len() - 1) as c_long);
    for name in &args[1..] {
        let key = ctx.open_key(name);
        match read(ctx, name.as_slice(), &key) {
            Slot::Entry(e) if !is_stale_now(e) => {
                stats::HITS.incr();
                reply_value(ctx, e);
            }
            _ => {
                stats::MISSES.incr();
                raw::reply_with_null(ctx.ctx);
            }
        }
    }
    Ok(RedisValue::NoReply)
}

/// TCACHE.DEL key [key ...]
pub fn del(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() < 2 {
        return Err(Error::WrongArity);
    }
    // Refuse before touching anything if any key holds another type.
    for name in &args[1..] {
        if matches!(slot(&ctx.open_key(name)), Slot::Other) {
            return Err(Error::WrongType);
        }
    }
    let db = api::selected_db(ctx);
    let mut deleted = Vec::new();
    for name in &args[1..] {
        // A delete revokes the key's lease even when no value was there yet.
        leases::revoke(db, name.as_slice());
        if delete_entry(ctx, name) {
            deleted.push(name.safe_clone(ctx));
        }
    }
    api::replicate_del(ctx, &deleted);
    Ok(RedisValue::Integer(deleted.len() as i64))
}

/// Deletes `name` if it is a live entry and fires `del`; true when deleted.
/// The index follows through the unlink hook. For keys a client named: it
/// looks first, since opening a missing key for writing counts as modifying it.
pub fn delete_entry(ctx: &Context, name: &RedisString) -> bool {
    // A dead entry is already gone for readers; the reclaimer deletes it.
    if !matches!(
        read(ctx, name.as_slice(), &ctx.open_key(name)),
        Slot::Entry(_)
    ) {
        return false;
    }
    delete_indexed(ctx, name)
}

/// Like `delete_entry` for a key the index named (so an entry, unless it just
/// expired): no separate look first.
pub fn delete_indexed(ctx: &Context, name: &RedisString) -> bool {
    let key = api::EntryKey::open_write(ctx, name);
    if key.entry().is_none() {
        return false;
    }
    key.delete();
    drop(key);
    api::notify(ctx, NotifyEvent::GENERIC, c"del", name);
    true
}

/// TCACHE.TAGS key
pub fn tags(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() != 2 {
        return Err(Error::WrongArity);
    }
    let key = ctx.open_key(&args[1]);
    Ok(match entry_or_wrongtype(ctx, args[1].as_slice(), &key)? {
        Some(e) => RedisValue::Array(
            e.tags()
                .map(|t| RedisValue::StringBuffer(t.to_vec()))
                .collect(),
        ),
        None => RedisValue::Null,
    })
}

/// TCACHE.APPLY key serialized-entry [PXAT unix-ms] — how a write reaches
/// replicas and the AOF: the exact entry and its absolute expiry. (Files
/// written before PXAT existed carry APPLY then PEXPIREAT; both load.)
pub fn apply(ctx: &Context, args: Vec<RedisString>) -> Reply {
    let expire_at = match args.len() {
        3 => None,
        5 if args[3].as_slice().eq_ignore_ascii_case(b"PXAT") => {
            Some(parse_in_range(args[4].as_slice(), 0, i64::MAX)?)
        }
        _ => return Err(Error::WrongArity),
    };
    let flags = ctx.get_flags();
    if !flags.intersects(ContextFlags::REPLICATED | ContextFlags::LOADING) {
        return Err(Error::ApplyReserved);
    }
    let entry = decode(args[2].as_slice()).map_err(Error::BadEntry)?;
    // `decode` refused any sequence past MAX_SEQ.
    let _ = seq::observe(entry.seq);
    let name = args[1].as_slice();
    let db = api::selected_db(ctx);
    let mut key = api::EntryKey::open_write(ctx, &args[1]);
    if key.holds_other_type() {
        key.delete();
    }
    // An entry there is replaced in place (no unlink hook): unindex it here.
    if let Some(old) = key.entry() {
        indexes::with_db(db, |ix| ix.remove(name, old.tags())).ok_or(Error::IndexBusy)?;
    }
    key.set_entry(entry).map_err(Error::NotStored)?;
    if let Some(at) = expire_at {
        // Without SetAbsExpire, the time left; a time already past expires at once.
        key.expire(at, (at - api::now_ms()).max(1));
    }
    if let Some(e) = key.entry() {
        let dead = indexes::index_arrival(db, name, e, expire_at.unwrap_or(NO_EXPIRE))
            .ok_or(Error::IndexBusy)?;
        if dead {
            crate::glue::invalidation::reclaim_soon(ctx);
        }
    }
    drop(key);
    leases::revoke(db, name);
    api::notify(ctx, NotifyEvent::MODULE, c"tcache.set", &args[1]);
    Ok(RedisValue::SimpleStringStatic("OK"))
}
