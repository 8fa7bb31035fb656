//! SPEC invariant 2 and the replication paths of invariant 1: after `WAIT`, a
//! replica holds the same entries, tags and absolute expiry times as its
//! primary, whether it followed the stream (late or not), resynced from
//! scratch, or resynced partially; a read-only replica refuses tcache writes;
//! TCACHE.APPLY is refused from normal clients; a promoted replica works.
//!
//! A TCACHE.SET reaches replicas and the AOF as `TCACHE.APPLY key <entry>`
//! with `PXAT <absolute ms>`; deletions by the module as `DEL k ...`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use common::tc::{assert_tag, assert_verified, get, set, tags_of, tagscan_all};
use common::*;

/// How far apart the primary's and the replica's PEXPIRETIME may be.
const EXPIRY_SLACK_MS: i64 = 5;
const APPLY_RESERVED: &str = "ERR TCACHE.APPLY is reserved for replication and AOF loading";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `WAIT 1 5000` acknowledged by the one replica.
#[track_caller]
fn wait_replica(p: &mut Conn) {
    // Large invalidations finish in the background: their DELs come first.
    common::tc::wait_reclaimed(p);
    assert_eq!(p.q(&["WAIT", "1", "5000"]).as_int(), 1, "WAIT 1 5000");
}

/// Every key of db 0 (SCAN), sorted.
fn all_keys(c: &mut Conn) -> Vec<String> {
    let mut keys = BTreeSet::new();
    let mut cursor = "0".to_string();
    loop {
        let r = c.q(&["SCAN", &cursor, "COUNT", "50"]);
        let parts = r.as_array();
        assert_eq!(parts.len(), 2, "SCAN reply {r:?}");
        cursor = parts[0].as_str().to_string();
        keys.extend(parts[1].as_array().iter().map(|k| k.as_str().to_string()));
        if cursor == "0" {
            return keys.into_iter().collect();
        }
    }
}

/// What one node says about one key.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    value: Option<Vec<u8>>,
    tags: Option<Vec<String>>,
    expire_at_ms: i64,
}

/// Value (TCACHE.GET), tags (TCACHE.TAGS) and PEXPIRETIME of every key.
fn snapshot(c: &mut Conn) -> BTreeMap<String, Seen> {
    all_keys(c)
        .into_iter()
        .map(|k| {
            let seen = Seen {
                value: get(c, &k),
                tags: tags_of(c, k.as_bytes()).map(|t| {
                    t.into_iter()
                        .map(|t| String::from_utf8(t).unwrap())
                        .collect()
                }),
                expire_at_ms: c.q(&["PEXPIRETIME", &k]).as_int(),
            };
            (k, seen)
        })
        .collect()
}

/// For every tag either node knows: the TAGSCAN keys and the TAGCARD.
fn tag_index(c: &mut Conn, tags: &BTreeSet<String>) -> BTreeMap<String, (Vec<Vec<u8>>, i64)> {
    tags.iter()
        .map(|t| {
            let keys = tagscan_all(c, t.as_bytes());
            let card = c.q(&["TCACHE.TAGCARD", t]).as_int();
            (t.clone(), (keys, card))
        })
        .collect()
}

fn tags_in(snap: &BTreeMap<String, Seen>) -> BTreeSet<String> {
    snap.values()
        .flat_map(|s| s.tags.clone().unwrap_or_default())
        .collect()
}

/// The replica holds exactly the primary's keys, values and tags, its tag
/// index answers the same, both verify, and every PEXPIRETIME agrees within
/// EXPIRY_SLACK_MS. Returns the primary's snapshot.
#[track_caller]
fn assert_same_cache(p: &mut Conn, r: &mut Conn) -> BTreeMap<String, Seen> {
    assert_verified(p);
    assert_verified(r);
    let ps = snapshot(p);
    let rs = snapshot(r);
    let pkeys: Vec<&String> = ps.keys().collect();
    let rkeys: Vec<&String> = rs.keys().collect();
    assert_eq!(rkeys, pkeys, "key sets differ (replica, primary)");
    for (k, pv) in &ps {
        let rv = &rs[k];
        assert_eq!(rv.value, pv.value, "value of {k} (replica, primary)");
        assert_eq!(rv.tags, pv.tags, "tags of {k} (replica, primary)");
        assert!(
            pv.expire_at_ms > 0,
            "{k} has no expiry on the primary: {}",
            pv.expire_at_ms
        );
        let diff = rv.expire_at_ms - pv.expire_at_ms;
        assert!(
            diff.abs() <= EXPIRY_SLACK_MS,
            "PEXPIRETIME of {k}: replica {} primary {} ({diff:+} ms)",
            rv.expire_at_ms,
            pv.expire_at_ms
        );
    }
    let mut tags = tags_in(&ps);
    tags.extend(tags_in(&rs));
    assert_eq!(
        tag_index(r, &tags),
        tag_index(p, &tags),
        "tag index (replica, primary)"
    );
    ps
}

