//! SPEC section 1 from a client's side: replies, options, errors, limits,
//! binary safety, ACL, configs. After every refused command the server still
//! answers and the dataset digest is unchanged.

mod common;

use common::tc::{assert_tag, get, set, tags_of, tenant_a_user};
use common::*;

fn digest(c: &mut Conn) -> Vec<u8> {
    c.q(&["DEBUG", "DIGEST"]).as_bytes().to_vec()
}

/// Runs `args`, expects an error starting with `code_and_text`, and proves
/// nothing changed and the server still answers.
fn refused(c: &mut Conn, args: &[&[u8]], code_and_text: &str) {
    let before = digest(c);
    let r = c.cmd(args);
    assert!(
        r.is_error_starting(code_and_text),
        "{:?} -> {r:?}, wanted {code_and_text}",
        args.iter()
            .map(|a| String::from_utf8_lossy(a))
            .collect::<Vec<_>>()
    );
    assert_eq!(c.q(&["PING"]).as_str(), "PONG");
    assert_eq!(digest(c), before, "refused command changed the dataset");
}

fn q<'a>(args: &'a [&'a str]) -> Vec<&'a [u8]> {
    args.iter().map(|a| a.as_bytes()).collect()
}

#[test]
fn set_get_tags_round_trip_and_overwrite_replaces_tags() {
    let s = Server::start();
    let mut c = s.conn();
    assert!(c
        .q(&["TCACHE.SET", "k", "v1", "100", "TAGS", "a", "b", "a"])
        .is_ok());
    assert_eq!(get(&mut c, "k").as_deref(), Some(&b"v1"[..]));
    assert_eq!(
        tags_of(&mut c, b"k"),
        Some(vec![b"a".to_vec(), b"b".to_vec()])
    );
    let ttl = c.q(&["TTL", "k"]).as_int();
    assert!((99..=100).contains(&ttl), "ttl {ttl}");
    assert!(c.q(&["TCACHE.SET", "k", "v2", "50", "TAGS", "c"]).is_ok());
    assert_eq!(get(&mut c, "k").as_deref(), Some(&b"v2"[..]));
    assert_tag(&mut c, "a", &[]);
    assert_tag(&mut c, "c", &["k"]);
    assert!(c.q(&["TTL", "k"]).as_int() <= 50);
    // No TAGS at all is fine.
    assert!(c.q(&["tcache.set", "plain", "x", "10"]).is_ok());
    assert_eq!(tags_of(&mut c, b"plain"), Some(vec![]));
    assert_eq!(c.q(&["TYPE", "k"]).as_str(), "tcache-en");
    assert!(c.q(&["MEMORY", "USAGE", "k"]).as_int() > 0);
    assert!(c.q(&["TCACHE.GET", "nope"]).is_nil());
    assert!(c.q(&["TCACHE.TAGS", "nope"]).is_nil());
}

#[test]
fn nx_and_xx_write_only_when_their_condition_holds() {
    let s = Server::start();
    let mut c = s.conn();
    assert!(c.q(&["TCACHE.SET", "k", "v", "100", "XX"]).is_nil());
    assert_eq!(c.q(&["EXISTS", "k"]).as_int(), 0);
    assert!(c
        .q(&["TCACHE.SET", "k", "v", "100", "nx", "TAGS", "t"])
        .is_ok());
    assert!(c
        .q(&["TCACHE.SET", "k", "w", "100", "NX", "TAGS", "u"])
        .is_nil());
    assert_eq!(get(&mut c, "k").as_deref(), Some(&b"v"[..]));
    assert!(c
        .q(&["TCACHE.SET", "k", "w", "100", "Xx", "TAGS", "u"])
        .is_ok());
    assert_eq!(get(&mut c, "k").as_deref(), Some(&b"w"[..]));
    assert_tag(&mut c, "t", &[]);
    assert_tag(&mut c, "u", &["k"]);
}

#[test]
fn mget_del_invaltag_invalprefix_reply_counts() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, "p:1", "1", 100, &["a", "b"]);
    set(&mut c, "p:2", "2", 100, &["b"]);
    set(&mut c, "q:1", "3", 100, &["c"]);
    assert!(c.q(&["SET", "str", "x"]).is_ok());
    let r = c.q(&["TCACHE.MGET", "p:1", "missing", "str", "q:1"]);
    let a = r.as_array();
    assert_eq!(a[0].as_bytes(), b"1");
    assert!(a[1].is_nil() && a[2].is_nil(), "{r:?}");
    assert_eq!(a[3].as_bytes(), b"3");
    // An entry with both tags counts once.
    assert_eq!(c.q(&["TCACHE.INVALTAG", "a", "b", "zzz"]).as_int(), 2);
    assert_eq!(c.q(&["TCACHE.INVALTAG", "a"]).as_int(), 0);
    set(&mut c, "p:3", "3", 100, &[]);
    assert_eq!(c.q(&["TCACHE.INVALPREFIX", "p:"]).as_int(), 1);
    assert_eq!(c.q(&["TCACHE.DEL", "q:1", "missing"]).as_int(), 1);
    assert_eq!(
        c.q(&["DBSIZE"]).as_int(),
        1,
        "only the plain string is left"
    );
    let stats = c.q(&["TCACHE.STATS"]);
    assert_eq!(stats.field("invalidations").unwrap().as_int(), 3);
    assert_eq!(stats.field("invalidated_entries").unwrap().as_int(), 3);
}

