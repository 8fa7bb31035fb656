//! Cluster-wide invalidations, the pure part: the messages nodes exchange over
//! the cluster bus, slot sets, and the coordinator's bookkeeping of which slot
//! owners confirmed an invalidation.
//!
//! The cluster bus is fire-and-forget and shares its message-type ids with
//! other modules, so every message starts with a magic and a version, and a
//! request is resent until every slot's current owner confirmed it. A node
//! that gets a request twice answers from memory (or re-applies when it owns
//! other slots than when it first applied): duplicates never count twice.

use std::collections::HashMap;

pub const SLOTS: usize = 16384;
/// Node ids are 40 bytes, no NUL.
pub const NODE_ID_LEN: usize = 40;
pub type NodeId = [u8; NODE_ID_LEN];

const MAGIC: &[u8; 4] = b"TCIV";
const VERSION: u8 = 1;
const REQUEST: u8 = 1;
const ACK: u8 = 2;
/// Bounds a decoded request (a message is at most this many names).
const MAX_NAMES: usize = 1 << 20;

/// A set of hash slots.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotSet(Box<[u8; SLOTS / 8]>);

impl Default for SlotSet {
    fn default() -> Self {
        SlotSet(Box::new([0; SLOTS / 8]))
    }
}

impl std::fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlotSet({})", self.ranges_text())
    }
}

impl SlotSet {
    pub fn all() -> SlotSet {
        SlotSet(Box::new([0xff; SLOTS / 8]))
    }

    pub fn insert_range(&mut self, start: u16, end: u16) {
        for s in start..=end.min(SLOTS as u16 - 1) {
            self.0[s as usize / 8] |= 1 << (s % 8);
        }
    }

    pub fn contains(&self, slot: u16) -> bool {
        (slot as usize) < SLOTS && self.0[slot as usize / 8] & (1 << (slot % 8)) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }

    /// The slots of `self` that are not in `other`.
    pub fn minus(&self, other: &SlotSet) -> SlotSet {
        let mut out = SlotSet::default();
        for (i, b) in out.0.iter_mut().enumerate() {
            *b = self.0[i] & !other.0[i];
        }
        out
    }

    /// Adds the slots that are in both `a` and `b`.
    fn add_common(&mut self, a: &SlotSet, b: &SlotSet) {
        for (i, byte) in self.0.iter_mut().enumerate() {
            *byte |= a.0[i] & b.0[i];
        }
    }

    /// Inclusive ranges, in order.
    pub fn ranges(&self) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for s in 0..SLOTS as u16 {
            if !self.contains(s) {
                continue;
            }
            match out.last_mut() {
                Some((_, end)) if *end + 1 == s => *end = s,
                _ => out.push((s, s)),
            }
        }
        out
    }

    /// `0-5460,10923-16383`; a single slot is written alone.
    pub fn ranges_text(&self) -> String {
        let parts: Vec<String> = self
            .ranges()
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        parts.join(",")
    }
}

/// Which cluster-wide command a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    InvalTag,
    StaleTag,
    InvalPrefix,
    InvalRole,
    InvalAll,
}

impl OpKind {
    fn code(self) -> u8 {
        match self {
            OpKind::InvalTag => 1,
            OpKind::StaleTag => 2,
            OpKind::InvalPrefix => 3,
            OpKind::InvalRole => 4,
            OpKind::InvalAll => 5,
        }
    }

    fn from_code(c: u8) -> Option<OpKind> {
        Some(match c {
            1 => OpKind::InvalTag,
            2 => OpKind::StaleTag,
            3 => OpKind::InvalPrefix,
            4 => OpKind::InvalRole,
            5 => OpKind::InvalAll,
            _ => return None,
        })
    }
}

/// One cluster-wide command: the coordinator's id and its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpId {
    pub node: NodeId,
    pub n: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Apply `kind` with `args` (the command's arguments after its name) as
    /// `user`, and answer with an `Ack`.
    Request {
        op: OpId,
        kind: OpKind,
        user: Vec<u8>,
        args: Vec<Vec<u8>>,
    },
    /// Applied: the node's count so far for `op` (or an error text) and the
    /// slots it owned when it applied.
    Ack {
        op: OpId,
        result: Result<i64, Vec<u8>>,
        owned: SlotSet,
    },
}

struct Writer(Vec<u8>);