/// What the cache must hold: key -> (value, sorted tags).
#[derive(Default)]
struct Model(BTreeMap<String, (String, Vec<String>)>);

impl Model {
    fn set(&mut self, c: &mut Conn, key: &str, value: &str, ttl: u64, tags: &[&str]) {
        set(c, key, value, ttl, tags);
        let mut t: Vec<String> = tags.iter().map(|s| s.to_string()).collect();
        t.sort();
        t.dedup();
        self.0.insert(key.to_string(), (value.to_string(), t));
    }

    fn invaltag(&mut self, c: &mut Conn, tags: &[&str]) {
        let before = self.0.len();
        self.0
            .retain(|_, (_, t)| !t.iter().any(|x| tags.contains(&x.as_str())));
        let mut args = vec!["TCACHE.INVALTAG"];
        args.extend_from_slice(tags);
        let want = (before - self.0.len()) as i64;
        assert_eq!(c.q(&args).as_int(), want, "{args:?}");
    }

    fn invalprefix(&mut self, c: &mut Conn, prefix: &str) {
        let before = self.0.len();
        self.0.retain(|k, _| !k.starts_with(prefix));
        let want = (before - self.0.len()) as i64;
        assert_eq!(
            c.q(&["TCACHE.INVALPREFIX", prefix]).as_int(),
            want,
            "TCACHE.INVALPREFIX {prefix}"
        );
    }

    fn del(&mut self, c: &mut Conn, keys: &[&str]) {
        let uniq: BTreeSet<&str> = keys.iter().copied().collect();
        let want = uniq.iter().filter(|k| self.0.remove(**k).is_some()).count() as i64;
        let mut args = vec!["TCACHE.DEL"];
        args.extend_from_slice(keys);
        assert_eq!(c.q(&args).as_int(), want, "{args:?}");
    }

    /// The node holds exactly the modelled entries and tags.
    #[track_caller]
    fn assert_held_by(&self, c: &mut Conn, node: &str) {
        let snap = snapshot(c);
        let got: BTreeMap<String, (String, Vec<String>)> = snap
            .into_iter()
            .map(|(k, s)| {
                let v = String::from_utf8(s.value.expect("live key without value")).unwrap();
                (k, (v, s.tags.expect("live key without tags")))
            })
            .collect();
        assert_eq!(got, self.0, "entries on the {node}");
        let mut by_tag: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (k, (_, tags)) in &self.0 {
            for t in tags {
                by_tag.entry(t).or_default().push(k);
            }
        }
        for (t, keys) in by_tag {
            assert_tag(c, t, &keys);
        }
    }
}

/// Sets with tags, overwrites (new value, tags and ttl), refused NX/XX,
/// TCACHE.DEL, INVALTAG and INVALPREFIX, over a few hundred keys.
fn workload(p: &mut Conn, m: &mut Model) {
    m.set(p, "user:1", "alice", 100, &["users", "team:a"]);
    m.set(p, "user:2", "bob", 200, &["users", "team:b"]);
    m.set(p, "user:3", "carol", 300, &["users", "team:a"]);
    m.set(p, "post:1", "hello", 400, &["posts", "team:a"]);
    m.set(p, "post:2", "world", 500, &["posts"]);
    m.set(p, "sess:1", "s1", 600, &["sessions"]);
    m.set(p, "sess:2", "s2", 700, &["sessions", "users"]);
    m.set(p, "note:1", "plain note", 800, &[]);
    for i in 0..300u64 {
        let key = format!("bulk:{i}");
        let g = format!("g{}", i % 7);
        let h = format!("h{}", i % 3);
        m.set(
            p,
            &key,
            &format!("value {i}"),
            60 + i * 37,
            &[&g, &h, "bulk"],
        );
    }
    // Overwrite: new value, different tags, different ttl.
    m.set(p, "user:2", "bob v2", 1000, &["admins", "users"]);
    m.set(p, "bulk:5", "five", 9000, &["special"]);
    // Refused conditional writes change nothing.
    assert!(p
        .q(&["TCACHE.SET", "user:3", "x", "5", "NX", "TAGS", "zzz"])
        .is_nil());
    assert!(p.q(&["TCACHE.SET", "ghost", "x", "5", "XX"]).is_nil());
    m.del(p, &["post:2", "missing", "bulk:10", "bulk:10"]);
    m.invaltag(p, &["team:a"]);
    m.invaltag(p, &["g3", "h1"]);
    m.invalprefix(p, "sess:");
    m.invalprefix(p, "bulk:2");
    // Written after the invalidations: unaffected by them.
    m.set(p, "post:3", "again", 50, &["posts", "team:a"]);
    m.set(p, "bulk:3", "back", 70, &["g3"]);
}

