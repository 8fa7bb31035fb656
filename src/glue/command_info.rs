//! Command metadata the `redis_module!` table cannot express: key specs with
//! accurate flags (so a `%R~` user reads and a `%W~` user writes, as with
//! GET/SET), command tips for cluster-aware clients, and ACL categories for
//! the commands registered outside the table. Set from `init` with
//! `RedisModule_SetCommandInfo` (Redis 7.0+, Valkey) once every command exists.

use std::ffi::{c_char, c_int, CString};
use std::mem::size_of;
use std::ptr;

use redis_module::{raw, Context};

/// Which keys a command touches and how (a `REDISMODULE_CMD_KEY_*` set), or
/// none for a keyless command.
#[derive(Clone, Copy)]
enum Keys {
    /// The first argument only.
    One(u32),
    /// Every argument.
    All(u32),
    None,
}

const READ: u32 = raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS;
const OVERWRITE: u32 = raw::REDISMODULE_CMD_KEY_OW | raw::REDISMODULE_CMD_KEY_UPDATE;
const READ_WRITE: u32 = raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_ACCESS;
const DELETE: u32 = raw::REDISMODULE_CMD_KEY_RM | raw::REDISMODULE_CMD_KEY_DELETE;

/// A node-local count that a tip-aware client (go-redis, node-redis) sums over
/// every shard, like DBSIZE. The invalidations carry no such tip on purpose:
/// they are to become cluster-wide inside the module (issue 12), and a tip
/// would then make clients send each one to every node.
const SUM_OVER_SHARDS: &[u8] = b"request_policy:all_shards response_policy:agg_sum\0";
const NONDETERMINISTIC: &[u8] = b"nondeterministic_output\0";

/// name, keys, tips (NUL-terminated, or empty), ACL categories (the server's;
/// `tcache` is added where the server has module categories).
const TABLE: &[(&str, Keys, &[u8], &str)] = &[
    ("tcache.set", Keys::One(OVERWRITE), b"", "write"),
    ("tcache.get", Keys::One(READ), b"", "read fast"),
    ("tcache.mget", Keys::All(READ), b"", "read fast"),
    ("tcache.del", Keys::All(DELETE), b"", "write"),
    ("tcache.tags", Keys::One(READ), b"", "read fast"),
    ("tcache.invaltag", Keys::None, b"", "write"),
    ("tcache.applyinval", Keys::None, b"", "write"),
    ("tcache.invalprefix", Keys::None, b"", "write"),
    ("tcache.tagcard", Keys::None, SUM_OVER_SHARDS, "read slow"),
    ("tcache.tagscan", Keys::None, NONDETERMINISTIC, "read slow"),
    ("tcache.verify", Keys::None, b"", "read slow"),
    ("tcache.stats", Keys::None, NONDETERMINISTIC, "read fast"),
    ("tcache.apply", Keys::One(OVERWRITE), b"", "write"),
    (
        "tcache.fetch",
        Keys::One(READ_WRITE),
        NONDETERMINISTIC,
        "write blocking",
    ),
    ("tcache.staletag", Keys::None, b"", "write"),
    // A gate governs every write under its prefix, for every user: like
    // CONFIG SET, it is `@dangerous`, so that an operator can deny it.
    ("tcache.gate.set", Keys::None, b"", "write slow dangerous"),
    ("tcache.gate.get", Keys::None, b"", "read fast"),
    ("tcache.gate.del", Keys::None, b"", "write slow dangerous"),
    ("tcache.gate.list", Keys::None, b"", "read slow"),
    ("tcache.gate.check", Keys::None, b"", "read slow"),
    ("perm.set", Keys::One(OVERWRITE), b"", "write"),
    ("perm.get", Keys::One(READ), b"", "read fast"),
    ("perm.check", Keys::One(READ), b"", "read fast"),
    ("perm.invaluser", Keys::All(DELETE), b"", "write"),
    ("perm.invalrole", Keys::None, b"", "write"),
    ("perm.invalall", Keys::None, b"", "write"),
];

