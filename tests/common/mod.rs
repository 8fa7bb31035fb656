//! Shared integration-test support: a RESP2/RESP3 client (`resp`) and
//! throw-away server processes with the module loaded (`server`).
//!
//! Use from a test file with `mod common;` and `use common::*;`.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod fuzz;
pub mod rdb;
pub mod resp;
pub mod server;
pub mod tc;

pub use resp::{Conn, Value};
pub use server::{
    info_value, module_path, server_binary, wait_for_sync, wait_until, Server, ServerBuilder,
};