/// A new server that replicates `primary` with extra args, synced.
#[track_caller]
fn replica_with(primary: &Server, args: &[(&str, &str)]) -> Server {
    let mut b = Server::builder();
    for (n, v) in args {
        b = b.arg(n, v);
    }
    let r = b.replica_of(primary).start();
    wait_for_sync(&r);
    r
}

fn stat(s: &Server, field: &str) -> i64 {
    info_value(&s.info("stats"), field)
        .unwrap_or_else(|| panic!("INFO stats has no {field}"))
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------
// Following the stream
// ---------------------------------------------------------------------------

#[test]
fn replica_after_wait_holds_the_same_entries_tags_and_expiry_times() {
    let primary = Server::start();
    let replica = Server::replica_of(&primary);
    wait_for_sync(&replica);
    let mut p = primary.conn();
    let mut r = replica.conn();
    let mut m = Model::default();
    workload(&mut p, &mut m);
    wait_replica(&mut p);

    m.assert_held_by(&mut r, "replica");
    m.assert_held_by(&mut p, "primary");
    let snap = assert_same_cache(&mut p, &mut r);
    assert_eq!(snap.len(), m.0.len());
    // Spot checks with exact replies on the replica.
    assert_eq!(r.q(&["TCACHE.GET", "user:2"]), Value::bulk("bob v2"));
    assert!(r.q(&["TCACHE.GET", "user:1"]).is_nil());
    assert_eq!(
        tags_of(&mut r, b"user:2"),
        Some(vec![b"admins".to_vec(), b"users".to_vec()])
    );
    assert_tag(&mut r, "team:a", &["post:3"]);
    assert_tag(&mut r, "sessions", &[]);
    assert_eq!(
        r.q(&["TCACHE.MGET", "post:3", "post:2", "note:1"]),
        Value::Array(vec![
            Value::bulk("again"),
            Value::Nil,
            Value::bulk("plain note")
        ])
    );
    // The expiry is the one the SET asked for (ttl 1000 s from the write).
    let pttl = r.q(&["PTTL", "user:2"]).as_int();
    assert!(
        pttl > 990_000 && pttl <= 1_000_000,
        "PTTL user:2 on replica {pttl}"
    );
}

/// Blocks until a fresh connection's PING gets no answer within 200 ms, i.e.
/// the server is inside DEBUG SLEEP.
#[track_caller]
fn wait_until_asleep(s: &Server) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut probe = s.conn();
        probe.send_q(&["PING"]);
        match probe.read_with_timeout(Duration::from_millis(200)) {
            None => return,
            Some(v) => assert_eq!(v, Value::Simple("PONG".into())),
        }
        assert!(Instant::now() < deadline, "server never went to sleep");
    }
}

/// Subscribes to `__keyevent@0__:tcache.set` on `s` (which must have module
/// keyevents enabled), then, in a thread, notes when each of the next `n`
/// notifications arrives: key -> arrival time.
fn note_applies(s: &Server, n: usize) -> thread::JoinHandle<BTreeMap<String, Instant>> {
    let mut sub = s.conn();
    sub.set_read_timeout(Duration::from_secs(15));
    let r = sub.q(&["SUBSCRIBE", "__keyevent@0__:tcache.set"]);
    assert_eq!(r.as_array()[0], Value::bulk("subscribe"), "{r:?}");
    thread::spawn(move || {
        let mut seen = BTreeMap::new();
        while seen.len() < n {
            let msg = sub.read();
            let at = Instant::now();
            let parts = msg.as_array();
            assert_eq!(parts[0], Value::bulk("message"), "{msg:?}");
            seen.insert(parts[2].as_str().to_string(), at);
        }
        seen
    })
}

