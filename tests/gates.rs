//! Quality gates from an application's side: JSON Schemas registered with
//! TCACHE.GATE.SET that a value must pass before TCACHE.SET caches it, bound to
//! a key prefix or named per write; their counters, their dry run, hostile
//! inputs, and how they survive reloads, restarts (RDB and AOF) and reach
//! replicas.

mod common;

use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::tc::{err, exists, get, ok, stat, tags_of, wait_for_aof_rewrite};
use common::*;

const REPORT: &str = r#"{"type":"object","required":["risk_score"],"properties":{"risk_score":{"type":"number","exclusiveMinimum":0}}}"#;
const NUMS: &str = r#"{"type":"array","items":{"type":"number"}}"#;
const ZERO_RISK: &str = "GATE report: /risk_score: 0 is less than or equal to the minimum of 0";

#[track_caller]
fn gate_set(c: &mut Conn, name: &str, schema: &str, prefix: Option<&str>) {
    let mut args = vec!["TCACHE.GATE.SET", name, schema];
    if let Some(p) = prefix {
        args.extend(["PREFIX", p]);
    }
    ok(c.q(&args), &format!("TCACHE.GATE.SET {name}"));
}

/// TCACHE.GATE.LIST, sorted (the order is not part of the contract).
fn gate_list(c: &mut Conn) -> Vec<String> {
    let r = c.q(&["TCACHE.GATE.LIST"]);
    let mut names: Vec<String> = r
        .as_array()
        .iter()
        .map(|v| v.as_str().to_string())
        .collect();
    names.sort();
    names
}

/// (checked, rejected, last_rejection) of gate `name` in TCACHE.STATS.
#[track_caller]
fn gate_counters(c: &mut Conn, name: &str) -> (i64, i64, String) {
    let st = c.q(&["TCACHE.STATS"]);
    let gates = st.field("gates").expect("STATS has gates");
    let g = gates
        .field(name)
        .unwrap_or_else(|| panic!("no gate {name} in STATS {st:?}"));
    (
        g.field("checked").unwrap().as_int(),
        g.field("rejected").unwrap().as_int(),
        g.field("last_rejection").unwrap().as_str().to_string(),
    )
}

#[track_caller]
fn assert_pong(c: &mut Conn) {
    assert_eq!(c.q(&["PING"]).as_str(), "PONG");
}

/// `open` repeated `depth` times, `leaf`, then `close` repeated `depth` times.
fn nested(open: &str, leaf: &str, close: &str, depth: usize) -> String {
    let mut s = String::with_capacity((open.len() + close.len()) * depth + leaf.len());
    for _ in 0..depth {
        s.push_str(open);
    }
    s.push_str(leaf);
    for _ in 0..depth {
        s.push_str(close);
    }
    s
}

/// The gates used by the persistence and replication tests: `report` bound to
/// the prefix `report:`, `nums` used by name.
fn install_fixture_gates(c: &mut Conn) {
    gate_set(c, "report", REPORT, Some("report:"));
    gate_set(c, "nums", NUMS, None);
}

