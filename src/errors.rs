//! Every error reply tcache sends. Handlers fail with an [`Error`]; the one
//! conversion into the crate's `RedisError` below writes each with its Redis
//! error code, ready for the wire. The core's own error types (argument
//! problems, gate rejections, permission-shape errors, decode errors) are
//! carried inside and given their code here.

use std::borrow::Cow;
use std::fmt;

use redis_module::{RedisError, RedisValue};

use crate::core::entry::DecodeError;
use crate::core::gate::{GateError, Rejection};
use crate::core::options::ArgError;
use crate::core::perm::PermError;

/// What a command handler returns: its reply, or why it refused.
pub type Reply = Result<RedisValue, Error>;

/// Why a command was refused (or failed).
#[derive(Debug)]
pub enum Error {
    /// `ERR wrong number of arguments for '<cmd>' command` (the server writes it).
    WrongArity,
    /// The key holds another type (or, for the PERM commands, a cache entry).
    WrongType,
    /// An unknown, repeated or misplaced keyword.
    Syntax,
    /// A number, option list or limit problem found while parsing.
    Arg(ArgError),
    /// A TAGSCAN cursor that is not an unsigned integer.
    InvalidCursor,
    /// The caller's ACL does not allow what the command would do.
    NoPerm(NoPerm),
    /// Gate `gate` refused the value.
    Gate { gate: Vec<u8>, why: Rejection },
    /// The value is not a permission entry (the built-in gate `perm`).
    Perm(PermError),
    /// `GATE name` names no gate.
    NoSuchGate(Vec<u8>),
    /// TCACHE.GATE.SET of a built-in gate.
    BuiltinGate(Vec<u8>),
    /// TCACHE.GATE.SET with a schema that cannot become a gate.
    InvalidSchema(GateError),
    /// Tag or permission lists over 4 GB (far beyond the configured limits).
    EntryTooLarge,
    /// The server would not store the entry.
    NotStored(NotStored),
    /// The index is in use by a caller up the stack (re-entrancy).
    IndexBusy,
    /// 2^32 entries in one database: the index has no id left.
    IndexFull,
    /// TCACHE.APPLY or TCACHE.APPLYINVAL from a client.
    ApplyReserved,
    /// TCACHE.APPLY with bytes that are not an entry.
    BadEntry(DecodeError),
    /// TCACHE.APPLYINVAL with a sequence that is not a number up to MAX_SEQ.
    BadInvalSeq,
    /// TCACHE.VERIFY found these differences.
    IndexDiffers(Vec<String>),
    /// A bug caught before it could crash the server.
    Internal,
    /// A cluster-wide invalidation inside MULTI or a script (it must block).
    ClusterWideCannotBlock,
    /// A cluster-wide invalidation asked for a user this node does not have.
    UnknownUser(Vec<u8>),
    /// The owners of some slots did not confirm a cluster-wide invalidation
    /// in time: the command, the timeout and the slot ranges.
    Unconfirmed {
        command: &'static str,
        timeout_ms: i64,
        slots: String,
    },
    /// CLIENT UNBLOCK of a client waiting for a cluster-wide invalidation.
    UnblockedUnconfirmed,
    /// An error another node answered, relayed as it came (its text, written
    /// by this conversion there, starts with its code).
    Relayed(String),
}

/// What a user without the permission was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPerm {
    /// INVALTAG/INVALPREFIX/INVALROLE reach a key it may not delete.
    Delete,
    /// STALETAG reaches a key it may not modify.
    Update,
    /// GATE.SET/GATE.DEL of a gate governing keys it may not write.
    Gate,
    /// TCACHE.STATS RESET without CONFIG RESETSTAT.
    ResetStats,
}

/// Why the server did not store an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    KeyNotOpen,
    Refused,
}

impl From<ArgError> for Error {
    fn from(e: ArgError) -> Error {
        Error::Arg(e)
    }
}

impl From<Error> for RedisError {
    fn from(e: Error) -> RedisError {
        if let Error::WrongArity = e {
            return RedisError::WrongArity;
        }
        match e.text() {
            Cow::Borrowed(s) => RedisError::Str(s),
            Cow::Owned(s) => RedisError::String(wire_text(&s).unwrap_or(s)),
        }
    }
}

