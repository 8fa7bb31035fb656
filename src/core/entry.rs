//! One cache entry (the value of a key of the module type) and its binary codec.
//!
//! The codec is used for the RDB payload and for the replication/AOF form
//! (`TCACHE.APPLY`), so an entry has exactly one serialized shape.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::core::index::Space;

/// What an entry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A tagged cache entry: `tags` are its tags.
    Cache = 0,
    /// A permission entry: `tags` holds its roles, `perms` its permissions.
    Perm = 1,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::Cache),
            1 => Some(Kind::Perm),
            _ => None,
        }
    }
}

/// A sorted, duplicate-free list of byte strings packed in one allocation:
/// `[u32 little-endian length][bytes]` repeated.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TagList(Box<[u8]>);

impl TagList {
    /// Sorts and folds duplicates.
    pub fn new<'a>(tags: impl IntoIterator<Item = &'a [u8]>) -> TagList {
        let mut v: Vec<&[u8]> = tags.into_iter().collect();
        sort_tags(&mut v);
        let mut buf = Vec::with_capacity(packed_len(&v));
        pack(&mut buf, &v);
        TagList(buf.into_boxed_slice())
    }

    pub fn iter(&self) -> TagIter<'_> {
        TagIter(&self.0)
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn count(&self) -> usize {
        self.iter().count()
    }
}

impl fmt::Debug for TagList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

#[derive(Clone)]
pub struct TagIter<'a>(&'a [u8]);

impl<'a> Iterator for TagIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = split_u32(self.0)?;
        let len = len as usize;
        if rest.len() < len {
            return None;
        }
        let (tag, rest) = rest.split_at(len);
        self.0 = rest;
        Some(tag)
    }
}

/// Sorts tags and folds duplicates, in place: the order of a packed list.
pub fn sort_tags(tags: &mut Vec<&[u8]>) {
    tags.sort_unstable();
    tags.dedup();
}

fn packed_len(tags: &[&[u8]]) -> usize {
    tags.iter().map(|t| t.len() + 4).sum()
}

/// Appends `tags` (sorted, unique) to `buf` as a packed list.
fn pack(buf: &mut Vec<u8>, tags: &[&[u8]]) {
    for t in tags {
        // A tag is bounded by tcache.max-tag-bytes, far below u32::MAX.
        buf.extend_from_slice(&(t.len() as u32).to_le_bytes());
        buf.extend_from_slice(t);
    }
}

fn split_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*head), rest))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `[tags][perms][value]` in one allocation: the packed tags (roles of a
    /// permission entry), the packed permissions (empty for a cache entry),
    /// then the value.
    data: Box<[u8]>,
    tags_len: u32,
    perms_len: u32,
    /// Global write sequence number at the time of the write.
    pub seq: u64,
    /// Unix ms after which the entry is stale (soft expiry); 0 when none.
    pub stale_at_ms: i64,
    /// Where the index holds this entry's key (not serialized).
    pub index_id: IndexId,
    pub kind: Kind,
    /// Killed by an invalidation, and since moved where no tombstone reaches
    /// it (RENAME out of an invalidated prefix, MOVE or COPY to another
    /// database): dead wherever it goes. Serialized (a bit of the kind byte),
    /// so a restart or DUMP/RESTORE keeps it dead.
    pub killed: Killed,
}

#[derive(Default)]
pub struct Killed(AtomicBool);

impl Killed {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Clone for Killed {
    fn clone(&self) -> Killed {
        Killed(AtomicBool::new(self.get()))
    }
}

impl PartialEq for Killed {
    fn eq(&self, other: &Killed) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Killed {}

impl fmt::Debug for Killed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

/// The id the index gave an entry's key, remembered so that an overwrite can
/// find the index record without a key lookup (0 when unknown, which may
/// name another key's record). A hint: the index checks it before trusting it.
/// Not part of the entry's identity.
#[derive(Default)]
pub struct IndexId(AtomicU32);

impl IndexId {
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, id: u32) {
        self.0.store(id, Ordering::Relaxed);
    }
}

impl Clone for IndexId {
    fn clone(&self) -> IndexId {
        IndexId(AtomicU32::new(self.get()))
    }
}

impl PartialEq for IndexId {
    fn eq(&self, _: &IndexId) -> bool {
        true
    }
}

impl Eq for IndexId {}

impl fmt::Debug for IndexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

impl Entry {
    /// `None` when the lists do not fit the u32 lengths (limits keep them far
    /// below).
    fn build(kind: Kind, tags: &[u8], perms: &[u8], value: &[u8], seq: u64) -> Option<Entry> {
        let mut data = Vec::with_capacity(tags.len() + perms.len() + value.len());
        data.extend_from_slice(tags);
        data.extend_from_slice(perms);
        data.extend_from_slice(value);
        Some(Entry {
            data: data.into_boxed_slice(),
            tags_len: u32::try_from(tags.len()).ok()?,
            perms_len: u32::try_from(perms.len()).ok()?,
            seq,
            stale_at_ms: 0,
            index_id: IndexId::default(),
            kind,
            killed: Killed::default(),
        })
    }

