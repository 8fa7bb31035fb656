//! Module configs (`CONFIG SET tcache.<name>`), their ranges, and module load
//! arguments (`loadmodule libtcache.so max-tags 64`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use redis_module::configuration::{ConfigurationContext, ConfigurationFlags, ConfigurationValue};
use redis_module::{raw, RedisError, RedisString};

use crate::core::options::{parse_i64, Limits};

/// One numeric config: its name, value, default, range and flags are written
/// here only; `lib.rs` registers it from these fields and the load arguments
/// are checked against them.
pub struct NumericConfig {
    pub name: &'static str,
    pub value: &'static AtomicI64,
    pub default: i64,
    pub min: i64,
    pub max: i64,
    /// `MEMORY` accepts memory units (`64mb`).
    pub flags: ConfigurationFlags,
}

impl NumericConfig {
    fn memory(&self) -> bool {
        self.flags.contains(ConfigurationFlags::MEMORY)
    }
}

pub static MAX_TAGS: AtomicI64 = AtomicI64::new(MAX_TAGS_CFG.default);
pub static MAX_TAG_BYTES: AtomicI64 = AtomicI64::new(MAX_TAG_BYTES_CFG.default);
pub static MAX_VALUE_BYTES: AtomicI64 = AtomicI64::new(MAX_VALUE_BYTES_CFG.default);

pub const MAX_TAGS_CFG: NumericConfig = NumericConfig {
    name: "max-tags",
    value: &MAX_TAGS,
    default: 64,
    min: 1,
    max: 4096,
    flags: ConfigurationFlags::DEFAULT,
};
pub const MAX_TAG_BYTES_CFG: NumericConfig = NumericConfig {
    name: "max-tag-bytes",
    value: &MAX_TAG_BYTES,
    default: 256,
    min: 1,
    max: 65536,
    flags: ConfigurationFlags::DEFAULT,
};
pub const MAX_VALUE_BYTES_CFG: NumericConfig = NumericConfig {
    name: "max-value-bytes",
    value: &MAX_VALUE_BYTES,
    default: 64 << 20,
    min: 1,
    max: 512 << 20,
    flags: ConfigurationFlags::MEMORY,
};

pub static PERM_TTL: AtomicI64 = AtomicI64::new(PERM_TTL_CFG.default);

pub const PERM_TTL_CFG: NumericConfig = NumericConfig {
    name: "perm-ttl",
    value: &PERM_TTL,
    default: 300,
    min: 1,
    max: crate::core::options::TTL_MAX,
    flags: ConfigurationFlags::DEFAULT,
};

/// Invalidations that name at most this many entries delete them inside the
/// command; larger ones are logical, and the reclaimer deletes in the background.
pub static INVAL_SYNC_MAX: AtomicI64 = AtomicI64::new(INVAL_SYNC_MAX_CFG.default);

pub const INVAL_SYNC_MAX_CFG: NumericConfig = NumericConfig {
    name: "inval-sync-max",
    value: &INVAL_SYNC_MAX,
    default: 128,
    min: 0,
    max: i64::MAX,
    flags: ConfigurationFlags::DEFAULT,
};

/// Microseconds of work per reclaimer slice; 0 pauses the reclaimer. A slice
/// runs once per event-loop iteration, so a client waits at most about two
/// slices for its reply.
pub static RECLAIM_BUDGET_US: AtomicI64 = AtomicI64::new(RECLAIM_BUDGET_US_CFG.default);

pub const RECLAIM_BUDGET_US_CFG: NumericConfig = NumericConfig {
    name: "reclaim-budget-us",
    value: &RECLAIM_BUDGET_US,
    default: 1000,
    min: 0,
    max: 100_000,
    flags: ConfigurationFlags::DEFAULT,
};

/// The most pattern work one gate check may do: (bytes of strings and keys in
/// the value) x (the schema's pattern weight, see `core::gate`). A check over
/// it is refused before it runs, so no check holds the server for long.
pub static GATE_MAX_WORK: AtomicI64 = AtomicI64::new(GATE_MAX_WORK_CFG.default);

pub const GATE_MAX_WORK_CFG: NumericConfig = NumericConfig {
    name: "gate-max-work",
    value: &GATE_MAX_WORK,
    default: 1_000_000,
    min: 1000,
    max: i64::MAX,
    flags: ConfigurationFlags::DEFAULT,
};

