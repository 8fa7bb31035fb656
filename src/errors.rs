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
pub const CLUSTER_WIDE_CANNOT_BLOCK: &str =
    "ERR in cluster mode this invalidation is cluster-wide and waits for every node: it cannot run inside MULTI or a script";
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
/// The result is ready for the wire (see [`wire_text`]).
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
    let msg = if has_code {
        msg.to_string()
    } else {
        format!("ERR {msg}")
    };
    match wire_text(&msg) {
        Some(w) => RedisError::String(w),
        None if has_code => e,
        None => RedisError::String(msg),
    }
}

/// An error text as the crate must be handed it to put the same UTF-8 bytes on
/// the wire, or `None` when it can be handed over as it is (plain ASCII).
///
/// The crate writes an error reply by casting every `char` to a byte, then
/// unwraps a C string of the result: a character such as `Ā` (U+0100) became
/// a NUL byte and the unwrap panicked outside any guard, aborting the server
/// (`TCACHE.GATE.CHECK Ā x`). So each byte of the UTF-8 text is passed as the
/// `char` of the same number (which the cast turns back into that byte), and
/// NUL bytes, which a C string cannot hold, become spaces.
pub fn wire_text(msg: &str) -> Option<String> {
    if msg.bytes().all(|b| b.is_ascii() && b != 0) {
        return None;
    }
    Some(
        msg.bytes()
            .map(|b| if b == 0 { ' ' } else { char::from(b) })
            .collect(),
    )
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
    fn error_texts_keep_their_utf8_bytes_through_the_crate_cast() {
        let msg = "ERR no such gate 'Ā😀\0x'";
        let wire = wire_text(msg).unwrap_or_else(|| panic!("not ASCII"));
        // What the crate does with it: each char cast to a byte.
        let bytes: Vec<u8> = wire.chars().map(|c| c as u8).collect();
        assert_eq!(bytes, "ERR no such gate 'Ā😀 x'".as_bytes());
        assert!(!bytes.contains(&0));
        assert_eq!(wire_text("ERR plain"), None);
        assert_eq!(
            text(with_code(RedisError::String("GATE g: /: \"Ā\"".into()))).into_bytes(),
            "GATE g: /: \"Ā\""
                .bytes()
                .map(char::from)
                .collect::<String>()
                .into_bytes()
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
