//! The life of a logical invalidation, from the command to the last deleted
//! entry. TCACHE.INVALTAG, INVALPREFIX and PERM.INVALROLE call [`invalidate`];
//! TCACHE.APPLYINVAL, its replicated form, calls [`apply`].
//!
//! 1. **Plan** ([`invalidate`], one take of the database's index). An
//!    invalidation reaching at most `tcache.inval-sync-max` entries hands
//!    their keys back and the command deletes them itself: nothing below
//!    happens. A larger one is logical. A caller whose ACL does not cover
//!    every key has each key reached checked first (NOPERM, nothing changes).
//! 2. **Kill** (same take). The invalidation takes the next write sequence
//!    number and leaves a *tombstone* (the tag, role or prefix with that
//!    number) in the index's `Dead` (`core::dead`); the tags' member sets leave
//!    the index whole and become a batch of the *reclaim queue* (for a prefix,
//!    its ids): O(1) per tag. Then `indexes::note_tombs` turns on the
//!    dead-entry check of the read paths, replicas and the AOF get
//!    `TCACHE.APPLYINVAL seq TAG|ROLE|PREFIX name ...`, and the reclaimer is
//!    woken ([`reclaim_soon`]).
//! 3. **Dead for readers.** Every read path (`slot::read` → `indexes::is_dead`
//!    → `Dead::kills`) treats an entry written before a tombstone on one of its
//!    labels, or on a prefix of its key, as missing. An entry that leaves while
//!    dead (RENAME, MOVE, DUMP/MIGRATE) carries a killed mark and stays dead
//!    where it lands; one arriving dead is queued (`indexes::index_arrival`).
//! 4. **Reclaim.** The [`Reclaimer`] deletes queued entries in slices of at
//!    most `tcache.reclaim-budget-us` of work, just before the event loop
//!    would sleep, one slice per iteration, so clients are served between
//!    slices. (A module timer cannot do this: Redis fires module timers at
//!    most once a millisecond, so the reclaimer would idle a millisecond after
//!    every slice.) Each slice fires `del` per key and replicates one `DEL`
//!    (chunked). Only a primary reclaims; a replica hides its dead entries
//!    until those DELs arrive, and reclaims by itself once promoted.
//! 5. **Settle.** When a database's queue is empty its tombstones go
//!    (`settle_tombs`); once no database holds one, the read paths skip the
//!    dead-entry check again (`indexes::recheck_tombs`).

use std::ffi::c_void;
use std::os::raw::c_int;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis_module::{raw, Context, ContextFlags, NotifyEvent, RedisString};

use crate::core::index::{DbIndex, Id, Key, Space};
use crate::errors::{Error, NoPerm};
use crate::glue::acl;
use crate::glue::api::{self, EntryKey};
use crate::glue::guard;
use crate::state::config;
use crate::state::indexes;
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

    /// Step 2 in the index: tombstone and reclaim queue at `seq`;
    /// `prefix_ids` are the prefix's live ids when already collected.
    /// Returns the entries killed.
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

/// What [`invalidate`] did.
pub enum Invalidated {
    /// Small: nothing was killed; the command deletes these keys itself.
    Small(Vec<Key>),
    /// Logical: this many entries were killed and queued for the reclaimer.
    Killed(usize),
}

/// What the index take of [`invalidate`] decided.
enum Plan {
    Small(Vec<Key>),
    Killed { seq: u64, entries: usize },
}

