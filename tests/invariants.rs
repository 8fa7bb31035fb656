//! SPEC invariant 1: after every way Redis can remove, move, replace or reload
//! a key, TCACHE.VERIFY is OK and tag/prefix queries return exactly the live
//! entries.

mod common;

use std::time::Duration;

use common::tc::{assert_tag, assert_verified, get, set, tags_of};
use common::*;

fn fixture(c: &mut Conn) {
    set(c, "user:1", "a", 100, &["users", "t1"]);
    set(c, "user:2", "b", 100, &["users"]);
    set(c, "post:1", "c", 100, &["posts", "t1"]);
}

#[test]
fn del_and_unlink_drop_entries_from_their_tags() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    assert_eq!(c.q(&["DEL", "user:1"]).as_int(), 1);
    assert_tag(&mut c, "users", &["user:2"]);
    assert_tag(&mut c, "t1", &["post:1"]);
    assert_eq!(c.q(&["UNLINK", "post:1"]).as_int(), 1);
    assert_tag(&mut c, "t1", &[]);
    assert_eq!(c.q(&["TCACHE.STATS"]).field("tags").unwrap().as_int(), 1);
}

#[test]
fn active_expiry_drops_entries() {
    let s = Server::builder().arg("hz", "100").start();
    let mut c = s.conn();
    set(&mut c, "short", "v", 1, &["t"]);
    set(&mut c, "long", "v", 100, &["t"]);
    // DBSIZE does not expire keys: only the active cycle can bring it to 1.
    wait_until(Duration::from_secs(10), "active expiry", || {
        c.q(&["DBSIZE"]).as_int() == 1
    });
    assert_tag(&mut c, "t", &["long"]);
}

#[test]
fn lazily_expired_entries_are_invisible_then_dropped() {
    let s = Server::start();
    let mut c = s.conn();
    assert!(c.q(&["DEBUG", "SET-ACTIVE-EXPIRE", "0"]).is_ok());
    set(&mut c, "short", "v", 1, &["t"]);
    set(&mut c, "long", "v", 100, &["t"]);
    std::thread::sleep(Duration::from_millis(1100));
    // Logically expired but still stored: never counted or scanned.
    assert_eq!(c.q(&["DBSIZE"]).as_int(), 2);
    assert_tag(&mut c, "t", &["long"]);
    assert_eq!(get(&mut c, "short"), None);
    assert_eq!(c.q(&["DBSIZE"]).as_int(), 1, "the read deleted it");
    assert_tag(&mut c, "t", &["long"]);
}

#[test]
fn expire_and_persist_are_followed() {
    let s = Server::start();
    let mut c = s.conn();
    assert!(c.q(&["DEBUG", "SET-ACTIVE-EXPIRE", "0"]).is_ok());
    set(&mut c, "a", "v", 100, &["t"]);
    set(&mut c, "b", "v", 100, &["t"]);
    assert_eq!(c.q(&["PERSIST", "a"]).as_int(), 1);
    assert_eq!(c.q(&["TTL", "a"]).as_int(), -1);
    assert_eq!(c.q(&["PEXPIRE", "b", "50"]).as_int(), 1);
    std::thread::sleep(Duration::from_millis(120));
    assert_tag(&mut c, "t", &["a"]);
}

fn eviction(policy: &str) {
    let s = Server::builder().arg("maxmemory-policy", policy).start();
    let mut c = s.conn();
    let used: i64 = info_value(&s.info("memory"), "used_memory")
        .unwrap()
        .parse()
        .unwrap();
    let limit = (used + 2_000_000).to_string();
    assert!(c.q(&["CONFIG", "SET", "maxmemory", &limit]).is_ok());
    let value = "x".repeat(1000);
    let mut written = 0;
    while info_value(&s.info("stats"), "evicted_keys").unwrap() == "0" {
        let key = format!("k:{written}");
        let tag = format!("g{}", written % 7);
        let r = c.q(&["TCACHE.SET", &key, &value, "1000", "TAGS", &tag, "all"]);
        assert!(r.is_ok(), "{r:?}");
        written += 1;
        assert!(written < 100_000, "no eviction happened");
    }
    // A few more writes under pressure.
    for i in 0..200 {
        let key = format!("z:{i}");
        assert!(c
            .q(&["TCACHE.SET", &key, &value, "1000", "TAGS", "all"])
            .is_ok());
    }
    // Lift the limit: otherwise every command may evict more before it runs.
    assert!(c.q(&["CONFIG", "SET", "maxmemory", "0"]).is_ok());
    assert_verified(&mut c);
    let live = c.q(&["DBSIZE"]).as_int();
    assert!(live < written + 200, "evicted nothing");
    assert_eq!(c.q(&["TCACHE.TAGCARD", "all"]).as_int(), live);
    assert_eq!(common::tc::tagscan_all(&mut c, b"all").len() as i64, live);
}