/// SPEC 8: stand-alone servers are unaffected by cluster coordination. The
/// invalidations run on the node at once, also inside MULTI and scripts, and
/// INFO says so.
#[test]
fn standalone_invalidations_stay_local_and_run_in_multi_and_scripts() {
    let s = Server::start();
    let mut c = s.conn();
    let info = c.q(&["INFO", "tcache"]);
    assert!(
        info.as_str().contains("tcache_cluster_invalidation:local"),
        "{info:?}"
    );
    set(&mut c, "m:1", "1", 100, &["mt"]);
    set(&mut c, "m:2", "2", 100, &["mt"]);
    assert!(c.q(&["MULTI"]).is_ok());
    assert_eq!(
        c.q(&["TCACHE.INVALTAG", "mt"]),
        Value::Simple("QUEUED".into())
    );
    assert_eq!(c.q(&["EXEC"]), Value::Array(vec![Value::Int(2)]));
    set(&mut c, "m:3", "3", 100, &["mt"]);
    let r = c.q(&["EVAL", "return redis.call('TCACHE.INVALPREFIX', 'm:')", "0"]);
    assert_eq!(r, Value::Int(1), "INVALPREFIX from a script");
}

#[test]
fn tagscan_pages_through_every_key_once() {
    let s = Server::start();
    let mut c = s.conn();
    for i in 0..250 {
        set(&mut c, &format!("k{i}"), "v", 100, &["t"]);
    }
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    let mut calls = 0;
    loop {
        let r = c.q(&["TCACHE.TAGSCAN", "t", &cursor, "count", "20"]);
        let p = r.as_array();
        assert!(p[1].as_array().len() <= 20);
        seen.extend(p[1].as_array().iter().map(|v| v.as_str().to_string()));
        cursor = p[0].as_str().to_string();
        calls += 1;
        if cursor == "0" {
            break;
        }
    }
    assert!(calls >= 13);
    seen.sort();
    let before = seen.len();
    seen.dedup();
    assert_eq!((before, seen.len()), (250, 250));
    let r = c.q(&["TCACHE.TAGSCAN", "nope", "0"]);
    assert_eq!(r.as_array()[0].as_str(), "0");
    assert!(r.as_array()[1].as_array().is_empty());
}