/// Steps 1 and 2 for `target` in the selected database.
///
/// One take of the index: the ACL checks on the way only ask the server's
/// ACL (no key is read, written or deleted), which the index lock allows.
pub fn invalidate(ctx: &Context, target: &Target) -> Result<Invalidated, Error> {
    let db = api::selected_db(ctx);
    let plan = indexes::with_db(db, |ix| {
        // A prefix's size is its live ids, kept for the kill; a label's is
        // its member count.
        let prefix_ids = match target {
            Target::Prefix(p) => Some(ix.prefix_ids(p)),
            Target::Labels(..) => None,
        };
        let size = match (target, &prefix_ids) {
            (Target::Labels(space, names), _) => ix.label_size(*space, names),
            (Target::Prefix(_), ids) => ids.as_ref().map_or(0, Vec::len),
        };
        if size <= config::inval_sync_max() {
            return Ok(Plan::Small(target.keys(ix)));
        }
        if !acl::may_delete_any_key(ctx) {
            let names: Vec<RedisString> = target
                .keys(ix)
                .iter()
                .map(|k| api::string(ctx, k))
                .collect();
            if !api::may_delete_all(ctx, &names) {
                return Err(Error::NoPerm(NoPerm::Delete));
            }
        }
        let seq = seq::next();
        let entries = target.kill(ix, prefix_ids, seq);
        Ok(Plan::Killed { seq, entries })
    })
    .ok_or(Error::IndexBusy)??;
    let (seq, entries) = match plan {
        Plan::Small(keys) => return Ok(Invalidated::Small(keys)),
        Plan::Killed { seq, entries } => (seq, entries),
    };
    indexes::note_tombs();
    api::replicate_invalidation(ctx, seq, target.kind(), &target.names());
    reclaim_soon(ctx);
    stats::INVALIDATIONS.incr();
    stats::INVALIDATED_ENTRIES.add(entries as u64);
    Ok(Invalidated::Killed(entries))
}

/// Step 2 on a replica or an AOF replay: `TCACHE.APPLYINVAL seq ...` kills
/// what the primary killed at `seq` (checked against `MAX_SEQ` by the caller).
pub fn apply(ctx: &Context, seq: u64, target: &Target) -> Result<(), Error> {
    let _ = seq::observe(seq);
    let db = api::selected_db(ctx);
    indexes::with_db(db, |ix| target.kill(ix, None, seq)).ok_or(Error::IndexBusy)?;
    indexes::note_tombs();
    reclaim_soon(ctx);
    Ok(())
}

/// Dead entries were queued (an invalidation, or a dead entry arriving by
/// RENAME, RESTORE, APPLY...): the reclaimer runs from the next event-loop
/// iteration on, or as soon as it may.
pub fn reclaim_soon(ctx: &Context) {
    on(ctx, |s, d| s.queued(d));
}

// ---- Step 4: the reclaimer ---------------------------------------------

/// The reclaimer's state. It runs a slice from a before-sleep hook (the
/// EVENTLOOP server event), subscribed only while there is work, and uses a
/// module timer to retire the hook (a server event's callback must not
/// unsubscribe itself) and to look again while it may not run.
///
/// | state     | hook       | timer   | meaning |
/// |-----------|------------|---------|---------|
/// | `Idle`    | no         | no      | nothing queued |
/// | `Armed`   | subscribed | `timer` | work queued: the next before-sleep only lets the loop go round once more, so that the reply of the command that queued it is written first |
/// | `Running` | subscribed | `timer` | a slice at every before-sleep |
/// | `Parked`  | subscribed | pending | slices stopped (none left, or it may not run); the timer retires the hook |
/// | `Waiting` | no         | pending | work queued but it may not run (a replica, loading, paused by config): the timer looks again every 100 ms; without a hook, the timer runs the slices itself, one a millisecond |
///
/// The legal transitions are the arms of `queued`, `before_sleep` and
/// `timer`; every side effect goes through a [`Driver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reclaimer {
    Idle,
    Armed { timer: bool },
    Running { timer: bool },
    Parked,
    Waiting,
}

/// What the reclaimer's transitions do to the server.
trait Driver {
    /// Subscribes the before-sleep hook; false if the server refuses.
    fn hook(&mut self) -> bool;
    /// Unsubscribes it.
    fn unhook(&mut self);
    /// Keeps the event loop from sleeping: it goes round again at once.
    fn wake(&mut self);
    /// Schedules the timer.
    fn arm(&mut self, after: Duration);
    /// Whether dead entries wait in some database.
    fn has_work(&mut self) -> bool;
    /// A primary, not loading, not paused by config.
    fn may_run(&mut self) -> bool;
    /// Runs one slice; whether work remains.
    fn slice(&mut self) -> bool;
    /// Nothing is queued: drops the read paths' check if no tombstone is left.
    fn settle(&mut self);
}

