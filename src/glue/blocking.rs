//! Lease waiters: a FETCH ... WAIT that meets another caller's lease blocks
//! (RedisModule_BlockClient, with a timeout) without polling, and is kept in a
//! registry by key. Storing the key's value wakes all its waiters; a lapsing
//! lease is handed straight to the oldest waiter. The timeout answers
//! `["WAIT"]`. Every blocked handle leaves the registry exactly once (woken,
//! timed out, unblocked by CLIENT UNBLOCK, or disconnected), and that is the
//! one place that calls RedisModule_UnblockClient for it, so nothing is left
//! behind and no handle is released twice.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Mutex, MutexGuard, OnceLock};

use redis_module::{raw, Context, RedisString, RedisValue};

use crate::core::lease::Lease;
use crate::errors::{Error, Reply};
use crate::glue::api;
use crate::glue::blocked_client::{self, Handle, Waiting};
use crate::glue::guard;
use crate::state::leases;
use crate::state::stats;

/// How blocked FETCH callers are answered. The FETCH command installs these
/// at load (`commands::fetch::install`), so that this glue does not depend on
/// the commands built on it.
pub struct Replies {
    /// `["LEASE", token]`.
    pub lease: fn(u64) -> RedisValue,
    /// `["WAIT"]`.
    pub wait: fn() -> RedisValue,
    /// The reply FETCH would give now for the key (`None`: still waiting).
    pub resolve: fn(&Context, &RedisString, i64) -> Option<Reply>,
    /// Whether a fresh value is stored under the key.
    pub is_stored: fn(&Context, &RedisString, i64) -> bool,
    /// A new lease on the key (db, key, lease-ms, now), its lapse timer armed.
    pub grant: fn(&Context, i32, &[u8], i64, i64) -> Option<Lease>,
}

static REPLIES: OnceLock<Replies> = OnceLock::new();

/// Installs the FETCH replies (once, at load).
pub fn install(replies: Replies) {
    let _ = REPLIES.set(replies);
}

fn replies() -> Result<&'static Replies, Error> {
    REPLIES.get().ok_or(Error::Internal)
}

struct Waiter {
    handle: Handle,
    lease_ms: i64,
}

#[derive(Default)]
struct Registry {
    by_key: HashMap<(i32, Vec<u8>), Vec<Waiter>>,
    /// Each waiter's key and its number (a handle's address can be reused by a
    /// later waiter; the number tells a stale timeout apart).
    key_of: HashMap<Handle, ((i32, Vec<u8>), u64)>,
    next_number: u64,
}

static WAITERS: Mutex<Option<Registry>> = Mutex::new(None);

fn registry() -> MutexGuard<'static, Option<Registry>> {
    WAITERS.lock().unwrap_or_else(|p| p.into_inner())
}

fn with_registry<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let mut g = registry();
    f(g.get_or_insert_with(Registry::default))
}

/// What a woken waiter is told to answer.
enum Wake {
    /// Evaluate the FETCH again (the value was stored).
    Resolve { key: Vec<u8>, lease_ms: i64 },
    /// The lapsed lease was handed to this waiter.
    Lease { token: u64 },
    /// Its WAIT timeout passed.
    TimedOut,
}

/// Blocks the calling client until `key` is stored, its lease lapses (it then
/// gets the lease), or `timeout_ms` passes. False when Redis refused to block.
///
/// The timeout is a module timer, not the server's: on Redis 7.0 a client
/// whose server-side timeout passed in the event-loop iteration that also
/// unblocked it got no reply at all (the server skips the timeout callback of
/// an unblocked client, then drops the reply callback). With our own timer
/// every waiter leaves through UnblockClient and its reply callback.
pub fn block(ctx: &Context, db: i32, key: &[u8], lease_ms: i64, timeout_ms: i64) -> bool {
    let Some(handle) = blocked_client::block::<Wake>(ctx) else {
        return false;
    };
    let number = with_registry(|r| {
        r.next_number += 1;
        r.by_key
            .entry((db, key.to_vec()))
            .or_default()
            .push(Waiter { handle, lease_ms });
        r.key_of.insert(handle, ((db, key.to_vec()), r.next_number));
        r.next_number
    });
    let data = Box::into_raw(Box::new((handle, number)));
    // SAFETY: `waited` has the RedisModuleTimerProc signature and takes
    // ownership of `data` when it fires (these timers are never stopped).
    unsafe {
        match raw::RedisModule_CreateTimer {
            Some(f) => {
                f(ctx.ctx, timeout_ms.max(1), Some(waited), data.cast());
            }
            None => drop(Box::from_raw(data)),
        }
    }
    true
}

/// A waiter's WAIT timeout passed: if it is still waiting (the same waiter,
/// not a later one at a reused address), it is released to answer `["WAIT"]`.
extern "C" fn waited(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    guard::callback((), || {
        if data.is_null() {
            return;
        }
        // SAFETY: `data` is the Box<(Handle, u64)> armed by `block`, fired once.
        let (handle, number) = *unsafe { Box::from_raw(data.cast::<(Handle, u64)>()) };
        let current = with_registry(|r| r.key_of.get(&handle).map(|(_, n)| *n));
        if current == Some(number) && forget(handle) {
            release(handle, Some(Wake::TimedOut));
        }
    })
}

fn release(handle: Handle, wake: Option<Wake>) {
    blocked_client::release::<Wake>(handle, wake);
}