/// The reply text (for `WrongArity`, without the command name the server adds).
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl Error {
    /// The reply, starting with its Redis error code.
    fn text(&self) -> Cow<'static, str> {
        match self {
            Error::WrongArity => "ERR wrong number of arguments".into(),
            Error::WrongType => {
                "WRONGTYPE Operation against a key holding the wrong kind of value".into()
            }
            Error::Syntax | Error::Arg(ArgError::Syntax) => "ERR syntax error".into(),
            Error::Arg(ArgError::NotAnInteger) => {
                "ERR value is not an integer or out of range".into()
            }
            Error::Arg(ArgError::EmptyTags) => {
                "ERR syntax error: TAGS needs at least one tag".into()
            }
            Error::Arg(ArgError::TooManyTags { max }) => {
                format!("ERR too many tags (tcache.max-tags is {max})").into()
            }
            Error::Arg(ArgError::TagTooLong { max }) => {
                format!("ERR tag too long (tcache.max-tag-bytes is {max})").into()
            }
            Error::Arg(ArgError::ValueTooLarge { max }) => {
                format!("ERR value too large (tcache.max-value-bytes is {max})").into()
            }
            Error::InvalidCursor => "ERR invalid cursor".into(),
            Error::NoPerm(NoPerm::Delete) => {
                "NOPERM this user has no permissions to delete one or more of the entries reached"
                    .into()
            }
            Error::NoPerm(NoPerm::Update) => {
                "NOPERM this user has no permissions to modify one or more of the entries reached"
                    .into()
            }
            Error::NoPerm(NoPerm::Gate) => {
                "NOPERM this user has no permissions to write every key the gate governs".into()
            }
            Error::NoPerm(NoPerm::ResetStats) => {
                "NOPERM this user has no permissions to reset statistics \
                 (TCACHE.STATS RESET needs CONFIG RESETSTAT)"
                    .into()
            }
            Error::Gate { gate, why } => format!("GATE {}: {why}", lossy(gate)).into(),
            Error::Perm(why) => format!("GATE perm: {why}").into(),
            Error::NoSuchGate(name) => format!("ERR no such gate '{}'", lossy(name)).into(),
            Error::BuiltinGate(name) => format!(
                "ERR gate '{}' is built in and cannot be changed",
                lossy(name)
            )
            .into(),
            Error::InvalidSchema(GateError::InvalidSchema(why)) => {
                format!("ERR invalid schema: {why}").into()
            }
            Error::EntryTooLarge => "ERR entry too large".into(),
            Error::NotStored(NotStored::KeyNotOpen) => "ERR key not open".into(),
            Error::NotStored(NotStored::Refused) => "ERR cannot store the entry".into(),
            Error::IndexBusy => "ERR internal error: index busy".into(),
            Error::IndexFull => "ERR index full: too many tcache entries in this database".into(),
            Error::ApplyReserved => {
                "ERR TCACHE.APPLY is reserved for replication and AOF loading".into()
            }
            Error::BadEntry(why) => format!("ERR bad serialized entry: {why}").into(),
            Error::BadInvalSeq => "ERR bad invalidation sequence".into(),
            Error::IndexDiffers(problems) => {
                format!("ERR index differs from entries: {}", problems.join("; ")).into()
            }
            Error::Internal => "ERR internal error".into(),
            Error::ClusterWideCannotBlock => {
                "ERR in cluster mode this invalidation is cluster-wide and waits for every node: \
                 it cannot run inside MULTI or a script"
                    .into()
            }
            Error::UnknownUser(user) => {
                format!("NOPERM user '{}' does not exist on every node", lossy(user)).into()
            }
            Error::Unconfirmed {
                command,
                timeout_ms,
                slots,
            } => format!(
                "UNCONFIRMED {command} was not confirmed within {timeout_ms} ms \
                 (tcache.cluster-timeout-ms) by the owners of slots {slots}; it was applied \
                 where confirmed, and repeating it is safe"
            )
            .into(),
            Error::UnblockedUnconfirmed => {
                "UNCONFIRMED unblocked before every slot owner confirmed; repeating it is safe"
                    .into()
            }
            Error::Relayed(text) => text.clone().into(),
        }
    }
}

/// Names (gates) are shown as text, invalid UTF-8 replaced.
fn lossy(b: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(b)
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

    fn text(e: Error) -> String {
        RedisError::from(e).to_string()
    }

    #[test]
    fn every_reply_starts_with_its_code() {
        assert_eq!(
            text(Error::WrongType),
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        );
        assert_eq!(text(Error::Syntax), "ERR syntax error");
        assert_eq!(text(ArgError::Syntax.into()), "ERR syntax error");
        assert_eq!(
            text(Error::NoPerm(NoPerm::Delete)),
            "NOPERM this user has no permissions to delete one or more of the entries reached"
        );
        assert_eq!(
            text(Error::NoPerm(NoPerm::ResetStats)),
            "NOPERM this user has no permissions to reset statistics \
             (TCACHE.STATS RESET needs CONFIG RESETSTAT)"
        );
        assert_eq!(
            text(Error::Perm(PermError::Missing("roles"))),
            "GATE perm: /roles: required field missing"
        );
        assert_eq!(
            text(Error::IndexDiffers(vec!["a".into(), "b".into()])),
            "ERR index differs from entries: a; b"
        );
        assert!(matches!(
            RedisError::from(Error::WrongArity),
            RedisError::WrongArity
        ));
        assert_eq!(Error::InvalidCursor.to_string(), "ERR invalid cursor");
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
        let refused = Error::Gate {
            gate: b"g".to_vec(),
            why: Rejection {
                pointer: "/".into(),
                reason: "\"Ā\"".into(),
            },
        };
        assert_eq!(
            text(refused).into_bytes(),
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
            text(ArgError::TooManyTags { max: 64 }.into()),
            "ERR too many tags (tcache.max-tags is 64)"
        );
    }
}
