//! Whole-keyspace ACL checks: may the caller read or write every key under a
//! prefix? A command that reaches keys through the index (TAGCARD, TAGSCAN,
//! a logical INVALTAG, GATE.SET) asks once instead of checking each key.
//!
//! Valkey and Redis 7.4+ answer directly (`ACLCheckKeyPrefixPermissions`).
//! Redis 7.0 has no such check: there the user's key patterns are read with
//! `ACL GETUSER` (a few hundred microseconds) and kept until the next ACL
//! change. A command filter, registered when the first patterns are kept,
//! sees every `ACL` command (SETUSER, DELUSER, LOAD...) and every `EXEC` (an
//! ACL command queued in MULTI runs there) and bumps a generation that voids
//! what is kept.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use redis_module::{raw, Context, RedisValue};

use super::api::{self, Caller};
use super::guard;

/// Bumped by every ACL command and every EXEC.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Users whose key patterns are kept (a cap: the cache is cleared past it).
const MAX_CACHED_USERS: usize = 1024;

/// User name -> (generation it was read at, its key patterns).
type Cache = BTreeMap<String, (u64, Vec<u8>)>;
static CACHE: Mutex<Cache> = Mutex::new(BTreeMap::new());

fn cache() -> MutexGuard<'static, Cache> {
    CACHE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The command filter is registered.
static WATCHING: AtomicBool = AtomicBool::new(false);

/// Registers, the first time a user's key patterns are about to be kept, the
/// command filter that voids them. Until then no filter runs: it costs every
/// command of the server about 144 instructions (callgrind, Redis 7.0.15,
/// pipelined GET, about 4% of a GET), which a server that never needs a
/// whole-keyspace check (TAGCARD, TAGSCAN, a logical invalidation, GATE.SET)
/// does not pay. Whether the filter runs.
fn watch(ctx: &Context) -> bool {
    if WATCHING.load(Ordering::Acquire) {
        return true;
    }
    // SAFETY: `on_command` has the filter signature; the filter lives as long
    // as the module. NOSELF: our own `ACL GETUSER` calls pass unfiltered.
    let filter = unsafe {
        raw::RedisModule_RegisterCommandFilter.map_or(std::ptr::null_mut(), |register| {
            register(
                ctx.ctx,
                Some(on_command),
                raw::REDISMODULE_CMDFILTER_NOSELF as i32,
            )
        })
    };
    let on = !filter.is_null();
    WATCHING.store(on, Ordering::Release);
    on
}

/// Every command passes here first: an ACL command or an EXEC voids what is kept.
extern "C" fn on_command(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    guard::callback((), || {
        // SAFETY: the filter context is live for this call; argument 0 is the
        // command name, a string the server owns for the call.
        let name = unsafe {
            let Some(arg) = raw::RedisModule_CommandFilterArgGet else {
                return;
            };
            let s = arg(fctx, 0);
            if s.is_null() {
                return;
            }
            super::raw::bytes_of(s)
        };
        if name.eq_ignore_ascii_case(b"acl") || name.eq_ignore_ascii_case(b"exec") {
            GENERATION.fetch_add(1, Ordering::AcqRel);
        }
    })
}

/// What a caller wants to do with keys, for the whole-keyspace checks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum KeyAccess {
    Read,
    Write,
}

impl KeyAccess {
    pub fn flag(self) -> u32 {
        match self {
            KeyAccess::Read => raw::REDISMODULE_CMD_KEY_ACCESS,
            KeyAccess::Write => {
                raw::REDISMODULE_CMD_KEY_UPDATE
                    | raw::REDISMODULE_CMD_KEY_INSERT
                    | raw::REDISMODULE_CMD_KEY_DELETE
            }
        }
    }
}

/// Whether the current user may `access` every key starting with `prefix`
/// (`b""`: every key), so that a command reaching keys through an index need
/// not check them one by one. Internal clients (AOF, master) may.
///
/// Where the server has a prefix check it answers; on Redis 7.0 the caller
/// must have a key pattern `<literal>*` granting that access whose literal
/// starts `prefix` (`~*`, `%R~*`, `~tenantA:*` for `tenantA:x`...), read from
/// `ACL GETUSER`: stricter than the exact rule (a pattern such as `~t?nant*`
/// is not understood and grants nothing here), never looser.
pub fn may_on_prefix(ctx: &Context, prefix: &[u8], access: KeyAccess) -> bool {
    if api::internal_client(ctx) {
        return true;
    }
    let Some(name) = api::current_user_name(ctx) else {
        return true;
    };
    let name = String::from_utf8(name);
    if let Some(caller) = Caller::current(ctx) {
        if let Some(answer) = caller.may_prefix(ctx, prefix, access.flag()) {
            return answer;
        }
    }
    let Ok(name) = name else {
        return false;
    };
    key_patterns(ctx, &name).is_some_and(|keys| patterns_cover(&keys, prefix, access))
}