/// How often a waiting reclaimer looks again.
const WAIT: Duration = Duration::from_millis(100);
/// Without the hook, the timer runs a slice this often.
const TICK: Duration = Duration::from_millis(1);

impl Reclaimer {
    /// Work was queued.
    fn queued(self, d: &mut impl Driver) -> Reclaimer {
        match self {
            Reclaimer::Idle if d.hook() => {
                d.wake();
                Reclaimer::Armed { timer: false }
            }
            Reclaimer::Idle => {
                // No event-loop hook (not seen on supported servers).
                d.arm(TICK);
                Reclaimer::Waiting
            }
            Reclaimer::Waiting if d.hook() => {
                d.wake();
                Reclaimer::Armed { timer: true }
            }
            Reclaimer::Parked => {
                d.wake();
                Reclaimer::Armed { timer: true }
            }
            s @ (Reclaimer::Waiting | Reclaimer::Armed { .. } | Reclaimer::Running { .. }) => s,
        }
    }

    /// The event loop is about to sleep (only while the hook is subscribed).
    fn before_sleep(self, d: &mut impl Driver) -> Reclaimer {
        match self {
            Reclaimer::Armed { timer } => {
                d.wake();
                Reclaimer::Running { timer }
            }
            Reclaimer::Running { timer } => {
                if d.may_run() && d.slice() {
                    d.wake();
                    return Reclaimer::Running { timer };
                }
                if !timer {
                    d.arm(Duration::ZERO);
                }
                Reclaimer::Parked
            }
            s @ (Reclaimer::Idle | Reclaimer::Parked | Reclaimer::Waiting) => s,
        }
    }

    /// The timer fired.
    fn timer(self, d: &mut impl Driver) -> Reclaimer {
        match self {
            Reclaimer::Armed { .. } => Reclaimer::Armed { timer: false },
            Reclaimer::Running { .. } => Reclaimer::Running { timer: false },
            Reclaimer::Parked if d.has_work() && d.may_run() => {
                d.wake();
                Reclaimer::Armed { timer: false }
            }
            Reclaimer::Parked => {
                d.unhook();
                Reclaimer::resume(d)
            }
            Reclaimer::Idle | Reclaimer::Waiting => Reclaimer::resume(d),
        }
    }

    /// Without the hook and without a timer: starts, waits, or rests.
    fn resume(d: &mut impl Driver) -> Reclaimer {
        if !d.has_work() {
            d.settle();
            return Reclaimer::Idle;
        }
        if !d.may_run() {
            d.arm(WAIT);
            return Reclaimer::Waiting;
        }
        if d.hook() {
            d.wake();
            return Reclaimer::Armed { timer: false };
        }
        if d.slice() {
            d.arm(TICK);
            return Reclaimer::Waiting;
        }
        Reclaimer::Idle
    }
}

/// Main thread only; read before and written after each event, so that a
/// transition's side effects run without the lock.
static STATE: Mutex<Reclaimer> = Mutex::new(Reclaimer::Idle);

fn state() -> MutexGuard<'static, Reclaimer> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Applies `event` to the reclaimer's state.
fn on(ctx: &Context, event: impl FnOnce(Reclaimer, &mut Server) -> Reclaimer) {
    let now = *state();
    let next = event(now, &mut Server(ctx));
    *state() = next;
}

/// The [`Driver`] of the running server.
struct Server<'a>(&'a Context);