#[test]
fn replica_applying_the_stream_late_keeps_the_primary_absolute_expiry() {
    let primary = Server::start();
    let replica = Server::replica_of(&primary);
    wait_for_sync(&replica);
    let mut p = primary.conn();
    let mut r = replica.conn();
    set(&mut p, "early", "v1", 1000, &["t"]);
    wait_replica(&mut p);
    assert!(r
        .q(&["CONFIG", "SET", "notify-keyspace-events", "Ed"])
        .is_ok());
    let writes: [(&str, i64); 4] = [
        ("late:a", 50),
        ("late:b", 69),
        ("late:c", 3600),
        ("early", 500),
    ];
    let applies = note_applies(&replica, writes.len());

    // Stall the replica, then write on the primary while it sleeps.
    let mut sleeper = replica.conn();
    sleeper.send_q(&["DEBUG", "SLEEP", "1"]);
    wait_until_asleep(&replica);
    let mut written: BTreeMap<&str, (Instant, Instant)> = BTreeMap::new();
    for (key, ttl_s) in writes {
        let before = Instant::now();
        if key == "early" {
            let r = p.q(&[
                "TCACHE.SET",
                key,
                "v2",
                &ttl_s.to_string(),
                "XX",
                "TAGS",
                "t",
                "u",
            ]);
            assert!(r.is_ok(), "{r:?}");
        } else {
            set(&mut p, key, "v", ttl_s as u64, &["late"]);
        }
        written.insert(key, (before, Instant::now()));
    }
    assert!(sleeper.read().is_ok(), "DEBUG SLEEP reply");
    wait_replica(&mut p);
    let applied = applies.join().expect("subscriber thread");

    // Each write was applied on the replica long after the primary ran it.
    for (key, (_, done)) in &written {
        let late_by = applied[*key].duration_since(*done);
        assert!(
            late_by >= Duration::from_millis(300),
            "{key} was applied only {late_by:?} after the write: the test proves nothing"
        );
    }

    // Same absolute expiry on both, although the replica applied it late.
    let snap = assert_same_cache(&mut p, &mut r);
    assert_eq!(snap.len(), 4);
    assert_eq!(snap["early"].value.as_deref(), Some(&b"v2"[..]));
    assert_eq!(
        snap["early"].tags,
        Some(vec!["t".to_string(), "u".to_string()])
    );
    // The replica counts down from the primary's write, not from when it
    // applied it: a restarted ttl would leave its PTTL at least 300 ms above
    // the upper bound.
    for (key, ttl_s) in writes {
        let (before, done) = written[key];
        let ttl_ms = ttl_s * 1000;
        // expire_at lies in [before, done] + ttl; the PTTL is read at some
        // moment between the two elapsed() calls around it.
        let hi = ttl_ms - done.elapsed().as_millis() as i64 + EXPIRY_SLACK_MS;
        let pttl = r.q(&["PTTL", key]).as_int();
        let lo = ttl_ms - before.elapsed().as_millis() as i64 - EXPIRY_SLACK_MS;
        assert!(
            lo <= pttl && pttl <= hi,
            "PTTL {key} on the replica: {pttl}, expected {lo}..={hi} (ttl {ttl_ms} ms)"
        );
    }
    assert_tag(&mut r, "late", &["late:a", "late:b", "late:c"]);
    assert_tag(&mut r, "u", &["early"]);
}

#[test]
fn invaltag_and_invalprefix_on_the_primary_remove_the_same_entries_on_the_replica() {
    let primary = Server::start();
    let replica = Server::replica_of(&primary);
    wait_for_sync(&replica);
    let mut p = primary.conn();
    let mut r = replica.conn();
    let mut m = Model::default();
    m.set(&mut p, "user:1", "a", 100, &["users", "t1"]);
    m.set(&mut p, "user:2", "b", 100, &["users"]);
    m.set(&mut p, "post:1", "c", 100, &["posts", "t1"]);
    m.set(&mut p, "post:2", "d", 100, &["posts"]);
    m.set(&mut p, "cfg:1", "e", 100, &["cfg"]);
    m.set(&mut p, "cfg:2", "f", 100, &[]);
    wait_replica(&mut p);
    m.assert_held_by(&mut r, "replica");

    m.invaltag(&mut p, &["t1"]);
    wait_replica(&mut p);
    assert!(get(&mut r, "user:1").is_none());
    assert!(get(&mut r, "post:1").is_none());
    assert_tag(&mut r, "t1", &[]);
    assert_tag(&mut r, "users", &["user:2"]);
    m.assert_held_by(&mut r, "replica");

    m.invalprefix(&mut p, "cfg:");
    wait_replica(&mut p);
    assert_tag(&mut r, "cfg", &[]);
    m.assert_held_by(&mut r, "replica");

    m.invaltag(&mut p, &["users", "posts"]);
    wait_replica(&mut p);
    assert_eq!(r.q(&["DBSIZE"]).as_int(), 0);
    m.assert_held_by(&mut r, "replica");
    assert_same_cache(&mut p, &mut r);
}