/// The root selector's key patterns of user `name` (`ACL GETUSER`'s `keys`),
/// remembered until the next ACL change.
fn key_patterns(ctx: &Context, name: &str) -> Option<Vec<u8>> {
    let watching = watch(ctx);
    let generation = GENERATION.load(Ordering::Acquire);
    if let Some(keys) = cache()
        .get(name)
        .filter(|(g, _)| watching && *g == generation)
    {
        return Some(keys.1.clone());
    }
    // ACL GETUSER answers name/value pairs; `keys` lists the root selector's
    // patterns, each with optional `%R`/`%W`/`%RW` permissions (none: both).
    let Ok(RedisValue::Array(fields)) = ctx.call("ACL", &["GETUSER", name]) else {
        return None;
    };
    let text = |v: &RedisValue| match v {
        RedisValue::SimpleString(s) => Some(s.as_bytes().to_vec()),
        RedisValue::BulkString(s) => Some(s.as_bytes().to_vec()),
        RedisValue::BulkRedisString(s) => Some(s.as_slice().to_vec()),
        RedisValue::StringBuffer(b) => Some(b.clone()),
        _ => None,
    };
    let keys = fields
        .chunks(2)
        .find(|pair| text(&pair[0]).as_deref() == Some(b"keys"))
        .and_then(|pair| pair.get(1).and_then(text))?;
    // Only if no ACL command ran in between (the generation is unchanged).
    let mut c = cache();
    if watching && GENERATION.load(Ordering::Acquire) == generation {
        if c.len() >= MAX_CACHED_USERS {
            c.clear();
        }
        c.insert(name.to_string(), (generation, keys.clone()));
    }
    Some(keys)
}

/// Whether an `ACL GETUSER` `keys` value grants `access` to every key that
/// starts with `prefix`: some pattern is a plain literal followed by one `*`,
/// and that literal starts `prefix`.
fn patterns_cover(keys: &[u8], prefix: &[u8], access: KeyAccess) -> bool {
    keys.split(|&b| b == b' ').any(|p| {
        let (perms, pattern): (&[u8], &[u8]) = match p.strip_prefix(b"%") {
            Some(rest) => match rest.iter().position(|&b| b == b'~') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => return false,
            },
            None => (b"RW", p),
        };
        let needed = match access {
            KeyAccess::Read => b'R',
            KeyAccess::Write => b'W',
        };
        let Some(literal) = pattern
            .strip_prefix(b"~")
            .and_then(|g| g.strip_suffix(b"*"))
        else {
            return false;
        };
        let plain = !literal.iter().any(|b| b"*?[]\\".contains(b));
        plain && prefix.starts_with(literal) && perms.contains(&needed)
    })
}

/// Whether the current user may delete every key (see [`may_on_prefix`]).
pub fn may_delete_any_key(ctx: &Context) -> bool {
    may_on_prefix(ctx, b"", KeyAccess::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_patterns_cover_a_prefix_only_when_they_surely_do() {
        let w = KeyAccess::Write;
        let r = KeyAccess::Read;
        assert!(patterns_cover(b"~*", b"", w));
        assert!(patterns_cover(b"~*", b"x", r));
        assert!(patterns_cover(b"%R~*", b"", r));
        assert!(!patterns_cover(b"%R~*", b"", w));
        assert!(patterns_cover(b"%W~* %R~a*", b"", w));
        assert!(patterns_cover(b"~tenantA:*", b"tenantA:", w));
        assert!(patterns_cover(b"~tenantA:*", b"tenantA:x", w));
        assert!(!patterns_cover(b"~tenantA:*", b"tenant", w));
        assert!(!patterns_cover(b"~tenantA:*", b"", w));
        assert!(!patterns_cover(b"~t?nant*", b"tenant", w));
        assert!(!patterns_cover(b"~tenantA:1", b"tenantA:1", w));
        assert!(!patterns_cover(b"", b"", r));
    }
}