#[test]
fn stats_count_and_reset_and_info_section_matches() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, "k", "v", 100, &["a", "b"]);
    for _ in 0..10 {
        get(&mut c, "k");
    }
    get(&mut c, "missing");
    let st = c.q(&["TCACHE.STATS"]);
    assert_eq!(st.field("hits").unwrap().as_int(), 10);
    assert_eq!(st.field("misses").unwrap().as_int(), 1);
    assert_eq!(st.field("hit_rate").unwrap().as_str(), "90.91%");
    assert_eq!(st.field("sets").unwrap().as_int(), 1);
    assert_eq!(st.field("entries").unwrap().as_int(), 1);
    assert_eq!(st.field("tags").unwrap().as_int(), 2);
    assert!(st.field("index_bytes").unwrap().as_int() > 0);
    let info = s.info("tcache");
    assert_eq!(info_value(&info, "tcache_hits").as_deref(), Some("10"));
    assert_eq!(
        info_value(&info, "tcache_hit_rate").as_deref(),
        Some("90.91%")
    );
    assert_eq!(info_value(&info, "tcache_entries").as_deref(), Some("1"));
    assert!(c.q(&["TCACHE.STATS", "reset"]).is_ok());
    let st = c.q(&["TCACHE.STATS"]);
    assert_eq!(st.field("hits").unwrap().as_int(), 0);
    assert_eq!(
        st.field("entries").unwrap().as_int(),
        1,
        "RESET keeps entries"
    );
    // RESP3: a real map.
    let mut c3 = s.conn3();
    let m = c3.q(&["TCACHE.STATS"]);
    assert_eq!(m.as_map().len(), 22);
    refused(&mut c, &q(&["TCACHE.STATS", "bogus"]), "ERR syntax error");
}

#[test]
fn arity_errors_are_the_standard_ones() {
    let s = Server::start();
    let mut c = s.conn();
    for cmd in [
        &["TCACHE.SET", "k", "v"][..],
        &["TCACHE.GET"],
        &["TCACHE.GET", "a", "b"],
        &["TCACHE.MGET"],
        &["TCACHE.DEL"],
        &["TCACHE.TAGS"],
        &["TCACHE.INVALTAG"],
        &["TCACHE.INVALPREFIX"],
        &["TCACHE.INVALPREFIX", "a", "b"],
        &["TCACHE.TAGCARD"],
        &["TCACHE.TAGSCAN", "t"],
        &["TCACHE.TAGSCAN", "t", "0", "COUNT"],
        &["TCACHE.VERIFY", "x"],
        &["TCACHE.STATS", "RESET", "x"],
    ] {
        let name = cmd[0].to_lowercase();
        refused(
            &mut c,
            &q(cmd),
            &format!("ERR wrong number of arguments for '{name}' command"),
        );
    }
}

#[test]
fn bad_ttls_and_options_are_refused() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, "k", "old", 100, &["t"]);
    let not_int = "ERR value is not an integer or out of range";
    for ttl in [
        "0",
        "-1",
        "1.5",
        "abc",
        "",
        "315360001",
        "99999999999999999999",
        " 1",
    ] {
        refused(
            &mut c,
            &[b"TCACHE.SET", b"k", b"v", ttl.as_bytes()],
            not_int,
        );
    }
    for opts in [
        &["BOGUS"][..],
        &["NX", "NX"],
        &["NX", "XX"],
        &["GATE"],
        &["GATE", "json", "GATE", "json"],
        &["LEASE"],
        &["SWR"],
        &["SWR", "5", "SWR", "5"],
        &["TAGS", "a", "b"].iter().rev().copied().collect::<Vec<_>>()[..],
    ] {
        let mut args = vec!["TCACHE.SET", "k", "v", "10"];
        args.extend_from_slice(opts);
        refused(&mut c, &q(&args), "ERR syntax error");
    }
    refused(
        &mut c,
        &q(&["TCACHE.SET", "k", "v", "10", "TAGS"]),
        "ERR syntax error: TAGS needs at least one tag",
    );
    refused(
        &mut c,
        &q(&["TCACHE.TAGSCAN", "t", "x"]),
        "ERR invalid cursor",
    );
    refused(
        &mut c,
        &q(&["TCACHE.TAGSCAN", "t", "-1"]),
        "ERR invalid cursor",
    );
    refused(
        &mut c,
        &q(&["TCACHE.TAGSCAN", "t", "0", "COUNT", "0"]),
        not_int,
    );
    refused(
        &mut c,
        &q(&["TCACHE.TAGSCAN", "t", "0", "LIMIT", "5"]),
        "ERR syntax error",
    );
    assert_eq!(get(&mut c, "k").as_deref(), Some(&b"old"[..]));
    assert_eq!(c.q(&["TCACHE.SET", "k", "v", "315360000"]).as_str(), "OK");
}

