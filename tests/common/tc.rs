//! tcache-specific assertions shared by the integration tests.

use super::resp::{Conn, Value};

/// `TCACHE.SET key value ttl TAGS tags...` (no TAGS word when `tags` is empty); asserts OK.
pub fn set(c: &mut Conn, key: &str, value: &str, ttl: u64, tags: &[&str]) {
    let ttl = ttl.to_string();
    let mut args = vec!["TCACHE.SET", key, value, &ttl];
    if !tags.is_empty() {
        args.push("TAGS");
        args.extend_from_slice(tags);
    }
    let r = c.q(&args);
    assert!(r.is_ok(), "TCACHE.SET {key} -> {r:?}");
}

/// Every key TAGSCAN returns for `tag`, sorted and deduplicated.
pub fn tagscan_all(c: &mut Conn, tag: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cursor = b"0".to_vec();
    loop {
        let r = c.cmd(&[b"TCACHE.TAGSCAN", tag, &cursor, b"COUNT", b"7"]);
        let parts = r.as_array();
        assert_eq!(parts.len(), 2, "TAGSCAN reply {r:?}");
        cursor = parts[0].as_bytes().to_vec();
        out.extend(parts[1].as_array().iter().map(|v| v.as_bytes().to_vec()));
        if cursor == b"0" {
            break;
        }
    }
    out.sort();
    out.dedup();
    out
}

/// TCACHE.VERIFY says OK.
pub fn assert_verified(c: &mut Conn) {
    let r = c.q(&["TCACHE.VERIFY"]);
    assert!(r.is_ok(), "TCACHE.VERIFY -> {r:?}");
}

/// VERIFY is OK and `tag` holds exactly `expected` (TAGCARD and TAGSCAN agree).
pub fn assert_tag(c: &mut Conn, tag: &str, expected: &[&str]) {
    assert_verified(c);
    let mut want: Vec<Vec<u8>> = expected.iter().map(|k| k.as_bytes().to_vec()).collect();
    want.sort();
    let got = tagscan_all(c, tag.as_bytes());
    assert_eq!(
        got.iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>(),
        want.iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>(),
        "TAGSCAN {tag}"
    );
    let card = c.q(&["TCACHE.TAGCARD", tag]).as_int();
    assert_eq!(card as usize, expected.len(), "TAGCARD {tag}");
}

/// The value of `TCACHE.GET key`, `None` for nil.
pub fn get(c: &mut Conn, key: &str) -> Option<Vec<u8>> {
    let r = c.q(&["TCACHE.GET", key]);
    if r.is_nil() {
        None
    } else {
        Some(r.as_bytes().to_vec())
    }
}

/// The tags of `key`, sorted; `None` for nil.
pub fn tags_of(c: &mut Conn, key: &[u8]) -> Option<Vec<Vec<u8>>> {
    let r = c.cmd(&[b"TCACHE.TAGS", key]);
    if r.is_nil() {
        return None;
    }
    let mut t: Vec<Vec<u8>> = r.as_array().iter().map(|v| v.as_bytes().to_vec()).collect();
    t.sort();
    Some(t)
}

/// The error text of a reply, panicking if it is not an error.
pub fn err(v: &Value) -> String {
    v.as_error().to_string()
}

/// Asserts an `OK` reply, naming `what` on failure.
#[track_caller]
pub fn ok(r: Value, what: &str) {
    assert!(r.is_ok(), "{what} -> {r:?}");
}

pub fn exists(c: &mut Conn, key: &str) -> bool {
    c.q(&["EXISTS", key]).as_int() == 1
}

/// One counter of TCACHE.STATS (RESP2 or RESP3).
#[track_caller]
pub fn stat(c: &mut Conn, name: &str) -> i64 {
    let stats = c.q(&["TCACHE.STATS"]);
    match stats.field(name) {
        Some(v) => v.as_int(),
        None => panic!("TCACHE.STATS has no {name}: {stats:?}"),
    }
}

/// Waits until the reclaimer has deleted every entry a logical invalidation
/// killed (`reclaim_pending` 0): until then SCAN and DBSIZE still see them.
pub fn wait_reclaimed(c: &mut Conn) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while stat(c, "reclaim_pending") != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "reclaim did not finish in 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Waits until no AOF rewrite is running or scheduled.
pub fn wait_for_aof_rewrite(s: &super::server::Server) {
    super::server::wait_until(std::time::Duration::from_secs(20), "AOF rewrite", || {
        let info = s.info("persistence");
        let idle = |f: &str| super::server::info_value(&info, f).as_deref() == Some("0");
        idle("aof_rewrite_in_progress") && idle("aof_rewrite_scheduled")
    });
}

/// Sends every command before reading the replies, in chunks of 500.
#[track_caller]
pub fn pipeline(c: &mut Conn, cmds: &[Vec<String>]) -> Vec<Value> {
    let mut out = Vec::with_capacity(cmds.len());
    for chunk in cmds.chunks(500) {
        for cmd in chunk {
            let args: Vec<&[u8]> = cmd.iter().map(|a| a.as_bytes()).collect();
            c.send(&args);
        }
        for _ in chunk {
            out.push(c.read());
        }
    }
    out
}

/// Owned command words.
pub fn words(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// A connection of user `alice`, who may touch only keys `tenantA:*` (all
/// commands allowed), created through `admin`.
pub fn tenant_a_user(s: &super::server::Server, admin: &mut Conn) -> Conn {
    let r = admin.q(&[
        "ACL",
        "SETUSER",
        "alice",
        "on",
        ">pw",
        "~tenantA:*",
        "+@all",
    ]);
    ok(r, "ACL SETUSER");
    let mut alice = s.conn();
    ok(alice.q(&["AUTH", "alice", "pw"]), "AUTH");
    alice
}