    /// A cache entry with `tags` sorted and unique (`sort_tags`), packed
    /// straight into the entry's buffer.
    pub fn cache(value: &[u8], tags: &[&[u8]], seq: u64) -> Option<Entry> {
        let tags_len = packed_len(tags);
        let mut data = Vec::with_capacity(tags_len + value.len());
        pack(&mut data, tags);
        data.extend_from_slice(value);
        Some(Entry {
            data: data.into_boxed_slice(),
            tags_len: u32::try_from(tags_len).ok()?,
            perms_len: 0,
            seq,
            stale_at_ms: 0,
            index_id: IndexId::default(),
            kind: Kind::Cache,
            killed: Killed::default(),
        })
    }

    pub fn new_perm(json: &[u8], roles: &TagList, perms: &TagList, seq: u64) -> Option<Entry> {
        Entry::build(Kind::Perm, roles.bytes(), perms.bytes(), json, seq)
    }

    fn tag_bytes(&self) -> &[u8] {
        self.data.get(..self.tags_len as usize).unwrap_or_default()
    }

    fn perm_bytes(&self) -> &[u8] {
        let (t, p) = (self.tags_len as usize, self.perms_len as usize);
        self.data.get(t..t + p).unwrap_or_default()
    }

    /// Tags of a cache entry, roles of a permission entry.
    pub fn tags(&self) -> TagIter<'_> {
        TagIter(self.tag_bytes())
    }

    /// Permissions of a permission entry (none otherwise).
    pub fn perms(&self) -> TagIter<'_> {
        TagIter(self.perm_bytes())
    }

    pub fn value(&self) -> &[u8] {
        let start = self.tags_len as usize + self.perms_len as usize;
        self.data.get(start..).unwrap_or_default()
    }

    /// The index namespace of this entry's labels (`tags`).
    pub fn space(&self) -> Space {
        match self.kind {
            Kind::Cache => Space::Tags,
            Kind::Perm => Space::Roles,
        }
    }

    /// Memory this entry holds, for MEMORY USAGE and the index statistics.
    pub fn mem_usage(&self) -> usize {
        std::mem::size_of::<Entry>() + self.data.len()
    }
}

/// Set in the kind byte of an entry an invalidation killed (see `Killed`).
const KILLED_BIT: u8 = 0x80;

/// Version byte of the serialized entry.
pub const CODEC_VERSION: u8 = 1;

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    UnknownVersion(u8),
    UnknownKind(u8),
    Truncated,
    UnsortedTags,
    /// A write sequence number above [`MAX_SEQ`]: no real write can have it.
    BadSeq(u64),
}

/// The largest write sequence number a stored entry or an invalidation may
/// carry. The counter starts at 0 and grows by one per write, so a real number
/// never comes near it; a larger one in a payload, an RDB file or a replicated
/// command is forged or corrupt, and accepting it would let the counter wrap
/// (after which invalidations would compare as older than every entry).
pub const MAX_SEQ: u64 = 1 << 62;

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnknownVersion(v) => write!(f, "unknown entry encoding version {v}"),
            DecodeError::UnknownKind(k) => write!(f, "unknown entry kind {k}"),
            DecodeError::Truncated => f.write_str("truncated entry"),
            DecodeError::UnsortedTags => f.write_str("tags not sorted and unique"),
            DecodeError::BadSeq(n) => write!(f, "write sequence {n} out of range"),
        }
    }
}

/// `[version u8][kind u8][seq u64][stale_at i64][tags_len u32][tags]`, then for a
/// permission entry `[perms_len u32][perms]`, then the value (the rest of the
/// buffer); integers little-endian.
pub fn encode(e: &Entry) -> Vec<u8> {
    encode_marked(e, false)
}

