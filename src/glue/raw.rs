//! Byte views of the raw strings Redis hands to commands and callbacks, and
//! static C strings for the variadic calls.

use std::ffi::{c_char, c_int, CStr};
use std::marker::PhantomData;

use redis_module::{raw, RedisString};

/// A pointer to a NUL-terminated static string.
pub const fn cstr(s: &'static [u8]) -> *const c_char {
    s.as_ptr().cast()
}

/// The bytes of a string Redis handed to a command or a callback.
///
/// # Safety
/// `s` must be a live string, and the slice must not outlive it.
pub unsafe fn bytes_of<'a>(s: *const raw::RedisModuleString) -> &'a [u8] {
    RedisString::string_as_slice(s)
}

/// A C string from an event name.
///
/// # Safety
/// `p` must be NULL or a NUL-terminated string alive for the returned slice.
pub unsafe fn event_name<'a>(p: *const c_char) -> &'a [u8] {
    if p.is_null() {
        return b"";
    }
    // SAFETY: the caller's promise.
    unsafe { CStr::from_ptr(p) }.to_bytes()
}

/// A command argument as Redis passed it in `argv`: alive for the command's
/// call (`'a`), read in place without the crate's retain/release.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Arg<'a>(
    *mut raw::RedisModuleString,
    PhantomData<&'a raw::RedisModuleString>,
);

impl<'a> Arg<'a> {
    /// The arguments of a command call.
    ///
    /// # Safety
    /// `argv` must be NULL or hold `argc` live strings for all of `'a`.
    pub unsafe fn all(argv: *mut *mut raw::RedisModuleString, argc: c_int) -> &'a [Arg<'a>] {
        match usize::try_from(argc) {
            // SAFETY: the caller's promise; `Arg` is a transparent pointer.
            Ok(n) if !argv.is_null() => unsafe { std::slice::from_raw_parts(argv.cast(), n) },
            _ => &[],
        }
    }

    /// The argument's bytes.
    pub fn bytes(self) -> &'a [u8] {
        // SAFETY: the string is alive for `'a` (see `Arg::all`).
        unsafe { bytes_of(self.0) }
    }

    /// The raw string, for module API calls made during the command.
    pub fn as_ptr(self) -> *mut raw::RedisModuleString {
        self.0
    }
}