/// Removes one handle from the registry; true if it was there.
fn forget(handle: Handle) -> bool {
    with_registry(|r| {
        let Some((slot, _)) = r.key_of.remove(&handle) else {
            return false;
        };
        if let Some(list) = r.by_key.get_mut(&slot) {
            list.retain(|w| w.handle != handle);
            if list.is_empty() {
                r.by_key.remove(&slot);
            }
        }
        true
    })
}

/// The value of `key` was stored: every waiter answers again (with a HIT).
pub fn wake_all(db: i32, key: &[u8]) {
    let woken = with_registry(|r| {
        // Every TCACHE.SET comes here: with nobody waiting, build no lookup key.
        if r.key_of.is_empty() {
            return Vec::new();
        }
        let list = r.by_key.remove(&(db, key.to_vec())).unwrap_or_default();
        for w in &list {
            r.key_of.remove(&w.handle);
        }
        list
    });
    for w in woken {
        release(
            w.handle,
            Some(Wake::Resolve {
                key: key.to_vec(),
                lease_ms: w.lease_ms,
            }),
        );
    }
}

/// The oldest waiter of `key`, taken out of the registry, with its lease-ms.
fn take_oldest(db: i32, key: &[u8]) -> Option<(Handle, i64)> {
    with_registry(|r| {
        let slot = (db, key.to_vec());
        let list = r.by_key.get_mut(&slot)?;
        let w = (!list.is_empty()).then(|| list.remove(0))?;
        if list.is_empty() {
            r.by_key.remove(&slot);
        }
        r.key_of.remove(&w.handle);
        Some((w.handle, w.lease_ms))
    })
}

impl Waiting for Wake {
    /// The FETCH reply a released waiter gets.
    fn reply(ctx: &Context, wake: Option<&Wake>) {
        let reply = replies().and_then(|r| match wake {
            Some(Wake::Lease { token }) => Ok((r.lease)(*token)),
            Some(Wake::Resolve { key, lease_ms }) => {
                let name = api::string(ctx, key);
                (r.resolve)(ctx, &name, *lease_ms).unwrap_or_else(|| Ok((r.wait)()))
            }
            Some(Wake::TimedOut) => {
                stats::WAIT_TIMEOUTS.incr();
                Ok((r.wait)())
            }
            None => Ok((r.wait)()),
        });
        ctx.reply(reply.map_err(Into::into));
    }

    /// `CLIENT UNBLOCK` answers `["WAIT"]`, as a timeout does.
    fn unblocked(ctx: &Context) {
        stats::WAIT_TIMEOUTS.incr();
        ctx.reply(replies().map(|r| (r.wait)()).map_err(Into::into));
    }

    fn forget(handle: Handle) -> bool {
        forget(handle)
    }
}

/// What a lapse timer needs: the database and the key of the lease.
struct Lapse {
    db: i32,
    key: Vec<u8>,
}

/// Arms a timer that runs when the lease on `key` lapses.
pub fn on_lapse(ctx: &Context, db: i32, key: &[u8], after_ms: i64) {
    let data = Box::into_raw(Box::new(Lapse {
        db,
        key: key.to_vec(),
    }));
    // SAFETY: the callback has the RedisModuleTimerProc signature and takes
    // ownership of `data` when it fires (these timers are never stopped).
    unsafe {
        match raw::RedisModule_CreateTimer {
            Some(f) => {
                f(ctx.ctx, after_ms.max(0) + 1, Some(lapsed), data.cast());
            }
            None => drop(Box::from_raw(data)),
        }
    }
}

/// A lease ran out: if nobody stored the value and no newer lease exists, the
/// oldest waiter gets a fresh lease.
extern "C" fn lapsed(ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    guard::callback((), || {
        if data.is_null() {
            return;
        }
        // SAFETY: `data` is the Box<Lapse> armed by `on_lapse`, fired once.
        let lapse = unsafe { Box::from_raw(data.cast::<Lapse>()) };
        let ctx = Context::new(ctx);
        let now = api::now_ms();
        leases::prune(lapse.db, now);
        if api::select_db(&ctx, lapse.db) {
            hand_over(&ctx, lapse.db, &lapse.key);
        }
    })
}

/// The lease on `key` of the selected database `db` ended without a value
/// (it lapsed, or its SET was refused): unless a newer lease exists, the
/// waiters get the value if one is stored, else the oldest gets a new lease.
pub fn hand_over(ctx: &Context, db: i32, key: &[u8]) {
    let Ok(r) = replies() else {
        return;
    };
    let now = api::now_ms();
    if leases::active(db, key, now).is_some() {
        return;
    }
    if (r.is_stored)(ctx, &api::string(ctx, key), now) {
        wake_all(db, key);
        return;
    }
    if let Some((handle, lease_ms)) = take_oldest(db, key) {
        match (r.grant)(ctx, db, key, lease_ms, now) {
            Some(lease) => release(handle, Some(Wake::Lease { token: lease.token })),
            None => release(handle, None),
        }
    }
}

/// Whether this context may block (not inside MULTI, Lua or a no-blocking context).
pub fn can_block(ctx: &Context) -> bool {
    use redis_module::ContextFlags;
    !ctx.get_flags()
        .intersects(ContextFlags::MULTI | ContextFlags::LUA | ContextFlags::DENY_BLOCKING)
}

pub fn signal_stored(db: i32, key: &RedisString) {
    wake_all(db, key.as_slice());
}