#[test]
fn entry_expiring_on_the_primary_leaves_the_replica_and_its_tags() {
    let primary = Server::builder().arg("hz", "100").start();
    let replica = Server::replica_of(&primary);
    wait_for_sync(&replica);
    let mut p = primary.conn();
    let mut r = replica.conn();
    // Make sure the primary streams to the replica (after a diskless sync,
    // Redis 7.0 waits for the replica's first ACK, up to a second), so that
    // the short entry is applied well before it expires.
    set(&mut p, "warm-up", "v", 100, &[]);
    wait_replica(&mut p);
    assert_eq!(p.q(&["DEL", "warm-up"]).as_int(), 1);
    // Keep the primary from expiring anything until the replica was checked.
    assert!(p.q(&["DEBUG", "SET-ACTIVE-EXPIRE", "0"]).is_ok());
    set(&mut p, "short", "v", 1, &["t"]);
    set(&mut p, "long", "v", 100, &["t"]);
    wait_replica(&mut p);
    assert_eq!(r.q(&["DBSIZE"]).as_int(), 2);

    // Logically expired on the replica (which never expires keys itself):
    // invisible to reads and to the tag index, though still stored.
    wait_until(Duration::from_secs(10), "short to expire logically", || {
        r.q(&["PTTL", "short"]).as_int() == -2
    });
    assert!(get(&mut r, "short").is_none());
    assert_tag(&mut r, "t", &["long"]);
    assert_eq!(r.q(&["DBSIZE"]).as_int(), 2);

    // The primary expires it and sends DEL; DBSIZE does not expire keys.
    assert!(p.q(&["DEBUG", "SET-ACTIVE-EXPIRE", "1"]).is_ok());
    wait_until(
        Duration::from_secs(10),
        "expiry to reach the replica",
        || r.q(&["DBSIZE"]).as_int() == 1,
    );
    assert_tag(&mut r, "t", &["long"]);
    assert_same_cache(&mut p, &mut r);
}

// ---------------------------------------------------------------------------
// Resyncing
// ---------------------------------------------------------------------------

fn new_replica_full_sync(primary_args: &[(&str, &str)]) {
    let mut b = Server::builder();
    for (n, v) in primary_args {
        b = b.arg(n, v);
    }
    let primary = b.start();
    let mut p = primary.conn();
    let mut m = Model::default();
    workload(&mut p, &mut m);

    let replica = replica_with(&primary, &[]);
    let mut r = replica.conn();
    wait_replica(&mut p);
    assert_eq!(stat(&primary, "sync_full"), 1);
    m.assert_held_by(&mut r, "replica");
    assert_same_cache(&mut p, &mut r);

    // And it follows the stream from there.
    m.invaltag(&mut p, &["users", "g0"]);
    m.set(&mut p, "fresh", "x", 77, &["g0"]);
    wait_replica(&mut p);
    m.assert_held_by(&mut r, "replica");
    assert_same_cache(&mut p, &mut r);
}

#[test]
fn replica_started_after_the_data_exists_full_syncs_an_identical_cache_diskless() {
    new_replica_full_sync(&[("repl-diskless-sync", "yes")]);
}

#[test]
fn replica_started_after_the_data_exists_full_syncs_an_identical_cache_from_disk() {
    new_replica_full_sync(&[("repl-diskless-sync", "no")]);
}

/// Promotes a synced replica, makes it diverge, changes the primary too, then
/// points the replica back at the primary: a full resync must leave it equal
/// to the primary, with nothing of its own history left.
fn resync_after_replicaof_no_one(replica_args: &[(&str, &str)]) {
    let primary = Server::start();
    let replica = replica_with(&primary, replica_args);
    let mut p = primary.conn();
    let mut r = replica.conn();
    let mut m = Model::default();
    workload(&mut p, &mut m);
    wait_replica(&mut p);
    assert_same_cache(&mut p, &mut r);

    assert!(r.q(&["REPLICAOF", "NO", "ONE"]).is_ok());
    // The replica's own writes, sharing tag and key names with the primary.
    set(&mut r, "replica-only", "mine", 3000, &["users", "mine"]);
    set(&mut r, "user:2", "replica's bob", 3000, &["mine"]);
    assert!(r.q(&["TCACHE.INVALTAG", "posts"]).as_int() > 0);
    assert_verified(&mut r);
    // Meanwhile the primary moves on.
    m.invaltag(&mut p, &["g1"]);
    m.set(&mut p, "post:9", "nine", 900, &["posts", "users"]);

    let full_before = stat(&primary, "sync_full");
    let port = primary.port.to_string();
    assert!(r.q(&["REPLICAOF", "127.0.0.1", &port]).is_ok());
    wait_for_sync(&replica);
    wait_replica(&mut p);
    assert_eq!(
        stat(&primary, "sync_full"),
        full_before + 1,
        "the replica did not resync from scratch"
    );
    assert!(get(&mut r, "replica-only").is_none());
    assert_tag(&mut r, "mine", &[]);
    assert_eq!(r.q(&["TCACHE.GET", "user:2"]), Value::bulk("bob v2"));
    m.assert_held_by(&mut r, "replica");
    assert_same_cache(&mut p, &mut r);
}

