//! TCACHE.INVALTAG, TCACHE.INVALPREFIX (and PERM.INVALROLE through
//! `invalidate`): every entry a tag, role or key prefix names disappears in one
//! step, atomic for every client.
//!
//! A small invalidation (at most `tcache.inval-sync-max` entries) deletes its
//! entries inside the command. A larger one is logical: a tombstone kills the
//! entries for every reader at once, in constant time, and the reclaimer
//! deletes them in short slices afterwards (see `reclaim`). Replicas and the
//! AOF get `TCACHE.APPLYINVAL` for the logical step, then the deletions.

use redis_module::{Context, ContextFlags, RedisString, RedisValue};

use super::cache::delete_indexed;
use super::{bytes, key_names};
use crate::core::index::{DbIndex, Id, Key, Space};
use crate::errors::{Error, NoPerm, Reply};
use crate::glue::api::{self, Caller};
use crate::glue::reclaim;
use crate::state::config;
use crate::state::indexes;
use crate::state::leases;
use crate::state::seq;
use crate::state::stats;

/// What an invalidation names.
pub enum Target<'a> {
    Labels(Space, Vec<&'a [u8]>),
    Prefix(&'a [u8]),
}

impl Target<'_> {
    /// The word `TCACHE.APPLYINVAL` uses for it.
    fn kind(&self) -> &'static [u8] {
        match self {
            Target::Labels(Space::Tags, _) => b"TAG",
            Target::Labels(Space::Roles, _) => b"ROLE",
            Target::Prefix(_) => b"PREFIX",
        }
    }

    fn names(&self) -> Vec<&[u8]> {
        match self {
            Target::Labels(_, names) => names.clone(),
            Target::Prefix(p) => vec![p],
        }
    }

    /// The live keys it names.
    fn keys(&self, ix: &DbIndex) -> Vec<Key> {
        match self {
            Target::Labels(space, names) => ix.keys_with_any(*space, names),
            Target::Prefix(p) => ix.keys_with_prefix(p),
        }
    }

    /// The logical invalidation at `seq`; `prefix_ids` are the prefix's live
    /// ids when the caller already collected them. Returns the entries killed.
    fn kill(&self, ix: &mut DbIndex, prefix_ids: Option<Vec<Id>>, seq: u64) -> usize {
        match self {
            Target::Labels(space, names) => ix.invalidate(*space, names, seq),
            Target::Prefix(p) => {
                let ids = prefix_ids.unwrap_or_else(|| ix.prefix_ids(p));
                ix.invalidate_prefix(p, ids, seq)
            }
        }
    }
}

/// TCACHE.INVALTAG tag [tag ...]
pub fn invaltag(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() < 2 {
        return Err(Error::WrongArity);
    }
    let tags = bytes(&args[1..]);
    let db = api::selected_db(ctx);
    let reply = invalidate(ctx, Target::Labels(Space::Tags, tags.clone()))?;
    leases::note_tags(db, &tags, seq::next());
    publish(ctx, b"tag:", &tags);
    Ok(reply)
}

/// TCACHE.INVALPREFIX prefix
pub fn invalprefix(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() != 2 {
        return Err(Error::WrongArity);
    }
    let db = api::selected_db(ctx);
    let reply = invalidate(ctx, Target::Prefix(args[1].as_slice()))?;
    leases::note_prefix(db, args[1].as_slice(), seq::next());
    publish(ctx, b"prefix:", &[args[1].as_slice()]);
    Ok(reply)
}

