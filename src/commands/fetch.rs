//! Stampede protection: TCACHE.FETCH (hit, lease, wait, stale) and
//! TCACHE.STALETAG (soft invalidation).

use redis_module::{Context, RedisString, RedisValue};

use super::{bytes, key_names, keys_with_any, read, slot_mut, Slot};
use crate::core::entry::{encode, Entry};
use crate::core::index::Space;
use crate::core::lease::Lease;
use crate::core::options::parse_in_range;
use crate::errors::{Error, NoPerm, Reply};
use crate::glue::api::{self, Caller, EntryKey};
use crate::glue::blocking;
use crate::state::leases;
use crate::state::seq;
use crate::state::stats;

/// Longest lease and wait accepted: one day.
const MAX_MS: i64 = 86_400_000;

fn word(w: &'static str) -> RedisValue {
    RedisValue::SimpleStringStatic(w)
}

/// What a FETCH of a key finds right now.
enum Found {
    /// A fresh value: `["HIT", value]`.
    Hit(Vec<u8>),
    /// A value past its soft expiry, with a lease for this caller when nobody
    /// holds one: `["STALE", value]` or `["STALE", value, token]`.
    Stale(Vec<u8>, Option<u64>),
    /// No value; this caller got the lease: `["LEASE", token]`.
    Lease(u64),
}

impl Found {
    fn reply(self) -> RedisValue {
        match self {
            Found::Hit(value) => {
                RedisValue::Array(vec![word("HIT"), RedisValue::StringBuffer(value)])
            }
            Found::Stale(value, lease) => {
                let mut reply = vec![word("STALE"), RedisValue::StringBuffer(value)];
                if let Some(token) = lease {
                    reply.push(RedisValue::BulkString(leases::format_token(token)));
                }
                RedisValue::Array(reply)
            }
            Found::Lease(token) => lease_reply(token),
        }
    }
}

/// Hands the blocked-client glue the replies it answers waiters with.
pub fn install() {
    blocking::install(blocking::Replies {
        lease: lease_reply,
        wait: wait_reply,
        resolve: resolve_reply,
        is_stored,
        grant,
    });
}

pub fn wait_reply() -> RedisValue {
    RedisValue::Array(vec![word("WAIT")])
}

/// Whether the entry is past its soft expiry (SWR window or STALETAG).
pub fn is_stale(e: &Entry, now_ms: i64) -> bool {
    e.stale_at_ms != 0 && now_ms >= e.stale_at_ms
}

/// Grants a lease on `key` and arms the timer that acts when it lapses.
pub fn grant(ctx: &Context, db: i32, key: &[u8], lease_ms: i64, now: i64) -> Option<Lease> {
    let lease = leases::grant(db, key, seq::next(), now + lease_ms)?;
    blocking::on_lapse(ctx, db, key, lease_ms);
    Some(lease)
}

pub fn lease_reply(token: u64) -> RedisValue {
    RedisValue::Array(vec![
        word("LEASE"),
        RedisValue::BulkString(leases::format_token(token)),
    ])
}

/// Whether `name` holds a fresh (not stale) entry.
pub fn is_stored(ctx: &Context, name: &RedisString, now_ms: i64) -> bool {
    matches!(read(ctx, name.as_slice(), &ctx.open_key(name)), Slot::Entry(e) if !is_stale(e, now_ms))
}

/// What a FETCH of `name` finds right now, or `None` when the caller must
/// wait for another caller's lease.
fn resolve(ctx: &Context, name: &RedisString, lease_ms: i64) -> Option<Result<Found, Error>> {
    let db = api::selected_db(ctx);
    let now = api::now_ms();
    let key = ctx.open_key(name);
    match read(ctx, name.as_slice(), &key) {
        Slot::Other => Some(Err(Error::WrongType)),
        Slot::Entry(e) if !is_stale(e, now) => Some(Ok(Found::Hit(e.value().to_vec()))),
        Slot::Entry(e) => {
            stats::STALE_SERVED.incr();
            let value = e.value().to_vec();
            let lease = if leases::active(db, name.as_slice(), now).is_none() {
                grant(ctx, db, name.as_slice(), lease_ms, now).map(|l| l.token)
            } else {
                None
            };
            Some(Ok(Found::Stale(value, lease)))
        }
        Slot::Missing => {
            if leases::active(db, name.as_slice(), now).is_some() {
                return None;
            }
            let lease = grant(ctx, db, name.as_slice(), lease_ms, now)?;
            Some(Ok(Found::Lease(lease.token)))
        }
    }
}

/// The reply a woken waiter gives (see `resolve`); it counts nothing.
fn resolve_reply(ctx: &Context, name: &RedisString, lease_ms: i64) -> Option<Reply> {
    resolve(ctx, name, lease_ms).map(|found| found.map(Found::reply))
}

/// TCACHE.FETCH key lease-ms [WAIT timeout-ms]
pub fn fetch(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() != 3 && args.len() != 5 {
        return Err(Error::WrongArity);
    }
    let lease_ms = parse_in_range(args[2].as_slice(), 1, MAX_MS)?;
    let mut wait_ms = None;
    if args.len() == 5 {
        if !args[3].as_slice().eq_ignore_ascii_case(b"WAIT") {
            return Err(Error::Syntax);
        }
        wait_ms = Some(parse_in_range(args[4].as_slice(), 1, MAX_MS)?);
    }
    match resolve(ctx, &args[1], lease_ms) {
        Some(found) => {
            match found {
                Ok(Found::Hit(_)) => stats::HITS.incr(),
                Ok(Found::Lease(_)) => stats::MISSES.incr(),
                Ok(Found::Stale(..)) | Err(_) => {}
            }
            found.map(Found::reply)
        }
        None => {
            stats::MISSES.incr();
            stats::WAITS.incr();
            match wait_ms {
                // Inside MULTI or a script, answer as without WAIT.
                Some(ms)
                    if blocking::can_block(ctx)
                        && blocking::block(
                            ctx,
                            api::selected_db(ctx),
                            args[1].as_slice(),
                            lease_ms,
                            ms,
                        ) =>
                {
                    Ok(RedisValue::NoReply)
                }
                _ => Ok(wait_reply()),
            }
        }
    }
}

/// TCACHE.STALETAG tag [tag ...]: marks the live entries carrying any of the
/// tags stale; they stay servable as stale by FETCH until their native expiry.
pub fn staletag(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() < 2 {
        return Err(Error::WrongArity);
    }
    let tags = bytes(&args[1..]);
    let db = api::selected_db(ctx);
    let keys = keys_with_any(ctx, Space::Tags, &tags)?;
    let names = key_names(ctx, &keys);
    if let Some(caller) = Caller::current(ctx) {
        if !names.iter().all(|n| caller.may_update(n)) {
            return Err(Error::NoPerm(NoPerm::Update));
        }
    }
    let now = api::now_ms();
    // A refresher's lease issued before this must not write back older data.
    leases::note_tags(db, &tags, seq::next());
    let mut marked = 0;
    for name in &names {
        let expire_at = EntryKey::open(ctx, name).expire_at();
        let key = ctx.open_key_writable(name);
        let Slot::Entry(_) = slot_mut(&key) else {
            continue;
        };
        let Ok(Some(e)) = key.get_value::<Entry>(&crate::glue::store::ENTRY_TYPE) else {
            continue;
        };
        if is_stale(e, now) {
            continue;
        }
        e.stale_at_ms = now;
        let blob = encode(e);
        drop(key);
        api::replicate_apply(ctx, name, &blob, (expire_at >= 0).then_some(expire_at));
        marked += 1;
    }
    Ok(RedisValue::Integer(marked))
}