pub fn gate_max_work() -> u64 {
    u64::try_from(GATE_MAX_WORK.load(Ordering::Relaxed)).unwrap_or(0)
}

/// How long a cluster-wide invalidation waits for every slot owner to confirm
/// before it answers with an error naming the slots not confirmed. Below the
/// 5 s read timeout clients often default to (redis-py 8), so that they see
/// that error rather than their own timeout.
pub static CLUSTER_TIMEOUT_MS: AtomicI64 = AtomicI64::new(CLUSTER_TIMEOUT_MS_CFG.default);

pub const CLUSTER_TIMEOUT_MS_CFG: NumericConfig = NumericConfig {
    name: "cluster-timeout-ms",
    value: &CLUSTER_TIMEOUT_MS,
    default: 3000,
    min: 10,
    max: 3_600_000,
    flags: ConfigurationFlags::DEFAULT,
};

pub fn cluster_timeout_ms() -> i64 {
    CLUSTER_TIMEOUT_MS.load(Ordering::Relaxed)
}

pub const NUMERIC: [&NumericConfig; 8] = [
    &MAX_TAGS_CFG,
    &MAX_TAG_BYTES_CFG,
    &MAX_VALUE_BYTES_CFG,
    &PERM_TTL_CFG,
    &INVAL_SYNC_MAX_CFG,
    &RECLAIM_BUDGET_US_CFG,
    &GATE_MAX_WORK_CFG,
    &CLUSTER_TIMEOUT_MS_CFG,
];

pub fn inval_sync_max() -> usize {
    usize::try_from(INVAL_SYNC_MAX.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
}

pub fn reclaim_budget_us() -> u64 {
    u64::try_from(RECLAIM_BUDGET_US.load(Ordering::Relaxed)).unwrap_or(0)
}

/// The string config `tcache.invalidation-channel`: empty means off.
pub const INVALIDATION_CHANNEL_NAME: &str = "invalidation-channel";
pub const INVALIDATION_CHANNEL_DEFAULT: &str = "";
// `INVALIDATION_CHANNEL` starts as the default: a static `String` can only
// start empty.
const _: () = assert!(INVALIDATION_CHANNEL_DEFAULT.is_empty());

pub static INVALIDATION_CHANNEL: Channel = Channel {
    value: Mutex::new(String::new()),
    shown: Mutex::new(Shown(std::ptr::null_mut())),
};

/// The channel config's value. Unlike the crate's `Mutex<String>`, it refuses
/// a NUL byte (the crate's CONFIG GET turned one into an abort of the server),
/// does not unwrap a poisoned lock, and does not leak the string CONFIG GET
/// reads (the server does not free what a getter returns: the module keeps
/// it, here until the next read).
pub struct Channel {
    value: Mutex<String>,
    shown: Mutex<Shown>,
}

/// The string the last CONFIG GET was given.
struct Shown(*mut raw::RedisModuleString);

// SAFETY: configs are read and written on the main thread only (the server
// holds its lock around every config callback); the pointer is never shared.
unsafe impl Send for Shown {}

impl Channel {
    fn lock(&self) -> std::sync::MutexGuard<'_, String> {
        self.value.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the channel; `Err` (and no change) for a NUL byte.
    pub fn set_bytes(&self, v: &[u8]) -> Result<(), &'static str> {
        if v.contains(&0) {
            return Err("the channel name cannot hold a NUL byte");
        }
        *self.lock() = String::from_utf8_lossy(v).into_owned();
        Ok(())
    }
}

impl ConfigurationValue<RedisString> for Channel {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        let value = self.lock();
        // SAFETY: a new string of `value`'s bytes (no context: not auto-freed),
        // owned by `shown` from here. `old` is the string the previous read
        // handed out, which the server used only during that CONFIG GET; it is
        // freed once.
        unsafe {
            let fresh = raw::RedisModule_CreateString.map_or(std::ptr::null_mut(), |f| {
                f(std::ptr::null_mut(), value.as_ptr().cast(), value.len())
            });
            let old = std::mem::replace(&mut shown.0, fresh);
            if let (false, Some(free)) = (old.is_null(), raw::RedisModule_FreeString) {
                free(std::ptr::null_mut(), old);
            }
        }
        // The server reads this one and leaves it to us (freed on the next read).
        RedisString::from_redis_module_string(std::ptr::null_mut(), shown.0)
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        self.set_bytes(val.as_slice())
            .map_err(|e| RedisError::String(format!("ERR {e}")))
    }
}