/// Kills every live entry `target` names in the selected database; replies
/// with how many.
pub fn invalidate(ctx: &Context, target: Target) -> Reply {
    let db = api::selected_db(ctx);
    let busy = || Error::IndexBusy;
    // Prefix ids are collected here (memory work only, no deletes); a label's
    // size is its member count.
    let (size, prefix_ids) = indexes::with_db(db, |ix| match &target {
        Target::Labels(space, names) => (ix.label_size(*space, names), Vec::new()),
        Target::Prefix(p) => {
            let ids = ix.prefix_ids(p);
            (ids.len(), ids)
        }
    })
    .ok_or_else(busy)?;
    let keys = || indexes::with_db(db, |ix| target.keys(ix)).ok_or_else(busy);
    if size <= config::inval_sync_max() {
        return delete_all(ctx, &keys()?);
    }
    if !api::may_delete_any_key(ctx) {
        check_may_delete(ctx, &key_names(ctx, &keys()?))?;
    }
    let seq = seq::next();
    let killed =
        indexes::with_db(db, |ix| target.kill(ix, Some(prefix_ids), seq)).ok_or_else(busy)?;
    indexes::note_tombs();
    api::replicate_invalidation(ctx, seq, target.kind(), &target.names());
    reclaim::start(ctx);
    stats::INVALIDATIONS.incr();
    stats::INVALIDATED_ENTRIES.add(killed as u64);
    Ok(RedisValue::Integer(killed as i64))
}

/// TCACHE.APPLYINVAL seq TAG|ROLE|PREFIX name [name ...] — how a logical
/// invalidation reaches replicas and the AOF. The deletions follow as DELs.
pub fn applyinval(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() < 4 {
        return Err(Error::WrongArity);
    }
    let flags = ctx.get_flags();
    if !flags.intersects(ContextFlags::REPLICATED | ContextFlags::LOADING) {
        return Err(Error::ApplyReserved);
    }
    let seq = std::str::from_utf8(args[1].as_slice())
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&n| n <= seq::MAX_SEQ)
        .ok_or(Error::BadInvalSeq)?;
    let names = bytes(&args[3..]);
    let target = match args[2].as_slice() {
        b"TAG" => Target::Labels(Space::Tags, names),
        b"ROLE" => Target::Labels(Space::Roles, names),
        b"PREFIX" if names.len() == 1 => Target::Prefix(names[0]),
        _ => return Err(Error::Syntax),
    };
    let _ = seq::observe(seq); // checked against MAX_SEQ above
    let db = api::selected_db(ctx);
    indexes::with_db(db, |ix| target.kill(ix, None, seq)).ok_or(Error::IndexBusy)?;
    indexes::note_tombs();
    reclaim::start(ctx);
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// With `tcache.invalidation-channel` set, publishes one message per
/// invalidated name on it: `tag:<tag>`, `role:<role>` or `prefix:<prefix>`.
pub fn publish(ctx: &Context, kind: &[u8], names: &[&[u8]]) {
    let Some(channel) = config::invalidation_channel() else {
        return;
    };
    let channel = api::string(ctx, &channel);
    for name in names {
        let msg = api::string(ctx, &[kind, name].concat());
        api::publish(ctx, &channel, &msg);
    }
}

/// NOPERM unless the caller may delete every one of `names`.
fn check_may_delete(ctx: &Context, names: &[RedisString]) -> Result<(), Error> {
    if let Some(caller) = Caller::current(ctx) {
        if !names.iter().all(|n| caller.may_delete(n)) {
            return Err(Error::NoPerm(NoPerm::Delete));
        }
    }
    Ok(())
}

/// Checks every key first (NOPERM and nothing deleted if one is refused), then
/// deletes, replicates the deletions and counts them.
pub fn delete_all(ctx: &Context, keys: &[Key]) -> Reply {
    // The index lock is released here: deletes re-enter it through unlink.
    let names = key_names(ctx, keys);
    check_may_delete(ctx, &names)?;
    let mut deleted = Vec::with_capacity(names.len());
    for name in names {
        if delete_indexed(ctx, &name) {
            deleted.push(name);
        }
    }
    api::replicate_del(ctx, &deleted);
    stats::INVALIDATIONS.incr();
    stats::INVALIDATED_ENTRIES.add(deleted.len() as u64);
    Ok(RedisValue::Integer(deleted.len() as i64))
}