/// Like [`encode`], with the killed mark set also when `killed` (an entry a
/// tombstone kills: it must stay dead wherever the bytes land).
pub fn encode_marked(e: &Entry, killed: bool) -> Vec<u8> {
    let (tags, perms) = (e.tag_bytes(), e.perm_bytes());
    let mut out = Vec::with_capacity(30 + e.data.len());
    out.push(CODEC_VERSION);
    out.push(
        e.kind as u8
            | if killed || e.killed.get() {
                KILLED_BIT
            } else {
                0
            },
    );
    out.extend_from_slice(&e.seq.to_le_bytes());
    out.extend_from_slice(&e.stale_at_ms.to_le_bytes());
    out.extend_from_slice(&e.tags_len.to_le_bytes());
    out.extend_from_slice(tags);
    if e.kind == Kind::Perm {
        out.extend_from_slice(&e.perms_len.to_le_bytes());
        out.extend_from_slice(perms);
    }
    out.extend_from_slice(e.value());
    out
}

/// A length-prefixed packed list at the front of `b`, and the rest.
fn split_list(b: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let (len, b) = split_u32(b).ok_or(DecodeError::Truncated)?;
    let len = len as usize;
    if b.len() < len {
        return Err(DecodeError::Truncated);
    }
    let (list, rest) = b.split_at(len);
    check_tags(list)?;
    Ok((list, rest))
}

pub fn decode(b: &[u8]) -> Result<Entry, DecodeError> {
    let (&version, b) = b.split_first().ok_or(DecodeError::Truncated)?;
    if version != CODEC_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let (&kind, b) = b.split_first().ok_or(DecodeError::Truncated)?;
    let killed = kind & KILLED_BIT != 0;
    let kind = Kind::from_byte(kind & !KILLED_BIT).ok_or(DecodeError::UnknownKind(kind))?;
    let (seq, b) = b.split_first_chunk::<8>().ok_or(DecodeError::Truncated)?;
    let seq = u64::from_le_bytes(*seq);
    if seq > MAX_SEQ {
        return Err(DecodeError::BadSeq(seq));
    }
    let (stale, b) = b.split_first_chunk::<8>().ok_or(DecodeError::Truncated)?;
    let (tags, b) = split_list(b)?;
    let (perms, value) = match kind {
        Kind::Perm => split_list(b)?,
        Kind::Cache => (&[][..], b),
    };
    // The lengths came from u32 fields, so `build` cannot refuse them.
    let mut e = Entry::build(kind, tags, perms, value, seq).ok_or(DecodeError::Truncated)?;
    e.stale_at_ms = i64::from_le_bytes(*stale);
    if killed {
        e.killed.set();
    }
    Ok(e)
}