#[test]
fn eviction_allkeys_lru_keeps_index_exact() {
    eviction("allkeys-lru");
}

#[test]
fn eviction_volatile_lru_keeps_index_exact() {
    eviction("volatile-lru");
}

#[test]
fn overwrite_by_plain_set_drops_the_entry() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    assert!(c.q(&["SET", "user:1", "plain"]).is_ok());
    assert_tag(&mut c, "users", &["user:2"]);
    assert_tag(&mut c, "t1", &["post:1"]);
    assert!(c
        .q(&["TCACHE.GET", "user:1"])
        .is_error_starting("WRONGTYPE"));
    assert_eq!(c.q(&["TCACHE.INVALPREFIX", "user:"]).as_int(), 1);
    assert_eq!(
        c.q(&["GET", "user:1"]).as_str(),
        "plain",
        "plain key untouched"
    );
}

#[test]
fn rename_moves_the_entry_under_its_new_name() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    assert!(c.q(&["RENAME", "user:1", "member:1"]).is_ok());
    assert_tag(&mut c, "users", &["member:1", "user:2"]);
    // Renaming onto an existing entry replaces it.
    assert!(c.q(&["RENAME", "member:1", "post:1"]).is_ok());
    assert_tag(&mut c, "users", &["post:1", "user:2"]);
    assert_tag(&mut c, "posts", &[]);
    assert_tag(&mut c, "t1", &["post:1"]);
    assert_eq!(c.q(&["TCACHE.INVALPREFIX", "member:"]).as_int(), 0);
    assert!(c.q(&["TTL", "post:1"]).as_int() > 90, "TTL kept");
}

#[test]
fn move_reindexes_in_the_target_database() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    assert_eq!(c.q(&["MOVE", "user:1", "3"]).as_int(), 1);
    assert_tag(&mut c, "users", &["user:2"]);
    assert!(c.q(&["SELECT", "3"]).is_ok());
    assert_tag(&mut c, "users", &["user:1"]);
    assert_tag(&mut c, "t1", &["user:1"]);
    assert_eq!(c.q(&["TCACHE.INVALTAG", "t1"]).as_int(), 1);
    assert!(c.q(&["SELECT", "0"]).is_ok());
    assert_tag(&mut c, "t1", &["post:1"]);
}

#[test]
fn copy_indexes_the_copy_and_replace_drops_the_old_target() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    assert_eq!(c.q(&["COPY", "user:1", "user:9"]).as_int(), 1);
    assert_tag(&mut c, "users", &["user:1", "user:2", "user:9"]);
    assert_eq!(c.q(&["COPY", "user:1", "post:1", "REPLACE"]).as_int(), 1);
    assert_tag(&mut c, "posts", &[]);
    assert_tag(&mut c, "t1", &["post:1", "user:1", "user:9"]);
    assert_eq!(c.q(&["COPY", "user:2", "user:2", "DB", "5"]).as_int(), 1);
    assert!(c.q(&["SELECT", "5"]).is_ok());
    assert_tag(&mut c, "users", &["user:2"]);
}

#[test]
fn swapdb_swaps_the_indexes() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    assert!(c.q(&["SELECT", "1"]).is_ok());
    set(&mut c, "other", "x", 100, &["users"]);
    assert!(c.q(&["SWAPDB", "0", "1"]).is_ok());
    assert_tag(&mut c, "users", &["user:1", "user:2"]);
    assert!(c.q(&["SELECT", "0"]).is_ok());
    assert_tag(&mut c, "users", &["other"]);
    assert_tag(&mut c, "t1", &[]);
}

#[test]
fn flushdb_and_flushall_sync_and_async_clear_the_indexes() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    assert!(c.q(&["SELECT", "2"]).is_ok());
    fixture(&mut c);
    assert!(c.q(&["FLUSHDB"]).is_ok());
    assert_tag(&mut c, "users", &[]);
    assert!(c.q(&["SELECT", "0"]).is_ok());
    assert_tag(&mut c, "users", &["user:1", "user:2"]);
    assert!(c.q(&["FLUSHALL"]).is_ok());
    assert_tag(&mut c, "users", &[]);
    fixture(&mut c);
    assert!(c.q(&["FLUSHDB", "ASYNC"]).is_ok());
    assert_tag(&mut c, "users", &[]);
    fixture(&mut c);
    assert!(c.q(&["FLUSHALL", "ASYNC"]).is_ok());
    assert_tag(&mut c, "users", &[]);
    assert_eq!(c.q(&["TCACHE.STATS"]).field("entries").unwrap().as_int(), 0);
    fixture(&mut c);
    assert_tag(&mut c, "users", &["user:1", "user:2"]);
}

