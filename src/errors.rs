//! Every error reply tcache sends, each starting with its Redis error code.

use redis_module::RedisError;

use crate::core::options::ArgError;

pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
pub const SYNTAX: &str = "ERR syntax error";
pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub const INVALID_CURSOR: &str = "ERR invalid cursor";
pub const INTERNAL: &str = "ERR internal error";
pub const INDEX_BUSY: &str = "ERR internal error: index busy";
/// 2^32 entries in one database: the index has no id left.
pub const INDEX_FULL: &str = "ERR index full: too many tcache entries in this database";
pub const NOPERM_DELETE: &str =
    "NOPERM this user has no permissions to delete one or more of the entries reached";
pub const NOPERM_UPDATE: &str =
    "NOPERM this user has no permissions to modify one or more of the entries reached";
pub const NOPERM_GATE: &str =
    "NOPERM this user has no permissions to write every key the gate governs";
pub const NOPERM_RESET: &str =
    "NOPERM this user has no permissions to reset statistics (TCACHE.STATS RESET needs CONFIG RESETSTAT)";
pub const APPLY_RESERVED: &str = "ERR TCACHE.APPLY is reserved for replication and AOF loading";

/// Tag or permission lists over 4 GB (far beyond the configured limits).
pub fn entry_too_large() -> RedisError {
    RedisError::Str("ERR entry too large")
}

pub fn wrongtype() -> RedisError {
    RedisError::Str(WRONGTYPE)
}

pub fn arg(e: ArgError) -> RedisError {
    match e {
        ArgError::NotAnInteger => RedisError::Str(NOT_INTEGER),
        ArgError::Syntax => RedisError::Str(SYNTAX),
        ArgError::EmptyTags => RedisError::Str("ERR syntax error: TAGS needs at least one tag"),
        ArgError::TooManyTags { max } => {
            RedisError::String(format!("ERR too many tags (tcache.max-tags is {max})"))
        }
        ArgError::TagTooLong { max } => {
            RedisError::String(format!("ERR tag too long (tcache.max-tag-bytes is {max})"))
        }
        ArgError::ValueTooLarge { max } => RedisError::String(format!(
            "ERR value too large (tcache.max-value-bytes is {max})"
        )),
    }
}

/// The crate's own error strings carry no Redis error code: give them one.
pub fn with_code(e: RedisError) -> RedisError {
    let msg = match &e {
        RedisError::WrongArity | RedisError::WrongType => return e,
        RedisError::Str(s) => *s,
        RedisError::String(s) => s.as_str(),
    };
    if msg == "Existing key has wrong Redis type" {
        return wrongtype();
    }
    let code = msg.split(' ').next().unwrap_or("");
    let has_code = !code.is_empty() && code.bytes().all(|c| c.is_ascii_uppercase());
    if has_code {
        e
    } else {
        RedisError::String(format!("ERR {msg}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(e: RedisError) -> String {
        e.to_string()
    }

    #[test]
    fn crate_errors_get_a_code() {
        assert_eq!(
            text(with_code(RedisError::Str("Couldn't parse as integer"))),
            "ERR Couldn't parse as integer"
        );
        assert_eq!(
            text(with_code(RedisError::Str(
                "Existing key has wrong Redis type"
            ))),
            WRONGTYPE
        );
        assert_eq!(text(with_code(RedisError::Str(SYNTAX))), SYNTAX);
        assert_eq!(
            text(with_code(RedisError::Str(NOPERM_DELETE))),
            NOPERM_DELETE
        );
    }

    #[test]
    fn limit_errors_name_the_limit() {
        assert_eq!(
            text(arg(ArgError::TooManyTags { max: 64 })),
            "ERR too many tags (tcache.max-tags is 64)"
        );
    }
}