#[test]
fn limits_are_enforced_and_name_the_limit() {
    let s = Server::builder()
        .module_args(&[
            "max-tags",
            "3",
            "max-tag-bytes",
            "8",
            "max-value-bytes",
            "16",
        ])
        .start();
    let mut c = s.conn();
    set(&mut c, "k", "old", 100, &["t"]);
    refused(
        &mut c,
        &q(&["TCACHE.SET", "k", "v", "10", "TAGS", "a", "b", "c", "d"]),
        "ERR too many tags (tcache.max-tags is 3)",
    );
    // Duplicates fold before counting.
    assert!(c
        .q(&["TCACHE.SET", "k2", "v", "10", "TAGS", "a", "b", "c", "a"])
        .is_ok());
    refused(
        &mut c,
        &q(&["TCACHE.SET", "k", "v", "10", "TAGS", "123456789"]),
        "ERR tag too long (tcache.max-tag-bytes is 8)",
    );
    refused(
        &mut c,
        &q(&["TCACHE.SET", "k", "12345678901234567", "10"]),
        "ERR value too large (tcache.max-value-bytes is 16)",
    );
    assert_eq!(get(&mut c, "k").as_deref(), Some(&b"old"[..]));
    assert_tag(&mut c, "t", &["k"]);
}

#[test]
fn binary_keys_tags_and_values_are_kept_byte_for_byte() {
    let s = Server::start();
    let mut c = s.conn();
    let key: &[u8] = b"k\x00\xff\xfe";
    let value: &[u8] = b"\x00\x01\xc3\x28 value \xff";
    let tag: &[u8] = b"t\x00\x80";
    let r = c.cmd(&[b"TCACHE.SET", key, value, b"100", b"TAGS", tag, b"\xc3\x28"]);
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(c.cmd(&[b"TCACHE.GET", key]).as_bytes(), value);
    assert_eq!(
        tags_of(&mut c, key),
        Some(vec![tag.to_vec(), b"\xc3\x28".to_vec()])
    );
    assert_eq!(common::tc::tagscan_all(&mut c, tag), vec![key.to_vec()]);
    assert_eq!(
        c.cmd(&[b"TCACHE.TAGCARD", b"t"]).as_int(),
        0,
        "no prefix match on tags"
    );
    assert!(c.q(&["DEBUG", "RELOAD"]).is_ok());
    assert_eq!(c.cmd(&[b"TCACHE.GET", key]).as_bytes(), value);
    assert_eq!(c.cmd(&[b"TCACHE.INVALPREFIX", b"k\x00"]).as_int(), 1);
    assert!(c.q(&["TCACHE.VERIFY"]).is_ok());
}

#[test]
fn other_types_are_never_read_or_overwritten() {
    let s = Server::start();
    let mut c = s.conn();
    assert!(c.q(&["SET", "str", "plain"]).is_ok());
    assert_eq!(c.q(&["HSET", "h", "f", "v"]).as_int(), 1);
    let wt = "WRONGTYPE Operation against a key holding the wrong kind of value";
    for key in ["str", "h"] {
        refused(&mut c, &q(&["TCACHE.SET", key, "v", "10", "TAGS", "t"]), wt);
        refused(&mut c, &q(&["TCACHE.SET", key, "v", "10", "XX"]), wt);
        refused(&mut c, &q(&["TCACHE.GET", key]), wt);
        refused(&mut c, &q(&["TCACHE.TAGS", key]), wt);
        refused(&mut c, &q(&["TCACHE.DEL", key]), wt);
    }
    set(&mut c, "entry", "v", 100, &["t"]);
    // One wrong key refuses the whole DEL.
    refused(&mut c, &q(&["TCACHE.DEL", "entry", "str"]), wt);
    assert_eq!(c.q(&["GET", "str"]).as_str(), "plain");
    assert_tag(&mut c, "t", &["entry"]);
}

