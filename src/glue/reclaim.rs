//! The reclaimer: deletes the entries a logical invalidation killed, in slices
//! of at most `tcache.reclaim-budget-us` of work, so that other clients are
//! served between slices.
//!
//! Slices run in the event loop, just before it would sleep (the EVENTLOOP
//! server event), one per iteration while work remains, and a one-shot
//! event keeps the loop from sleeping meanwhile. Clients' commands and
//! replies go between two slices. (A module timer cannot do this: Redis
//! fires module timers at most once a millisecond, so the reclaimer would
//! idle a millisecond after every slice.) The hook is subscribed only while
//! there is work, and a module timer retires it (a server event's callback
//! must not unsubscribe itself) and looks again every 100 ms while the
//! reclaimer waits (a replica, or paused by config).
//!
//! Only a primary deletes; each slice replicates its deletions as one `DEL`
//! (chunked), so replicas and the AOF free the same entries. A replica keeps
//! its dead entries hidden until those DELs arrive, and starts reclaiming by
//! itself if it is promoted.

use std::ffi::c_void;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use redis_module::{raw, Context, ContextFlags, NotifyEvent, RedisString};

use crate::glue::api;
use crate::glue::guard;
use crate::glue::slot::{slot_mut, Slot};
use crate::state::config;
use crate::state::indexes;
use crate::state::stats;

/// No slice to run.
const IDLE: u8 = 0;
/// Work queued: the next before-sleep only lets the loop go round once more,
/// so that the reply of the command that queued it is written first.
const ARMED: u8 = 1;
/// A slice at every before-sleep.
const RUNNING: u8 = 2;

static PHASE: AtomicU8 = AtomicU8::new(IDLE);
/// The before-sleep hook is subscribed.
static HOOKED: AtomicBool = AtomicBool::new(false);
/// The timer is scheduled.
static TIMER: AtomicBool = AtomicBool::new(false);

/// Keys taken off the queue per index lock; the slice deadline is checked
/// between chunks.
const CHUNK: usize = 32;

/// How often a waiting reclaimer (a replica, or paused by config) looks again.
const WAIT: Duration = Duration::from_millis(100);

/// Makes sure slices run from the next event-loop iteration on.
pub fn start(ctx: &Context) {
    if !start_hooked(ctx) {
        // No event-loop hook (not seen on supported servers): the timer runs
        // the slices, one per millisecond.
        arm(ctx, Duration::from_millis(1));
    }
}

/// Arms the before-sleep hook; false if the server refuses to subscribe it.
fn start_hooked(ctx: &Context) -> bool {
    if PHASE.load(Ordering::Relaxed) != IDLE {
        return true;
    }
    if !HOOKED.load(Ordering::Relaxed) {
        if !hook(ctx, true) {
            return false;
        }
        HOOKED.store(true, Ordering::Relaxed);
    }
    PHASE.store(ARMED, Ordering::Relaxed);
    wake();
    true
}

/// Subscribes (or unsubscribes) the before-sleep hook.
fn hook(ctx: &Context, on: bool) -> bool {
    let event = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_EVENTLOOP,
        dataver: 1,
    };
    let callback: raw::RedisModuleEventCallback = if on { Some(before_sleep) } else { None };
    // SAFETY: `ctx` is a live module context; `before_sleep` has the signature
    // Redis expects and lives as long as the module.
    unsafe {
        raw::RedisModule_SubscribeToServerEvent
            .is_some_and(|f| f(ctx.ctx, event, callback) == raw::REDISMODULE_OK as c_int)
    }
}

/// Keeps the event loop from sleeping: it goes round again at once.
fn wake() {
    extern "C" fn nothing(_: *mut c_void) {}
    // SAFETY: `nothing` ignores its argument; Redis calls it once on the main thread.
    unsafe {
        if let Some(f) = raw::RedisModule_EventLoopAddOneShot {
            f(Some(nothing), std::ptr::null_mut());
        }
    }
}