impl Writer {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

impl Msg {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64));
        w.0.extend_from_slice(MAGIC);
        w.0.push(VERSION);
        match self {
            Msg::Request {
                op,
                kind,
                user,
                args,
            } => {
                w.0.push(REQUEST);
                encode_op(&mut w, op);
                w.0.push(kind.code());
                w.bytes(user);
                w.0.extend_from_slice(&(args.len() as u32).to_le_bytes());
                for a in args {
                    w.bytes(a);
                }
            }
            Msg::Ack { op, result, owned } => {
                w.0.push(ACK);
                encode_op(&mut w, op);
                match result {
                    Ok(n) => {
                        w.0.push(0);
                        w.0.extend_from_slice(&n.to_le_bytes());
                    }
                    Err(e) => {
                        w.0.push(1);
                        w.bytes(e);
                    }
                }
                w.0.extend_from_slice(&owned.0[..]);
            }
        }
        w.0
    }

    /// `None` for anything that is not a whole message of ours (another
    /// module's message on the same type id, another version, a short or
    /// trailing payload).
    pub fn decode(payload: &[u8]) -> Option<Msg> {
        let mut r = Reader(payload);
        if r.take(4)? != MAGIC || r.u8()? != VERSION {
            return None;
        }
        let msg = match r.u8()? {
            REQUEST => {
                let op = decode_op(&mut r)?;
                let kind = OpKind::from_code(r.u8()?)?;
                let user = r.bytes()?.to_vec();
                let n = r.u32()? as usize;
                if n > MAX_NAMES {
                    return None;
                }
                let mut args = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    args.push(r.bytes()?.to_vec());
                }
                Msg::Request {
                    op,
                    kind,
                    user,
                    args,
                }
            }
            ACK => {
                let op = decode_op(&mut r)?;
                let result = match r.u8()? {
                    0 => Ok(r.u64()? as i64),
                    1 => Err(r.bytes()?.to_vec()),
                    _ => return None,
                };
                let mut owned = SlotSet::default();
                owned.0.copy_from_slice(r.take(SLOTS / 8)?);
                Msg::Ack { op, result, owned }
            }
            _ => return None,
        };
        r.0.is_empty().then_some(msg)
    }
}

fn encode_op(w: &mut Writer, op: &OpId) {
    w.0.extend_from_slice(&op.node);
    w.0.extend_from_slice(&op.n.to_le_bytes());
}

fn decode_op(r: &mut Reader) -> Option<OpId> {
    let node: NodeId = r.take(NODE_ID_LEN)?.try_into().ok()?;
    Some(OpId { node, n: r.u64()? })
}

/// Who owns which slots, as the coordinator last read it: ranges with their
/// primary's id. Slots in no range have no owner (the cluster is down for them).
#[derive(Clone, Debug, Default)]
pub struct SlotMap(pub Vec<(u16, u16, NodeId)>);

impl SlotMap {
    /// The slots `node` owns.
    pub fn owned_by(&self, node: &NodeId) -> SlotSet {
        let mut s = SlotSet::default();
        for (a, b, n) in &self.0 {
            if n == node {
                s.insert_range(*a, *b);
            }
        }
        s
    }
}

/// A node's latest answer to one request.
#[derive(Clone, Debug)]
pub struct Answer {
    pub count: i64,
    pub owned: SlotSet,
}

/// The coordinator's view of one cluster-wide command in flight.
#[derive(Debug)]
pub struct Progress {
    pub answers: HashMap<NodeId, Answer>,
}

