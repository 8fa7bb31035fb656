//! Redis Cluster / Valkey Cluster, seen from the outside (issue 12's test
//! foundation): what holds today on a real local cluster of 3 primaries + 3
//! replicas with the module loaded.
//!
//! - keyed commands route by key (a wrong node answers MOVED), COMMAND GETKEYS
//!   names the keys, COMMAND INFO shows the key-spec flags;
//! - an invalidation sent to any one primary applies on every primary and
//!   replies with the cluster-wide count; nothing invalidated stays readable;
//!   lost cluster-bus messages and a slow node end in an UNCONFIRMED error
//!   naming the slots not confirmed, and repeating the command is safe;
//!   remote nodes check the caller's ACL;
//! - resharding with `redis-cli --cluster reshard` under a concurrent tagged
//!   writer keeps entries, tags and the per-node indexes consistent;
//! - kill -9 of a primary in the middle of a logical invalidation: the promoted
//!   replica verifies and serves nothing invalidated;
//! - A logically dead entry moved by MIGRATE stays dead on the target.
//!
//! All tests share ONE cluster: each holds an `Arc` of it before waiting for
//! the lock that runs them one at a time, so the cluster lives while a test
//! is running or waiting and is killed when the last one lets go. Each test
//! uses its own keys and tags and finds the topology it needs (a failover may
//! have run before it).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread;
use std::time::Duration;

use common::cluster::{key_in_slot, key_slot, slot_tag, Cluster, Router, SLOTS};
use common::tc::{pipeline, words};
use common::*;

// ---------------------------------------------------------------------------
// The shared cluster
// ---------------------------------------------------------------------------

static SHARED: Mutex<Weak<Mutex<Cluster>>> = Mutex::new(Weak::new());

/// The shared cluster, started by the first test that asks.
fn shared_cluster() -> Arc<Mutex<Cluster>> {
    let mut weak = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(c) = weak.upgrade() {
        return c;
    }
    let c = Arc::new(Mutex::new(Cluster::start()));
    *weak = Arc::downgrade(&c);
    c
}

/// Runs the tests one at a time on the shared cluster (a failed test leaves
/// the lock poisoned; the next one goes on regardless). Each starts on a
/// stable cluster with nothing left to reclaim and the replicas in sync.
fn lock(c: &Arc<Mutex<Cluster>>) -> MutexGuard<'_, Cluster> {
    let cl = c.lock().unwrap_or_else(PoisonError::into_inner);
    cl.wait_stable();
    for p in cl.primaries() {
        common::tc::wait_reclaimed(&mut cl.conn(p));
    }
    cl.sync_replicas();
    cl
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Asserts `MOVED <slot> 127.0.0.1:<owner>`.
#[track_caller]
fn assert_moved(v: &Value, slot: u16, owner: u16, what: &str) {
    let want = format!("MOVED {slot} 127.0.0.1:{owner}");
    assert!(
        matches!(v, Value::Error(e) if *e == want),
        "{what}: expected {want:?}, got {v:?}"
    );
}

/// A primary that has a live replica (there is one unless every shard failed over).
#[track_caller]
fn primary_with_replica(cl: &Cluster) -> (u16, u16) {
    cl.primaries()
        .into_iter()
        .find_map(|p| cl.replicas_of(p).first().map(|&r| (p, r)))
        .expect("no primary with a live replica")
}

/// Every key matching `pattern` on the node on `port` (SCAN), sorted.
fn scan_keys(c: &mut Conn, pattern: &str) -> Vec<String> {
    let mut keys = BTreeSet::new();
    let mut cursor = "0".to_string();
    loop {
        let r = c.q(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "500"]);
        let parts = r.as_array();
        cursor = parts[0].as_str().to_string();
        keys.extend(parts[1].as_array().iter().map(|k| k.as_str().to_string()));
        if cursor == "0" {
            return keys.into_iter().collect();
        }
    }
}

/// TCACHE.TAGS of each key (pipelined), sorted; `None` for nil.
fn tags_of_keys(c: &mut Conn, keys: &[String]) -> Vec<Option<Vec<String>>> {
    let cmds: Vec<Vec<String>> = keys
        .iter()
        .map(|k| vec!["TCACHE.TAGS".to_string(), k.clone()])
        .collect();
    pipeline(c, &cmds)
        .into_iter()
        .map(|r| {
            if r.is_nil() {
                return None;
            }
            let mut t: Vec<String> = r
                .as_array()
                .iter()
                .map(|v| v.as_str().to_string())
                .collect();
            t.sort();
            Some(t)
        })
        .collect()
}

/// Asserts that no node returns a value for any of `keys`: on every live node
/// (replicas in READONLY mode), TCACHE.GET is nil or MOVED, and nil on the
/// owner and its replicas.
#[track_caller]
fn assert_unreadable_everywhere(cl: &Cluster, keys: &[String]) {
    cl.sync_replicas();
    for port in cl.live_ports() {
        let mut c = cl.conn(port);
        assert!(c.q(&["READONLY"]).is_ok());
        let cmds: Vec<Vec<String>> = keys
            .iter()
            .map(|k| vec!["TCACHE.GET".to_string(), k.clone()])
            .collect();
        let mut nil = 0;
        for (k, r) in keys.iter().zip(pipeline(&mut c, &cmds)) {
            match &r {
                Value::Nil => nil += 1,
                Value::Error(e) if e.starts_with("MOVED ") => {}
                other => panic!("node {port}: TCACHE.GET {k} -> {other:?} after invalidation"),
            }
        }
        eprintln!("node {port}: {nil} invalidated keys answered nil, the rest MOVED");
    }
}

// ---------------------------------------------------------------------------
// Routing and command metadata
// ---------------------------------------------------------------------------