#[test]
fn set_under_maxmemory_is_refused_with_oom_and_writes_nothing() {
    let s = Server::builder()
        .arg("maxmemory-policy", "noeviction")
        .start();
    let mut c = s.conn();
    set(&mut c, "keep", "v", 100, &["t"]);
    let used: i64 = info_value(&s.info("memory"), "used_memory")
        .unwrap()
        .parse()
        .unwrap();
    assert!(c
        .q(&["CONFIG", "SET", "maxmemory", &(used + 200_000).to_string()])
        .is_ok());
    let value = "x".repeat(10_000);
    let mut oom = None;
    for i in 0..1000 {
        let r = c.q(&["TCACHE.SET", &format!("k{i}"), &value, "100", "TAGS", "t"]);
        if r.is_error() {
            oom = Some((i, r));
            break;
        }
    }
    let (i, r) = oom.expect("never refused");
    assert!(r.is_error_starting("OOM"), "{r:?}");
    assert_eq!(c.q(&["EXISTS", &format!("k{i}")]).as_int(), 0);
    assert!(c.q(&["CONFIG", "SET", "maxmemory", "0"]).is_ok());
    assert!(c.q(&["TCACHE.VERIFY"]).is_ok());
    assert_eq!(
        c.q(&["TCACHE.TAGCARD", "t"]).as_int(),
        c.q(&["DBSIZE"]).as_int()
    );
}

#[test]
fn acl_restricted_user_cannot_delete_other_tenants_through_tag_or_prefix() {
    let s = Server::start();
    let mut admin = s.conn();
    set(&mut admin, "tenantA:1", "a", 100, &["shared"]);
    set(&mut admin, "tenantB:1", "b", 100, &["shared"]);
    let mut alice = tenant_a_user(&s, &mut admin);
    let before = digest(&mut admin);
    let r = alice.q(&["TCACHE.INVALTAG", "shared"]);
    assert!(r.is_error_starting("NOPERM"), "{r:?}");
    let r = alice.q(&["TCACHE.INVALPREFIX", "tenant"]);
    assert!(r.is_error_starting("NOPERM"), "{r:?}");
    assert_eq!(digest(&mut admin), before, "nothing deleted");
    // Her own keys she may invalidate.
    assert_eq!(alice.q(&["TCACHE.INVALPREFIX", "tenantA:"]).as_int(), 1);
    assert!(alice
        .q(&["TCACHE.DEL", "tenantB:1"])
        .is_error_starting("NOPERM"));
    assert_tag(&mut admin, "shared", &["tenantB:1"]);
}

/// The value CONFIG GET gives for one config.
fn get_cfg(c: &mut Conn, name: &str) -> String {
    c.q(&["CONFIG", "GET", name]).as_array()[1]
        .as_str()
        .to_string()
}

#[test]
fn configs_are_set_by_argument_by_config_line_and_by_config_set_within_range() {
    let s = Server::builder()
        .module_args(&["max-tags", "7"])
        .arg("tcache.max-tag-bytes", "100")
        .start();
    let mut c = s.conn();
    assert_eq!(get_cfg(&mut c, "tcache.max-tags"), "7");
    assert_eq!(get_cfg(&mut c, "tcache.max-tag-bytes"), "100");
    assert_eq!(get_cfg(&mut c, "tcache.max-value-bytes"), "67108864");
    assert!(c.q(&["CONFIG", "SET", "tcache.max-tags", "2"]).is_ok());
    assert!(c
        .q(&["TCACHE.SET", "k", "v", "10", "TAGS", "a", "b", "c"])
        .is_error_starting("ERR too many tags (tcache.max-tags is 2)"));
    assert!(c
        .q(&["CONFIG", "SET", "tcache.max-value-bytes", "1mb"])
        .is_ok());
    assert_eq!(get_cfg(&mut c, "tcache.max-value-bytes"), "1048576");
    for (name, bad) in [
        ("tcache.max-tags", "0"),
        ("tcache.max-tags", "4097"),
        ("tcache.max-tag-bytes", "65537"),
        ("tcache.max-value-bytes", "0"),
        ("tcache.max-value-bytes", "1gb"),
        ("tcache.max-tags", "x"),
    ] {
        let r = c.q(&["CONFIG", "SET", name, bad]);
        assert!(r.is_error_starting("ERR"), "{name} {bad} -> {r:?}");
    }
    assert_eq!(get_cfg(&mut c, "tcache.max-tags"), "2");
}