#[test]
fn replica_pointed_back_after_replicaof_no_one_resyncs_identical() {
    resync_after_replicaof_no_one(&[]);
}

/// With a module type that does not declare IO-error handling, Redis 7.0 and
/// Valkey skip diskless load and load from disk; if the module ever declares
/// it, this resync goes through the swapdb path (old data kept aside).
#[test]
fn replica_configured_for_swapdb_diskless_load_resyncs_identical() {
    resync_after_replicaof_no_one(&[("repl-diskless-load", "swapdb")]);
}

#[test]
fn replica_partial_resync_after_a_dropped_link_catches_up_identically() {
    let primary = Server::start();
    let replica = Server::replica_of(&primary);
    wait_for_sync(&replica);
    let mut p = primary.conn();
    let mut r = replica.conn();
    let mut m = Model::default();
    workload(&mut p, &mut m);
    wait_replica(&mut p);
    let partial_before = stat(&primary, "sync_partial_ok");

    // Drop the link from the replica side; write while it is down.
    assert_eq!(r.q(&["CLIENT", "KILL", "TYPE", "master"]).as_int(), 1);
    m.set(&mut p, "during", "gap", 600, &["users", "gap"]);
    m.invaltag(&mut p, &["g2"]);
    m.invalprefix(&mut p, "bulk:1");
    m.del(&mut p, &["note:1"]);
    wait_until(Duration::from_secs(10), "the replica to reconnect", || {
        stat(&primary, "sync_partial_ok") > partial_before
    });
    wait_for_sync(&replica);
    wait_replica(&mut p);
    assert_eq!(stat(&primary, "sync_full"), 1, "resynced in full instead");
    m.assert_held_by(&mut r, "replica");
    assert_same_cache(&mut p, &mut r);
}

// ---------------------------------------------------------------------------
// Read-only replica, TCACHE.APPLY, promotion
// ---------------------------------------------------------------------------

#[test]
fn writes_on_a_read_only_replica_get_readonly_and_change_nothing() {
    let primary = Server::start();
    let replica = Server::replica_of(&primary);
    wait_for_sync(&replica);
    let mut p = primary.conn();
    let mut r = replica.conn();
    let mut m = Model::default();
    m.set(&mut p, "user:1", "a", 100, &["users"]);
    m.set(&mut p, "user:2", "b", 100, &["users", "t"]);
    wait_replica(&mut p);
    let before = snapshot(&mut r);

    let writes: &[&[&str]] = &[
        &["TCACHE.SET", "user:1", "changed", "100", "TAGS", "users"],
        &["TCACHE.SET", "new", "v", "100", "TAGS", "users"],
        &["TCACHE.SET", "user:1", "changed", "100", "XX"],
        &["TCACHE.INVALTAG", "users"],
        &["TCACHE.INVALTAG", "t", "nothing"],
        &["TCACHE.DEL", "user:1", "user:2"],
        &["TCACHE.INVALPREFIX", "user:"],
    ];
    for w in writes {
        let reply = r.q(w);
        assert!(reply.is_error_starting("READONLY"), "{w:?} -> {reply:?}");
    }
    assert_eq!(snapshot(&mut r), before);
    m.assert_held_by(&mut r, "replica");
    assert_eq!(r.q(&["TCACHE.TAGCARD", "users"]).as_int(), 2);
    // The primary is untouched and the replica still follows it.
    m.set(&mut p, "user:3", "c", 100, &["users"]);
    wait_replica(&mut p);
    m.assert_held_by(&mut r, "replica");
    assert_same_cache(&mut p, &mut r);
}

/// One command of an AOF file: its arguments.
type Cmd = Vec<Vec<u8>>;