/// The fixture gates are registered, with their exact schemas, and enforced.
#[track_caller]
fn assert_fixture_gates(c: &mut Conn) {
    assert_eq!(gate_list(c), ["nums", "report"]);
    assert_eq!(c.q(&["TCACHE.GATE.GET", "report"]), Value::bulk(REPORT));
    assert_eq!(c.q(&["TCACHE.GATE.GET", "nums"]), Value::bulk(NUMS));
    // The prefix binding came back too: no GATE option needed.
    let r = c.q(&["TCACHE.SET", "report:9", r#"{"risk_score":0}"#, "100"]);
    assert_eq!(err(&r), ZERO_RISK);
    assert!(!exists(c, "report:9"));
    ok(
        c.q(&["TCACHE.SET", "report:9", r#"{"risk_score":1}"#, "100"]),
        "good report",
    );
    let r = c.q(&["TCACHE.SET", "n", r#"[1,"x"]"#, "100", "GATE", "nums"]);
    assert!(r.is_error_starting("GATE nums: /1: "), "{r:?}");
    ok(
        c.q(&["TCACHE.SET", "n", "[1,2.5]", "100", "GATE", "nums"]),
        "good nums",
    );
    assert_eq!(c.q(&["TCACHE.DEL", "report:9", "n"]).as_int(), 2);
}

#[track_caller]
// ---------------------------------------------------------------------------
// The application flow
// ---------------------------------------------------------------------------
#[test]
fn report_flow() {
    let s = Server::start();
    let mut app = s.conn();
    gate_set(&mut app, "report", REPORT, None);

    // A good report: the app validates it for its database write, then caches it.
    let good = r#"{"store":42,"risk_score":7.5,"summary":"all fine"}"#;
    ok(app.q(&["TCACHE.GATE.CHECK", "report", good]), "check good");
    ok(
        app.q(&[
            "TCACHE.SET",
            "report:42",
            good,
            "900",
            "GATE",
            "report",
            "TAGS",
            "store:42",
            "reports",
        ]),
        "cache good report",
    );
    assert_eq!(get(&mut app, "report:42").as_deref(), Some(good.as_bytes()));
    let tags = vec![b"reports".to_vec(), b"store:42".to_vec()];
    assert_eq!(tags_of(&mut app, b"report:42"), Some(tags.clone()));

    // A broken report (truncated JSON) and one with risk_score 0 are refused
    // with a readable reason; the good one stays, tags included.
    let broken = r#"{"store":42,"risk_score":"#;
    let zero = r#"{"store":42,"risk_score":0}"#;
    let mut refusals = Vec::new();
    for bad in [broken, zero] {
        let r = app.q(&[
            "TCACHE.SET",
            "report:42",
            bad,
            "60",
            "GATE",
            "report",
            "TAGS",
            "store:42",
            "draft",
        ]);
        refusals.push(err(&r));
        assert_eq!(get(&mut app, "report:42").as_deref(), Some(good.as_bytes()));
        assert_eq!(tags_of(&mut app, b"report:42"), Some(tags.clone()));
        assert_eq!(app.q(&["TCACHE.TAGCARD", "draft"]).as_int(), 0);
        assert!(app.q(&["TTL", "report:42"]).as_int() > 60, "TTL untouched");
    }
    assert_eq!(
        refusals[0],
        "GATE report: /: invalid JSON: EOF while parsing a value at line 1 column 25"
    );
    assert_eq!(refusals[1], ZERO_RISK);

    // The app refuses its database write with the same rule and the same text.
    for (bad, refusal) in [broken, zero].iter().zip(&refusals) {
        let r = app.q(&["TCACHE.GATE.CHECK", "report", bad]);
        assert_eq!(&err(&r), refusal, "GATE.CHECK and SET disagree on {bad}");
    }

    // Three gated writes, two refused; the dry runs counted nowhere.
    let (checked, rejected, last) = gate_counters(&mut app, "report");
    assert_eq!((checked, rejected), (3, 2));
    assert_eq!(format!("GATE report: {last}"), ZERO_RISK);
    assert_eq!(stat(&mut app, "gate_rejections"), 2);
    assert_eq!(stat(&mut app, "sets"), 1);

    // The store changes: its reports go.
    assert_eq!(app.q(&["TCACHE.INVALTAG", "store:42"]).as_int(), 1);
    assert_eq!(get(&mut app, "report:42"), None);
}

// ---------------------------------------------------------------------------
// Registry commands
// ---------------------------------------------------------------------------

#[test]
fn gate_set_get_list_del_manage_the_registry() {
    let s = Server::start();
    let mut c = s.conn();
    assert!(c.q(&["TCACHE.GATE.LIST"]).as_array().is_empty());
    assert!(c.q(&["TCACHE.GATE.GET", "report"]).is_nil());
    gate_set(&mut c, "report", REPORT, None);
    gate_set(&mut c, "nums", NUMS, Some("n:"));
    assert_eq!(gate_list(&mut c), ["nums", "report"]);
    // The schema comes back byte for byte, whitespace included.
    let spaced = "{ \"type\" : \"string\" ,\n \"maxLength\": 3 }";
    gate_set(&mut c, "code", spaced, None);
    assert_eq!(c.q(&["TCACHE.GATE.GET", "code"]), Value::bulk(spaced));
    // Replacing a gate changes the rule.
    let r = c.q(&["TCACHE.SET", "k", "\"abcd\"", "10", "GATE", "report"]);
    assert_eq!(err(&r), r#"GATE report: /: "abcd" is not of type "object""#);
    gate_set(&mut c, "report", r#"{"type":"string"}"#, None);
    assert_eq!(
        c.q(&["TCACHE.GATE.GET", "report"]),
        Value::bulk(r#"{"type":"string"}"#)
    );
    ok(
        c.q(&["TCACHE.SET", "k", "\"abcd\"", "10", "GATE", "report"]),
        "new rule",
    );
    assert_eq!(c.q(&["TCACHE.GATE.DEL", "report"]).as_int(), 1);
    assert_eq!(c.q(&["TCACHE.GATE.DEL", "report"]).as_int(), 0);
    assert_eq!(c.q(&["TCACHE.GATE.DEL", "never"]).as_int(), 0);
    assert!(c.q(&["TCACHE.GATE.GET", "report"]).is_nil());
    assert_eq!(gate_list(&mut c), ["code", "nums"]);
    // An unknown gate is an error for SET and CHECK; nothing is written.
    let r = c.q(&["TCACHE.SET", "k2", "1", "10", "GATE", "report"]);
    assert_eq!(err(&r), "ERR no such gate 'report'");
    assert!(!exists(&mut c, "k2"));
    let r = c.q(&["TCACHE.GATE.CHECK", "report", "1"]);
    assert_eq!(err(&r), "ERR no such gate 'report'");
    // Deleting a prefix-bound gate lifts the binding.
    assert_eq!(c.q(&["TCACHE.GATE.DEL", "nums"]).as_int(), 1);
    ok(
        c.q(&["TCACHE.SET", "n:1", "not json", "10"]),
        "unbound prefix",
    );
}

#[test]
fn builtin_gates_cannot_be_changed_and_are_not_listed() {
    let s = Server::start();
    let mut c = s.conn();
    for name in ["json", "perm"] {
        let r = c.q(&["TCACHE.GATE.SET", name, "{}"]);
        assert_eq!(
            err(&r),
            format!("ERR gate '{name}' is built in and cannot be changed")
        );
        let r = c.q(&["TCACHE.GATE.SET", name, "{}", "PREFIX", "x:"]);
        assert_eq!(
            err(&r),
            format!("ERR gate '{name}' is built in and cannot be changed")
        );
        let _ = c.q(&["TCACHE.GATE.DEL", name]);
    }
    assert!(c.q(&["TCACHE.GATE.LIST"]).as_array().is_empty());
    // Both still work after the attempts.
    ok(
        c.q(&["TCACHE.SET", "j", r#"{"a":[1,null]}"#, "10", "GATE", "json"]),
        "valid JSON",
    );
    let r = c.q(&["TCACHE.SET", "j", "{oops", "10", "GATE", "json"]);
    assert!(r.is_error_starting("GATE json: /: invalid JSON"), "{r:?}");
    assert_eq!(get(&mut c, "j").as_deref(), Some(&br#"{"a":[1,null]}"#[..]));
    let shaped = r#"{"roles":["ops"],"permissions":["a:*"]}"#;
    ok(
        c.q(&["TCACHE.SET", "p", shaped, "10", "GATE", "perm"]),
        "perm shape",
    );
    let r = c.q(&[
        "TCACHE.SET",
        "p",
        r#"{"roles":["ops"]}"#,
        "10",
        "GATE",
        "perm",
    ]);
    assert_eq!(err(&r), "GATE perm: /permissions: required field missing");
    ok(c.q(&["TCACHE.GATE.CHECK", "json", "[]"]), "dry run json");
    let r = c.q(&["TCACHE.GATE.CHECK", "perm", "[]"]);
    assert!(r.is_error_starting("GATE perm: "), "{r:?}");
    assert_eq!(stat(&mut c, "gate_rejections"), 2);
}

#[test]
fn invalid_schemas_are_refused_with_a_reason() {
    let s = Server::start();
    let mut c = s.conn();
    for schema in [
        "{not json",
        r#"{"type": 12}"#,
        r#"{"minimum":"x"}"#,
        r#"{"required":"risk_score"}"#,
        r##"{"$ref":"#/$defs/missing"}"##,
        r#"{"pattern":"(a"}"#,
    ] {
        let r = c.q(&["TCACHE.GATE.SET", "bad", schema]);
        let e = err(&r);
        let reason = e
            .strip_prefix("ERR invalid schema: ")
            .unwrap_or_else(|| panic!("{schema} -> {e}"));
        assert!(!reason.trim().is_empty(), "{schema} -> empty reason");
        assert!(!reason.contains('\n'), "{schema} -> {e:?}");
        // The reason says what is wrong, not the words of the prefix again.
        assert!(
            !reason.starts_with("invalid schema"),
            "{schema} -> reason repeats the prefix: {e:?}"
        );
    }
    let r = c.cmd(&[b"TCACHE.GATE.SET", b"bad", b"{\"type\":\"str\xffing\"}"]);
    assert!(r.is_error_starting("ERR invalid schema: "), "{r:?}");
    assert!(c.q(&["TCACHE.GATE.LIST"]).as_array().is_empty());
    // A refused replacement keeps the gate that was there.
    gate_set(&mut c, "report", REPORT, None);
    let r = c.q(&["TCACHE.GATE.SET", "report", r#"{"type": 12}"#]);
    assert!(r.is_error_starting("ERR invalid schema: "), "{r:?}");
    assert_eq!(c.q(&["TCACHE.GATE.GET", "report"]), Value::bulk(REPORT));
}

#[test]
fn schema_with_a_remote_ref_is_refused_without_fetching_it() {
    let s = Server::start();
    let mut c = s.conn();
    // A local server the schema points at: it must never see a connection.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let schemas = [
        format!(r#"{{"$ref":"http://127.0.0.1:{port}/schema.json"}}"#),
        format!(
            r#"{{"type":"object","properties":{{"a":{{"$ref":"http://127.0.0.1:{port}/s.json#/x"}}}}}}"#
        ),
        r#"{"$ref":"file:///etc/passwd"}"#.to_string(),
    ];
    for schema in &schemas {
        let r = c.q(&["TCACHE.GATE.SET", "remote", schema]);
        assert!(
            r.is_error_starting("ERR invalid schema: "),
            "{schema} -> {r:?}"
        );
    }
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, from)) => panic!("the module fetched the remote schema (connection from {from})"),
        Err(e) => panic!("accept: {e}"),
    }
    assert!(c.q(&["TCACHE.GATE.GET", "remote"]).is_nil());
    assert!(c.q(&["TCACHE.GATE.LIST"]).as_array().is_empty());
    // A local reference is fine.
    let local = r##"{"$defs":{"n":{"type":"number"}},"items":{"$ref":"#/$defs/n"}}"##;
    gate_set(&mut c, "local", local, None);
    ok(c.q(&["TCACHE.GATE.CHECK", "local", "[1,2]"]), "local ref");
    let r = c.q(&["TCACHE.GATE.CHECK", "local", r#"[1,"x"]"#]);
    assert!(r.is_error_starting("GATE local: /1: "), "{r:?}");
}

// ---------------------------------------------------------------------------
// Prefix binding
// ---------------------------------------------------------------------------

#[test]
fn prefix_gate_is_enforced_on_every_set_of_a_matching_key() {
    let s = Server::start();
    let mut c = s.conn();
    gate_set(&mut c, "report", REPORT, Some("report:"));
    // No GATE option: still checked.
    let r = c.q(&[
        "TCACHE.SET",
        "report:1",
        r#"{"risk_score":0}"#,
        "100",
        "TAGS",
        "t",
    ]);
    assert_eq!(err(&r), ZERO_RISK);
    let r = c.q(&["TCACHE.SET", "report:1", "nope", "100", "NX"]);
    assert!(r.is_error_starting("GATE report: /: invalid JSON"), "{r:?}");
    assert!(!exists(&mut c, "report:1"));
    ok(
        c.q(&[
            "TCACHE.SET",
            "report:1",
            r#"{"risk_score":3}"#,
            "100",
            "TAGS",
            "t",
        ]),
        "good report",
    );
    // Other keys are not bound.
    ok(
        c.q(&["TCACHE.SET", "reports", "not json", "100"]),
        "no prefix",
    );
    ok(
        c.q(&["TCACHE.SET", "x:report:1", "not json", "100"]),
        "no prefix",
    );
    // The old entry stays when a replacement is refused.
    let r = c.q(&[
        "TCACHE.SET",
        "report:1",
        r#"{"risk_score":-1}"#,
        "100",
        "XX",
    ]);
    assert!(r.is_error_starting("GATE report: /risk_score: "), "{r:?}");
    assert_eq!(
        get(&mut c, "report:1").as_deref(),
        Some(&br#"{"risk_score":3}"#[..])
    );
    assert_eq!(gate_counters(&mut c, "report").0, 4);
    assert_eq!(gate_counters(&mut c, "report").1, 3);
    assert_eq!(stat(&mut c, "gate_rejections"), 3);
}

#[test]
fn longest_matching_prefix_wins_and_an_explicit_gate_is_checked_too() {
    let s = Server::start();
    let mut c = s.conn();
    gate_set(&mut c, "any_object", r#"{"type":"object"}"#, Some("r:"));
    gate_set(&mut c, "report", REPORT, Some("r:report:"));
    gate_set(
        &mut c,
        "small",
        r#"{"type":"object","maxProperties":2}"#,
        None,
    );
    // r:report:* is checked by `report` (more specific), not `any_object`.
    let r = c.q(&["TCACHE.SET", "r:report:1", "{}", "100"]);
    assert_eq!(
        err(&r),
        r#"GATE report: /: "risk_score" is a required property"#
    );
    assert_eq!(gate_counters(&mut c, "any_object").0, 0);
    // Other r:* keys by `any_object`.
    let r = c.q(&["TCACHE.SET", "r:other", "[]", "100"]);
    assert!(r.is_error_starting("GATE any_object: /: "), "{r:?}");
    ok(c.q(&["TCACHE.SET", "r:other", "{}", "100"]), "object");
    // An explicit GATE and the bound gate must both pass.
    let three = r#"{"risk_score":1,"a":1,"b":2}"#;
    let r = c.q(&["TCACHE.SET", "r:report:1", three, "100", "GATE", "small"]);
    assert!(r.is_error_starting("GATE small: /: "), "{r:?}");
    let r = c.q(&[
        "TCACHE.SET",
        "r:report:1",
        r#"{"a":1}"#,
        "100",
        "GATE",
        "small",
    ]);
    assert_eq!(
        err(&r),
        r#"GATE report: /: "risk_score" is a required property"#
    );
    assert!(!exists(&mut c, "r:report:1"));
    ok(
        c.q(&[
            "TCACHE.SET",
            "r:report:1",
            r#"{"risk_score":1}"#,
            "100",
            "GATE",
            "small",
        ]),
        "both pass",
    );
    // Naming the bound gate itself checks it once.
    let before = gate_counters(&mut c, "report").0;
    ok(
        c.q(&[
            "TCACHE.SET",
            "r:report:2",
            r#"{"risk_score":2}"#,
            "100",
            "GATE",
            "report",
        ]),
        "same gate",
    );
    assert_eq!(gate_counters(&mut c, "report").0, before + 1);
    // Deleting the specific gate hands its keys to the shorter prefix.
    assert_eq!(c.q(&["TCACHE.GATE.DEL", "report"]).as_int(), 1);
    ok(
        c.q(&["TCACHE.SET", "r:report:3", "{}", "100"]),
        "any object now",
    );
    let r = c.q(&["TCACHE.SET", "r:report:3", "1", "100"]);
    assert!(r.is_error_starting("GATE any_object: /: "), "{r:?}");
}

#[test]
fn gates_are_module_global_not_per_database() {
    let s = Server::start();
    let mut c = s.conn();
    gate_set(&mut c, "report", REPORT, Some("report:"));
    ok(c.q(&["SELECT", "7"]), "select");
    assert_eq!(gate_list(&mut c), ["report"]);
    let r = c.q(&["TCACHE.SET", "report:1", r#"{"risk_score":0}"#, "100"]);
    assert_eq!(err(&r), ZERO_RISK);
    gate_set(&mut c, "nums", NUMS, None);
    assert_eq!(c.q(&["TCACHE.GATE.DEL", "report"]).as_int(), 1);
    let mut other = s.conn();
    assert_eq!(gate_list(&mut other), ["nums"]);
    ok(
        other.q(&["TCACHE.SET", "report:1", r#"{"risk_score":0}"#, "100"]),
        "binding gone in db 0 too",
    );
    let r = other.q(&["TCACHE.SET", "n", "{}", "100", "GATE", "nums"]);
    assert!(r.is_error_starting("GATE nums: /: "), "{r:?}");
}

// ---------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------

#[test]
fn gate_check_is_a_dry_run_counted_nowhere() {
    let s = Server::start();
    let mut c = s.conn();
    gate_set(&mut c, "report", REPORT, Some("report:"));
    let before = c.q(&["TCACHE.STATS"]);
    ok(
        c.q(&["TCACHE.GATE.CHECK", "report", r#"{"risk_score":1}"#]),
        "dry run",
    );
    let r = c.q(&["TCACHE.GATE.CHECK", "report", r#"{"risk_score":0}"#]);
    assert_eq!(err(&r), ZERO_RISK);
    let r = c.q(&["TCACHE.GATE.CHECK", "json", "[1,"]);
    assert!(r.is_error_starting("GATE json: /: invalid JSON"), "{r:?}");
    assert_eq!(c.q(&["TCACHE.STATS"]), before, "GATE.CHECK changed STATS");
    assert_eq!(gate_counters(&mut c, "report"), (0, 0, String::new()));
    assert_eq!(c.q(&["DBSIZE"]).as_int(), 0, "GATE.CHECK wrote nothing");
    let info = s.info("tcache");
    assert_eq!(
        info_value(&info, "tcache_gate_report").as_deref(),
        Some("checked=0,rejected=0")
    );
}

#[test]
fn per_gate_counters_are_in_stats_and_info() {
    let s = Server::start();
    let mut c = s.conn();
    gate_set(&mut c, "report", REPORT, Some("report:"));
    gate_set(&mut c, "nums", NUMS, None);
    for (key, value) in [
        ("report:1", r#"{"risk_score":1}"#),
        ("report:2", r#"{"risk_score":0}"#),
        ("report:3", r#"{"risk_score":2}"#),
        ("report:4", "{}"),
        ("report:5", r#"{"risk_score":-4}"#),
    ] {
        let _ = c.q(&["TCACHE.SET", key, value, "100"]);
    }
    ok(
        c.q(&["TCACHE.SET", "n", "[1]", "100", "GATE", "nums"]),
        "nums",
    );
    let r = c.q(&["TCACHE.SET", "j", "[", "100", "GATE", "json"]);
    assert!(r.is_error_starting("GATE json: "), "{r:?}");

    let (checked, rejected, last) = gate_counters(&mut c, "report");
    assert_eq!((checked, rejected), (5, 3));
    assert_eq!(
        last,
        "/risk_score: -4 is less than or equal to the minimum of 0"
    );
    assert_eq!(gate_counters(&mut c, "nums"), (1, 0, String::new()));
    // Every refused write, built-in gate included.
    assert_eq!(stat(&mut c, "gate_rejections"), 4);
    assert_eq!(stat(&mut c, "sets"), 3);

    // RESP3: STATS is a map whose `gates` is a map of maps.
    let mut c3 = s.conn3();
    let st = c3.q(&["TCACHE.STATS"]);
    assert_eq!(st.as_map().len(), 22);
    let gates = st.field("gates").unwrap();
    assert_eq!(gates.as_map().len(), 2);
    let report = gates.field("report").unwrap();
    assert_eq!(report.as_map().len(), 3);
    assert_eq!(report.field("checked"), Some(&Value::Int(5)));
    assert_eq!(report.field("rejected"), Some(&Value::Int(3)));
    assert_eq!(st.field("gate_rejections"), Some(&Value::Int(4)));

    let info = s.info("tcache");
    assert_eq!(
        info_value(&info, "tcache_gate_rejections").as_deref(),
        Some("4")
    );
    assert_eq!(
        info_value(&info, "tcache_gate_report").as_deref(),
        Some("checked=5,rejected=3")
    );
    assert_eq!(
        info_value(&info, "tcache_gate_nums").as_deref(),
        Some("checked=1,rejected=0")
    );
    assert!(info.contains("# tcache_gates"), "{info}");
    assert!(info.contains("# tcache_stats"), "{info}");
    // A deleted gate leaves the listing.
    assert_eq!(c.q(&["TCACHE.GATE.DEL", "nums"]).as_int(), 1);
    assert_eq!(info_value(&s.info("tcache"), "tcache_gate_nums"), None);
    assert!(c
        .q(&["TCACHE.STATS"])
        .field("gates")
        .unwrap()
        .field("nums")
        .is_none());
}

// ---------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------

#[test]
fn hostile_values_get_a_gate_error_and_the_server_keeps_answering() {
    let s = Server::start();
    let mut c = s.conn();
    gate_set(&mut c, "any", "{}", None);
    let deep_arrays = nested("[", "1", "]", 129);
    let deep_objects = nested("{\"a\":", "1", "}", 129);
    let very_deep = nested("[", "", "]", 100_000);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("invalid UTF-8 in a string", b"\"\xff\xfe\"".to_vec()),
        ("invalid UTF-8 in an array", b"[1, \xc3]".to_vec()),
        ("NaN", b"NaN".to_vec()),
        ("Infinity", b"Infinity".to_vec()),
        ("-Infinity in an array", b"[1, -Infinity]".to_vec()),
        ("NaN in an object", b"{\"x\": NaN}".to_vec()),
        ("129 nested arrays", deep_arrays.into_bytes()),
        ("129 nested objects", deep_objects.into_bytes()),
        ("100,000 nested arrays", very_deep.into_bytes()),
        ("empty", Vec::new()),
    ];
    for gate in ["json", "any"] {
        for (what, value) in &cases {
            let r = c.cmd(&[b"TCACHE.SET", b"h", value, b"100", b"GATE", gate.as_bytes()]);
            let prefix = format!("GATE {gate}: /: ");
            assert!(r.is_error_starting(&prefix), "{gate}, {what}: {r:?}");
            let r = c.cmd(&[b"TCACHE.GATE.CHECK", gate.as_bytes(), value]);
            assert!(
                r.is_error_starting(&prefix),
                "GATE.CHECK {gate}, {what}: {r:?}"
            );
            assert_pong(&mut c);
            assert!(!exists(&mut c, "h"), "{gate}, {what}: written");
        }
    }
    let (checked, rejected, _) = gate_counters(&mut c, "any");
    assert_eq!((checked, rejected), (10, 10));
    assert_eq!(stat(&mut c, "gate_rejections"), 20);
    // Reasonable nesting is fine.
    let fine = nested("{\"a\":[", "1", "]}", 50);
    ok(
        c.q(&["TCACHE.SET", "h", &fine, "100", "GATE", "json"]),
        "100 levels",
    );
    ok(c.q(&["TCACHE.VERIFY"]), "verify");
}

#[test]
fn ten_megabyte_json_array_passes_an_array_of_numbers_gate() {
    let s = Server::start();
    let mut c = s.conn();
    gate_set(&mut c, "nums", NUMS, None);
    let mut big = String::with_capacity(10_500_000);
    big.push_str("[0");
    let mut n = 1u64;
    while big.len() < 10 << 20 {
        big.push_str(&format!(",{n}.{}", n % 89));
        n += 1;
    }
    big.push(']');
    let t = Instant::now();
    ok(
        c.q(&[
            "TCACHE.SET",
            "big",
            &big,
            "100",
            "GATE",
            "nums",
            "TAGS",
            "bulk",
        ]),
        "10 MB array",
    );
    eprintln!(
        "10 MB array of {n} numbers gated and cached in {:?}",
        t.elapsed()
    );
    assert_eq!(get(&mut c, "big").map(|v| v.len()), Some(big.len()));
    // One string at the end is found and named.
    let mut spoiled = big.clone();
    spoiled.insert_str(spoiled.len() - 1, ",\"x\"");
    let r = c.q(&["TCACHE.SET", "big", &spoiled, "100", "GATE", "nums"]);
    assert_eq!(
        err(&r),
        format!("GATE nums: /{n}: \"x\" is not of type \"number\"")
    );
    assert_eq!(get(&mut c, "big").map(|v| v.len()), Some(big.len()));
    assert_pong(&mut c);
}

#[test]
fn ten_megabyte_json_array_is_refused_by_a_lower_max_value_bytes() {
    let s = Server::start();
    let mut c = s.conn();
    gate_set(&mut c, "nums", NUMS, Some("big:"));
    ok(
        c.q(&["CONFIG", "SET", "tcache.max-value-bytes", "1mb"]),
        "config",
    );
    let mut big = String::from("[1");
    while big.len() < 10 << 20 {
        big.push_str(",12345.678");
    }
    big.push(']');
    for args in [
        vec!["TCACHE.SET", "big:1", &big, "100"],
        vec!["TCACHE.SET", "other", &big, "100", "GATE", "nums"],
    ] {
        let r = c.q(&args);
        assert_eq!(
            err(&r),
            "ERR value too large (tcache.max-value-bytes is 1048576)"
        );
    }
    assert_eq!(c.q(&["DBSIZE"]).as_int(), 0);
    assert_pong(&mut c);
}

#[test]
fn catastrophic_regex_pattern_is_checked_quickly() {
    let s = Server::start();
    let mut c = s.conn();
    gate_set(
        &mut c,
        "evil",
        r#"{"type":"string","pattern":"^(a+)+$"}"#,
        None,
    );
    for len in [30, 5_000, 200_000] {
        let value = format!("\"{}!\"", "a".repeat(len));
        let t = Instant::now();
        let r = c.q(&["TCACHE.SET", "e", &value, "100", "GATE", "evil"]);
        let took = t.elapsed();
        assert!(r.is_error_starting("GATE evil: /: "), "{r:?}");
        assert!(
            took < Duration::from_secs(2),
            "{len} a's + '!' took {took:?}"
        );
        let r = c.q(&["TCACHE.GATE.CHECK", "evil", &value]);
        assert!(r.is_error_starting("GATE evil: /: "), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(4));
        let good = format!("\"{}\"", "a".repeat(len));
        ok(
            c.q(&["TCACHE.SET", "e", &good, "100", "GATE", "evil"]),
            "all a's",
        );
    }
    assert_pong(&mut c);
}

#[test]
fn schema_of_100000_nested_allof_is_an_invalid_schema() {
    let s = Server::start();
    let mut c = s.conn();
    let deep = nested(r#"{"allOf":["#, "{}", "]}", 100_000);
    let t = Instant::now();
    let r = c.q(&["TCACHE.GATE.SET", "deep", &deep]);
    assert!(r.is_error_starting("ERR invalid schema: "), "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_pong(&mut c);
    assert!(c.q(&["TCACHE.GATE.GET", "deep"]).is_nil());
    assert!(c.q(&["TCACHE.GATE.LIST"]).as_array().is_empty());
    // A modest nesting is a working gate.
    let fine = nested(r#"{"allOf":["#, r#"{"type":"number"}"#, "]}", 20);
    gate_set(&mut c, "fine", &fine, None);
    ok(c.q(&["TCACHE.GATE.CHECK", "fine", "1.5"]), "number");
    let r = c.q(&["TCACHE.GATE.CHECK", "fine", "\"x\""]);
    assert!(r.is_error_starting("GATE fine: /: "), "{r:?}");
}

// ---------------------------------------------------------------------------
// Persistence and replication
// ---------------------------------------------------------------------------

#[test]
fn gates_survive_debug_reload() {
    let s = Server::start();
    let mut c = s.conn();
    install_fixture_gates(&mut c);
    ok(
        c.q(&[
            "TCACHE.SET",
            "report:1",
            r#"{"risk_score":1}"#,
            "100",
            "TAGS",
            "r",
        ]),
        "entry",
    );
    ok(c.q(&["DEBUG", "RELOAD"]), "DEBUG RELOAD");
    assert_fixture_gates(&mut c);
    assert_eq!(
        get(&mut c, "report:1").as_deref(),
        Some(&br#"{"risk_score":1}"#[..])
    );
    ok(c.q(&["TCACHE.VERIFY"]), "verify");
}

#[test]
fn gates_survive_debug_reload_of_an_empty_dataset() {
    let s = Server::start();
    let mut c = s.conn();
    install_fixture_gates(&mut c);
    ok(c.q(&["DEBUG", "RELOAD"]), "DEBUG RELOAD");
    assert_fixture_gates(&mut c);
}

#[test]
fn gates_survive_restart_from_rdb() {
    let mut s = Server::start();
    let mut c = s.conn();
    install_fixture_gates(&mut c);
    gate_set(&mut c, "doomed", "{}", None);
    assert_eq!(c.q(&["TCACHE.GATE.DEL", "doomed"]).as_int(), 1);
    ok(
        c.q(&["TCACHE.SET", "report:1", r#"{"risk_score":1}"#, "100"]),
        "entry",
    );
    ok(c.q(&["SAVE"]), "SAVE");
    s.restart();
    let mut c = s.conn();
    assert_fixture_gates(&mut c);
    assert!(get(&mut c, "report:1").is_some());
}

fn gates_survive_restart_from_aof(preamble: &str) {
    let mut s = Server::builder()
        .arg("appendonly", "yes")
        .arg("appendfsync", "always")
        .arg("aof-use-rdb-preamble", preamble)
        .start();
    let mut c = s.conn();
    // Before the rewrite: `report` and a gate deleted after it. At least one
    // entry, which carries the gates when the rewrite has no RDB preamble.
    gate_set(&mut c, "report", REPORT, Some("report:"));
    gate_set(&mut c, "doomed", "{}", Some("d:"));
    ok(
        c.q(&[
            "TCACHE.SET",
            "report:1",
            r#"{"risk_score":1}"#,
            "100",
            "TAGS",
            "r",
        ]),
        "entry",
    );
    let r = c.q(&["BGREWRITEAOF"]);
    assert!(!r.is_error(), "{r:?}");
    wait_for_aof_rewrite(&s);
    // After the rewrite: these land in the incremental AOF.
    gate_set(&mut c, "nums", NUMS, None);
    assert_eq!(c.q(&["TCACHE.GATE.DEL", "doomed"]).as_int(), 1);
    s.restart();
    let mut c = s.conn();
    assert_fixture_gates(&mut c);
    ok(c.q(&["TCACHE.SET", "d:1", "not json", "100"]), "d: unbound");
    assert_eq!(
        get(&mut c, "report:1").as_deref(),
        Some(&br#"{"risk_score":1}"#[..])
    );
    ok(c.q(&["TCACHE.VERIFY"]), "verify");
}

#[test]
fn gates_survive_restart_from_aof_with_rdb_preamble() {
    gates_survive_restart_from_aof("yes");
}

#[test]
fn gates_survive_restart_from_aof_without_rdb_preamble() {
    gates_survive_restart_from_aof("no");
}

#[test]
fn gate_set_and_del_reach_a_replica() {
    let primary = Server::start();
    let replica = Server::replica_of(&primary);
    wait_for_sync(&replica);
    let mut p = primary.conn();
    let mut r = replica.conn();
    install_fixture_gates(&mut p);
    gate_set(&mut p, "doomed", "{}", None);
    wait_until(WAIT, "gates on the replica", || {
        gate_list(&mut r) == ["doomed", "nums", "report"]
    });
    assert_eq!(p.q(&["TCACHE.GATE.DEL", "doomed"]).as_int(), 1);
    wait_until(WAIT, "GATE.DEL on the replica", || {
        gate_list(&mut r) == ["nums", "report"]
    });
    assert_eq!(r.q(&["TCACHE.GATE.GET", "report"]), Value::bulk(REPORT));
    assert_eq!(r.q(&["TCACHE.GATE.GET", "nums"]), Value::bulk(NUMS));
    // Readers on the replica validate with the same rules.
    let z = r.q(&["TCACHE.GATE.CHECK", "report", r#"{"risk_score":0}"#]);
    assert_eq!(err(&z), ZERO_RISK);
    // The replica is read-only for gates as for entries.
    let w = r.q(&["TCACHE.GATE.SET", "mine", "{}"]);
    assert!(w.is_error_starting("READONLY"), "{w:?}");
    let w = r.q(&["TCACHE.GATE.DEL", "report"]);
    assert!(w.is_error_starting("READONLY"), "{w:?}");
    // A gated write on the primary reaches the replica as data.
    ok(
        p.q(&[
            "TCACHE.SET",
            "report:1",
            r#"{"risk_score":2}"#,
            "100",
            "TAGS",
            "r",
        ]),
        "entry",
    );
    wait_until(WAIT, "entry on the replica", || {
        get(&mut r, "report:1").is_some()
    });
    // A replaced gate is replaced on the replica.
    gate_set(&mut p, "nums", r#"{"type":"array","maxItems":1}"#, None);
    wait_until(WAIT, "replaced gate on the replica", || {
        r.q(&["TCACHE.GATE.GET", "nums"]) == Value::bulk(r#"{"type":"array","maxItems":1}"#)
    });
    ok(r.q(&["TCACHE.VERIFY"]), "verify replica");
    // The primary's own gates are as expected after all this.
    gate_set(&mut p, "nums", NUMS, None);
    assert_fixture_gates(&mut p);
}

#[test]
fn replica_started_after_the_gates_exist_gets_them_by_full_resync() {
    let primary = Server::start();
    let mut p = primary.conn();
    install_fixture_gates(&mut p);
    gate_set(&mut p, "doomed", "{}", None);
    assert_eq!(p.q(&["TCACHE.GATE.DEL", "doomed"]).as_int(), 1);
    ok(
        p.q(&[
            "TCACHE.SET",
            "report:1",
            r#"{"risk_score":1}"#,
            "100",
            "TAGS",
            "r",
        ]),
        "entry",
    );
    let replica = Server::replica_of(&primary);
    wait_for_sync(&replica);
    let mut r = replica.conn();
    assert_eq!(gate_list(&mut r), ["nums", "report"]);
    assert_eq!(r.q(&["TCACHE.GATE.GET", "report"]), Value::bulk(REPORT));
    assert_eq!(r.q(&["TCACHE.GATE.GET", "nums"]), Value::bulk(NUMS));
    let z = r.q(&["TCACHE.GATE.CHECK", "report", r#"{"risk_score":0}"#]);
    assert_eq!(err(&z), ZERO_RISK);
    assert!(get(&mut r, "report:1").is_some());
    // Promoted, it enforces them.
    ok(r.q(&["REPLICAOF", "NO", "ONE"]), "promote");
    assert_fixture_gates(&mut r);
}

const WAIT: Duration = Duration::from_secs(10);
