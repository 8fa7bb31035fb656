//! Permission entries: the JSON shape `{"roles": [string...], "permissions":
//! [string...]}` (other fields allowed and kept), and permission matching.
//!
//! A permission is granted by an exact match, or by a stored permission ending
//! in `:*` whose part before `*` starts the asked one: `users:*` grants
//! `users:write` and `users:a:b`, but not `users` itself.

use std::fmt;

use serde_json::Value;

use crate::core::entry::{TagIter, TagList};

/// Why a value is not a permission entry: the reason of `GATE perm: <reason>`,
/// which names the failing place as a JSON Pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermError {
    /// Not a JSON document (the parser's message).
    InvalidJson(String),
    /// A document that is not an object.
    NotAnObject,
    /// The field is absent.
    Missing(&'static str),
    /// The field is not an array.
    NotAnArray(&'static str),
    /// Item `.1` of the field is not a string.
    NotAString(&'static str, usize),
}

impl fmt::Display for PermError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PermError::InvalidJson(e) => write!(f, "invalid JSON: {e}"),
            PermError::NotAnObject => {
                f.write_str("/: must be an object with roles and permissions")
            }
            PermError::Missing(field) => write!(f, "/{field}: required field missing"),
            PermError::NotAnArray(field) => write!(f, "/{field}: must be an array of strings"),
            PermError::NotAString(field, i) => write!(f, "/{field}/{i}: must be a string"),
        }
    }
}

impl std::error::Error for PermError {}

/// The roles and permissions of a permission entry.
#[derive(Debug, PartialEq, Eq)]
pub struct PermShape {
    pub roles: TagList,
    pub perms: TagList,
    /// How many roles, after folding duplicates.
    pub role_count: usize,
}

fn strings<'a>(
    doc: &'a serde_json::Map<String, Value>,
    field: &'static str,
) -> Result<Vec<&'a [u8]>, PermError> {
    match doc.get(field) {
        None => Err(PermError::Missing(field)),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_bytes()),
                _ => Err(PermError::NotAString(field, i)),
            })
            .collect(),
        Some(_) => Err(PermError::NotAnArray(field)),
    }
}

/// Validates the JSON shape.
pub fn parse(json: &[u8]) -> Result<PermShape, PermError> {
    let doc: Value =
        serde_json::from_slice(json).map_err(|e| PermError::InvalidJson(e.to_string()))?;
    let Value::Object(doc) = doc else {
        return Err(PermError::NotAnObject);
    };
    let roles = strings(&doc, "roles")?;
    let perms = strings(&doc, "permissions")?;
    let roles = TagList::new(roles);
    let role_count = roles.count();
    Ok(PermShape {
        roles,
        perms: TagList::new(perms),
        role_count,
    })
}

/// Whether `stored` grants `asked`.
pub fn granted(mut stored: TagIter<'_>, asked: &[u8]) -> bool {
    stored.any(|p| {
        p == asked
            || p.strip_suffix(b"*")
                .is_some_and(|stem| stem.ends_with(b":") && asked.starts_with(stem))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_is_validated_with_a_reason() {
        let ok =
            parse(br#"{"roles":["admin","ops","admin"],"permissions":["users:*"],"name":"x"}"#)
                .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(ok.role_count, 2);
        for (json, reason) in [
            (&b"nope"[..], "invalid JSON"),
            (b"[1]", "/: must be an object"),
            (br#"{"permissions":[]}"#, "/roles: required"),
            (
                br#"{"roles":[],"permissions":"x"}"#,
                "/permissions: must be an array",
            ),
            (
                br#"{"roles":[1],"permissions":[]}"#,
                "/roles/0: must be a string",
            ),
            (b"\xff", "invalid JSON"),
            (br#"{"roles":[],"permissions":[NaN]}"#, "invalid JSON"),
        ] {
            let e = parse(json).unwrap_err().to_string();
            assert!(e.starts_with(reason), "{e}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn exact_and_wildcard_grants() {
        let p = parse(br#"{"roles":[],"permissions":["users:*","reports:read","*","admin*"]}"#)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .perms;
        assert!(granted(p.iter(), b"users:write"));
        assert!(granted(p.iter(), b"users:a:b"));
        assert!(!granted(p.iter(), b"users"));
        assert!(granted(p.iter(), b"reports:read"));
        assert!(!granted(p.iter(), b"reports:write"));
        assert!(!granted(p.iter(), b"adminx"), "only ':*' is a wildcard");
        assert!(granted(p.iter(), b"*"), "a literal '*' matches itself only");
        assert!(!granted(p.iter(), b"anything"));
    }
}
