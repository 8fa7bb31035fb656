//! Cluster-wide invalidations over the cluster bus.
//!
//! The node a client sends `TCACHE.INVALTAG` (or another cluster-wide command)
//! to is its coordinator: it applies the command itself, blocks the client
//! (never the server), sends a request to every other slot owner and resends
//! it until the *current* owner of every one of the 16384 slots has confirmed
//! it, then replies with the sum of the counts. Past `tcache.cluster-timeout-ms`
//! the reply is an `UNCONFIRMED` error naming the slot ranges not confirmed.
//! Messages may be lost or duplicated (acks carry a node's running count per
//! request, so a duplicate never counts twice), and a failover or migration
//! during the command shows up as a slot whose current owner has not answered
//! yet: it is asked in turn.

use std::cell::Cell;
use std::os::raw::{c_char, c_uchar, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use redis_module::{raw, Context, ContextFlags, RedisString, RedisValue};

use super::api;
use super::blocked_client::{self, Handle, Waiting};
use super::guard;
use crate::core::cluster::{
    Decision, Msg, NodeId, OpId, OpKind, Progress, SlotMap, Standing, NODE_ID_LEN,
};
use crate::errors::{Error, Reply};
use crate::state::cluster::{self as registry, Pending};
use crate::state::config;

/// Our cluster-bus message type. Type ids are shared with other modules, so
/// every payload also starts with a magic and a version (`core::cluster`).
const MSG_TYPE: u8 = 0x74;
/// How often the coordinator looks at the commands in flight, ms.
const TICK_MS: i64 = 50;
/// How long it waits for an answer before asking a slot owner again, ms.
const RESEND_MS: i64 = 250;

/// Applies a cluster-wide command on this node only (the command's local
/// implementation, from the commands layer).
pub type ApplyFn = fn(&Context, OpKind, Vec<RedisString>) -> Reply;

static APPLY: OnceLock<ApplyFn> = OnceLock::new();
static CLUSTER_MODE: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Set while this node applies a request from another coordinator.
    static REMOTE: Cell<bool> = const { Cell::new(false) };
}

/// What a blocked client is answered with.
enum Outcome {
    Count(i64),
    Error(String),
}

/// Registers the message receiver (a no-op outside cluster mode) and the
/// local implementation used for requests.
pub fn install(ctx: &Context, apply: ApplyFn) {
    let _ = APPLY.set(apply);
    let cluster = ctx.get_flags().contains(ContextFlags::CLUSTER);
    CLUSTER_MODE.store(cluster, Ordering::Relaxed);
    if !cluster {
        return;
    }
    // SAFETY: `on_message` has the receiver signature; registering only records it.
    unsafe {
        if let Some(register) = raw::RedisModule_RegisterClusterMessageReceiver {
            register(ctx.ctx, MSG_TYPE, Some(on_message));
        }
    }
}

/// How long a node remembers an invalidation it applied, so that an entry
/// moved in meanwhile arrives dead: twice the coordination timeout, at least
/// 10 s (a key can only be in flight while the command runs).
fn recent_keep_ms() -> i64 {
    (2 * config::cluster_timeout_ms()).max(10_000)
}

/// How long a node remembers a request it applied, to answer a resent one
/// from memory: a coordinator resends for at most its timeout.
fn remember_ms() -> i64 {
    (2 * config::cluster_timeout_ms()).max(60_000)
}

/// Notes an invalidation applied here (callers: cluster mode only).
pub fn note_applied(kind: OpKind, names: &[&[u8]]) {
    let now = api::now_ms();
    registry::with(|c| {
        c.recent.prune(now, recent_keep_ms());
        c.recent.note(kind, names, now);
    });
}

/// Whether an entry that just arrived by RESTORE (MIGRATE, resharding) is
/// named by an invalidation applied here lately (cluster mode only): it
/// may have left its source before the source applied it.
pub fn recently_invalidated<'a>(
    perm: bool,
    key: &[u8],
    labels: impl Iterator<Item = &'a [u8]>,
) -> bool {
    if !coordinated() {
        return false;
    }
    let now = api::now_ms();
    registry::with(|c| {
        c.recent.prune(now, recent_keep_ms());
        c.recent.names(perm, key, labels)
    })
}