/// Checks a packed tag list from untrusted bytes: every length in bounds,
/// sorted, unique.
fn check_tags(b: &[u8]) -> Result<(), DecodeError> {
    let mut rest = b;
    let mut prev: Option<&[u8]> = None;
    while !rest.is_empty() {
        let (len, r) = split_u32(rest).ok_or(DecodeError::Truncated)?;
        let len = len as usize;
        if r.len() < len {
            return Err(DecodeError::Truncated);
        }
        let (tag, r) = r.split_at(len);
        if prev.is_some_and(|p| p >= tag) {
            return Err(DecodeError::UnsortedTags);
        }
        prev = Some(tag);
        rest = r;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> TagList {
        TagList::new(t.iter().map(|s| s.as_bytes()))
    }

    fn cache(value: &[u8], tags: TagList, seq: u64) -> Entry {
        Entry::build(Kind::Cache, tags.bytes(), &[], value, seq)
            .unwrap_or_else(|| panic!("entry too large"))
    }

    #[test]
    fn tag_list_sorts_and_folds_duplicates() {
        let t = tags(&["b", "a", "b", ""]);
        let v: Vec<&[u8]> = t.iter().collect();
        assert_eq!(v, vec![&b""[..], b"a", b"b"]);
        assert_eq!(t.count(), 3);
    }

    #[test]
    fn codec_round_trips_binary_data() {
        let mut e = cache(
            b"\x00\xff\xfe value",
            TagList::new([&b"\x00t"[..], b"\xc3\x28", b"plain"]),
            42,
        );
        e.stale_at_ms = 1_700_000_000_123;
        assert_eq!(e.value(), b"\x00\xff\xfe value");
        assert_eq!(e.tags().count(), 3);
        assert_eq!(e.perms().count(), 0);
        assert_eq!(decode(&encode(&e)), Ok(e));
    }

    #[test]
    fn an_entry_packed_from_sorted_tags_equals_one_from_a_tag_list() {
        let mut raw: Vec<&[u8]> = vec![b"b", b"a", b"b"];
        sort_tags(&mut raw);
        let direct = Entry::cache(b"v", &raw, 5).unwrap_or_else(|| panic!("entry too large"));
        assert_eq!(direct, cache(b"v", tags(&["a", "b"]), 5));
        assert_eq!(direct.tags().collect::<Vec<_>>(), vec![&b"a"[..], b"b"]);
    }

    #[test]
    fn codec_round_trips_permission_entries() {
        let e = Entry::new_perm(
            br#"{"roles":["a"]}"#,
            &tags(&["admin", "ops"]),
            &tags(&["users:*", "x"]),
            9,
        )
        .unwrap_or_else(|| panic!("entry too large"));
        assert_eq!(e.value(), br#"{"roles":["a"]}"#);
        let perms: Vec<&[u8]> = e.perms().collect();
        assert_eq!(perms, vec![&b"users:*"[..], b"x"]);
        assert_eq!(e.tags().collect::<Vec<_>>(), vec![&b"admin"[..], b"ops"]);
        assert_eq!(decode(&encode(&e)), Ok(e));
    }

    #[test]
    fn codec_round_trips_empty_value_and_no_tags() {
        let e = cache(b"", TagList::default(), 0);
        assert_eq!(decode(&encode(&e)), Ok(e));
    }

    #[test]
    fn decode_rejects_every_truncation_without_panicking() {
        let e = cache(b"v", tags(&["a", "bb"]), 7);
        let b = encode(&e);
        // The value is the tail, so cutting inside it still decodes (shorter value);
        // every cut inside the header or the tags must be refused.
        let header_and_tags = b.len() - 1;
        for cut in 0..header_and_tags {
            assert!(decode(&b[..cut]).is_err(), "cut at {cut} accepted");
        }
    }

    #[test]
    fn the_killed_mark_survives_the_codec() {
        let e = cache(b"v", TagList::new([&b"t"[..]]), 3);
        e.killed.set();
        let back = decode(&encode(&e)).unwrap_or_else(|err| panic!("{err}"));
        assert!(back.killed.get());
        assert_eq!(back, e);
        assert!(!decode(&encode(&cache(b"v", TagList::default(), 1)))
            .unwrap_or_else(|err| panic!("{err}"))
            .killed
            .get());
    }

    #[test]
    fn decode_rejects_unknown_version_and_kind() {
        let mut b = encode(&cache(b"v", tags(&["a"]), 1));
        b[0] = 9;
        assert_eq!(decode(&b), Err(DecodeError::UnknownVersion(9)));
        b[0] = CODEC_VERSION;
        b[1] = 7;
        assert_eq!(decode(&b), Err(DecodeError::UnknownKind(7)));
    }

    #[test]
    fn decode_rejects_a_sequence_past_the_maximum() {
        let ok = encode(&cache(b"v", tags(&["a"]), MAX_SEQ));
        assert!(decode(&ok).is_ok());
        let mut b = encode(&cache(b"v", tags(&["a"]), 1));
        b[2..10].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
        assert_eq!(decode(&b), Err(DecodeError::BadSeq(u64::MAX - 1)));
    }

    #[test]
    fn decode_rejects_unsorted_or_duplicate_tags() {
        let mut raw = Vec::new();
        for t in ["b", "a"] {
            raw.extend_from_slice(&1u32.to_le_bytes());
            raw.extend_from_slice(t.as_bytes());
        }
        let mut b = vec![CODEC_VERSION, 0];
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        b.extend_from_slice(&raw);
        assert_eq!(decode(&b), Err(DecodeError::UnsortedTags));
    }

    #[test]
    fn decode_survives_arbitrary_bytes() {
        // A cheap deterministic fuzz: no input may panic.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 0..300 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x & 0xff) as u8
                })
                .collect();
            let mut b = buf.clone();
            if !b.is_empty() {
                b[0] = CODEC_VERSION;
            }
            let _ = decode(&buf);
            let _ = decode(&b);
        }
    }
}
