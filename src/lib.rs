//! tcache — a Redis module that turns Redis into a correct tagged application cache.
//!
//! This file is the table of contents: every command with its flags and key
//! positions (first, last, step; keyless commands use 0, 0, 0), the data type,
//! the configs, and the start-up hook. Key specs, tips and ACL categories are
//! in `command_info` (the table's category field makes the module fail to
//! load on Redis 7.0, which has no SetCommandACLCategories).

mod commands;
mod core;
mod errors;
mod glue;
mod state;

use redis_module::configuration::ConfigurationFlags;
use redis_module::{raw, redis_module, AclCategory, Context, RedisString, Status};

use commands::{admin, cache, cluster, fast, fetch, gate, inval, perm, query};
use glue::store::ENTRY_TYPE;
use glue::{api, command_info, events};
use state::config;
use state::config::{
    CLUSTER_TIMEOUT_MS_CFG, GATE_MAX_WORK_CFG, INVALIDATION_CHANNEL, INVALIDATION_CHANNEL_DEFAULT,
    INVALIDATION_CHANNEL_NAME, INVAL_SYNC_MAX_CFG, MAX_TAGS_CFG, MAX_TAG_BYTES_CFG,
    MAX_VALUE_BYTES_CFG, PERM_TTL_CFG, RECLAIM_BUDGET_US_CFG,
};

// Memory goes through the Redis allocator so that `used_memory` and `maxmemory`
// see it; unit tests run without a server and use the system allocator.
// The crate's `RedisAlloc` trusts the server's allocator with alignment, which
// only jemalloc honours: `alloc::ServerAlloc` honours every alignment.
#[cfg(not(test))]
type ModuleAlloc = glue::alloc::ServerAlloc;
#[cfg(not(test))]
const MODULE_ALLOC: ModuleAlloc = glue::alloc::ServerAlloc;
#[cfg(test)]
type ModuleAlloc = std::alloc::System;
#[cfg(test)]
const MODULE_ALLOC: ModuleAlloc = std::alloc::System;

/// Module arguments, keyspace and server events, the INFO section.
fn init(ctx: &Context, args: &[RedisString]) -> Status {
    // A short read or a bad opcode in our part of an RDB file or a RESTORE
    // payload must refuse that value, not abort the server: every load in
    // `store` checks `RedisModule_IsIOError` (the crate's `raw::load_*` do).
    api::detect_server(ctx);
    api::set_module_options(ctx);
    let raw_args: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    if let Err(e) = config::apply_module_args(&raw_args) {
        ctx.log_warning(&format!("tcache: {e}"));
        return Status::Err;
    }
    fetch::install();
    cluster::install(ctx);
    if let Err(e) = events::subscribe(ctx) {
        ctx.log_warning(&format!("tcache: {e}"));
        return Status::Err;
    }
    if let Err(e) = fast::register(ctx) {
        ctx.log_warning(&format!("tcache: {e}"));
        return Status::Err;
    }
    if let Err(e) = command_info::declare(ctx) {
        ctx.log_warning(&format!("tcache: {e}"));
        return Status::Err;
    }
    // Replaces the crate's default INFO callback with ours.
    raw::register_info_function(ctx.ctx, Some(admin::info));
    Status::Ok
}

