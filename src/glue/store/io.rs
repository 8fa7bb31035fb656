//! What the type callbacks need from an RDB/AOF IO context or a key-option
//! context: the database, the key name, AOF emission, IO error logs. Each
//! trusts the raw pointer Redis handed to the running callback, so each is an
//! `unsafe fn`.

use std::ffi::c_char;

use redis_module::{raw, RedisString};

use crate::glue::raw::cstr;

/// The database of the key an RDB/AOF callback is working on (0 if unknown).
///
/// # Safety
/// `io` must be the live IO context Redis passed to the running callback.
pub unsafe fn db_of_io(io: *mut raw::RedisModuleIO) -> i32 {
    // SAFETY: `io` is the live IO context Redis passed to the callback.
    unsafe { raw::RedisModule_GetDbIdFromIO.map_or(0, |f| f(io)) }
}

/// Emits `TCACHE.APPLY key blob` into an AOF rewrite.
///
/// # Safety
/// `aof` and `key` must be the ones the running aof_rewrite callback received.
pub unsafe fn emit_aof_apply(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    blob: &[u8],
) {
    // SAFETY: `aof` and `key` come from the aof_rewrite callback; "sb" matches
    // a RedisModuleString and a (pointer, length) buffer.
    unsafe {
        if let Some(emit) = raw::RedisModule_EmitAOF {
            emit(
                aof,
                cstr(b"TCACHE.APPLY\0"),
                cstr(b"sb\0"),
                key,
                blob.as_ptr().cast::<c_char>(),
                blob.len(),
            );
        }
    }
}

/// Emits `TCACHE.GATE.SET name schema [PREFIX prefix]` into an AOF rewrite.
///
/// # Safety
/// `aof` must be the IO context the running aof_rewrite callback received.
pub unsafe fn emit_aof_gate(
    aof: *mut raw::RedisModuleIO,
    name: &[u8],
    schema: &[u8],
    prefix: Option<&[u8]>,
) {
    // SAFETY: `aof` comes from the aof_rewrite callback; each "b" is a
    // (pointer, length) buffer alive for the call, "c" a NUL-terminated string.
    unsafe {
        let Some(emit) = raw::RedisModule_EmitAOF else {
            return;
        };
        let cmd = cstr(b"TCACHE.GATE.SET\0");
        match prefix {
            None => emit(
                aof,
                cmd,
                cstr(b"bb\0"),
                name.as_ptr().cast::<c_char>(),
                name.len(),
                schema.as_ptr().cast::<c_char>(),
                schema.len(),
            ),
            Some(p) => emit(
                aof,
                cmd,
                cstr(b"bbcb\0"),
                name.as_ptr().cast::<c_char>(),
                name.len(),
                schema.as_ptr().cast::<c_char>(),
                schema.len(),
                cstr(b"PREFIX\0"),
                p.as_ptr().cast::<c_char>(),
                p.len(),
            ),
        }
    }
}

/// Logs a warning on an RDB/AOF IO context.
///
/// # Safety
/// `io` must be the live IO context Redis passed to the running callback.
pub unsafe fn log_io_warning(io: *mut raw::RedisModuleIO, msg: &str) {
    let msg: String = msg.chars().filter(|c| *c != '\0').collect();
    let Ok(c) = std::ffi::CString::new(msg) else {
        return;
    };
    // SAFETY: "%s" with one NUL-terminated string; `io` is the callback's IO.
    unsafe {
        if let Some(log) = raw::RedisModule_LogIOError {
            log(io, cstr(b"warning\0"), cstr(b"%s\0"), c.as_ptr());
        }
    }
}

/// The key name and database of a type callback's option context.
///
/// # Safety
/// `ctx` must be the option context of the running callback, and the name
/// must not be used after that callback returns.
pub unsafe fn opt_ctx_key<'a>(ctx: *mut raw::RedisModuleKeyOptCtx) -> Option<(&'a [u8], i32)> {
    // SAFETY: `ctx` is the option context of the running callback; the name it
    // returns lives at least as long as that callback, and the slice is used
    // only inside it.
    unsafe {
        let name = raw::RedisModule_GetKeyNameFromOptCtx?(ctx);
        if name.is_null() {
            return None;
        }
        let db = raw::RedisModule_GetDbIdFromOptCtx?(ctx);
        Some((RedisString::string_as_slice(name), db))
    }
}

/// The name of the key an RDB/AOF callback is working on, when the server
/// says (DUMP, MIGRATE, RDB save all do).
///
/// # Safety
/// `io` must be the live IO context of the running callback, and the name
/// must not be used after that callback returns.
pub unsafe fn key_of_io<'a>(io: *mut raw::RedisModuleIO) -> Option<&'a [u8]> {
    // SAFETY: the caller's promise; the server owns the returned string.
    unsafe {
        let name = raw::RedisModule_GetKeyNameFromIO?(io);
        if name.is_null() {
            return None;
        }
        Some(RedisString::string_as_slice(name))
    }
}