/// Where a command stands against the current slot map.
#[derive(Debug, PartialEq, Eq)]
pub enum Standing {
    /// Every slot's current owner applied it: the cluster-wide count.
    Done(i64),
    /// These slots are not confirmed; these owners should get the request again.
    Waiting {
        unconfirmed: SlotSet,
        ask: Vec<NodeId>,
    },
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            answers: HashMap::new(),
        }
    }

    /// Records `node`'s answer: counts are cumulative per node, so the latest
    /// (largest) one stands, and a duplicate never adds.
    pub fn record(&mut self, node: NodeId, count: i64, owned: SlotSet) {
        match self.answers.get_mut(&node) {
            Some(a) => {
                a.count = a.count.max(count);
                a.owned = owned;
            }
            None => {
                self.answers.insert(node, Answer { count, owned });
            }
        }
    }

    /// A slot is confirmed when its current owner (per `map`) answered and
    /// owned it when it applied. The count is the sum over the nodes that
    /// answered, each counted once.
    pub fn standing(&self, map: &SlotMap) -> Standing {
        let mut confirmed = SlotSet::default();
        let mut ask = Vec::new();
        for (a, b, owner) in &map.0 {
            let mut range = SlotSet::default();
            range.insert_range(*a, *b);
            match self.answers.get(owner) {
                Some(ans) => {
                    confirmed.add_common(&range, &ans.owned);
                    if !range.minus(&ans.owned).is_empty() && !ask.contains(owner) {
                        ask.push(*owner);
                    }
                }
                None => {
                    if !ask.contains(owner) {
                        ask.push(*owner);
                    }
                }
            }
        }
        let unconfirmed = SlotSet::all().minus(&confirmed);
        if unconfirmed.is_empty() {
            Standing::Done(self.answers.values().map(|a| a.count).sum())
        } else {
            Standing::Waiting { unconfirmed, ask }
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// What a node remembers of the requests it applied, so that a resent one is
/// answered without counting twice. Bounded by time: a request is kept
/// `keep_ms` after it first came (the caller makes that longer than any
/// coordinator resends it), and forgotten in arrival order.
#[derive(Default)]
pub struct Applied {
    /// op -> (count so far, fingerprint of the slots owned when last applied)
    ops: HashMap<OpId, (i64, u64)>,
    /// (first seen ms, op), oldest first.
    order: std::collections::VecDeque<(i64, OpId)>,
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// First time, or the node owns other slots than when it applied: apply.
    Apply,
    /// Already applied with the same slots: answer with this count again.
    Answer(i64),
}

impl SlotSet {
    /// A fingerprint (FNV-1a) of the set, to tell whether it changed.
    pub fn fingerprint(&self) -> u64 {
        self.0.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
}

impl Applied {
    pub fn decide(&self, op: &OpId, owned: &SlotSet) -> Decision {
        match self.ops.get(op) {
            Some((count, was)) if *was == owned.fingerprint() => Decision::Answer(*count),
            _ => Decision::Apply,
        }
    }

    /// Records an application that counted `count` more entries; returns the
    /// total for this op. Forgets requests first seen `keep_ms` ago or more.
    pub fn applied(
        &mut self,
        op: OpId,
        count: i64,
        owned: &SlotSet,
        now_ms: i64,
        keep_ms: i64,
    ) -> i64 {
        while let Some(&(at, old)) = self.order.front() {
            if now_ms - at < keep_ms {
                break;
            }
            self.order.pop_front();
            self.ops.remove(&old);
        }
        let e = self.ops.entry(op).or_insert_with(|| {
            self.order.push_back((now_ms, op));
            (0, 0)
        });
        e.0 += count;
        e.1 = owned.fingerprint();
        e.0
    }

    /// Requests remembered.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// The invalidations a node applied lately, in cluster mode. A key can be in
/// flight while an invalidation runs (MIGRATE moves it after the target
/// applied and before the source did): an entry that arrives by RESTORE while
/// an invalidation that names it is recent arrives dead. Entries written after
/// the invalidation and moved within the window die too: over-invalidation,
/// bounded in time.
#[derive(Default)]
pub struct Recent {
    tags: HashMap<Vec<u8>, i64>,
    roles: HashMap<Vec<u8>, i64>,
    prefixes: Vec<(Vec<u8>, i64)>,
    /// PERM.INVALALL: when, 0 for never.
    all_roles: i64,
}

impl Recent {
    /// Notes that `kind` with `names` (its arguments) was applied at `now_ms`.
    pub fn note(&mut self, kind: OpKind, names: &[&[u8]], now_ms: i64) {
        match kind {
            OpKind::InvalTag => {
                for n in names {
                    self.tags.insert(n.to_vec(), now_ms);
                }
            }
            OpKind::InvalRole => {
                for n in names {
                    self.roles.insert(n.to_vec(), now_ms);
                }
            }
            OpKind::InvalPrefix => {
                for n in names {
                    self.prefixes.retain(|(p, _)| p != n);
                    self.prefixes.push((n.to_vec(), now_ms));
                }
            }
            OpKind::InvalAll => self.all_roles = now_ms,
            // Stale marks are soft: an entry moved in keeps its own.
            OpKind::StaleTag => {}
        }
    }

    /// Forgets what is older than `keep_ms`.
    pub fn prune(&mut self, now_ms: i64, keep_ms: i64) {
        let fresh = |at: &i64| now_ms - *at < keep_ms;
        self.tags.retain(|_, at| fresh(at));
        self.roles.retain(|_, at| fresh(at));
        self.prefixes.retain(|(_, at)| fresh(at));
        if !fresh(&self.all_roles) {
            self.all_roles = 0;
        }
    }

    /// Whether a recent invalidation names an entry stored under `key`
    /// with `labels` (tags of a cache entry, roles of a permission entry).
    pub fn names<'a>(
        &self,
        perm: bool,
        key: &[u8],
        mut labels: impl Iterator<Item = &'a [u8]>,
    ) -> bool {
        if self.prefixes.iter().any(|(p, _)| key.starts_with(p)) {
            return true;
        }
        if perm {
            self.all_roles != 0 || labels.any(|r| self.roles.contains_key(r))
        } else {
            labels.any(|t| self.tags.contains_key(t))
        }
    }

    pub fn len(&self) -> usize {
        self.tags.len() + self.roles.len() + self.prefixes.len() + usize::from(self.all_roles != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: u8) -> NodeId {
        [c; NODE_ID_LEN]
    }

    fn set(ranges: &[(u16, u16)]) -> SlotSet {
        let mut s = SlotSet::default();
        for &(a, b) in ranges {
            s.insert_range(a, b);
        }
        s
    }

    fn three() -> SlotMap {
        SlotMap(vec![
            (0, 5460, id(b'a')),
            (5461, 10922, id(b'b')),
            (10923, 16383, id(b'c')),
        ])
    }

    #[test]
    fn recent_invalidations_name_arrivals_until_they_age_out() {
        let mut r = Recent::default();
        let tags = |v: &'static [&'static [u8]]| v.iter().copied();
        r.note(OpKind::InvalTag, &[b"t1", b"t2"], 1000);
        r.note(OpKind::InvalPrefix, &[b"user:"], 1000);
        r.note(OpKind::InvalRole, &[b"admin"], 1000);
        r.note(OpKind::StaleTag, &[b"soft"], 1000);
        assert!(r.names(false, b"k", tags(&[b"x", b"t2"])));
        assert!(!r.names(false, b"k", tags(&[b"x", b"soft"])));
        assert!(r.names(false, b"user:1", tags(&[])));
        assert!(r.names(true, b"p:1", tags(&[b"admin"])));
        assert!(
            !r.names(true, b"p:1", tags(&[b"t1"])),
            "a role is not a tag"
        );
        assert!(
            !r.names(false, b"p:1", tags(&[b"admin"])),
            "a tag is not a role"
        );
        r.note(OpKind::InvalAll, &[], 1500);
        assert!(r.names(true, b"p:2", tags(&[b"anyone"])));
        assert_eq!(r.len(), 5);
        r.prune(2000, 1000);
        assert_eq!(r.len(), 1, "only INVALALL (1500) is younger than 1 s");
        assert!(!r.names(false, b"k", tags(&[b"t1"])));
        r.prune(2500, 1000);
        assert_eq!(r.len(), 0);
        assert!(!r.names(true, b"p:2", tags(&[b"anyone"])));
    }

    #[test]
    fn messages_round_trip() {
        let op = OpId {
            node: id(b'x'),
            n: 7,
        };
        let req = Msg::Request {
            op,
            kind: OpKind::InvalPrefix,
            user: b"app".to_vec(),
            args: vec![b"user:".to_vec(), vec![0, 255, b'\n']],
        };
        assert_eq!(Msg::decode(&req.encode()), Some(req));
        for result in [Ok(-3), Ok(1 << 40), Err(b"NOPERM no".to_vec())] {
            let ack = Msg::Ack {
                op,
                result,
                owned: set(&[(0, 1), (16383, 16383)]),
            };
            assert_eq!(Msg::decode(&ack.encode()), Some(ack));
        }
    }

    #[test]
    fn foreign_truncated_and_trailing_payloads_are_ignored() {
        let req = Msg::Request {
            op: OpId {
                node: id(b'x'),
                n: 1,
            },
            kind: OpKind::InvalTag,
            user: b"default".to_vec(),
            args: vec![b"t".to_vec()],
        }
        .encode();
        for n in 0..req.len() {
            assert_eq!(Msg::decode(&req[..n]), None, "prefix of {n} bytes");
        }
        let mut long = req.clone();
        long.push(0);
        assert_eq!(Msg::decode(&long), None);
        let mut other_version = req.clone();
        other_version[4] = 2;
        assert_eq!(Msg::decode(&other_version), None);
        assert_eq!(Msg::decode(b"hello from another module"), None);
        let mut bad_kind = req;
        bad_kind[4 + 1 + 1 + NODE_ID_LEN + 8] = 99;
        assert_eq!(Msg::decode(&bad_kind), None);
    }

    #[test]
    fn ranges_are_written_as_redis_writes_them() {
        assert_eq!(
            set(&[(0, 5460), (10923, 16383)]).ranges_text(),
            "0-5460,10923-16383"
        );
        assert_eq!(set(&[(7, 7), (9, 10)]).ranges_text(), "7,9-10");
        assert_eq!(SlotSet::default().ranges_text(), "");
        assert_eq!(SlotSet::all().ranges(), vec![(0, 16383)]);
    }

    #[test]
    fn done_only_when_every_current_owner_confirmed() {
        let map = three();
        let mut p = Progress::new();
        p.record(id(b'a'), 2, set(&[(0, 5460)]));
        p.record(id(b'b'), 3, set(&[(5461, 10922)]));
        match p.standing(&map) {
            Standing::Waiting { unconfirmed, ask } => {
                assert_eq!(unconfirmed.ranges_text(), "10923-16383");
                assert_eq!(ask, vec![id(b'c')]);
            }
            s => panic!("{s:?}"),
        }
        p.record(id(b'c'), 4, set(&[(10923, 16383)]));
        assert_eq!(p.standing(&map), Standing::Done(9));
    }

    #[test]
    fn duplicates_never_count_twice() {
        let map = SlotMap(vec![(0, 16383, id(b'a'))]);
        let mut p = Progress::new();
        p.record(id(b'a'), 5, SlotSet::all());
        p.record(id(b'a'), 5, SlotSet::all());
        assert_eq!(p.standing(&map), Standing::Done(5));
    }

    #[test]
    fn a_failover_needs_the_new_owner_to_confirm() {
        let mut p = Progress::new();
        p.record(id(b'a'), 2, set(&[(0, 5460)]));
        p.record(id(b'b'), 3, set(&[(5461, 10922)]));
        p.record(id(b'c'), 4, set(&[(10923, 16383)]));
        // c failed over to d after it answered.
        let mut map = three();
        map.0[2].2 = id(b'd');
        match p.standing(&map) {
            Standing::Waiting { unconfirmed, ask } => {
                assert_eq!(unconfirmed.ranges_text(), "10923-16383");
                assert_eq!(ask, vec![id(b'd')]);
            }
            s => panic!("{s:?}"),
        }
        p.record(id(b'd'), 0, set(&[(10923, 16383)]));
        assert_eq!(p.standing(&map), Standing::Done(9));
    }

    #[test]
    fn a_slot_that_moved_after_its_owner_applied_is_asked_again() {
        let mut p = Progress::new();
        // b applied while it owned 5461-10922; 5461 moved to a since.
        p.record(id(b'a'), 1, set(&[(0, 5460)]));
        p.record(id(b'b'), 1, set(&[(5461, 10922)]));
        p.record(id(b'c'), 1, set(&[(10923, 16383)]));
        let map = SlotMap(vec![
            (0, 5461, id(b'a')),
            (5462, 10922, id(b'b')),
            (10923, 16383, id(b'c')),
        ]);
        match p.standing(&map) {
            Standing::Waiting { unconfirmed, ask } => {
                assert_eq!(unconfirmed.ranges_text(), "5461");
                assert_eq!(ask, vec![id(b'a')]);
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn unowned_slots_are_never_confirmed() {
        let map = SlotMap(vec![(0, 100, id(b'a'))]);
        let mut p = Progress::new();
        p.record(id(b'a'), 1, SlotSet::all());
        match p.standing(&map) {
            Standing::Waiting { unconfirmed, ask } => {
                assert_eq!(unconfirmed.ranges_text(), "101-16383");
                assert!(ask.is_empty());
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn a_node_answers_a_resent_request_from_memory_unless_its_slots_changed() {
        let mut a = Applied::default();
        let op = OpId {
            node: id(b'x'),
            n: 1,
        };
        let owned = set(&[(0, 5460)]);
        assert_eq!(a.decide(&op, &owned), Decision::Apply);
        assert_eq!(a.applied(op, 4, &owned, 1000, 60_000), 4);
        assert_eq!(a.decide(&op, &owned), Decision::Answer(4));
        let more = set(&[(0, 5461)]);
        assert_eq!(a.decide(&op, &more), Decision::Apply);
        assert_eq!(a.applied(op, 1, &more, 2000, 60_000), 5);
        assert_eq!(a.decide(&op, &more), Decision::Answer(5));
        // Forgotten keep_ms after it first came, oldest first.
        let later = OpId {
            node: id(b'y'),
            n: 1,
        };
        a.applied(later, 0, &more, 30_000, 60_000);
        assert_eq!(a.len(), 2);
        let last = OpId {
            node: id(b'y'),
            n: 2,
        };
        a.applied(last, 0, &more, 61_000, 60_000);
        assert_eq!(
            a.len(),
            2,
            "the first op (seen at 1000) is forgotten at 61000"
        );
        assert_eq!(a.decide(&op, &more), Decision::Apply);
        assert_eq!(a.decide(&later, &more), Decision::Answer(0));
    }
}