/// Whether invalidations are coordinated across the cluster (INFO).
pub fn coordinated() -> bool {
    CLUSTER_MODE.load(Ordering::Relaxed)
}

/// Whether this node is applying another coordinator's request right now
/// (such an application does not publish on the invalidation channel: the
/// coordinator does, once).
pub fn applying_remote() -> bool {
    REMOTE.with(|r| r.get())
}

/// Whether a command run in `ctx` must be coordinated: cluster mode, a
/// client's call (not the primary's stream, not AOF loading, not a request
/// from another coordinator).
pub fn coordinates(ctx: &Context) -> bool {
    coordinated()
        && !applying_remote()
        && !ctx
            .get_flags()
            .intersects(ContextFlags::REPLICATED | ContextFlags::LOADING)
}

/// Starts coordinating a command already applied here (`local` entries):
/// blocks the client and returns `NoReply`, or replies at once when this node
/// owns every slot.
pub fn start(ctx: &Context, kind: OpKind, user: Vec<u8>, args: Vec<Vec<u8>>, local: i64) -> Reply {
    let me = my_id().ok_or(Error::Internal)?;
    let map = slot_map(ctx);
    let mut progress = Progress::new();
    progress.record(me, local, map.owned_by(&me));
    let ask = match progress.standing(&map) {
        Standing::Done(n) => return Ok(RedisValue::Integer(n)),
        Standing::Waiting { ask, .. } => ask,
    };
    let timeout_ms = config::cluster_timeout_ms();
    let bc = blocked_client::block::<Outcome>(ctx).ok_or(Error::Internal)?;
    let now = api::now_ms();
    let op = registry::with(|c| {
        c.next += 1;
        let op = OpId {
            node: me,
            n: c.next,
        };
        c.pending.insert(
            op.n,
            Pending {
                op,
                kind,
                user,
                args,
                progress,
                deadline_ms: now + timeout_ms,
                timeout_ms,
                last_sent_ms: now,
                client: bc.0,
            },
        );
        op
    });
    let request = registry::with(|c| c.pending.get(&op.n).map(request_of));
    if let Some(msg) = request {
        for node in &ask {
            send(ctx, node, &msg);
        }
    }
    tick_soon(ctx);
    Ok(RedisValue::NoReply)
}

fn request_of(p: &Pending) -> Vec<u8> {
    Msg::Request {
        op: p.op,
        kind: p.kind,
        user: p.user.clone(),
        args: p.args.clone(),
    }
    .encode()
}

/// This node's id (40 bytes).
fn my_id() -> Option<NodeId> {
    // SAFETY: GetMyClusterID returns NULL or this node's NUL-terminated id,
    // owned by the server; 40 bytes are copied out at once.
    unsafe {
        let p = raw::RedisModule_GetMyClusterID?();
        if p.is_null() {
            return None;
        }
        std::slice::from_raw_parts(p.cast::<u8>(), NODE_ID_LEN)
            .try_into()
            .ok()
    }
}

