//! TCACHE.GET and PERM.CHECK, the hottest reads, registered straight with
//! `RM_CreateCommand` instead of through the command table: they read `argv`
//! in place, where the crate's wrapper builds a `Vec<RedisString>` and
//! retains and releases every argument, a measurable share of a command that
//! costs about a microsecond. Same contract, same guard against panics.

use std::ffi::{c_int, c_long, CString};

use redis_module::{raw, Context, RedisError};

use super::cache::{is_stale_now, reply_value};
use super::is_dead;
use crate::core::entry::{Entry, Kind};
use crate::core::perm;
use crate::errors::Error;
use crate::glue::api;
use crate::glue::guard;
use crate::glue::raw::Arg;
use crate::state::stats;

type Argv = *mut *mut raw::RedisModuleString;

/// Registers both commands (key positions 1, 1, 1).
pub fn register(ctx: &Context) -> Result<(), String> {
    let table: [(&str, raw::RedisModuleCmdFunc); 2] = [
        ("tcache.get", Some(tcache_get)),
        ("perm.check", Some(perm_check)),
    ];
    let flags = CString::new("readonly fast").map_err(|e| e.to_string())?;
    for (name, handler) in table {
        let cname = CString::new(name).map_err(|e| e.to_string())?;
        // SAFETY: called from OnLoad with its context; both strings are
        // NUL-terminated and Redis copies them.
        let status = unsafe {
            raw::RedisModule_CreateCommand.map_or(raw::REDISMODULE_ERR as c_int, |f| {
                f(ctx.ctx, cname.as_ptr(), handler, flags.as_ptr(), 1, 1, 1)
            })
        };
        if status != raw::REDISMODULE_OK as c_int {
            return Err(format!("cannot register {name}"));
        }
    }
    Ok(())
}

/// Runs `body` with the context and the arguments; a panic replies
/// `ERR internal error`, an `Err` replies the error.
fn run(
    ctx: *mut raw::RedisModuleCtx,
    argv: Argv,
    argc: c_int,
    body: fn(&Context, &[Arg]) -> Result<(), Error>,
) -> c_int {
    let context = Context::new(ctx);
    // SAFETY: Redis passes `argc` strings in `argv`, alive for this call.
    let args = unsafe { Arg::all(argv, argc) };
    let result = guard::callback(Err(Error::Internal), || body(&context, args));
    if let Err(e) = result {
        context.reply(Err(RedisError::from(e)));
    }
    raw::REDISMODULE_OK as c_int
}

/// The live entry under `name`: `None` when missing or dead, WRONGTYPE for
/// another type. The key stays open for the call.
fn with_entry<R>(
    ctx: &Context,
    name: Arg,
    f: impl FnOnce(Option<&Entry>) -> Result<R, Error>,
) -> Result<R, Error> {
    let key = api::EntryKey::open_arg(ctx, name, raw::REDISMODULE_READ);
    let e = key.entry();
    if e.is_none() && key.holds_other_type() {
        return Err(Error::WrongType);
    }
    let live = e.filter(|e| !is_dead(ctx, name.bytes(), e));
    f(live)
}

extern "C" fn tcache_get(ctx: *mut raw::RedisModuleCtx, argv: Argv, argc: c_int) -> c_int {
    run(ctx, argv, argc, |ctx, args| {
        if args.len() != 2 {
            return Err(Error::WrongArity);
        }
        with_entry(ctx, args[1], |e| {
            match e {
                // A stale entry (soft-expired) reads as a miss outside FETCH.
                Some(e) if !is_stale_now(e) => {
                    stats::HITS.incr();
                    reply_value(ctx, e);
                }
                _ => {
                    stats::MISSES.incr();
                    raw::reply_with_null(ctx.ctx);
                }
            }
            Ok(())
        })
    })
}

extern "C" fn perm_check(ctx: *mut raw::RedisModuleCtx, argv: Argv, argc: c_int) -> c_int {
    run(ctx, argv, argc, |ctx, args| {
        if args.len() < 3 {
            return Err(Error::WrongArity);
        }
        with_entry(ctx, args[1], |e| {
            let e = match e {
                Some(e) if e.kind == Kind::Perm => e,
                Some(_) => return Err(Error::WrongType),
                None => {
                    // Not cached is never reported as denied: the caller asks its database.
                    stats::PERM_MISSES.incr();
                    raw::reply_with_null(ctx.ctx);
                    return Ok(());
                }
            };
            stats::PERM_HITS.incr();
            let asked = &args[2..];
            let granted = |p: Arg| i64::from(perm::granted(e.perms(), p.bytes()));
            if asked.len() == 1 {
                raw::reply_with_long_long(ctx.ctx, granted(asked[0]));
            } else {
                raw::reply_with_array(ctx.ctx, asked.len() as c_long);
                for p in asked {
                    raw::reply_with_long_long(ctx.ctx, granted(*p));
                }
            }
            Ok(())
        })
    })
}
