//! The Redis-agnostic heart of tcache: entries and their codec, the per-database
//! indexes, option parsing and index verification. Nothing here imports
//! `redis_module`, so `cargo test` covers it with the system allocator.

pub mod cluster;
pub mod dead;
pub mod entry;
pub mod gate;
pub mod index;
pub mod lease;
pub mod options;
pub mod perm;
pub mod slab;
pub mod space;
pub mod tagset;
pub mod verify;
