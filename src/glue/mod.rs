//! The Redis glue: everything that talks to the server's module API beyond
//! what the `redis_module` crate wraps — key access, ACL checks, replication
//! and AOF emission (`api`), the data type and its persistence (`store`),
//! keyspace and server events, blocked clients, the invalidation lifecycle
//! and its reclaimer, command metadata, the allocator and the panic guard.
//! Nothing here knows the commands; the commands are built on it.

pub mod acl;
pub mod alloc;
pub mod api;
pub mod blocked_client;
pub mod blocking;
pub mod cluster;
pub mod command_info;
pub mod events;
pub mod guard;
pub mod invalidation;
pub mod raw;
pub mod slot;
pub mod store;