impl Driver for Server<'_> {
    fn hook(&mut self) -> bool {
        subscribe(self.0, Some(before_sleep))
    }

    fn unhook(&mut self) {
        subscribe(self.0, None);
    }

    fn wake(&mut self) {
        extern "C" fn nothing(_: *mut c_void) {}
        // SAFETY: `nothing` ignores its argument; Redis calls it once on the main thread.
        unsafe {
            if let Some(f) = raw::RedisModule_EventLoopAddOneShot {
                f(Some(nothing), std::ptr::null_mut());
            }
        }
    }

    fn arm(&mut self, after: Duration) {
        self.0.create_timer(after, timer_fired, ());
    }

    fn has_work(&mut self) -> bool {
        !indexes::pending_dbs().is_empty()
    }

    fn may_run(&mut self) -> bool {
        let flags = self.0.get_flags();
        !flags.intersects(ContextFlags::SLAVE | ContextFlags::LOADING)
            && config::reclaim_budget_us() > 0
    }

    fn slice(&mut self) -> bool {
        run_slice(self.0)
    }

    fn settle(&mut self) {
        indexes::recheck_tombs();
    }
}

/// Subscribes `callback` to the EVENTLOOP server event (`None`: unsubscribes).
fn subscribe(ctx: &Context, callback: raw::RedisModuleEventCallback) -> bool {
    let event = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_EVENTLOOP,
        dataver: 1,
    };
    // SAFETY: `ctx` is a live module context; `before_sleep` has the signature
    // Redis expects and lives as long as the module.
    unsafe {
        raw::RedisModule_SubscribeToServerEvent
            .is_some_and(|f| f(ctx.ctx, event, callback) == raw::REDISMODULE_OK as c_int)
    }
}

fn timer_fired(ctx: &Context, _: ()) {
    guard::callback((), || on(ctx, |s, d| s.timer(d)));
}

extern "C" fn before_sleep(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    guard::callback((), || {
        if subevent == raw::REDISMODULE_SUBEVENT_EVENTLOOP_BEFORE_SLEEP {
            on(&Context::new(ctx), |s, d| s.before_sleep(d));
        }
    })
}

/// Keys taken off the queue per index lock; the slice deadline is checked
/// between chunks.
const CHUNK: usize = 32;

/// One slice over the databases with dead entries; whether work remains.
/// Step 5 when none does.
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
/// passes (false); then settles the database's tombstones if its queue is
/// empty and replicates the deletions.
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