#[test]
fn every_config_is_settable_as_a_load_argument_and_wins_over_a_config_line() {
    let s = Server::builder()
        .module_args(&[
            "perm-ttl",
            "60",
            "invalidation-channel",
            "inval",
            "max-value-bytes",
            "1mb",
            "max-tags",
            "5",
        ])
        .arg("tcache.max-tags", "9")
        .start();
    let mut c = s.conn();
    assert_eq!(get_cfg(&mut c, "tcache.perm-ttl"), "60");
    assert_eq!(get_cfg(&mut c, "tcache.invalidation-channel"), "inval");
    assert_eq!(get_cfg(&mut c, "tcache.max-value-bytes"), "1048576");
    assert_eq!(
        get_cfg(&mut c, "tcache.max-tags"),
        "5",
        "the load argument wins"
    );
    assert!(c
        .q(&["PERM.SET", "p", r#"{"roles":[],"permissions":[]}"#])
        .is_ok());
    let ttl = c.q(&["TTL", "p"]).as_int();
    assert!((59..=60).contains(&ttl), "perm-ttl used as default: {ttl}");
    for bad in ["0", "315360001"] {
        assert!(c.q(&["CONFIG", "SET", "tcache.perm-ttl", bad]).is_error());
    }
}

#[test]
fn bad_module_arguments_refuse_the_load() {
    for args in [&["max-tags", "0"][..], &["nonsense", "1"], &["max-tags"]] {
        let s = Server::builder().no_module().start();
        let mut c = s.conn();
        let mut cmd = vec!["MODULE", "LOAD"];
        let path = module_path().to_string_lossy().into_owned();
        cmd.push(&path);
        cmd.extend_from_slice(args);
        let r = c.q(&cmd);
        assert!(r.is_error(), "{args:?} -> {r:?}");
        assert_eq!(c.q(&["PING"]).as_str(), "PONG");
    }
}

#[test]
fn apply_is_refused_from_clients() {
    let s = Server::start();
    let mut c = s.conn();
    refused(
        &mut c,
        &q(&["TCACHE.APPLY", "k", "whatever"]),
        "ERR TCACHE.APPLY is reserved for replication and AOF loading",
    );
}

#[test]
fn an_overwrite_replaces_the_entry_and_touches_watched_keys() {
    let s = Server::start();
    let mut c = s.conn();
    let mut other = s.conn();
    set(&mut c, "k", "v", 100, &["t", "kept"]);
    assert!(c.q(&["WATCH", "k"]).is_ok());
    // Overwritten in place: the value, tags and ttl are the new ones.
    set(&mut other, "k", "w", 200, &["kept", "u"]);
    assert!(c.q(&["MULTI"]).is_ok());
    c.q(&["PING"]);
    assert!(
        c.q(&["EXEC"]).is_nil(),
        "an overwrite must abort a transaction watching its key"
    );
    assert_eq!(c.cmd(&[b"TCACHE.GET", b"k"]).as_bytes(), b"w");
    assert_eq!(
        tags_of(&mut c, b"k"),
        Some(vec![b"kept".to_vec(), b"u".to_vec()])
    );
    let ttl = c.q(&["TTL", "k"]).as_int();
    assert!(ttl > 100 && ttl <= 200, "ttl {ttl}");
    assert_eq!(c.q(&["TCACHE.TAGCARD", "t"]).as_int(), 0);
    assert!(c.q(&["TCACHE.VERIFY"]).is_ok());
}

#[test]
fn refused_writes_do_not_touch_watched_keys() {
    let s = Server::start();
    let mut c = s.conn();
    let mut other = s.conn();
    set(&mut c, "k", "v", 100, &["t"]);
    for refused in [
        &["TCACHE.SET", "k", "w", "100", "NX"][..],
        &["TCACHE.SET", "missing", "w", "100", "XX"],
        &["TCACHE.DEL", "missing"],
    ] {
        assert!(c.q(&["WATCH", "k", "missing"]).is_ok());
        let r = other.q(refused);
        assert!(r.is_nil() || r.as_int() == 0, "{refused:?} -> {r:?}");
        assert!(c.q(&["MULTI"]).is_ok());
        c.q(&["PING"]);
        let exec = c.q(&["EXEC"]);
        assert!(
            !exec.is_nil(),
            "{refused:?} aborted a transaction watching its key"
        );
    }
}