#[test]
fn keyed_commands_are_routed_by_key_and_a_wrong_node_answers_moved() {
    let shared = shared_cluster();
    let cl = lock(&shared);
    let (owner, replica) = primary_with_replica(&cl);
    let slot = cl.slots_of(owner)[0];
    let key = key_in_slot("route:", slot, ":k");
    let perm = key_in_slot("route:", slot, ":perm");
    assert_eq!(cl.keyslot(key.as_bytes()), slot);
    assert_eq!(cl.owner_of(key.as_bytes()), owner);
    let other = *cl.primaries().iter().find(|&&p| p != owner).unwrap();

    let perm_json = r#"{"roles":["editor"],"permissions":["reports:read"]}"#;
    let commands: Vec<Vec<&str>> = vec![
        vec!["TCACHE.SET", &key, "v1", "1000", "TAGS", "route-t"],
        vec!["TCACHE.GET", &key],
        vec!["TCACHE.TAGS", &key],
        vec!["TCACHE.MGET", &key],
        vec!["PERM.SET", &perm, perm_json, "1000"],
        vec!["PERM.CHECK", &perm, "reports:read"],
        vec!["TCACHE.DEL", &key],
    ];
    // A primary that does not own the slot redirects every keyed command.
    let mut wrong = cl.conn(other);
    for cmd in &commands {
        let r = wrong.q(cmd);
        assert_moved(&r, slot, owner, &format!("{cmd:?} on node {other}"));
    }
    // A replica redirects too, until READONLY; then reads are served, writes still redirected.
    let mut owner_c = cl.conn(owner);
    assert!(owner_c.q(&commands[0]).is_ok());
    assert!(owner_c.q(&commands[4]).is_ok());
    assert_eq!(
        owner_c.q(&["WAIT", "1", "10000"]).as_int(),
        1,
        "WAIT for the replica"
    );
    let mut rc = cl.conn(replica);
    assert_moved(&rc.q(&commands[1]), slot, owner, "GET on a replica");
    assert!(rc.q(&["READONLY"]).is_ok());
    assert_eq!(
        rc.q(&commands[1]),
        Value::bulk("v1"),
        "GET on a READONLY replica"
    );
    assert_eq!(
        rc.q(&commands[2]),
        Value::Array(vec![Value::bulk("route-t")])
    );
    assert_eq!(
        rc.q(&commands[5]),
        Value::Int(1),
        "PERM.CHECK on a READONLY replica"
    );
    for write in [&commands[0], &commands[4], &commands[6]] {
        assert_moved(
            &rc.q(write),
            slot,
            owner,
            &format!("{write:?} on a replica"),
        );
    }
    // The owner serves them all.
    assert_eq!(owner_c.q(&commands[1]), Value::bulk("v1"));
    assert_eq!(
        owner_c.q(&commands[2]),
        Value::Array(vec![Value::bulk("route-t")])
    );
    assert_eq!(
        owner_c.q(&commands[3]),
        Value::Array(vec![Value::bulk("v1")])
    );
    assert_eq!(owner_c.q(&commands[5]), Value::Int(1));
    assert_eq!(owner_c.q(&commands[6]), Value::Int(1), "TCACHE.DEL");
    assert_eq!(owner_c.q(&["TCACHE.DEL", &perm]), Value::Int(1));
    // Keys of two slots in one command: CROSSSLOT, on any node.
    let k2 = key_in_slot("route:", (slot + 1) % SLOTS, ":k");
    for port in [owner, other] {
        let r = cl.conn(port).q(&["TCACHE.MGET", &key, &k2]);
        assert!(
            r.is_error_starting("CROSSSLOT"),
            "MGET of two slots -> {r:?}"
        );
        let r = cl.conn(port).q(&["TCACHE.DEL", &key, &k2]);
        assert!(
            r.is_error_starting("CROSSSLOT"),
            "DEL of two slots -> {r:?}"
        );
    }
    // A keyless write (INVALTAG) runs on any primary, a replica refuses it.
    assert_eq!(
        cl.conn(other).q(&["TCACHE.INVALTAG", "route-t"]),
        Value::Int(0)
    );
    let r = cl.conn(replica).q(&["TCACHE.INVALTAG", "route-t"]);
    assert!(
        r.is_error_starting("READONLY"),
        "INVALTAG on a replica -> {r:?}"
    );
    // The router sends each keyed command to the owner of its key.
    let mut router = Router::new(vec![other]);
    assert!(router
        .q(&["TCACHE.SET", &key, "v2", "1000", "TAGS", "route-t"])
        .is_ok());
    assert_eq!(router.q(&["TCACHE.GET", &key]), Value::bulk("v2"));
    assert_eq!(router.q(&["TCACHE.DEL", &key]), Value::Int(1));
    cl.verify_all();
}

/// The key-spec flags of COMMAND INFO `name`: one list of flags per key spec.
#[track_caller]
fn key_spec_flags(c: &mut Conn, name: &str) -> Vec<Vec<String>> {
    let r = c.q(&["COMMAND", "INFO", name]);
    let info = r.as_array()[0].as_array();
    assert_eq!(
        info[0].as_str().to_ascii_lowercase(),
        name.to_ascii_lowercase()
    );
    info[8]
        .as_array()
        .iter()
        .map(|spec| {
            let mut flags: Vec<String> = spec
                .field("flags")
                .unwrap_or_else(|| panic!("{name}: key spec without flags: {spec:?}"))
                .as_array()
                .iter()
                .map(|f| f.as_str().to_string())
                .collect();
            flags.sort();
            flags
        })
        .collect()
}