/// Who owns which slots, from `CLUSTER SLOTS` on this node.
fn slot_map(ctx: &Context) -> SlotMap {
    let text = |v: &RedisValue| -> Option<Vec<u8>> {
        match v {
            RedisValue::SimpleString(s) | RedisValue::BulkString(s) => Some(s.as_bytes().to_vec()),
            RedisValue::BulkRedisString(s) => Some(s.as_slice().to_vec()),
            RedisValue::StringBuffer(b) => Some(b.clone()),
            _ => None,
        }
    };
    let int = |v: &RedisValue| match v {
        RedisValue::Integer(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let mut map = SlotMap::default();
    let Ok(RedisValue::Array(ranges)) = ctx.call("CLUSTER", &["SLOTS"]) else {
        return map;
    };
    for r in &ranges {
        let RedisValue::Array(r) = r else { continue };
        let (Some(a), Some(b)) = (r.first().and_then(int), r.get(1).and_then(int)) else {
            continue;
        };
        let Some(RedisValue::Array(primary)) = r.get(2) else {
            continue;
        };
        let Some(id) = primary.get(2).and_then(text) else {
            continue;
        };
        if let Ok(id) = NodeId::try_from(id.as_slice()) {
            map.0.push((a, b, id));
        }
    }
    map
}

fn send(ctx: &Context, node: &NodeId, payload: &[u8]) {
    let mut target = [0u8; NODE_ID_LEN + 1];
    target[..NODE_ID_LEN].copy_from_slice(node);
    let Ok(len) = u32::try_from(payload.len()) else {
        return;
    };
    // SAFETY: `target` is a NUL-terminated node id and `payload` a live buffer
    // of `len` bytes; the server copies both into its message.
    unsafe {
        if let Some(f) = raw::RedisModule_SendClusterMessage {
            f(
                ctx.ctx,
                target.as_ptr().cast::<c_char>(),
                MSG_TYPE,
                payload.as_ptr().cast::<c_char>(),
                len,
            );
        }
    }
}

extern "C" fn on_message(
    ctx: *mut raw::RedisModuleCtx,
    sender: *const c_char,
    _type: u8,
    payload: *const c_uchar,
    len: u32,
) {
    guard::callback((), || {
        if sender.is_null() || (payload.is_null() && len > 0) {
            return;
        }
        // SAFETY: the server hands the sender's 40-byte id (no NUL) and the
        // payload of `len` bytes, both alive for this call.
        let (sender, payload) = unsafe {
            let s: Option<NodeId> = std::slice::from_raw_parts(sender.cast::<u8>(), NODE_ID_LEN)
                .try_into()
                .ok();
            let p = if len == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(payload, len as usize)
            };
            (s, p)
        };
        let (Some(sender), Some(msg)) = (sender, Msg::decode(payload)) else {
            return;
        };
        let ctx = Context::new(ctx);
        match msg {
            Msg::Request {
                op,
                kind,
                user,
                args,
            } => on_request(&ctx, sender, op, kind, &user, args),
            Msg::Ack { op, result, owned } => {
                if my_id() != Some(op.node) {
                    return;
                }
                let failed = registry::with(|c| {
                    let p = c.pending.get_mut(&op.n)?;
                    match result {
                        Ok(n) => {
                            p.progress.record(sender, n, owned);
                            None
                        }
                        Err(e) => c.pending.remove(&op.n).map(|p| (p.client, e)),
                    }
                });
                if let Some((client, e)) = failed {
                    let text = String::from_utf8_lossy(&e).into_owned();
                    finish(client, Outcome::Error(text));
                }
                settle(&ctx);
            }
        }
    })
}

/// Applies another coordinator's request (once per slot ownership) and answers it.
fn on_request(
    ctx: &Context,
    sender: NodeId,
    op: OpId,
    kind: OpKind,
    user: &[u8],
    args: Vec<Vec<u8>>,
) {
    if !ctx.get_flags().contains(ContextFlags::MASTER) {
        return;
    }
    let Some(me) = my_id() else { return };
    let owned = slot_map(ctx).owned_by(&me);
    let result = match registry::with(|c| c.applied.decide(&op, &owned)) {
        Decision::Answer(n) => Ok(n),
        Decision::Apply => match apply_remote(ctx, kind, user, args) {
            Ok(n) => {
                let (now, keep) = (api::now_ms(), remember_ms());
                Ok(registry::with(|c| {
                    c.applied.applied(op, n, &owned, now, keep)
                }))
            }
            Err(text) => Err(text.into_bytes()),
        },
    };
    send(ctx, &sender, &Msg::Ack { op, result, owned }.encode());
}

fn apply_remote(
    ctx: &Context,
    kind: OpKind,
    user: &[u8],
    args: Vec<Vec<u8>>,
) -> Result<i64, String> {
    let apply = APPLY.get().ok_or_else(|| Error::Internal.to_string())?;
    if !api::user_exists(ctx, user) {
        return Err(Error::UnknownUser(user.to_vec()).to_string());
    }
    let argv: Vec<RedisString> = args.iter().map(|a| api::string(ctx, a)).collect();
    REMOTE.with(|r| r.set(true));
    let reply = api::as_user(user, || apply(ctx, kind, argv));
    REMOTE.with(|r| r.set(false));
    match reply {
        Ok(RedisValue::Integer(n)) => Ok(n),
        Ok(_) => Ok(0),
        Err(e) => Err(e.to_string()),
    }
}

/// Finishes every command whose slots are all confirmed, fails those past
/// their deadline, and asks again the owners that have not answered lately.
fn settle(ctx: &Context) {
    let now = api::now_ms();
    let map = slot_map(ctx);
    let mut done: Vec<(usize, Outcome)> = Vec::new();
    let mut resend: Vec<(Vec<NodeId>, Vec<u8>)> = Vec::new();
    registry::with(|c| {
        let mut gone = Vec::new();
        for (n, p) in c.pending.iter_mut() {
            match p.progress.standing(&map) {
                Standing::Done(count) => {
                    gone.push(*n);
                    done.push((p.client, Outcome::Count(count)));
                }
                Standing::Waiting { unconfirmed, ask } => {
                    if now >= p.deadline_ms {
                        gone.push(*n);
                        done.push((p.client, Outcome::Error(unconfirmed_text(p, &unconfirmed))));
                    } else if now - p.last_sent_ms >= RESEND_MS && !ask.is_empty() {
                        p.last_sent_ms = now;
                        resend.push((ask, request_of(p)));
                    }
                }
            }
        }
        for n in gone {
            c.pending.remove(&n);
        }
    });
    for (nodes, msg) in resend {
        for node in &nodes {
            send(ctx, node, &msg);
        }
    }
    for (client, outcome) in done {
        finish(client, outcome);
    }
}

fn unconfirmed_text(p: &Pending, slots: &crate::core::cluster::SlotSet) -> String {
    let name = match p.kind {
        OpKind::InvalTag => "TCACHE.INVALTAG",
        OpKind::StaleTag => "TCACHE.STALETAG",
        OpKind::InvalPrefix => "TCACHE.INVALPREFIX",
        OpKind::InvalRole => "PERM.INVALROLE",
        OpKind::InvalAll => "PERM.INVALALL",
    };
    Error::Unconfirmed {
        command: name,
        timeout_ms: p.timeout_ms,
        slots: slots.ranges_text(),
    }
    .to_string()
}

/// Hands `outcome` to the blocked client; its reply callback answers.
fn finish(client: usize, outcome: Outcome) {
    blocked_client::release(Handle(client), Some(outcome));
}

fn tick_soon(ctx: &Context) {
    let start = registry::with(|c| !std::mem::replace(&mut c.ticking, true));
    if !start {
        return;
    }
    // SAFETY: `on_tick` has the timer signature and takes no data.
    unsafe {
        if let Some(f) = raw::RedisModule_CreateTimer {
            f(ctx.ctx, TICK_MS, Some(on_tick), std::ptr::null_mut());
        }
    }
}

extern "C" fn on_tick(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard::callback((), || {
        let ctx = Context::new(ctx);
        registry::with(|c| c.ticking = false);
        settle(&ctx);
        if registry::with(|c| !c.pending.is_empty()) {
            tick_soon(&ctx);
        }
    })
}

impl Waiting for Outcome {
    fn reply(ctx: &Context, outcome: Option<&Outcome>) {
        let reply = match outcome {
            Some(Outcome::Count(n)) => Ok(RedisValue::Integer(*n)),
            Some(Outcome::Error(e)) => Err(Error::Relayed(e.clone())),
            None => Err(Error::Internal),
        };
        ctx.reply(reply.map_err(Into::into));
    }

    /// What `CLIENT UNBLOCK` leaves: applied where confirmed so far.
    fn unblocked(ctx: &Context) {
        ctx.reply(Err(Error::UnblockedUnconfirmed.into()));
    }

    /// Drops the command of a client that left or was unblocked.
    fn forget(handle: Handle) -> bool {
        registry::with(|c| {
            let before = c.pending.len();
            c.pending.retain(|_, p| p.client != handle.0);
            before != c.pending.len()
        })
    }
}
