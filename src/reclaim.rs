//! The reclaimer: deletes the entries a logical invalidation killed, in slices
//! of at most `tcache.reclaim-budget-us` of work, from a timer, so that other
//! clients are served between slices.
//!
//! Only a primary deletes; each slice replicates its deletions as one `DEL`
//! (chunked), so replicas and the AOF free the same entries. A replica keeps
//! its dead entries hidden until those DELs arrive, and starts reclaiming by
//! itself if it is promoted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis_module::{Context, ContextFlags, NotifyEvent, RedisString};

use crate::api;
use crate::commands::{slot_mut, Slot};
use crate::config;
use crate::guard;
use crate::indexes;
use crate::stats;

/// A timer is scheduled.
static ARMED: AtomicBool = AtomicBool::new(false);

/// Keys taken off the queue per index lock; the slice deadline is checked
/// between chunks.
const CHUNK: usize = 32;

/// How often an idle reclaimer (a replica, or paused by config) looks again.
const IDLE: Duration = Duration::from_millis(100);

/// Makes sure a slice runs soon: in a millisecond, so that the reply of the
/// command that queued the work goes out first.
pub fn start(ctx: &Context) {
    arm(ctx, Duration::from_millis(1));
}

fn arm(ctx: &Context, after: Duration) {
    if !ARMED.swap(true, Ordering::Relaxed) {
        ctx.create_timer(after, tick, ());
    }
}

fn tick(ctx: &Context, _: ()) {
    ARMED.store(false, Ordering::Relaxed);
    guard::callback((), || {
        let flags = ctx.get_flags();
        let budget = config::reclaim_budget_us();
        let primary = !flags.intersects(ContextFlags::SLAVE | ContextFlags::LOADING);
        let pending = indexes::pending_dbs();
        if pending.is_empty() {
            indexes::recheck_tombs();
            return;
        }
        if !primary || budget == 0 {
            arm(ctx, IDLE);
            return;
        }
        stats::RECLAIM_SLICES.incr();
        let started = Instant::now();
        let deadline = started + Duration::from_micros(budget);
        for db in pending {
            if !slice(ctx, db, deadline) {
                break;
            }
        }
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats::RECLAIM_SLICE_MAX_US.max(took);
        if indexes::pending_dbs().is_empty() {
            indexes::recheck_tombs();
        } else {
            arm(ctx, Duration::ZERO);
        }
    })
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