#[test]
fn dump_and_restore_recreate_the_entry() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    let dump = c.q(&["DUMP", "user:1"]).as_bytes().to_vec();
    assert_eq!(c.q(&["DEL", "user:1"]).as_int(), 1);
    let r = c.cmd(&[b"RESTORE", b"user:1", b"50000", &dump]);
    assert!(r.is_ok(), "{r:?}");
    assert_tag(&mut c, "users", &["user:1", "user:2"]);
    let r = c.cmd(&[b"RESTORE", b"post:1", b"0", &dump, b"REPLACE"]);
    assert!(r.is_ok(), "{r:?}");
    assert_tag(&mut c, "users", &["post:1", "user:1", "user:2"]);
    assert_tag(&mut c, "posts", &[]);
    assert_eq!(get(&mut c, "post:1").as_deref(), Some(&b"a"[..]));
    assert_eq!(c.q(&["TTL", "post:1"]).as_int(), -1);
}

/// Entries, tags and remaining TTLs after a reload, as before it.
fn assert_reloaded(c: &mut Conn) {
    assert_tag(c, "users", &["user:1", "user:2"]);
    assert_tag(c, "t1", &["post:1", "user:1"]);
    assert_eq!(get(c, "user:2").as_deref(), Some(&b"b"[..]));
    assert_eq!(
        tags_of(c, b"user:1"),
        Some(vec![b"t1".to_vec(), b"users".to_vec()])
    );
    let pttl = c.q(&["PTTL", "user:1"]).as_int();
    assert!(pttl > 0 && pttl <= 100_000, "pttl {pttl}");
    assert_eq!(c.q(&["TCACHE.INVALTAG", "t1"]).as_int(), 2);
    assert_tag(c, "users", &["user:2"]);
}

#[test]
fn debug_reload_rebuilds_the_index() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    assert!(c.q(&["DEBUG", "RELOAD"]).is_ok());
    assert_reloaded(&mut c);
}

#[test]
fn restart_from_rdb_rebuilds_the_index() {
    let mut s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    assert!(c.q(&["SAVE"]).is_ok());
    s.restart();
    let mut c = s.conn();
    assert_reloaded(&mut c);
}

fn restart_from_aof(preamble: &str) {
    let mut s = Server::builder()
        .arg("appendonly", "yes")
        .arg("aof-use-rdb-preamble", preamble)
        .start();
    let mut c = s.conn();
    set(&mut c, "user:1", "old", 100, &["old"]);
    set(&mut c, "gone", "x", 100, &["users"]);
    let r = c.q(&["BGREWRITEAOF"]);
    assert!(!r.is_error(), "{r:?}");
    common::tc::wait_for_aof_rewrite(&s);
    // Commands after the rewrite land in the incremental AOF.
    fixture(&mut c);
    assert_eq!(c.q(&["TCACHE.DEL", "gone"]).as_int(), 1);
    std::thread::sleep(Duration::from_millis(1100));
    let before = c.q(&["PTTL", "user:2"]).as_int();
    s.restart();
    let mut c = s.conn();
    let after = c.q(&["PTTL", "user:2"]).as_int();
    assert!(
        after <= before,
        "AOF replay restarted the TTL: {before} -> {after}"
    );
    assert_eq!(get(&mut c, "gone"), None);
    assert_tag(&mut c, "old", &[]);
    assert_reloaded(&mut c);
}

#[test]
fn restart_from_aof_without_rdb_preamble() {
    restart_from_aof("no");
}

#[test]
fn restart_from_aof_with_rdb_preamble() {
    restart_from_aof("yes");
}

/// A write reaches the AOF as `TCACHE.APPLY key blob PXAT <ms>`. An entry
/// whose time passed while it sat there (never read, active expiry off, so
/// no DEL was logged) must not come back when the AOF is replayed.
#[test]
fn an_entry_expired_in_the_aof_stays_expired_after_replay() {
    let mut s = Server::builder()
        .arg("appendonly", "yes")
        .arg("aof-use-rdb-preamble", "no")
        .start();
    let mut c = s.conn();
    assert!(c.q(&["DEBUG", "SET-ACTIVE-EXPIRE", "0"]).is_ok());
    set(&mut c, "brief", "x", 1, &["t"]);
    set(&mut c, "kept", "y", 100, &["t"]);
    std::thread::sleep(Duration::from_millis(1300));
    s.restart();
    let mut c = s.conn();
    assert_eq!(get(&mut c, "brief"), None);
    assert_eq!(get(&mut c, "kept").as_deref(), Some(&b"y"[..]));
    let pttl = c.q(&["PTTL", "kept"]).as_int();
    assert!(pttl > 90_000 && pttl <= 100_000, "PTTL kept {pttl}");
    assert_tag(&mut c, "t", &["kept"]);
    assert!(c.q(&["TCACHE.VERIFY"]).is_ok());
}
