//! The label namespaces an entry can be indexed under.

/// The two label namespaces: tags of cache entries, roles of permission
/// entries. Tag `admin` and role `admin` are unrelated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Tags,
    Roles,
}