/// Parses the RESP arrays of an AOF file (a trailing partial command is left out).
fn parse_aof(data: &[u8]) -> Vec<Cmd> {
    fn line(data: &[u8], pos: &mut usize) -> Option<String> {
        let rest = data.get(*pos..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let s = String::from_utf8(rest[..end].to_vec()).ok()?;
        *pos += end + 2;
        Some(s)
    }
    let mut cmds = Vec::new();
    let mut pos = 0;
    'outer: while pos < data.len() {
        let start = pos;
        let Some(head) = line(data, &mut pos) else {
            break;
        };
        let n: usize = head
            .strip_prefix('*')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad AOF command header {head:?} at {start}"));
        let mut cmd = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(h) = line(data, &mut pos) else {
                break 'outer;
            };
            let len: usize = h
                .strip_prefix('$')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("bad AOF bulk header {h:?}"));
            let Some(arg) = data.get(pos..pos + len) else {
                break 'outer;
            };
            cmd.push(arg.to_vec());
            pos += len + 2;
        }
        cmds.push(cmd);
    }
    cmds
}

/// The commands of the server's incremental AOF so far.
fn aof_commands(s: &Server) -> Vec<Cmd> {
    let dir = s.dir.join("appendonlydir");
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(&dir) else {
        return out;
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .collect();
    files.sort();
    for f in files {
        out.extend(parse_aof(&fs::read(f).unwrap_or_default()));
    }
    out
}

fn is_cmd(c: &Cmd, name: &str) -> bool {
    c.first()
        .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
}

/// Waits until the AOF holds a command satisfying `pred`; returns all commands.
#[track_caller]
fn aof_until(s: &Server, what: &str, pred: impl Fn(&[Cmd]) -> bool) -> Vec<Cmd> {
    let mut cmds = Vec::new();
    wait_until(Duration::from_secs(10), what, || {
        cmds = aof_commands(s);
        pred(&cmds)
    });
    cmds
}

/// The `TCACHE.APPLY key <blob> PXAT <ms>` the server logged for `key`: the
/// blob and the absolute expiry.
#[track_caller]
fn logged_apply(s: &Server, key: &str) -> (Vec<u8>, i64) {
    let cmds = aof_until(s, "TCACHE.APPLY in the AOF", |cmds| {
        cmds.iter().any(|c| {
            is_cmd(c, "TCACHE.APPLY") && c.get(1).map(|k| k.as_slice()) == Some(key.as_bytes())
        })
    });
    let i = cmds
        .iter()
        .rposition(|c| is_cmd(c, "TCACHE.APPLY") && c[1] == key.as_bytes())
        .unwrap();
    let apply = &cmds[i];
    assert!(
        apply.len() == 5 && apply[3].eq_ignore_ascii_case(b"PXAT"),
        "TCACHE.APPLY {key} without PXAT: {apply:?}"
    );
    let at: i64 = String::from_utf8(apply[4].clone())
        .unwrap()
        .parse()
        .unwrap();
    (apply[2].clone(), at)
}

#[test]
fn tcache_writes_are_logged_as_apply_pxat_and_del_with_absolute_times() {
    let s = Server::builder().arg("appendonly", "yes").start();
    let mut c = s.conn();
    set(&mut c, "a", "1", 100, &["t"]);
    set(&mut c, "b", "2", 200, &["t", "u"]);
    set(&mut c, "c", "3", 300, &[]);
    let (_, at_a) = logged_apply(&s, "a");
    let (_, at_b) = logged_apply(&s, "b");
    assert_eq!(at_a, c.q(&["PEXPIRETIME", "a"]).as_int(), "PXAT a");
    assert_eq!(at_b, c.q(&["PEXPIRETIME", "b"]).as_int(), "PXAT b");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (at_b - now_ms - 200_000).abs() < 5_000,
        "PXAT b {at_b} is not now + 200 s ({now_ms})"
    );

    assert_eq!(c.q(&["TCACHE.INVALTAG", "t"]).as_int(), 2);
    assert_eq!(c.q(&["TCACHE.DEL", "c", "missing"]).as_int(), 1);
    let cmds = aof_until(&s, "DEL c in the AOF", |cmds| {
        cmds.iter()
            .any(|c| is_cmd(c, "DEL") && c[1..] == [b"c".to_vec()])
    });
    let dels: Vec<Vec<String>> = cmds
        .iter()
        .filter(|c| is_cmd(c, "DEL"))
        .map(|c| {
            let mut keys: Vec<String> = c[1..]
                .iter()
                .map(|k| String::from_utf8(k.clone()).unwrap())
                .collect();
            keys.sort();
            keys
        })
        .collect();
    assert_eq!(dels, vec![vec!["a", "b"], vec!["c"]]);
    assert!(
        !cmds.iter().any(|c| is_cmd(c, "TCACHE.SET")
            || is_cmd(c, "TCACHE.INVALTAG")
            || is_cmd(c, "TCACHE.DEL")),
        "the AOF holds a tcache command instead of its effect"
    );
}

