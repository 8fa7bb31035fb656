//! Panics must never cross into redis-server: every command handler and every
//! callback runs inside `catch_unwind`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::{Context, RedisResult, RedisString};

use crate::errors::{Error, Reply};

/// Runs a command handler; a panic becomes `ERR internal error`, an error its
/// reply (see `errors`).
pub fn command(
    ctx: &Context,
    args: Vec<RedisString>,
    handler: fn(&Context, Vec<RedisString>) -> Reply,
) -> RedisResult {
    catch_unwind(AssertUnwindSafe(|| handler(ctx, args)))
        .unwrap_or(Err(Error::Internal))
        .map_err(Into::into)
}

/// Runs a callback body; a panic yields `fallback`.
pub fn callback<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// Wraps a handler `fn(&Context, Vec<RedisString>) -> errors::Reply` for the command table.
#[macro_export]
macro_rules! guarded {
    ($handler:path) => {
        |ctx: &redis_module::Context, args: Vec<redis_module::RedisString>| {
            $crate::glue::guard::command(ctx, args, $handler)
        }
    };
}
