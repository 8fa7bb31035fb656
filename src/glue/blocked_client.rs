//! The blocked-client mechanism the waiting commands share: FETCH ... WAIT
//! (`blocking`) and the cluster-wide invalidations (`cluster`).
//!
//! A client is blocked with no server timeout (each owner runs its own timer:
//! on Redis 7.0 a server timeout that passes in the iteration that also
//! unblocked the client loses the reply). The owner keeps the handle in its
//! registry and releases it exactly once, with the answer its reply callback
//! writes. What the server can do meanwhile is handled here once:
//! - `CLIENT UNBLOCK` while the client waits: the owner's `unblocked` reply,
//!   and the handle leaves the registry and is released;
//! - the client leaves while it waits: the handle leaves and is released;
//! - `CLIENT UNBLOCK` (or a disconnect) in the same event-loop iteration as
//!   the owner's release: Redis 7.0 and Valkey skip the timeout callback of a
//!   client the module has already unblocked, call the disconnect callback,
//!   then forget the client before the reply callback runs
//!   (`unblockClientFromModule`). The disconnect callback is called only then
//!   (the server clears it before a normal reply or a timeout), so the answer
//!   handed over is written there; to a client going away it is dropped with
//!   the client.

use std::ffi::{c_int, c_void};

use redis_module::{raw, Context};

use super::guard;

/// A blocked client's handle (a `RedisModuleBlockedClient` address), used on
/// the main thread only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Handle(pub usize);

/// What a waiting command tells this mechanism. `Self` is the answer handed
/// over at release.
pub trait Waiting: Sized + 'static {
    /// Writes the reply for `answer` (`None`: released without one).
    fn reply(ctx: &Context, answer: Option<&Self>);
    /// Writes the reply of a client `CLIENT UNBLOCK` freed while it waited.
    fn unblocked(ctx: &Context);
    /// Removes `handle` from the owner's registry; whether it was there.
    fn forget(handle: Handle) -> bool;
}

const OK: c_int = raw::REDISMODULE_OK as c_int;
const ERR: c_int = raw::REDISMODULE_ERR as c_int;

/// Blocks the calling client (no server timeout); `None` when Redis refused.
pub fn block<W: Waiting>(ctx: &Context) -> Option<Handle> {
    // SAFETY: the callbacks have the signatures Redis expects; the handle stays
    // valid until it is passed to UnblockClient, exactly once (`release`).
    unsafe {
        let block = raw::RedisModule_BlockClient?;
        let bc = block(
            ctx.ctx,
            Some(on_reply::<W>),
            Some(on_timeout::<W>),
            Some(free::<W>),
            0,
        );
        if bc.is_null() {
            return None;
        }
        if let Some(set) = raw::RedisModule_SetDisconnectCallback {
            set(bc, Some(on_disconnect::<W>));
        }
        Some(Handle(bc as usize))
    }
}

/// Releases `handle`, which has just left its owner's registry, with the
/// answer its reply callback writes.
pub fn release<W: Waiting>(handle: Handle, answer: Option<W>) {
    let data = answer.map_or(std::ptr::null_mut(), |a| {
        Box::into_raw(Box::new(a)).cast::<c_void>()
    });
    // SAFETY: the handle came from BlockClient and left the registry, so this
    // is its only release; Redis owns `data` from here (freed by `free`).
    unsafe {
        match raw::RedisModule_UnblockClient {
            Some(unblock) => {
                unblock(handle.0 as *mut raw::RedisModuleBlockedClient, data);
            }
            None if !data.is_null() => drop(Box::from_raw(data.cast::<W>())),
            None => {}
        }
    }
}

/// Releases `handle` without an answer if it was still registered.
fn drop_if_waiting<W: Waiting>(handle: Handle) {
    if W::forget(handle) {
        release::<W>(handle, None);
    }
}

/// The answer handed to UnblockClient, in a reply or disconnect callback.
fn answer<'a, W: Waiting>(ctx: &Context) -> Option<&'a W> {
    // SAFETY: in these callbacks the private data is the Box<W> passed to
    // UnblockClient (or NULL), alive until `free` runs after them.
    unsafe {
        raw::RedisModule_GetBlockedClientPrivateData.and_then(|f| f(ctx.ctx).cast::<W>().as_ref())
    }
}

extern "C" fn on_reply<W: Waiting>(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    guard::callback(ERR, || {
        let ctx = Context::new(ctx);
        W::reply(&ctx, answer::<W>(&ctx));
        OK
    })
}

/// Only `CLIENT UNBLOCK` gets here (no server timeout).
extern "C" fn on_timeout<W: Waiting>(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    guard::callback(ERR, || {
        let ctx = Context::new(ctx);
        W::unblocked(&ctx);
        // SAFETY: inside a timeout callback Redis hands this client's handle.
        let bc = unsafe { raw::RedisModule_GetBlockedClientHandle.map(|f| f(ctx.ctx)) };
        if let Some(bc) = bc.filter(|b| !b.is_null()) {
            drop_if_waiting::<W>(Handle(bc as usize));
        }
        OK
    })
}

extern "C" fn on_disconnect<W: Waiting>(
    ctx: *mut raw::RedisModuleCtx,
    bc: *mut raw::RedisModuleBlockedClient,
) {
    guard::callback((), || {
        let handle = Handle(bc as usize);
        if W::forget(handle) {
            release::<W>(handle, None);
        } else {
            // Released already in this iteration: see the module notes.
            let ctx = Context::new(ctx);
            W::reply(&ctx, answer::<W>(&ctx));
        }
    })
}

extern "C" fn free<W: Waiting>(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    guard::callback((), || {
        if !data.is_null() {
            // SAFETY: `data` is the Box<W> given to UnblockClient, freed once.
            drop(unsafe { Box::from_raw(data.cast::<W>()) });
        }
    })
}