redis_module! {
    name: "tcache",
    version: 1,
    allocator: (ModuleAlloc, MODULE_ALLOC),
    data_types: [ENTRY_TYPE],
    // A category of our own where the server can add one (Valkey, Redis 7.4+):
    // `ACL SETUSER app -@tcache` denies every tcache command at once.
    acl_categories: ["tcache",],
    init: init,
    commands: [
        // TCACHE.SET key value ttl [NX | XX] [GATE name] [LEASE token] [SWR seconds] [TAGS tag [tag ...]]
        ["tcache.set", guarded!(cache::set), "write deny-oom", 1, 1, 1, ""],
        // TCACHE.GET key and PERM.CHECK key permission [permission ...] are
        // registered by `fast::register` in init.
        // TCACHE.MGET key [key ...]
        ["tcache.mget", guarded!(cache::mget), "readonly fast", 1, -1, 1, ""],
        // TCACHE.DEL key [key ...]
        ["tcache.del", guarded!(cache::del), "write", 1, -1, 1, ""],
        // TCACHE.TAGS key
        ["tcache.tags", guarded!(cache::tags), "readonly fast", 1, 1, 1, ""],
        // TCACHE.INVALTAG tag [tag ...]
        ["tcache.invaltag", guarded!(cluster::invaltag), "write", 0, 0, 0, ""],
        // TCACHE.APPLYINVAL seq TAG|ROLE|PREFIX name [name ...] (replication and AOF only)
        ["tcache.applyinval", guarded!(inval::applyinval), "write", 0, 0, 0, ""],
        // TCACHE.INVALPREFIX prefix
        ["tcache.invalprefix", guarded!(cluster::invalprefix), "write", 0, 0, 0, ""],
        // TCACHE.TAGCARD tag
        ["tcache.tagcard", guarded!(query::tagcard), "readonly", 0, 0, 0, ""],
        // TCACHE.TAGSCAN tag cursor [COUNT count]
        ["tcache.tagscan", guarded!(query::tagscan), "readonly", 0, 0, 0, ""],
        // TCACHE.VERIFY
        ["tcache.verify", guarded!(admin::verify), "readonly", 0, 0, 0, ""],
        // TCACHE.STATS [RESET]
        ["tcache.stats", guarded!(admin::stats), "readonly fast", 0, 0, 0, ""],
        // TCACHE.APPLY key serialized-entry (replication and AOF only)
        ["tcache.apply", guarded!(cache::apply), "write", 1, 1, 1, ""],
        // TCACHE.FETCH key lease-ms [WAIT timeout-ms]
        ["tcache.fetch", guarded!(fetch::fetch), "write", 1, 1, 1, ""],
        // TCACHE.STALETAG tag [tag ...]
        ["tcache.staletag", guarded!(cluster::staletag), "write", 0, 0, 0, ""],
        // TCACHE.GATE.SET name schema [PREFIX prefix]
        ["tcache.gate.set", guarded!(gate::set), "write deny-oom", 0, 0, 0, ""],
        // TCACHE.GATE.GET name
        ["tcache.gate.get", guarded!(gate::get), "readonly", 0, 0, 0, ""],
        // TCACHE.GATE.DEL name
        ["tcache.gate.del", guarded!(gate::del), "write", 0, 0, 0, ""],
        // TCACHE.GATE.LIST
        ["tcache.gate.list", guarded!(gate::list), "readonly", 0, 0, 0, ""],
        // TCACHE.GATE.CHECK name value
        ["tcache.gate.check", guarded!(gate::check), "readonly", 0, 0, 0, ""],
        // PERM.SET key json [ttl]
        ["perm.set", guarded!(perm::set), "write deny-oom", 1, 1, 1, ""],
        // PERM.GET key
        ["perm.get", guarded!(perm::get), "readonly fast", 1, 1, 1, ""],
        // PERM.INVALUSER key [key ...]
        ["perm.invaluser", guarded!(perm::invaluser), "write", 1, -1, 1, ""],
        // PERM.INVALROLE role [role ...]
        ["perm.invalrole", guarded!(cluster::invalrole), "write", 0, 0, 0, ""],
        // PERM.INVALALL
        ["perm.invalall", guarded!(cluster::invalall), "write", 0, 0, 0, ""],
    ],
    configurations: [
        // Names, defaults, ranges and flags are declared once, in `state::config`.
        i64: [
            [MAX_TAGS_CFG.name, MAX_TAGS_CFG.value, MAX_TAGS_CFG.default, MAX_TAGS_CFG.min, MAX_TAGS_CFG.max, MAX_TAGS_CFG.flags, None],
            [MAX_TAG_BYTES_CFG.name, MAX_TAG_BYTES_CFG.value, MAX_TAG_BYTES_CFG.default, MAX_TAG_BYTES_CFG.min, MAX_TAG_BYTES_CFG.max, MAX_TAG_BYTES_CFG.flags, None],
            [MAX_VALUE_BYTES_CFG.name, MAX_VALUE_BYTES_CFG.value, MAX_VALUE_BYTES_CFG.default, MAX_VALUE_BYTES_CFG.min, MAX_VALUE_BYTES_CFG.max, MAX_VALUE_BYTES_CFG.flags, None],
            [PERM_TTL_CFG.name, PERM_TTL_CFG.value, PERM_TTL_CFG.default, PERM_TTL_CFG.min, PERM_TTL_CFG.max, PERM_TTL_CFG.flags, None],
            [INVAL_SYNC_MAX_CFG.name, INVAL_SYNC_MAX_CFG.value, INVAL_SYNC_MAX_CFG.default, INVAL_SYNC_MAX_CFG.min, INVAL_SYNC_MAX_CFG.max, INVAL_SYNC_MAX_CFG.flags, None],
            [RECLAIM_BUDGET_US_CFG.name, RECLAIM_BUDGET_US_CFG.value, RECLAIM_BUDGET_US_CFG.default, RECLAIM_BUDGET_US_CFG.min, RECLAIM_BUDGET_US_CFG.max, RECLAIM_BUDGET_US_CFG.flags, None],
            [GATE_MAX_WORK_CFG.name, GATE_MAX_WORK_CFG.value, GATE_MAX_WORK_CFG.default, GATE_MAX_WORK_CFG.min, GATE_MAX_WORK_CFG.max, GATE_MAX_WORK_CFG.flags, None],
            [CLUSTER_TIMEOUT_MS_CFG.name, CLUSTER_TIMEOUT_MS_CFG.value, CLUSTER_TIMEOUT_MS_CFG.default, CLUSTER_TIMEOUT_MS_CFG.min, CLUSTER_TIMEOUT_MS_CFG.max, CLUSTER_TIMEOUT_MS_CFG.flags, None],
        ],
        string: [
            [INVALIDATION_CHANNEL_NAME, &INVALIDATION_CHANNEL, INVALIDATION_CHANNEL_DEFAULT, ConfigurationFlags::DEFAULT, None],
        ],
        bool: [],
        enum: [],
        // Load arguments are applied by `config::apply_module_args` in `init`
        // (why not by the crate: see there).
        module_args_as_configuration: false,
    ]
}
