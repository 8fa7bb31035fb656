//! Process-wide state, one registry per file: the per-database indexes, the
//! lease tables, the gates, per-database bookkeeping, the write sequence,
//! the counters and the configs. Each holds its own lock; none imports the
//! Redis glue or the commands.

pub mod cluster;
pub mod config;
pub mod gates;
pub mod indexes;
pub mod leases;
pub mod per_db;
pub mod seq;
pub mod stats;