#[test]
fn tcache_apply_from_a_normal_client_is_refused_and_changes_nothing() {
    let s = Server::builder().arg("appendonly", "yes").start();
    let mut c = s.conn();
    set(&mut c, "src", "payload", 100, &["t1", "t2"]);
    let (blob, _) = logged_apply(&s, "src");
    set(&mut c, "victim", "original", 100, &["v"]);
    let stats_before = c.q(&["TCACHE.STATS"]).field("entries").unwrap().as_int();

    let attempts: Vec<Vec<&[u8]>> = vec![
        vec![b"TCACHE.APPLY", b"fresh", &blob],
        vec![b"TCACHE.APPLY", b"victim", &blob],
        vec![b"TCACHE.APPLY", b"src", &blob],
        vec![b"tcache.apply", b"fresh", b"not an entry"],
    ];
    for a in &attempts {
        let r = c.cmd(a);
        assert_eq!(r, Value::Error(APPLY_RESERVED.into()), "{:?}", a[1]);
    }
    // Inside a transaction.
    assert!(c.q(&["MULTI"]).is_ok());
    assert_eq!(
        c.cmd(&[b"TCACHE.APPLY", b"fresh", &blob]),
        Value::Simple("QUEUED".into())
    );
    assert_eq!(
        c.q(&["EXEC"]),
        Value::Array(vec![Value::Error(APPLY_RESERVED.into())])
    );
    // From a script.
    let r = c.cmd(&[
        b"EVAL",
        b"return redis.call('TCACHE.APPLY', KEYS[1], ARGV[1])",
        b"1",
        b"victim",
        &blob,
    ]);
    assert!(
        r.is_error() && r.as_error().contains("reserved for replication"),
        "EVAL TCACHE.APPLY -> {r:?}"
    );

    assert_eq!(c.q(&["EXISTS", "fresh"]).as_int(), 0);
    assert_eq!(get(&mut c, "victim").as_deref(), Some(&b"original"[..]));
    assert_eq!(tags_of(&mut c, b"victim"), Some(vec![b"v".to_vec()]));
    assert_tag(&mut c, "v", &["victim"]);
    assert_tag(&mut c, "t1", &["src"]);
    assert_eq!(c.q(&["DBSIZE"]).as_int(), 2);
    assert_eq!(
        c.q(&["TCACHE.STATS"]).field("entries").unwrap().as_int(),
        stats_before
    );
    // Nothing of it reached the AOF either: the last logged command is still
    // the write of victim.
    let cmds = aof_until(&s, "victim in the AOF", |cmds| {
        cmds.iter()
            .any(|c| is_cmd(c, "TCACHE.APPLY") && c[1] == b"victim")
    });
    let applies: Vec<&[u8]> = cmds
        .iter()
        .filter(|c| is_cmd(c, "TCACHE.APPLY"))
        .map(|c| c[1].as_slice())
        .collect();
    assert_eq!(applies, vec![&b"src"[..], &b"victim"[..]]);
}

#[test]
fn promoted_replica_runs_invaltag_and_keeps_a_verified_index() {
    let primary = Server::start();
    let replica = Server::replica_of(&primary);
    wait_for_sync(&replica);
    let mut p = primary.conn();
    let mut r = replica.conn();
    let mut m = Model::default();
    workload(&mut p, &mut m);
    wait_replica(&mut p);
    assert_same_cache(&mut p, &mut r);

    assert!(r.q(&["REPLICAOF", "NO", "ONE"]).is_ok());
    assert_eq!(
        replica.info_field("replication", "role").as_deref(),
        Some("master")
    );
    let mut promoted = Model(m.0.clone());
    promoted.invaltag(&mut r, &["users"]);
    promoted.invaltag(&mut r, &["g0", "h2"]);
    promoted.invalprefix(&mut r, "bulk:4");
    promoted.del(&mut r, &["note:1"]);
    promoted.set(&mut r, "new:1", "after promotion", 100, &["users", "new"]);
    assert_verified(&mut r);
    promoted.assert_held_by(&mut r, "promoted replica");
    assert_eq!(r.q(&["TCACHE.INVALTAG", "new"]).as_int(), 1);
    assert_tag(&mut r, "users", &[]);
    // The old primary is unaffected.
    m.assert_held_by(&mut p, "old primary");
}