/// Deletes `name` if it still holds a dead entry (it may have been
/// overwritten, deleted or expired since it was queued).
fn delete_dead(ctx: &Context, db: i32, name: &RedisString) -> bool {
    let key = EntryKey::open_write(ctx, name);
    let dead = key
        .entry()
        .is_some_and(|e| indexes::is_dead(db, name.as_slice(), e));
    if !dead {
        return false;
    }
    key.delete();
    drop(key);
    api::notify(ctx, NotifyEvent::GENERIC, c"del", name);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server whose answers the test sets, recording what was done.
    #[derive(Default)]
    struct Fake {
        no_hook: bool,
        work: bool,
        paused: bool,
        slices_left: usize,
        log: Vec<String>,
    }

    impl Driver for Fake {
        fn hook(&mut self) -> bool {
            self.log.push("hook".into());
            !self.no_hook
        }
        fn unhook(&mut self) {
            self.log.push("unhook".into());
        }
        fn wake(&mut self) {
            self.log.push("wake".into());
        }
        fn arm(&mut self, after: Duration) {
            self.log.push(format!("arm {}ms", after.as_millis()));
        }
        fn has_work(&mut self) -> bool {
            self.work
        }
        fn may_run(&mut self) -> bool {
            !self.paused
        }
        fn slice(&mut self) -> bool {
            self.log.push("slice".into());
            self.slices_left = self.slices_left.saturating_sub(1);
            self.work = self.slices_left > 0;
            self.work
        }
        fn settle(&mut self) {
            self.log.push("settle".into());
        }
    }

    fn take(f: &mut Fake) -> Vec<String> {
        std::mem::take(&mut f.log)
    }

    #[test]
    fn an_invalidation_is_reclaimed_in_slices_then_the_hook_retires() {
        let mut d = Fake {
            work: true,
            slices_left: 2,
            ..Fake::default()
        };
        let s = Reclaimer::Idle.queued(&mut d);
        assert_eq!(s, Reclaimer::Armed { timer: false });
        assert_eq!(take(&mut d), ["hook", "wake"]);
        assert_eq!(s.queued(&mut d), s, "already armed");
        let s = s.before_sleep(&mut d);
        assert_eq!(s, Reclaimer::Running { timer: false });
        assert_eq!(take(&mut d), ["wake"], "the reply goes out before a slice");
        let s = s.before_sleep(&mut d);
        assert_eq!(s, Reclaimer::Running { timer: false });
        assert_eq!(take(&mut d), ["slice", "wake"]);
        let s = s.before_sleep(&mut d);
        assert_eq!(s, Reclaimer::Parked);
        assert_eq!(take(&mut d), ["slice", "arm 0ms"]);
        assert_eq!(s.before_sleep(&mut d), Reclaimer::Parked);
        let s = s.timer(&mut d);
        assert_eq!(s, Reclaimer::Idle);
        assert_eq!(take(&mut d), ["unhook", "settle"]);
    }

    #[test]
    fn work_queued_while_parked_keeps_the_hook_and_one_timer() {
        let mut d = Fake {
            work: true,
            slices_left: 5,
            ..Fake::default()
        };
        let s = Reclaimer::Parked.queued(&mut d);
        assert_eq!(s, Reclaimer::Armed { timer: true });
        let s = s.before_sleep(&mut d).before_sleep(&mut d);
        assert_eq!(s, Reclaimer::Running { timer: true });
        d.paused = true;
        take(&mut d);
        let s = s.before_sleep(&mut d);
        assert_eq!(s, Reclaimer::Parked);
        assert!(take(&mut d).is_empty(), "its timer is still pending");
        d.paused = false;
        let s = s.timer(&mut d);
        assert_eq!(s, Reclaimer::Armed { timer: false });
        assert_eq!(take(&mut d), ["wake"], "the hook stays subscribed");
        assert_eq!(
            Reclaimer::Running { timer: true }.timer(&mut d),
            Reclaimer::Running { timer: false }
        );
    }

    #[test]
    fn a_reclaimer_that_may_not_run_waits_without_the_hook() {
        let mut d = Fake {
            work: true,
            paused: true,
            slices_left: 1,
            ..Fake::default()
        };
        let s = Reclaimer::Parked.timer(&mut d);
        assert_eq!(s, Reclaimer::Waiting);
        assert_eq!(take(&mut d), ["unhook", "arm 100ms"]);
        let s = s.timer(&mut d);
        assert_eq!(s, Reclaimer::Waiting);
        assert_eq!(take(&mut d), ["arm 100ms"]);
        d.paused = false;
        let s = s.timer(&mut d);
        assert_eq!(s, Reclaimer::Armed { timer: false });
        assert_eq!(take(&mut d), ["hook", "wake"]);
        let mut d = Fake {
            work: true,
            paused: true,
            ..Fake::default()
        };
        let s = Reclaimer::Waiting.queued(&mut d);
        assert_eq!(s, Reclaimer::Armed { timer: true }, "its timer still runs");
    }

    #[test]
    fn without_a_hook_the_timer_runs_the_slices() {
        let mut d = Fake {
            no_hook: true,
            work: true,
            slices_left: 2,
            ..Fake::default()
        };
        let s = Reclaimer::Idle.queued(&mut d);
        assert_eq!(s, Reclaimer::Waiting);
        assert_eq!(take(&mut d), ["hook", "arm 1ms"]);
        assert_eq!(s.queued(&mut d), Reclaimer::Waiting);
        take(&mut d);
        let s = s.timer(&mut d);
        assert_eq!(s, Reclaimer::Waiting);
        assert_eq!(take(&mut d), ["hook", "slice", "arm 1ms"]);
        let s = s.timer(&mut d);
        assert_eq!(s, Reclaimer::Idle);
        assert_eq!(take(&mut d), ["hook", "slice"]);
    }
}