#[test]
fn command_getkeys_and_key_specs_name_the_keys_and_their_access() {
    let shared = shared_cluster();
    let cl = lock(&shared);
    let mut c = cl.conn(cl.primaries()[0]);
    let names = |v: Value| -> Vec<String> {
        v.as_array()
            .iter()
            .map(|k| k.as_str().to_string())
            .collect()
    };
    assert_eq!(
        names(c.q(&[
            "COMMAND",
            "GETKEYS",
            "TCACHE.SET",
            "k1",
            "v",
            "10",
            "TAGS",
            "a",
            "b"
        ])),
        vec!["k1"]
    );
    assert_eq!(
        names(c.q(&["COMMAND", "GETKEYS", "TCACHE.MGET", "a", "b", "c"])),
        vec!["a", "b", "c"]
    );
    assert_eq!(
        names(c.q(&["COMMAND", "GETKEYS", "TCACHE.DEL", "x", "y"])),
        vec!["x", "y"]
    );
    assert_eq!(
        names(c.q(&["COMMAND", "GETKEYS", "PERM.CHECK", "p", "perm:a", "perm:b"])),
        vec!["p"]
    );
    let ro = vec!["RO".to_string(), "access".to_string()];
    let ow = vec!["OW".to_string(), "update".to_string()];
    let rm = vec!["RM".to_string(), "delete".to_string()];
    for (name, want) in [
        ("TCACHE.GET", &ro),
        ("TCACHE.MGET", &ro),
        ("TCACHE.TAGS", &ro),
        ("PERM.GET", &ro),
        ("PERM.CHECK", &ro),
        ("TCACHE.SET", &ow),
        ("PERM.SET", &ow),
        ("TCACHE.DEL", &rm),
        ("PERM.INVALUSER", &rm),
    ] {
        let mut want = want.clone();
        want.sort();
        assert_eq!(key_spec_flags(&mut c, name), vec![want], "{name} key specs");
    }
    // Keyless commands declare no key.
    for name in ["TCACHE.INVALTAG", "TCACHE.TAGCARD", "TCACHE.VERIFY"] {
        assert_eq!(
            key_spec_flags(&mut c, name),
            Vec::<Vec<String>>::new(),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------
// Invalidation fanned out by the client
// ---------------------------------------------------------------------------

#[test]
fn an_invalidation_sent_to_one_primary_applies_on_every_primary() {
    let shared = shared_cluster();
    let cl = lock(&shared);
    let primaries = cl.primaries();
    assert!(primaries.len() >= 2, "primaries: {primaries:?}");
    for (port, r) in cl.on_all(&["INFO", "tcache"]) {
        assert!(
            r.as_str()
                .contains("tcache_cluster_invalidation:coordinated"),
            "INFO tcache on {port}: {r:?}"
        );
    }
    let mut router = cl.router();
    // "inv-small": few per node (deleted inside the command); "inv-big": logical
    // (inval-sync-max 0); "inv-keep": survives. Keys spread over all slots.
    let (small, big, keep) = (90, 900, 60);
    let mut small_keys = Vec::new();
    let mut big_keys = Vec::new();
    let mut keep_keys = Vec::new();
    for i in 0..(small + big + keep) {
        let key = format!("inv:{i}");
        let tags: &[&str] = if i < small {
            small_keys.push(key.clone());
            &["inv-small", "inv-other"]
        } else if i < small + big {
            big_keys.push(key.clone());
            &["inv-big", "inv-other"]
        } else {
            keep_keys.push(key.clone());
            &["inv-keep", "inv-other"]
        };
        let mut args = vec!["TCACHE.SET", &key, "v", "1000", "TAGS"];
        args.extend_from_slice(tags);
        assert!(router.q(&args).is_ok());
    }
    let per_node: BTreeMap<u16, usize> =
        big_keys
            .iter()
            .chain(&small_keys)
            .chain(&keep_keys)
            .fold(BTreeMap::new(), |mut m, k| {
                *m.entry(cl.slot_owner(key_slot(k.as_bytes()))).or_default() += 1;
                m
            });
    assert_eq!(
        per_node.len(),
        primaries.len(),
        "keys spread over every primary: {per_node:?}"
    );
    assert_eq!(cl.tagcard_sum("inv-small"), small as i64);
    assert_eq!(cl.tagcard_sum("inv-big"), big as i64);
    assert_eq!(cl.tagcard_sum("inv-other"), (small + big + keep) as i64);

    // Small: one primary takes it, every node deletes inside the command, the
    // reply is the cluster-wide count.
    let r = cl.conn(primaries[1]).q(&["TCACHE.INVALTAG", "inv-small"]);
    assert_eq!(r, Value::Int(small as i64), "INVALTAG inv-small");
    assert_eq!(cl.tagcard_sum("inv-small"), 0);
    // Big, logical: the same, and the entries are dead at once everywhere.
    {
        let _sync = cl.config_set_all("tcache.inval-sync-max", "0");
        let r = cl.conn(primaries[0]).q(&["TCACHE.INVALTAG", "inv-big"]);
        assert_eq!(r, Value::Int(big as i64), "INVALTAG inv-big");
        assert_eq!(cl.tagcard_sum("inv-big"), 0);
        assert_eq!(cl.tagcard_sum("inv-other"), keep as i64);
    }
    // Sent again, to any primary, nothing is left to count.
    for p in &primaries {
        let r = cl.conn(*p).q(&["TCACHE.INVALTAG", "inv-small", "inv-big"]);
        assert_eq!(r, Value::Int(0), "repeated INVALTAG on {p}");
    }
    assert_eq!(cl.tagcard_sum("inv-keep"), keep as i64);
    let dead: Vec<String> = small_keys.iter().chain(&big_keys).cloned().collect();
    assert_unreadable_everywhere(&cl, &dead);
    for k in &keep_keys {
        assert_eq!(router.q(&["TCACHE.GET", k]), Value::bulk("v"), "{k}");
    }
    for p in cl.primaries() {
        common::tc::wait_reclaimed(&mut cl.conn(p));
    }
    cl.verify_all();
    // The other cluster-wide commands: STALETAG, INVALPREFIX, PERM.INVALROLE,
    // PERM.INVALALL, each sent to one primary.
    let last = *primaries.last().unwrap();
    let r = cl.conn(last).q(&["TCACHE.STALETAG", "inv-keep"]);
    assert_eq!(r, Value::Int(keep as i64), "STALETAG");
    let r = cl.conn(last).q(&["TCACHE.INVALPREFIX", "inv:"]);
    assert_eq!(r, Value::Int(keep as i64), "INVALPREFIX");
    assert_eq!(cl.tagcard_sum("inv-keep"), 0);
    let users: Vec<String> = (0..60).map(|i| format!("permc:{i}")).collect();
    for (i, u) in users.iter().enumerate() {
        let role = if i % 2 == 0 { "even" } else { "odd" };
        let json = format!(r#"{{"roles":["permc-{role}"],"permissions":["read"]}}"#);
        assert!(router.q(&["PERM.SET", u, &json, "1000"]).is_ok());
    }
    let r = cl.conn(primaries[0]).q(&["PERM.INVALROLE", "permc-even"]);
    assert_eq!(r, Value::Int(30), "PERM.INVALROLE");
    for (i, u) in users.iter().enumerate() {
        let got = router.q(&["PERM.GET", u]);
        assert_eq!(got.is_nil(), i % 2 == 0, "PERM.GET {u} -> {got:?}");
    }
    let r = cl.conn(primaries[1]).q(&["PERM.INVALALL"]);
    assert_eq!(r, Value::Int(30), "PERM.INVALALL");
    cl.verify_all();
    // A transaction or a script cannot wait for the other nodes: refused,
    // nothing applied.
    let mut c = cl.conn(primaries[0]);
    assert!(c.q(&["MULTI"]).is_ok());
    let queued = c.q(&["TCACHE.INVALTAG", "inv-none"]);
    let exec = c.q(&["EXEC"]);
    let refused = queued.is_error() || exec.as_array().iter().any(|v| v.is_error());
    assert!(refused, "INVALTAG in MULTI: {queued:?} / {exec:?}");
    let r = c.q(&[
        "EVAL",
        "return redis.call('TCACHE.INVALTAG', 'inv-none')",
        "0",
    ]);
    assert!(
        r.as_error().contains("cannot run inside MULTI or a script"),
        "INVALTAG from a script -> {r:?}"
    );
}

/// `n` keys tagged `tag` on every primary; returns how many went to each.
fn tagged_everywhere(cl: &Cluster, tag: &str, n: usize) -> BTreeMap<u16, i64> {
    let mut per = BTreeMap::new();
    for p in cl.primaries() {
        let slots = cl.slots_of(p);
        let mut c = cl.conn(p);
        let cmds: Vec<Vec<String>> = (0..n)
            .map(|i| {
                let k = key_in_slot(&format!("{tag}:"), slots[i % slots.len()], i);
                words(&["TCACHE.SET", &k, "v", "1000", "TAGS", tag])
            })
            .collect();
        for r in pipeline(&mut c, &cmds) {
            assert!(r.is_ok(), "{r:?}");
        }
        per.insert(p, n as i64);
    }
    per
}

/// The slot ranges of `port` as an UNCONFIRMED error writes them.
fn ranges_text(cl: &Cluster, port: u16) -> String {
    let mut out: Vec<String> = Vec::new();
    let slots = cl.slots_of(port);
    let mut i = 0;
    while i < slots.len() {
        let start = slots[i];
        while i + 1 < slots.len() && slots[i + 1] == slots[i] + 1 {
            i += 1;
        }
        let end = slots[i];
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// Makes the node on `port` drop (or stop dropping) every module message it
/// receives over the cluster bus (type 9, CLUSTERMSG_TYPE_MODULE, on Redis 7.0
/// and Valkey 9).
#[track_caller]
fn set_deaf(cl: &Cluster, port: u16, deaf: bool) {
    let filter = if deaf { "9" } else { "-1" };
    let r = cl
        .conn(port)
        .q(&["DEBUG", "DROP-CLUSTER-PACKET-FILTER", filter]);
    assert!(
        r.is_ok(),
        "DROP-CLUSTER-PACKET-FILTER {filter} on {port} -> {r:?}"
    );
}

/// `tcache_cluster_remembered` of the node on `port`: the requests of other
/// coordinators it applied and remembers.
fn remembered(cl: &Cluster, port: u16) -> i64 {
    let info = cl.conn(port).q(&["INFO", "tcache"]);
    info.as_str()
        .lines()
        .find_map(|l| l.strip_prefix("tcache_cluster_remembered:"))
        .map_or(-1, |v| v.trim().parse().unwrap_or(-1))
}

/// Moves `key` of `slot` from `src` to `dst` the way `redis-cli --cluster
/// reshard` does: IMPORTING on the target, MIGRATING on the source, MIGRATE.
/// The slot stays the source's until [`give_slot`].
#[track_caller]
fn migrate_key(cl: &Cluster, slot: u16, src: u16, dst: u16, key: &str) {
    let (src_id, dst_id) = (cl.id_of(src).to_string(), cl.id_of(dst).to_string());
    let slot_s = slot.to_string();
    let r = cl
        .conn(dst)
        .q(&["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &src_id]);
    assert!(r.is_ok(), "SETSLOT IMPORTING on {dst} -> {r:?}");
    let r = cl
        .conn(src)
        .q(&["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &dst_id]);
    assert!(r.is_ok(), "SETSLOT MIGRATING on {src} -> {r:?}");
    let dst_s = dst.to_string();
    let r = cl
        .conn(src)
        .q(&["MIGRATE", "127.0.0.1", &dst_s, "", "0", "5000", "KEYS", key]);
    assert!(r.is_ok(), "MIGRATE {key} -> {r:?}");
}

/// `CLUSTER SETSLOT slot NODE dst` on every primary, then waits until the
/// cluster is stable.
#[track_caller]
fn give_slot(cl: &Cluster, slot: u16, dst: u16) {
    let (slot_s, dst_id) = (slot.to_string(), cl.id_of(dst).to_string());
    for p in cl.primaries() {
        let r = cl
            .conn(p)
            .q(&["CLUSTER", "SETSLOT", &slot_s, "NODE", &dst_id]);
        assert!(r.is_ok(), "SETSLOT NODE on {p} -> {r:?}");
    }
    cl.wait_stable();
}

#[test]
fn lost_messages_and_a_slow_node_end_in_an_error_naming_the_unconfirmed_slots() {
    let shared = shared_cluster();
    let cl = lock(&shared);
    let primaries = cl.primaries();
    let (coord, deaf, slow) = (primaries[0], primaries[1], primaries[2]);
    let _timeout = cl.config_set_all("tcache.cluster-timeout-ms", "1500");
    let per = tagged_everywhere(&cl, "lost", 20);

    // Every request to `deaf` is lost: the others apply, the reply names the
    // slots of `deaf`, its entries are still there.
    set_deaf(&cl, deaf, true);
    let r = cl.conn(coord).q(&["TCACHE.INVALTAG", "lost"]);
    set_deaf(&cl, deaf, false);
    let want = format!("by the owners of slots {};", ranges_text(&cl, deaf));
    assert!(
        r.is_error_starting("UNCONFIRMED") && r.as_error().contains(&want),
        "INVALTAG with {deaf} deaf -> {r:?} (want {want})"
    );
    for p in &primaries {
        let left = cl.conn(*p).q(&["TCACHE.TAGCARD", "lost"]).as_int();
        let expect = if *p == deaf { per[&deaf] } else { 0 };
        assert_eq!(left, expect, "TAGCARD lost on {p}");
    }
    // Repeating it is safe: the rest goes, counted once.
    let r = cl.conn(coord).q(&["TCACHE.INVALTAG", "lost"]);
    assert_eq!(r, Value::Int(per[&deaf]), "repeated INVALTAG");
    assert_eq!(cl.tagcard_sum("lost"), 0);

    // The coordinator loses the answers for a while: requests are resent, the
    // duplicates are answered from memory and never count twice.
    let per = tagged_everywhere(&cl, "dup", 20);
    let total: i64 = per.values().sum();
    let _long = cl.config_set_all("tcache.cluster-timeout-ms", "20000");
    set_deaf(&cl, coord, true);
    let mut waiting = cl.conn(coord);
    waiting.send_q(&["TCACHE.INVALTAG", "dup"]);
    // The others applied (their entries are gone) while the answers are lost.
    cl.wait_for("the other primaries applied", |cl| {
        [deaf, slow]
            .iter()
            .all(|p| cl.conn(*p).q(&["TCACHE.TAGCARD", "dup"]).as_int() == 0)
    });
    assert!(remembered(&cl, deaf) >= 1, "{deaf} remembers the request");
    set_deaf(&cl, coord, false);
    assert_eq!(
        waiting.read(),
        Value::Int(total),
        "INVALTAG dup, answers lost then resent"
    );

    // A slow node (DEBUG SLEEP) delays the reply, not the coordinator: it
    // answers other clients meanwhile, and the reply comes once it woke.
    let per = tagged_everywhere(&cl, "slow", 10);
    let total: i64 = per.values().sum();
    let mut sleeper = cl.conn(slow);
    sleeper.send_q(&["DEBUG", "SLEEP", "2"]);
    let mut waiting = cl.conn(coord);
    waiting.send_q(&["TCACHE.INVALTAG", "slow"]);
    assert_eq!(cl.conn(coord).q(&["PING"]), Value::Simple("PONG".into()));
    assert_eq!(
        cl.conn(coord).q(&["TCACHE.TAGCARD", "slow"]),
        Value::Int(0),
        "applied on the coordinator while it waits"
    );
    assert_eq!(
        waiting.read(),
        Value::Int(total),
        "INVALTAG with a slow node"
    );
    assert!(sleeper.read().is_ok());
    cl.verify_all();
}

#[test]
fn a_failover_during_an_invalidation_makes_the_new_owner_confirm() {
    let shared = shared_cluster();
    let mut cl = lock(&shared);
    let (victim, _) = primary_with_replica(&cl);
    let others: Vec<u16> = cl
        .primaries()
        .into_iter()
        .filter(|p| *p != victim)
        .collect();
    let coord = others[0];
    let _timeout = cl.config_set_all("tcache.cluster-timeout-ms", "60000");
    // The other slots stay served while the victim's are uncovered: with full
    // coverage required the server itself answers CLUSTERDOWN to every
    // blocked client meanwhile (seen once: the repeat then counted the
    // victim's 20 on its promoted replica). One failover per test run: the
    // shared cluster has one replica per shard.
    let _coverage = cl.config_set_all("cluster-require-full-coverage", "no");
    let per = tagged_everywhere(&cl, "fo", 20);
    let total: i64 = per.values().sum();
    cl.sync_replicas();
    // The victim never hears of the invalidation; it is killed and its
    // replica promoted while the coordinator waits.
    set_deaf(&cl, victim, true);
    let mut waiting = cl.conn(coord);
    waiting.set_read_timeout(Duration::from_secs(90));
    waiting.send_q(&["TCACHE.INVALTAG", "fo"]);
    cl.wait_for("the other primaries to apply", |cl| {
        others
            .iter()
            .all(|p| cl.conn(*p).q(&["TCACHE.TAGCARD", "fo"]).as_int() == 0)
    });
    let promoted = cl.kill_primary(victim);
    let reply = waiting.read();
    assert_eq!(
        reply,
        Value::Int(total),
        "INVALTAG across the failover of {victim} (promoted {promoted})"
    );
    assert_eq!(
        cl.conn(promoted).q(&["TCACHE.TAGCARD", "fo"]),
        Value::Int(0)
    );
    cl.verify_all();
}

#[test]
fn remote_nodes_apply_an_invalidation_with_the_callers_acl() {
    let shared = shared_cluster();
    let cl = lock(&shared);
    let primaries = cl.primaries();
    let (coord, other) = (primaries[0], primaries[1]);
    // `aclw` may delete `aclw:mine:*` keys only, on every node.
    for p in cl.live_ports() {
        let r = cl.conn(p).q(&[
            "ACL",
            "SETUSER",
            "aclw",
            "on",
            ">pw",
            "resetkeys",
            "~aclw:mine:*",
            "+@all",
        ]);
        assert!(r.is_ok(), "ACL SETUSER on {p}: {r:?}");
    }
    let mine = key_in_slot("aclw:mine:", cl.slots_of(coord)[0], 1);
    let theirs = key_in_slot("aclw:theirs:", cl.slots_of(other)[0], 1);
    let mine_there = key_in_slot("aclw:mine:", cl.slots_of(other)[1], 2);
    for (k, p) in [(&mine, coord), (&theirs, other), (&mine_there, other)] {
        assert!(cl
            .conn(p)
            .q(&["TCACHE.SET", k, "v", "1000", "TAGS", "aclw"])
            .is_ok());
    }
    let mut c = cl.conn(coord);
    assert!(c.q(&["AUTH", "aclw", "pw"]).is_ok());
    // Allowed here, refused on `other` for `aclw:theirs:`: NOPERM, and the
    // other node deleted nothing.
    let r = c.q(&["TCACHE.INVALTAG", "aclw"]);
    assert!(r.is_error_starting("NOPERM"), "INVALTAG as aclw -> {r:?}");
    let mut o = cl.conn(other);
    assert!(!o.q(&["TCACHE.GET", &theirs]).is_nil(), "{theirs} kept");
    assert!(
        !o.q(&["TCACHE.GET", &mine_there]).is_nil(),
        "{mine_there} kept"
    );
    // By prefix within its patterns it may.
    let r = c.q(&["TCACHE.INVALPREFIX", "aclw:mine:"]);
    assert!(
        matches!(r, Value::Int(_)),
        "INVALPREFIX aclw:mine: -> {r:?}"
    );
    assert!(o.q(&["TCACHE.GET", &mine_there]).is_nil());
    // The default user finishes the job.
    assert_eq!(
        cl.conn(coord).q(&["TCACHE.INVALTAG", "aclw"]),
        Value::Int(1)
    );
    for p in cl.live_ports() {
        let _ = cl.conn(p).q(&["ACL", "DELUSER", "aclw"]);
    }
}

// ---------------------------------------------------------------------------
// Resharding under a concurrent writer
// ---------------------------------------------------------------------------

const RESHARD_TAGS: [&str; 4] = ["rs-a", "rs-b", "rs-c", "rs-d"];

/// The tags the writer gives its `n`-th write (one or two).
fn reshard_tags(n: u64) -> Vec<&'static str> {
    let a = RESHARD_TAGS[(n % 4) as usize];
    let b = RESHARD_TAGS[((n / 4) % 4) as usize];
    if a == b {
        vec![a]
    } else {
        let mut v = vec![a, b];
        v.sort();
        v
    }
}

/// What the writer last did to each key: `Some((value, tags))` or `None` (deleted).
type Model = BTreeMap<String, Option<(String, Vec<String>)>>;

#[test]
fn resharding_under_a_concurrent_writer_keeps_entries_and_indexes_consistent() {
    let shared = shared_cluster();
    let cl = lock(&shared);
    let primaries = cl.primaries();
    let (from, to) = (primaries[0], primaries[1]);
    const MOVING: usize = 40;
    const PER_SLOT: usize = 24;
    const PREFILLED: usize = 16;
    let before_from = cl.slots_of(from);
    let before_to = cl.slots_of(to);
    // redis-cli moves the lowest slots of the source.
    let moving: Vec<u16> = before_from[..MOVING].to_vec();
    let keys: Vec<String> = moving
        .iter()
        .flat_map(|&s| (0..PER_SLOT).map(move |i| key_in_slot("rs:", s, format!(":{i}"))))
        .collect();

    // Prefill 16 of every 24 keys of each moving slot on the source.
    let mut model: Model = BTreeMap::new();
    let mut cmds = Vec::new();
    for (n, key) in keys.iter().enumerate() {
        if n % PER_SLOT >= PREFILLED {
            model.insert(key.clone(), None);
            continue;
        }
        let tags = reshard_tags(n as u64);
        let value = format!("pre{n}");
        let mut cmd = words(&["TCACHE.SET", key, &value, "1000", "TAGS"]);
        cmd.extend(tags.iter().map(|t| t.to_string()));
        cmds.push(cmd);
        model.insert(
            key.clone(),
            Some((value, tags.iter().map(|t| t.to_string()).collect())),
        );
    }
    for r in pipeline(&mut cl.conn(from), &cmds) {
        assert!(r.is_ok(), "prefill -> {r:?}");
    }

    // The writer: TCACHE.SET with tags (and a TCACHE.DEL every 7th op) on the
    // keys of the moving slots, through MOVED/ASK, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, ops, keys) = (stop.clone(), ops.clone(), keys.clone());
        let mut model = model.clone();
        let mut router = cl.router();
        thread::spawn(move || {
            let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut n: u64 = 0;
            while !stop.load(Ordering::SeqCst) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let key = &keys[(rng % keys.len() as u64) as usize];
                n += 1;
                if n.is_multiple_of(7) {
                    let r = router.q(&["TCACHE.DEL", key]);
                    let existed = model.get(key).is_some_and(|e| e.is_some());
                    assert_eq!(r, Value::Int(existed as i64), "TCACHE.DEL {key}");
                    model.insert(key.clone(), None);
                } else {
                    let tags = reshard_tags(rng >> 20);
                    let value = format!("w{n}");
                    let mut args = vec!["TCACHE.SET", key.as_str(), &value, "1000", "TAGS"];
                    args.extend_from_slice(&tags);
                    let r = router.q(&args);
                    assert!(r.is_ok(), "TCACHE.SET {key} -> {r:?}");
                    model.insert(
                        key.clone(),
                        Some((value, tags.iter().map(|t| t.to_string()).collect())),
                    );
                }
                ops.fetch_add(1, Ordering::SeqCst);
            }
            (model, router.moved, router.asked)
        })
    };
    wait_until(Duration::from_secs(20), "the writer to start", || {
        ops.load(Ordering::SeqCst) >= 50 || writer.is_finished()
    });
    let ops_before = ops.load(Ordering::SeqCst);
    let out = cl.reshard(from, to, MOVING);
    let ops_during = ops.load(Ordering::SeqCst) - ops_before;
    stop.store(true, Ordering::SeqCst);
    let (model, moved, asked) = match writer.join() {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e),
    };
    eprintln!(
        "reshard of {MOVING} slots: {} output lines; writer: {ops_during} ops during the \
         reshard, {moved} MOVED and {asked} ASK followed",
        out.lines().count()
    );
    cl.wait_stable();

    // The slots moved as redis-cli promised.
    let after_from = cl.slots_of(from);
    let after_to = cl.slots_of(to);
    assert_eq!(after_from, before_from[MOVING..].to_vec(), "source slots");
    let mut want_to: Vec<u16> = before_to.iter().chain(&moving).copied().collect();
    want_to.sort_unstable();
    assert_eq!(after_to, want_to, "target slots");

    // Every node verifies; every key has the writer's last value and tags.
    cl.verify_all();
    let mut router = cl.router();
    for (key, want) in &model {
        let got = router.q(&["TCACHE.GET", key]);
        let tags = router.q(&["TCACHE.TAGS", key]);
        match want {
            None => {
                assert!(got.is_nil(), "{key}: deleted, got {got:?}");
                assert!(tags.is_nil(), "{key}: deleted, TAGS {tags:?}");
            }
            Some((value, want_tags)) => {
                assert_eq!(got, Value::bulk(value), "{key}");
                let mut t: Vec<String> = tags
                    .as_array()
                    .iter()
                    .map(|v| v.as_str().to_string())
                    .collect();
                t.sort();
                assert_eq!(&t, want_tags, "{key} tags");
            }
        }
    }
    // What the primaries store: each key on exactly one primary, the one owning
    // its slot; per tag, TAGCARD summed over primaries = live entries carrying it.
    let mut stored: BTreeMap<String, u16> = BTreeMap::new();
    let mut carrying: BTreeMap<String, i64> = BTreeMap::new();
    for p in cl.primaries() {
        let mut c = cl.conn(p);
        let found = scan_keys(&mut c, "rs:*");
        for (k, tags) in found.iter().zip(tags_of_keys(&mut c, &found)) {
            if let Some(prev) = stored.insert(k.clone(), p) {
                panic!("{k} is stored on {prev} and on {p}");
            }
            assert_eq!(
                cl.slot_owner(key_slot(k.as_bytes())),
                p,
                "{k} on a non-owner"
            );
            for t in tags.unwrap_or_else(|| panic!("{k}: SCAN sees it, TAGS nil")) {
                *carrying.entry(t).or_default() += 1;
            }
        }
    }
    let live: BTreeSet<&String> = model
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        stored.keys().collect::<BTreeSet<_>>(),
        live,
        "stored keys vs the writer's live keys"
    );
    for tag in RESHARD_TAGS {
        let model_count = model
            .values()
            .flatten()
            .filter(|(_, t)| t.iter().any(|x| x == tag))
            .count() as i64;
        let stored_count = carrying.get(tag).copied().unwrap_or(0);
        assert_eq!(stored_count, model_count, "{tag}: stored vs writer");
        assert_eq!(cl.tagcard_sum(tag), stored_count, "{tag}: TAGCARD sum");
    }
    // Clean up.
    let removed: i64 = cl
        .on_primaries(&["TCACHE.INVALTAG", "rs-a", "rs-b", "rs-c", "rs-d"])
        .iter()
        .map(|(_, v)| v.as_int())
        .sum();
    assert_eq!(removed, live.len() as i64, "INVALTAG of every rs- tag");
}

// ---------------------------------------------------------------------------
// Failover in the middle of a logical invalidation
// ---------------------------------------------------------------------------

#[test]
fn failover_in_the_middle_of_a_logical_invalidation_keeps_invalidated_entries_dead() {
    let shared = shared_cluster();
    let mut cl = lock(&shared);
    let (primary, replica) = primary_with_replica(&cl);
    let slot = cl.slots_of(primary)[0];
    let _sync = cl.config_set_all("tcache.inval-sync-max", "0");
    let budget = cl.config_set_all("tcache.reclaim-budget-us", "1");
    const DEAD: usize = 20_000;
    const BOTH: usize = 200;
    const LIVE: usize = 500;
    let key = |kind: &str, i: usize| key_in_slot("fo:", slot, format!(":{kind}:{i}"));
    let mut cmds = Vec::new();
    for i in 0..DEAD {
        cmds.push(words(&[
            "TCACHE.SET",
            &key("d", i),
            "old",
            "1000",
            "TAGS",
            "fo-dead",
        ]));
    }
    for i in 0..BOTH {
        cmds.push(words(&[
            "TCACHE.SET",
            &key("b", i),
            "old",
            "1000",
            "TAGS",
            "fo-dead",
            "fo-live",
        ]));
    }
    for i in 0..LIVE {
        cmds.push(words(&[
            "TCACHE.SET",
            &key("l", i),
            "live",
            "1000",
            "TAGS",
            "fo-live",
        ]));
    }
    let mut c = cl.conn(primary);
    for r in pipeline(&mut c, &cmds) {
        assert!(r.is_ok(), "fill -> {r:?}");
    }
    cl.sync_replicas();
    // The replica's own reclaimer stays paused once promoted, so that what
    // follows runs in the middle of its reclaim, whatever the machine's speed.
    assert!(cl
        .conn(replica)
        .q(&["CONFIG", "SET", "tcache.reclaim-budget-us", "0"])
        .is_ok());
    assert_eq!(
        c.q(&["TCACHE.INVALTAG", "fo-dead"]),
        Value::Int((DEAD + BOTH) as i64)
    );
    // The logical step (TCACHE.APPLYINVAL) has reached the replica.
    assert_eq!(c.q(&["WAIT", "1", "20000"]).as_int(), 1, "WAIT 1");
    let pending_at_kill = common::tc::stat(&mut c, "reclaim_pending");
    let promoted = cl.kill_primary(primary);
    assert_eq!(promoted, replica);
    let mut n = cl.conn(promoted);
    let pending = common::tc::stat(&mut n, "reclaim_pending");
    eprintln!(
        "killed primary {primary} with reclaim_pending {pending_at_kill} (of {}); replica \
         {promoted} promoted with reclaim_pending {pending}",
        DEAD + BOTH
    );
    assert!(
        n.q(&["TCACHE.VERIFY"]).is_ok(),
        "VERIFY on the promoted node"
    );
    assert_eq!(n.q(&["TCACHE.TAGCARD", "fo-dead"]), Value::Int(0));
    assert_eq!(n.q(&["TCACHE.TAGCARD", "fo-live"]), Value::Int(LIVE as i64));
    // The dead entries still stored are exactly those queued for reclaim.
    let exists = |n: &mut Conn| -> i64 {
        let mut args = vec!["EXISTS".to_string()];
        args.extend((0..DEAD).map(|i| key("d", i)));
        args.extend((0..BOTH).map(|i| key("b", i)));
        n.cmdv(&args).as_int()
    };
    assert_eq!(
        exists(&mut n),
        pending,
        "dead keys stored vs reclaim_pending"
    );
    // Nothing invalidated is readable; the survivors are.
    let mget = |n: &mut Conn, kind: &str, count: usize| -> Vec<Value> {
        let mut out = Vec::new();
        for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
            let mut args = vec!["TCACHE.MGET".to_string()];
            args.extend(chunk.iter().map(|&i| key(kind, i)));
            out.extend(n.cmdv(&args).as_array().to_vec());
        }
        out
    };
    let dead = mget(&mut n, "d", DEAD);
    assert!(
        dead.iter().all(Value::is_nil),
        "an invalidated value is readable"
    );
    let both = mget(&mut n, "b", BOTH);
    assert!(
        both.iter().all(Value::is_nil),
        "an invalidated value is readable"
    );
    let live = mget(&mut n, "l", LIVE);
    assert!(
        live.iter().all(|v| *v == Value::bulk("live")),
        "a survivor is not readable"
    );
    // The promoted node reclaims the rest by itself.
    drop(budget);
    common::tc::wait_reclaimed(&mut n);
    assert_eq!(exists(&mut n), 0, "dead keys left after reclaim");
    cl.verify_all();
    assert_eq!(
        n.q(&["TCACHE.INVALTAG", "fo-live"]),
        Value::Int(LIVE as i64)
    );
}

// ---------------------------------------------------------------------------
// A dead entry that moves stays dead (issue 12, part 3, the MIGRATE case)
// ---------------------------------------------------------------------------

/// A DUMP of an entry a pending invalidation killed carries the killed mark
/// (rdb_save asks the index), so it stays dead where it lands. Before, it came
/// back alive. The steps by hand (any two primaries; `src` owns slot 7629 of `k`):
/// ```text
/// redis-cli -p <src> CONFIG SET tcache.inval-sync-max 0
/// redis-cli -p <src> CONFIG SET tcache.reclaim-budget-us 0        # pause the reclaimer
/// redis-cli -p <src> TCACHE.SET k old 1000 TAGS t
/// redis-cli -p <src> TCACHE.INVALTAG t                            # 1, logical: k dead, still stored
/// redis-cli -p <src> TCACHE.GET k                                 # nil
/// redis-cli -p <dst> CLUSTER SETSLOT 7629 IMPORTING <src-id>
/// redis-cli -p <src> CLUSTER SETSLOT 7629 MIGRATING <dst-id>
/// redis-cli -p <src> MIGRATE 127.0.0.1 <dst> "" 0 5000 KEYS k    # DUMP (rdb_save) + RESTORE
/// redis-cli -p <dst> CLUSTER SETSLOT 7629 NODE <dst-id>           # and on every other primary
/// redis-cli -p <dst> TCACHE.GET k                                 # nil (was "old")
/// ```
/// `redis-cli --cluster reshard` does exactly this for every key of the slots it moves
/// (before the fix, checked by hand on Redis 7.0.15: after a 1-slot reshard the target
/// answered "old", TAGCARD t was 1 there, and TCACHE.VERIFY was OK on both nodes).
#[test]
fn migrate_of_a_logically_dead_entry_keeps_it_dead() {
    let shared = shared_cluster();
    let cl = lock(&shared);
    let _sync = cl.config_set_all("tcache.inval-sync-max", "0");
    let _paused = cl.config_set_all("tcache.reclaim-budget-us", "0");
    let primaries = cl.primaries();
    let src = primaries[0];
    let dst = primaries[1];
    let slot = *cl.slots_of(src).last().unwrap();
    let k = key_in_slot("mig:", slot, ":k");
    let tag = format!("mig-t-{}", slot_tag(slot));
    let mut s = cl.conn(src);
    assert!(s
        .q(&["TCACHE.SET", &k, "old", "1000", "TAGS", &tag])
        .is_ok());
    assert_eq!(s.q(&["TCACHE.INVALTAG", &tag]), Value::Int(1));
    assert!(s.q(&["TCACHE.GET", &k]).is_nil(), "dead on the source");
    assert_eq!(
        s.q(&["EXISTS", &k]),
        Value::Int(1),
        "still stored (reclaimer paused)"
    );

    migrate_key(&cl, slot, src, dst, &k);
    let mut d = cl.conn(dst);
    give_slot(&cl, slot, dst);
    assert_eq!(cl.slot_owner(slot), dst);
    let got = d.q(&["TCACHE.GET", &k]);
    // Clean up before asserting, so the shared cluster stays usable.
    let _ = d.q(&["DEL", &k]);
    assert!(
        got.is_nil(),
        "TCACHE.GET {k} on the target after MIGRATE -> {got:?} (invalidated before the move)"
    );
}

#[test]
fn a_key_in_flight_during_an_invalidation_arrives_dead() {
    // The race: the target applies the invalidation before the key arrives,
    // the source after the key left. Made deterministic by making the source
    // deaf to module messages until the key has moved.
    let shared = shared_cluster();
    let cl = lock(&shared);
    let primaries = cl.primaries();
    let (src, dst, coord) = (primaries[0], primaries[1], primaries[2]);
    let _timeout = cl.config_set_all("tcache.cluster-timeout-ms", "20000");
    let slot = *cl.slots_of(src).last().unwrap();
    let k = key_in_slot("fly:", slot, ":k");
    let tag = format!("fly-{}", slot_tag(slot));
    let mut s = cl.conn(src);
    assert!(s
        .q(&["TCACHE.SET", &k, "old", "1000", "TAGS", &tag])
        .is_ok());
    let before = remembered(&cl, dst);
    set_deaf(&cl, src, true);
    let mut waiting = cl.conn(coord);
    waiting.send_q(&["TCACHE.INVALTAG", &tag]);
    wait_until(Duration::from_secs(20), "the target to apply", || {
        remembered(&cl, dst) > before
    });
    // Now the key moves, before the source hears of the invalidation.
    migrate_key(&cl, slot, src, dst, &k);
    let mut d = cl.conn(dst);
    set_deaf(&cl, src, false);
    let reply = waiting.read();
    assert!(matches!(reply, Value::Int(_)), "INVALTAG -> {reply:?}");
    give_slot(&cl, slot, dst);
    let got = d.q(&["TCACHE.GET", &k]);
    let card = d.q(&["TCACHE.TAGCARD", &tag]);
    let _ = d.q(&["DEL", &k]);
    assert!(
        got.is_nil(),
        "TCACHE.GET {k} on the target -> {got:?}: it moved while INVALTAG ran"
    );
    assert_eq!(card, Value::Int(0), "TAGCARD {tag} on the target");
    cl.verify_all();
}

#[test]
fn atomic_slot_migration_keeps_indexes_exact_and_invalidations_whole() {
    let shared = shared_cluster();
    let cl = lock(&shared);
    if cl.kind() != "valkey" {
        eprintln!("skipped: CLUSTER MIGRATESLOTS (atomic slot migration) is Valkey 9's");
        return;
    }
    let primaries = cl.primaries();
    let (from, to) = (primaries[0], primaries[1]);
    let moving: Vec<u16> = cl.slots_of(from)[..64].to_vec();
    let keys: Vec<String> = moving
        .iter()
        .flat_map(|&s| (0..8).map(move |i| key_in_slot("asm:", s, format!(":{i}"))))
        .collect();
    // A writer keeps writing tagged entries to the moving slots throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, keys) = (stop.clone(), keys.clone());
        let mut router = cl.router();
        thread::spawn(move || {
            let mut written: BTreeSet<String> = BTreeSet::new();
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) || n < keys.len() {
                let key = &keys[n % keys.len()];
                let value = format!("w{n}");
                let r = router.q(&["TCACHE.SET", key, &value, "1000", "TAGS", "asm", "asm-all"]);
                assert!(r.is_ok(), "TCACHE.SET {key} -> {r:?}");
                written.insert(key.clone());
                n += 1;
            }
            (written, n)
        })
    };
    let to_id = cl.id_of(to).to_string();
    let (a, b) = (moving[0].to_string(), moving[moving.len() - 1].to_string());
    let r = cl.conn(from).q(&[
        "CLUSTER",
        "MIGRATESLOTS",
        "SLOTSRANGE",
        &a,
        &b,
        "NODE",
        &to_id,
    ]);
    assert!(r.is_ok(), "CLUSTER MIGRATESLOTS -> {r:?}");
    cl.wait_for("the migration to finish", |cl| {
        moving.iter().all(|s| cl.slot_owner(*s) == to)
    });
    stop.store(true, Ordering::SeqCst);
    let (written, n) = match writer.join() {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e),
    };
    eprintln!(
        "atomic slot migration of {} slots under {n} writes",
        moving.len()
    );
    cl.wait_stable();
    cl.wait_for("the source to drop the moved keys", |cl| {
        cl.conn(from).q(&["TCACHE.TAGCARD", "asm-all"]).as_int() == 0
    });
    cl.verify_all();
    assert_eq!(cl.tagcard_sum("asm-all"), written.len() as i64);
    // One invalidation reaches every moved entry.
    let r = cl.conn(primaries[2]).q(&["TCACHE.INVALTAG", "asm"]);
    assert_eq!(r, Value::Int(written.len() as i64), "INVALTAG asm");
    let dead: Vec<String> = written.into_iter().collect();
    assert_unreadable_everywhere(&cl, &dead);
    cl.verify_all();
}

#[test]
fn local_key_slots_match_redis() {
    // Known values (redis.io cluster spec, and CLUSTER KEYSLOT on a 7.0 node).
    assert_eq!(key_slot(b"foo"), 12182);
    assert_eq!(key_slot(b"k"), 7629);
    assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
    for s in [0, 1, 5460, 16383] {
        assert_eq!(key_slot(key_in_slot("x:", s, 7).as_bytes()), s);
    }
}
