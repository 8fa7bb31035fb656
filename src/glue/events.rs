//! Keyspace and server events that keep the indexes exact.
//!
//! Keys leave through the type's unlink hook (store). Keys *enter* a database
//! without a tcache command through RENAME, MOVE, COPY, RESTORE and loading;
//! their expiry changes through EXPIRE/PERSIST; whole databases vanish or swap
//! through FLUSHDB/FLUSHALL and SWAPDB, which send no per-key events.

use std::ffi::{c_char, c_int, c_void};

use redis_module::{raw, Context};

use crate::core::space::Space;
use crate::glue::api::{self, EntryKey};
use crate::glue::blocking;
use crate::glue::cluster;
use crate::glue::guard;
use crate::glue::invalidation;
use crate::glue::raw::{bytes_of, event_name};
use crate::state::indexes;
use crate::state::leases;

/// Subscribes to everything the indexes depend on.
pub fn subscribe(ctx: &Context) -> Result<(), &'static str> {
    let flags = (raw::REDISMODULE_NOTIFY_GENERIC | raw::REDISMODULE_NOTIFY_LOADED) as c_int;
    // SAFETY: `ctx` is the OnLoad context; the callbacks are `extern "C"` fns
    // with the signatures Redis expects, valid for the life of the module.
    unsafe {
        let sub = raw::RedisModule_SubscribeToKeyspaceEvents.ok_or("no keyspace events API")?;
        if sub(ctx.ctx, flags, Some(on_keyspace_event)) != raw::REDISMODULE_OK as c_int {
            return Err("cannot subscribe to keyspace events");
        }
        let server = raw::RedisModule_SubscribeToServerEvent.ok_or("no server events API")?;
        for id in [
            raw::REDISMODULE_EVENT_FLUSHDB,
            raw::REDISMODULE_EVENT_SWAPDB,
        ] {
            let event = raw::RedisModuleEvent { id, dataver: 1 };
            if server(ctx.ctx, event, Some(on_server_event)) != raw::REDISMODULE_OK as c_int {
                return Err("cannot subscribe to server events");
            }
        }
    }
    Ok(())
}

extern "C" fn on_keyspace_event(
    ctx: *mut raw::RedisModuleCtx,
    _class: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    guard::callback((), || {
        let ctx = Context::new(ctx);
        // SAFETY: Redis passes a NUL-terminated event name and a live key
        // name, both valid while this callback runs; neither slice escapes it.
        let (event, key) = unsafe { (event_name(event), bytes_of(key)) };
        match event {
            b"restore" => index_key(&ctx, key, true, api::selected_db(&ctx)),
            b"loaded" => index_key(&ctx, key, false, api::selected_db(&ctx)),
            b"rename_to" | b"move_to" | b"copy_to" => index_landed(&ctx, key),
            b"expire" | b"persist" => refresh_expire(&ctx, key),
            _ => {}
        }
    });
    raw::REDISMODULE_OK as c_int
}

/// A key landed under a new name or in another database (RENAME, MOVE, COPY).
///
/// Valkey 9 (seen on 9.1.2): for MOVE and COPY ... DB inside MULTI, this
/// callback's context opens keys in the target database, but
/// RM_GetSelectedDb answers the client's (the source), even after SelectDb.
/// So the number is not trusted here: the database the key landed in is the
/// one that holds it as an entry no index has yet, tried first at the number
/// given, then in every database.
fn index_landed(ctx: &Context, key: &[u8]) {
    let here = api::selected_db(ctx);
    let name = api::string(ctx, key);
    let landed = |db: i32| {
        api::select_db(ctx, db)
            && indexes::with_db(db, |ix| !ix.contains(key)).unwrap_or(false)
            && EntryKey::open(ctx, &name).entry().is_some()
    };
    if landed(here) {
        index_key(ctx, key, false, here);
    } else {
        let mut db = 0;
        while api::select_db(ctx, db) {
            if db != here && landed(db) {
                index_key(ctx, key, false, db);
                break;
            }
            db += 1;
        }
    }
    api::select_db(ctx, here);
}

/// Reads the key as it now stands and, if it is an entry, indexes it in
/// database `db` (the one the context opens keys in). An
/// entry `restored` (MIGRATE, resharding) that a recent cluster-wide
/// invalidation names arrives dead (see `cluster::recently_invalidated`).
fn index_key(ctx: &Context, key: &[u8], restored: bool, db: i32) {
    let name = api::string(ctx, key);
    let handle = EntryKey::open(ctx, &name);
    if let Some(e) = handle.entry() {
        if restored && cluster::recently_invalidated(e.space() == Space::Roles, key, e.tags()) {
            e.killed.set();
        }
        let expire = handle.expire_at();
        if indexes::index_arrival(db, name.as_slice(), e, expire) == Some(true) {
            // Written before a pending invalidation that kills it.
            invalidation::reclaim_soon(ctx);
        }
        // A value arrived by RENAME/MOVE/COPY/RESTORE: the lease is void and
        // the waiters get the value.
        leases::revoke(db, name.as_slice());
        blocking::wake_all(db, name.as_slice());
    }
}

fn refresh_expire(ctx: &Context, key: &[u8]) {
    let name = api::string(ctx, key);
    let handle = EntryKey::open(ctx, &name);
    if handle.entry().is_some() {
        let expire = handle.expire_at();
        let db = api::selected_db(ctx);
        indexes::with_db(db, |ix| ix.set_expire(name.as_slice(), expire));
    }
}

#[repr(C)]
struct TwoDbs {
    version: u64,
    first: i32,
    second: i32,
}

extern "C" fn on_server_event(
    _ctx: *mut raw::RedisModuleCtx,
    event: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    guard::callback((), || {
        // SAFETY: for FLUSHDB the data is a RedisModuleFlushInfoV1 {version,
        // sync, dbnum}; for SWAPDB a RedisModuleSwapDbInfoV1 {version, first,
        // second}: both are (u64, i32, i32) as TwoDbs, valid during the call.
        let Some(info) = (unsafe { data.cast::<TwoDbs>().as_ref() }) else {
            return;
        };
        let _ = info.version;
        match event.id {
            raw::REDISMODULE_EVENT_FLUSHDB if subevent == raw::REDISMODULE_SUBEVENT_FLUSHDB_END => {
                // FlushInfo is {version, sync, dbnum}: the db is the second i32.
                indexes::clear(info.second);
                leases::clear(info.second);
            }
            raw::REDISMODULE_EVENT_SWAPDB => {
                indexes::swap(info.first, info.second);
                leases::swap(info.first, info.second);
            }
            _ => {}
        }
    })
}