pub fn perm_ttl() -> i64 {
    PERM_TTL.load(Ordering::Relaxed)
}

/// The channel invalidations are published on, if one is set.
pub fn invalidation_channel() -> Option<Vec<u8>> {
    let c = INVALIDATION_CHANNEL.lock();
    (!c.is_empty()).then(|| c.as_bytes().to_vec())
}

pub fn limits() -> Limits {
    Limits {
        max_tags: MAX_TAGS.load(Ordering::Relaxed),
        max_tag_bytes: MAX_TAG_BYTES.load(Ordering::Relaxed),
        max_value_bytes: MAX_VALUE_BYTES.load(Ordering::Relaxed),
    }
}

/// `64`, or with `memory`, `64kb` / `64mb` / `1gb` (case-insensitive, powers of 1024).
pub fn parse_value(raw: &[u8], memory: bool) -> Option<i64> {
    if let Ok(v) = parse_i64(raw) {
        return Some(v);
    }
    if !memory {
        return None;
    }
    let s = std::str::from_utf8(raw).ok()?.to_ascii_lowercase();
    let (num, mult) = [
        ("kb", 1i64 << 10),
        ("mb", 1 << 20),
        ("gb", 1 << 30),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|n| (n.to_string(), *m)))?;
    parse_i64(num.as_bytes()).ok()?.checked_mul(mult)
}

/// Applies `name value` pairs given to `loadmodule`. Unknown names, odd
/// counts and out-of-range values refuse the load with a message.
///
/// The crate's `module_args_as_configuration` is not used: it would change
/// what the manual documents. It turns a load argument into the default the
/// server registers, so a `tcache.<name>` line in redis.conf would win over it
/// (here the load argument wins: it is applied in `init`, after the server has
/// loaded the config lines). It parses every value with `str::parse::<i64>`,
/// refusing `max-value-bytes 1mb`. It looks each config's name up in the
/// arguments without pairing them, so an unknown name (`nonsense 1`) or a
/// name without a value (`max-tags`) loads silently instead of being refused,
/// and it matches names exactly (here a `tcache.` prefix is accepted and the
/// rest of the name is matched ignoring case).
pub fn apply_module_args(args: &[&[u8]]) -> Result<(), String> {
    if !args.len().is_multiple_of(2) {
        return Err("module arguments must be name/value pairs".into());
    }
    for pair in args.chunks(2) {
        let (name, raw) = (pair[0], pair[1]);
        let name = String::from_utf8_lossy(name);
        let short = name.strip_prefix("tcache.").unwrap_or(&name);
        if short.eq_ignore_ascii_case(INVALIDATION_CHANNEL_NAME) {
            std::str::from_utf8(raw)
                .map_err(|_| format!("{INVALIDATION_CHANNEL_NAME} must be UTF-8"))?;
            INVALIDATION_CHANNEL.set_bytes(raw)?;
            continue;
        }
        let cfg = NUMERIC
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(short))
            .ok_or_else(|| format!("unknown module argument '{name}'"))?;
        let v = parse_value(raw, cfg.memory())
            .filter(|v| (cfg.min..=cfg.max).contains(v))
            .ok_or_else(|| {
                format!(
                    "argument {} must be an integer between {} and {}",
                    cfg.name, cfg.min, cfg.max
                )
            })?;
        cfg.value.store(v, Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units_parse() {
        assert_eq!(parse_value(b"64mb", true), Some(64 << 20));
        assert_eq!(parse_value(b"1GB", true), Some(1 << 30));
        assert_eq!(parse_value(b"10", true), Some(10));
        assert_eq!(parse_value(b"64mb", false), None);
        assert_eq!(parse_value(b"mb", true), None);
    }

    #[test]
    fn module_args_are_checked() {
        assert!(apply_module_args(&[b"max-tags"]).is_err());
        assert!(apply_module_args(&[b"nope", b"1"]).is_err());
        assert!(apply_module_args(&[b"max-tags", b"0"]).is_err());
        assert!(apply_module_args(&[b"max-tags", b"x"]).is_err());
        assert!(apply_module_args(&[]).is_ok());
    }
}