/// Sets key specs, tips and ACL categories on every command of [`TABLE`].
pub fn declare(ctx: &Context) -> Result<(), String> {
    for &(name, _, _, categories) in TABLE {
        set_categories(ctx, name, categories)?;
    }
    // Servers before 7.0 have no SetCommandInfo: nothing to declare there.
    // SAFETY: the API pointers are written once by RedisModule_Init, before this.
    let api = unsafe { (raw::RedisModule_GetCommand, raw::RedisModule_SetCommandInfo) };
    let (Some(get), Some(set_info)) = api else {
        return Ok(());
    };
    let version = raw::RedisModuleCommandInfoVersion {
        version: 1,
        sizeof_historyentry: size_of::<raw::RedisModuleCommandHistoryEntry>(),
        sizeof_keyspec: size_of::<raw::RedisModuleCommandKeySpec>(),
        sizeof_arg: size_of::<raw::RedisModuleCommandArg>(),
    };
    for &(name, keys, tips, _) in TABLE {
        if matches!(keys, Keys::None) && tips.is_empty() {
            continue;
        }
        let cname = CString::new(name).map_err(|e| e.to_string())?;
        // SAFETY: called from OnLoad with its context and a NUL-terminated name.
        let cmd = unsafe { get(ctx.ctx, cname.as_ptr()) };
        if cmd.is_null() {
            return Err(format!("command {name} not found"));
        }
        let mut specs = key_specs(keys);
        let info = raw::RedisModuleCommandInfo {
            version: &version,
            summary: ptr::null(),
            complexity: ptr::null(),
            since: ptr::null(),
            history: ptr::null_mut(),
            tips: if tips.is_empty() {
                ptr::null()
            } else {
                tips.as_ptr().cast::<c_char>()
            },
            arity: 0,
            key_specs: if specs.is_empty() {
                ptr::null_mut()
            } else {
                specs.as_mut_ptr()
            },
            args: ptr::null_mut(),
        };
        // SAFETY: `cmd` is this module's command; `info`, the version, the
        // key-spec array (ended by a zeroed spec) and the tips string live
        // across the call, and the server copies what it keeps.
        let status = unsafe { set_info(cmd, &info) };
        if status != raw::REDISMODULE_OK as c_int {
            return Err(format!("cannot set the command info of {name}"));
        }
    }
    Ok(())
}

/// One index/range key spec for `keys`, then the zeroed terminator; empty for
/// a keyless command.
fn key_specs(keys: Keys) -> Vec<raw::RedisModuleCommandKeySpec> {
    let (flags, lastkey) = match keys {
        Keys::One(flags) => (flags, 0),
        Keys::All(flags) => (flags, -1),
        Keys::None => return Vec::new(),
    };
    let spec = raw::RedisModuleCommandKeySpec {
        notes: ptr::null(),
        flags: u64::from(flags),
        begin_search_type: raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX,
        bs: raw::RedisModuleCommandKeySpec__bindgen_ty_1 {
            index: raw::RedisModuleCommandKeySpec__bindgen_ty_1__bindgen_ty_1 { pos: 1 },
        },
        find_keys_type: raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE,
        fk: raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
            range: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_1 {
                lastkey,
                keystep: 1,
                limit: 0,
            },
        },
    };
    let end = raw::RedisModuleCommandKeySpec {
        notes: ptr::null(),
        flags: 0,
        begin_search_type: raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INVALID,
        bs: raw::RedisModuleCommandKeySpec__bindgen_ty_1 {
            index: raw::RedisModuleCommandKeySpec__bindgen_ty_1__bindgen_ty_1 { pos: 0 },
        },
        find_keys_type: raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_OMITTED,
        fk: raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
            range: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_1 {
                lastkey: 0,
                keystep: 0,
                limit: 0,
            },
        },
    };
    vec![spec, end]
}

/// Gives `name` the ACL categories `base` plus `tcache` where the server has
/// module categories; `base` alone where `tcache` could not be added; nothing
/// on servers without SetCommandACLCategories (Redis 7.0: see the README's
/// ACL section for the rules an operator writes there).
fn set_categories(ctx: &Context, name: &str, base: &str) -> Result<(), String> {
    // SAFETY: the API pointers are written once by RedisModule_Init, before this.
    let api = unsafe {
        (
            raw::RedisModule_GetCommand,
            raw::RedisModule_SetCommandACLCategories,
        )
    };
    let (Some(get), Some(set_cats)) = api else {
        return Ok(());
    };
    let cname = CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: called from OnLoad with its context and a NUL-terminated name.
    let cmd = unsafe { get(ctx.ctx, cname.as_ptr()) };
    if cmd.is_null() {
        return Err(format!("command {name} not found"));
    }
    for cats in [format!("{base} tcache"), base.to_string()] {
        let ccats = CString::new(cats).map_err(|e| e.to_string())?;
        // SAFETY: `cmd` is this module's command; the string lives across the call.
        if unsafe { set_cats(cmd, ccats.as_ptr()) } == raw::REDISMODULE_OK as c_int {
            return Ok(());
        }
    }
    Err(format!("cannot set the ACL categories of {name}"))
}