fn arm(ctx: &Context, after: Duration) {
    if !TIMER.swap(true, Ordering::Relaxed) {
        ctx.create_timer(after, tick, ());
    }
}

/// Retires an idle hook, and starts again (or waits) if work is pending;
/// without the hook, runs a slice itself.
fn tick(ctx: &Context, _: ()) {
    TIMER.store(false, Ordering::Relaxed);
    guard::callback((), || {
        if PHASE.load(Ordering::Relaxed) == IDLE && HOOKED.load(Ordering::Relaxed) {
            hook(ctx, false);
            HOOKED.store(false, Ordering::Relaxed);
        }
        if indexes::pending_dbs().is_empty() {
            indexes::recheck_tombs();
        } else if !may_run(ctx) {
            arm(ctx, WAIT);
        } else if !start_hooked(ctx) && run_slice(ctx) {
            arm(ctx, Duration::from_millis(1));
        }
    })
}

/// A primary, not loading, not paused by config.
fn may_run(ctx: &Context) -> bool {
    let flags = ctx.get_flags();
    !flags.intersects(ContextFlags::SLAVE | ContextFlags::LOADING)
        && config::reclaim_budget_us() > 0
}

extern "C" fn before_sleep(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    guard::callback((), || {
        if subevent != raw::REDISMODULE_SUBEVENT_EVENTLOOP_BEFORE_SLEEP {
            return;
        }
        let ctx = Context::new(ctx);
        match PHASE.load(Ordering::Relaxed) {
            ARMED => {
                PHASE.store(RUNNING, Ordering::Relaxed);
                wake();
            }
            RUNNING => {
                if may_run(&ctx) && run_slice(&ctx) {
                    wake();
                } else {
                    // Done, or must wait: the timer retires the hook.
                    PHASE.store(IDLE, Ordering::Relaxed);
                    arm(&ctx, Duration::ZERO);
                }
            }
            _ => {}
        }
    })
}

/// One slice over the databases with dead entries; whether work remains.
fn run_slice(ctx: &Context) -> bool {
    let pending = indexes::pending_dbs();
    if pending.is_empty() {
        indexes::recheck_tombs();
        return false;
    }
    stats::RECLAIM_SLICES.incr();
    let started = Instant::now();
    let deadline = started + Duration::from_micros(config::reclaim_budget_us());
    for db in pending {
        if !slice(ctx, db, deadline) {
            break;
        }
    }
    let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    stats::RECLAIM_SLICE_MAX_US.max(took);
    if indexes::pending_dbs().is_empty() {
        indexes::recheck_tombs();
        return false;
    }
    true
}

/// Deletes dead entries of `db` until none is left (true) or the deadline
/// passes (false).
fn slice(ctx: &Context, db: i32, deadline: Instant) -> bool {
    if !api::select_db(ctx, db) {
        return true;
    }
    let mut deleted: Vec<RedisString> = Vec::new();
    let done = loop {
        if Instant::now() >= deadline {
            break false;
        }
        let Some(keys) = indexes::with_db(db, |ix| ix.pop_dead(CHUNK)) else {
            break false;
        };
        if keys.is_empty() {
            break true;
        }
        for k in keys {
            let name = api::string(ctx, &k);
            if delete_dead(ctx, db, &name) {
                deleted.push(name);
            }
        }
    };
    indexes::with_db(db, |ix| ix.settle_tombs());
    api::replicate_del(ctx, &deleted);
    stats::RECLAIMED.add(deleted.len() as u64);
    done
}

/// Deletes `name` if it still holds a dead entry.
fn delete_dead(ctx: &Context, db: i32, name: &RedisString) -> bool {
    let key = ctx.open_key_writable(name);
    let dead = match slot_mut(&key) {
        Slot::Entry(e) => indexes::is_dead(db, name.as_slice(), e),
        _ => false,
    };
    if !dead || key.delete().is_err() {
        return false;
    }
    drop(key);
    api::notify(ctx, NotifyEvent::GENERIC, c"del", name);
    true
}
