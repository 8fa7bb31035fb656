//! Panics must never cross into redis-server: every command handler and every
//! callback runs inside `catch_unwind`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::{Context, RedisError, RedisResult, RedisString};

use crate::errors;

/// Runs a command handler; a panic becomes `ERR internal error`, and error
/// strings without a Redis code get one.
pub fn command(
    ctx: &Context,
    args: Vec<RedisString>,
    handler: fn(&Context, Vec<RedisString>) -> RedisResult,
) -> RedisResult {
    match catch_unwind(AssertUnwindSafe(|| handler(ctx, args))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(errors::with_code(e)),
        Err(_) => Err(RedisError::Str(errors::INTERNAL)),
    }
}

/// Runs a callback body; a panic yields `fallback`.
pub fn callback<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// Wraps a handler `fn(&Context, Vec<RedisString>) -> RedisResult` for the command table.
#[macro_export]
macro_rules! guarded {
    ($handler:path) => {
        |ctx: &redis_module::Context, args: Vec<redis_module::RedisString>| {
            $crate::glue::guard::command(ctx, args, $handler)
        }
    };
}
