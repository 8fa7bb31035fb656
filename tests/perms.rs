//! The permission cache from an application's side: PERM.SET caches what the
//! database says a user may do, PERM.CHECK answers from it, and PERM.INVAL*
//! drop it when users or roles change. The role index must stay exact on every
//! keyspace path, respect the caller's ACL, and announce invalidations on the
//! invalidation channel.

mod common;

use std::time::Duration;

use common::tc::{
    assert_verified, err, exists, get, ok, pipeline, set, stat, tenant_a_user, words,
};
use common::*;

const WAIT: Duration = Duration::from_secs(10);

#[track_caller]
/// `{"roles":[...],"permissions":[...]}`; names need no JSON escaping here.
fn perm_json(roles: &[&str], perms: &[&str]) -> String {
    let list = |v: &[&str]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        r#"{{"roles":[{}],"permissions":[{}]}}"#,
        list(roles),
        list(perms)
    )
}

#[track_caller]
fn perm_set(c: &mut Conn, key: &str, roles: &[&str], perms: &[&str]) {
    let json = perm_json(roles, perms);
    ok(
        c.q(&["PERM.SET", key, &json, "600"]),
        &format!("PERM.SET {key}"),
    );
}

/// PERM.INVALROLE `roles` removes exactly `gone` among `keys` (the others keep
/// existing or not as before), with VERIFY OK before and after.
#[track_caller]
fn invalrole_removes(c: &mut Conn, roles: &[&str], keys: &[&str], gone: &[&str]) {
    assert_verified(c);
    let before: Vec<bool> = keys.iter().map(|k| exists(c, k)).collect();
    for g in gone {
        assert!(
            exists(c, g),
            "{g} should exist before PERM.INVALROLE {roles:?}"
        );
    }
    let mut args = vec!["PERM.INVALROLE"];
    args.extend_from_slice(roles);
    assert_eq!(
        c.q(&args).as_int(),
        gone.len() as i64,
        "PERM.INVALROLE {roles:?} count"
    );
    for (k, was) in keys.iter().zip(before) {
        let want = was && !gone.contains(k);
        assert_eq!(exists(c, k), want, "{k} after PERM.INVALROLE {roles:?}");
    }
    assert_verified(c);
}

/// u:1 admin+ops, u:2 ops, u:3 viewer, and a plain cache entry tagged with
/// the same words as the roles.
const FIXTURE_KEYS: [&str; 4] = ["u:1", "u:2", "u:3", "page:1"];

fn fixture(c: &mut Conn) {
    perm_set(c, "u:1", &["admin", "ops"], &["users:*", "reports:read"]);
    perm_set(c, "u:2", &["ops"], &["reports:read"]);
    perm_set(c, "u:3", &["viewer"], &["reports:read"]);
    set(c, "page:1", "<html>", 600, &["admin", "ops"]);
}

// ---------------------------------------------------------------------------
// The application flow
// ---------------------------------------------------------------------------

#[test]
fn permission_flow_1000_users_10_roles() {
    let s = Server::start();
    let mut app = s.conn();
    const USERS: usize = 1000;
    // User i has role:(i%10); every third user also role:((i/10)%10).
    let roles_of = |i: usize| -> Vec<String> {
        let mut r = vec![format!("role:{}", i % 10)];
        if i.is_multiple_of(3) && (i / 10) % 10 != i % 10 {
            r.push(format!("role:{}", (i / 10) % 10));
        }
        r
    };
    let json_of = |i: usize, version: &str| -> String {
        let roles: Vec<String> = roles_of(i).iter().map(|r| format!("\"{r}\"")).collect();
        format!(
            r#"{{"user":{i},"version":"{version}","roles":[{}],"permissions":["reports:read","store:{}:*"]}}"#,
            roles.join(","),
            i % 10
        )
    };
    let sets: Vec<Vec<String>> = (0..USERS)
        .map(|i| words(&["PERM.SET", &format!("user:{i}"), &json_of(i, "v1"), "600"]))
        .collect();
    for (i, r) in pipeline(&mut app, &sets).into_iter().enumerate() {
        assert!(r.is_ok(), "PERM.SET user:{i} -> {r:?}");
    }
    let checks: Vec<Vec<String>> = (0..USERS)
        .map(|i| {
            words(&[
                "PERM.CHECK",
                &format!("user:{i}"),
                "reports:read",
                &format!("store:{}:write", i % 10),
                "users:delete",
            ])
        })
        .collect();
    let all_hit = Value::Array(vec![Value::Int(1), Value::Int(1), Value::Int(0)]);
    for (i, r) in pipeline(&mut app, &checks).into_iter().enumerate() {
        assert_eq!(r, all_hit, "user:{i} before the change");
    }

    // role:3 changes in the database: its cached permissions must go.
    let changed: Vec<usize> = (0..USERS)
        .filter(|&i| roles_of(i).iter().any(|r| r == "role:3"))
        .collect();
    assert!(
        changed.len() > 100 && changed.iter().any(|&i| i % 10 != 3),
        "the fixture gives role:3 to second-role users too"
    );
    assert_eq!(
        app.q(&["PERM.INVALROLE", "role:3"]).as_int(),
        changed.len() as i64
    );
    let after = pipeline(&mut app, &checks);
    for (i, r) in after.into_iter().enumerate() {
        if changed.contains(&i) {
            assert_eq!(r, Value::Nil, "user:{i} has role:3: must miss");
        } else {
            assert_eq!(r, all_hit, "user:{i} does not have role:3: must hit");
        }
    }
    assert_eq!(app.q(&["DBSIZE"]).as_int(), (USERS - changed.len()) as i64);
    assert_verified(&mut app);
    let st = app.q(&["TCACHE.STATS"]);
    assert_eq!(
        st.field("perm_hits").unwrap().as_int(),
        (2 * USERS - changed.len()) as i64
    );
    assert_eq!(
        st.field("perm_misses").unwrap().as_int(),
        changed.len() as i64
    );

    // The misses are refilled from the database and hit again.
    let refill: Vec<Vec<String>> = changed
        .iter()
        .map(|&i| words(&["PERM.SET", &format!("user:{i}"), &json_of(i, "v2"), "600"]))
        .collect();
    assert!(pipeline(&mut app, &refill).iter().all(Value::is_ok));
    for &i in &changed {
        let got = app.q(&["PERM.GET", &format!("user:{i}")]);
        assert_eq!(got, Value::bulk(json_of(i, "v2")));
    }
    let unchanged = (0..USERS).find(|i| !changed.contains(i)).unwrap();
    assert_eq!(
        app.q(&["PERM.GET", &format!("user:{unchanged}")]),
        Value::bulk(json_of(unchanged, "v1"))
    );
    assert_eq!(app.q(&["DBSIZE"]).as_int(), USERS as i64);
    assert_verified(&mut app);
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

#[test]
fn perm_get_returns_the_json_exactly_as_stored_with_default_or_given_ttl() {
    let s = Server::start();
    let mut c = s.conn();
    let json = "{ \"name\" : \"Ada\",\n  \"roles\": [\"admin\", \"ops\", \"admin\"],\n  \"permissions\": [\"users:*\"], \"extra\": {\"n\": [1, 2.50]} }";
    ok(c.q(&["PERM.SET", "user:1", json]), "PERM.SET default ttl");
    assert_eq!(c.q(&["PERM.GET", "user:1"]), Value::bulk(json));
    let ttl = c.q(&["TTL", "user:1"]).as_int();
    assert!((299..=300).contains(&ttl), "default perm ttl: {ttl}");
    ok(c.q(&["PERM.SET", "user:2", json, "20"]), "PERM.SET ttl 20");
    let ttl = c.q(&["TTL", "user:2"]).as_int();
    assert!((19..=20).contains(&ttl), "ttl {ttl}");
    ok(c.q(&["CONFIG", "SET", "tcache.perm-ttl", "45"]), "perm-ttl");
    assert_eq!(
        c.q(&["CONFIG", "GET", "tcache.perm-ttl"]),
        Value::Array(vec![Value::bulk("tcache.perm-ttl"), Value::bulk("45")])
    );
    ok(c.q(&["PERM.SET", "user:3", json]), "PERM.SET new default");
    let ttl = c.q(&["TTL", "user:3"]).as_int();
    assert!((44..=45).contains(&ttl), "ttl {ttl}");
    assert!(c.q(&["PERM.GET", "user:9"]).is_nil());
    // Overwrite replaces the entry.
    let other = perm_json(&["viewer"], &["reports:read"]);
    ok(c.q(&["PERM.SET", "user:1", &other, "100"]), "overwrite");
    assert_eq!(c.q(&["PERM.GET", "user:1"]), Value::bulk(&other));
    assert_eq!(c.q(&["PERM.CHECK", "user:1", "users:write"]).as_int(), 0);
    let r = c.q(&["PERM.SET", "user:1", &other, "0"]);
    assert_eq!(err(&r), "ERR value is not an integer or out of range");
    assert_verified(&mut c);
}

#[test]
fn perm_set_refuses_a_wrong_shape_with_the_perm_gate_reason() {
    let s = Server::start();
    let mut c = s.conn();
    let good = perm_json(&["ops"], &["reports:read"]);
    ok(c.q(&["PERM.SET", "user:1", &good, "100"]), "good");
    let cases: &[(&[u8], &str)] = &[
        (
            b"[1]",
            "GATE perm: /: must be an object with roles and permissions",
        ),
        (
            br#"{"permissions":["a"]}"#,
            "GATE perm: /roles: required field missing",
        ),
        (
            br#"{"roles":["ops"]}"#,
            "GATE perm: /permissions: required field missing",
        ),
        (
            br#"{"roles":[],"permissions":"x"}"#,
            "GATE perm: /permissions: must be an array of strings",
        ),
        (
            br#"{"roles":"ops","permissions":[]}"#,
            "GATE perm: /roles: must be an array of strings",
        ),
        (
            br#"{"roles":["ops",1],"permissions":[]}"#,
            "GATE perm: /roles/1: must be a string",
        ),
        (
            br#"{"roles":[],"permissions":[null]}"#,
            "GATE perm: /permissions/0: must be a string",
        ),
    ];
    for (json, want) in cases {
        let r = c.cmd(&[b"PERM.SET", b"user:1", json, b"50"]);
        assert_eq!(err(&r), *want, "{}", String::from_utf8_lossy(json));
        let r = c.cmd(&[b"PERM.SET", b"user:2", json]);
        assert_eq!(err(&r), *want, "{}", String::from_utf8_lossy(json));
    }
    for json in [
        &b"not json"[..],
        b"",
        b"{\"roles\":[\"\xff\"],\"permissions\":[]}",
        b"{\"roles\":[],\"permissions\":[NaN]}",
    ] {
        let r = c.cmd(&[b"PERM.SET", b"user:1", json, b"50"]);
        assert!(r.is_error_starting("GATE perm: "), "{r:?}");
    }
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let r = c.q(&["PERM.SET", "user:1", &deep, "50"]);
    assert!(r.is_error_starting("GATE perm: "), "{r:?}");
    assert_eq!(c.q(&["PING"]).as_str(), "PONG");
    // Nothing written, the old entry untouched.
    assert!(!exists(&mut c, "user:2"));
    assert_eq!(c.q(&["PERM.GET", "user:1"]), Value::bulk(&good));
    assert!(c.q(&["TTL", "user:1"]).as_int() > 50);
    assert_eq!(c.q(&["DBSIZE"]).as_int(), 1);
    assert_verified(&mut c);
}

#[test]
fn refused_perm_set_counts_as_a_gate_rejection() {
    let s = Server::start();
    let mut c = s.conn();
    let r = c.q(&["PERM.SET", "user:1", r#"{"roles":["ops"]}"#, "50"]);
    assert_eq!(err(&r), "GATE perm: /permissions: required field missing");
    let r = c.q(&["PERM.SET", "user:1", "nope", "50"]);
    assert!(r.is_error_starting("GATE perm: "), "{r:?}");
    assert_eq!(stat(&mut c, "gate_rejections"), 2);
    assert_eq!(
        info_value(&s.info("tcache"), "tcache_gate_rejections").as_deref(),
        Some("2")
    );
}

#[test]
fn perm_check_grants_exact_and_colon_star_wildcard_permissions() {
    let s = Server::start();
    let mut c = s.conn();
    perm_set(
        &mut c,
        "user:1",
        &["staff"],
        &["users:*", "reports:read", "*", "admin*", "a:b:*"],
    );
    for (asked, want) in [
        ("users:write", 1),
        ("users:a:b", 1),
        ("users", 0),
        ("user:write", 0),
        ("reports:read", 1),
        ("reports:write", 0),
        ("reports", 0),
        ("adminx", 0),
        ("admin*", 1),
        ("anything", 0),
        ("*", 1),
        ("a:b:c", 1),
        ("a:c", 0),
    ] {
        assert_eq!(
            c.q(&["PERM.CHECK", "user:1", asked]),
            Value::Int(want),
            "PERM.CHECK {asked}"
        );
    }
    // Several at once: an array in the asked order.
    assert_eq!(
        c.q(&[
            "PERM.CHECK",
            "user:1",
            "users:write",
            "reports:write",
            "reports:read"
        ]),
        Value::Array(vec![Value::Int(1), Value::Int(0), Value::Int(1)])
    );
    // Not cached is neither granted nor denied.
    assert!(c.q(&["PERM.CHECK", "user:2", "users:write"]).is_nil());
    assert!(c.q(&["PERM.CHECK", "user:2", "a", "b"]).is_nil());
    // RESP3 says the same.
    let mut c3 = s.conn3();
    assert_eq!(c3.q(&["PERM.CHECK", "user:1", "users:x"]), Value::Int(1));
    assert_eq!(c3.q(&["PERM.CHECK", "user:2", "users:x"]), Value::Nil);
}

#[test]
fn perm_get_and_check_on_a_cache_entry_or_a_string_are_wrongtype() {
    let s = Server::start();
    let mut c = s.conn();
    set(
        &mut c,
        "page:1",
        r#"{"roles":["a"],"permissions":["x"]}"#,
        100,
        &["t"],
    );
    ok(c.q(&["SET", "str", "x"]), "SET");
    assert_eq!(c.q(&["HSET", "h", "f", "v"]).as_int(), 1);
    for key in ["page:1", "str", "h"] {
        for args in [
            vec!["PERM.GET", key],
            vec!["PERM.CHECK", key, "x"],
            vec!["PERM.CHECK", key, "x", "y"],
        ] {
            let r = c.q(&args);
            assert!(r.is_error_starting("WRONGTYPE"), "{args:?} -> {r:?}");
        }
    }
    assert_eq!(
        get(&mut c, "page:1").as_deref(),
        Some(&br#"{"roles":["a"],"permissions":["x"]}"#[..])
    );
    assert_eq!(c.q(&["GET", "str"]).as_str(), "x");
    assert_eq!(stat(&mut c, "perm_hits") + stat(&mut c, "perm_misses"), 0);
}

#[test]
fn perm_hits_and_misses_are_counted_by_get_and_check() {
    let s = Server::start();
    let mut c = s.conn();
    perm_set(&mut c, "user:1", &["ops"], &["reports:read"]);
    assert!(!c.q(&["PERM.GET", "user:1"]).is_nil());
    assert!(c.q(&["PERM.GET", "user:2"]).is_nil());
    assert_eq!(c.q(&["PERM.CHECK", "user:1", "reports:read"]).as_int(), 1);
    assert_eq!(
        c.q(&["PERM.CHECK", "user:1", "a", "b", "c"])
            .as_array()
            .len(),
        3
    );
    assert!(c.q(&["PERM.CHECK", "user:2", "reports:read"]).is_nil());
    assert!(c.q(&["PERM.CHECK", "user:3", "a", "b"]).is_nil());
    let st = c.q(&["TCACHE.STATS"]);
    assert_eq!(st.field("perm_hits"), Some(&Value::Int(3)));
    assert_eq!(st.field("perm_misses"), Some(&Value::Int(3)));
    // Plain cache reads are counted apart.
    assert_eq!(st.field("hits"), Some(&Value::Int(0)));
    assert_eq!(st.field("misses"), Some(&Value::Int(0)));
    let info = s.info("tcache");
    assert_eq!(info_value(&info, "tcache_perm_hits").as_deref(), Some("3"));
    assert_eq!(
        info_value(&info, "tcache_perm_misses").as_deref(),
        Some("3")
    );
    let mut c3 = s.conn3();
    let st = c3.q(&["TCACHE.STATS"]);
    assert_eq!(st.field("perm_hits"), Some(&Value::Int(3)));
    ok(c.q(&["TCACHE.STATS", "RESET"]), "reset");
    assert_eq!(stat(&mut c, "perm_hits"), 0);
    assert_eq!(stat(&mut c, "perm_misses"), 0);
}

#[test]
fn perm_invaluser_deletes_the_named_users_and_counts_them() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    assert_eq!(c.q(&["PERM.INVALUSER", "u:1", "u:3", "u:404"]).as_int(), 2);
    assert!(c.q(&["PERM.CHECK", "u:1", "users:x"]).is_nil());
    assert!(c.q(&["PERM.GET", "u:3"]).is_nil());
    assert_eq!(c.q(&["PERM.CHECK", "u:2", "reports:read"]).as_int(), 1);
    assert_eq!(c.q(&["PERM.INVALUSER", "u:1"]).as_int(), 0);
    assert!(exists(&mut c, "page:1"));
    // The role index followed: ops now reaches u:2 only.
    invalrole_removes(&mut c, &["ops", "admin"], &FIXTURE_KEYS, &["u:2"]);
}

#[test]
fn perm_invalrole_deletes_every_entry_having_any_of_the_roles_once() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    perm_set(&mut c, "u:4", &["auditor"], &[]);
    let keys = ["u:1", "u:2", "u:3", "u:4", "page:1"];
    // u:1 has both roles and counts once; unknown roles match nothing.
    invalrole_removes(&mut c, &["admin", "ops", "nobody"], &keys, &["u:1", "u:2"]);
    invalrole_removes(&mut c, &["admin"], &keys, &[]);
    invalrole_removes(&mut c, &["viewer"], &keys, &["u:3"]);
    let st = c.q(&["TCACHE.STATS"]);
    assert_eq!(st.field("entries"), Some(&Value::Int(2)));
    assert!(c.q(&["PERM.GET", "u:4"]).as_str().contains("auditor"));
}

#[test]
fn perm_invalall_deletes_permission_entries_of_the_current_db_only() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    ok(c.q(&["SET", "str", "x"]), "SET");
    ok(c.q(&["SELECT", "1"]), "SELECT 1");
    perm_set(&mut c, "u:9", &["admin"], &["a:*"]);
    ok(c.q(&["SELECT", "0"]), "SELECT 0");
    assert_eq!(c.q(&["PERM.INVALALL"]).as_int(), 3);
    for k in ["u:1", "u:2", "u:3"] {
        assert!(!exists(&mut c, k), "{k}");
    }
    assert!(get(&mut c, "page:1").is_some(), "cache entries stay");
    assert_eq!(c.q(&["GET", "str"]).as_str(), "x");
    assert_eq!(c.q(&["PERM.INVALALL"]).as_int(), 0);
    assert_verified(&mut c);
    ok(c.q(&["SELECT", "1"]), "SELECT 1");
    assert_eq!(c.q(&["PERM.CHECK", "u:9", "a:b"]).as_int(), 1);
    assert_eq!(c.q(&["PERM.INVALALL"]).as_int(), 1);
    assert_eq!(c.q(&["DBSIZE"]).as_int(), 0);
}

#[test]
fn roles_and_tags_are_separate_namespaces() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    // Tag `admin` reaches the cache page only.
    assert_eq!(c.q(&["TCACHE.TAGCARD", "admin"]).as_int(), 1);
    assert_eq!(c.q(&["TCACHE.INVALTAG", "admin"]).as_int(), 1);
    assert!(!exists(&mut c, "page:1"));
    assert!(exists(&mut c, "u:1"));
    set(&mut c, "page:1", "<html>", 600, &["admin", "ops"]);
    // Role `admin` reaches the user only.
    invalrole_removes(&mut c, &["admin"], &FIXTURE_KEYS, &["u:1"]);
    assert_eq!(c.q(&["TCACHE.TAGCARD", "admin"]).as_int(), 1);
    // A tag named like a role of a live user does not reach it.
    assert_eq!(c.q(&["TCACHE.INVALTAG", "viewer"]).as_int(), 0);
    assert!(exists(&mut c, "u:3"));
    // A cache entry tagged like a role is not reached by the role.
    set(&mut c, "page:2", "x", 600, &["viewer"]);
    invalrole_removes(&mut c, &["viewer"], &["u:3", "page:2"], &["u:3"]);
}

#[test]
fn invalrole_refuses_with_noperm_and_deletes_nothing_when_a_role_reaches_other_tenants() {
    let s = Server::start();
    let mut admin = s.conn();
    perm_set(&mut admin, "tenantA:u1", &["billing"], &["invoices:*"]);
    perm_set(&mut admin, "tenantA:u2", &["support"], &["tickets:*"]);
    perm_set(&mut admin, "tenantB:u1", &["billing"], &["invoices:*"]);
    let mut alice = tenant_a_user(&s, &mut admin);
    let digest = |c: &mut Conn| c.q(&["DEBUG", "DIGEST"]).as_bytes().to_vec();
    let before = digest(&mut admin);
    for roles in [&["billing"][..], &["support", "billing"]] {
        let mut args = vec!["PERM.INVALROLE"];
        args.extend_from_slice(roles);
        let r = alice.q(&args);
        assert!(r.is_error_starting("NOPERM"), "{roles:?} -> {r:?}");
    }
    assert_eq!(digest(&mut admin), before, "nothing deleted");
    for k in ["tenantA:u1", "tenantA:u2", "tenantB:u1"] {
        assert!(exists(&mut admin, k), "{k}");
    }
    // A role reaching her tenant only is hers to invalidate.
    assert_eq!(alice.q(&["PERM.INVALROLE", "support"]).as_int(), 1);
    assert_eq!(alice.q(&["PERM.INVALROLE", "nobody"]).as_int(), 0);
    assert!(!exists(&mut admin, "tenantA:u2"));
    // The default user reaches everything.
    assert_eq!(admin.q(&["PERM.INVALROLE", "billing"]).as_int(), 2);
    assert_eq!(admin.q(&["DBSIZE"]).as_int(), 0);
    assert_verified(&mut admin);
}

// ---------------------------------------------------------------------------
// The role index on every keyspace path
// ---------------------------------------------------------------------------

#[test]
fn role_index_follows_rename() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    ok(c.q(&["RENAME", "u:1", "member:1"]), "RENAME");
    assert_eq!(c.q(&["PERM.CHECK", "member:1", "users:x"]).as_int(), 1);
    // Renaming onto another user replaces it, roles included.
    ok(c.q(&["RENAME", "u:2", "u:3"]), "RENAME onto u:3");
    let keys = ["u:1", "u:2", "u:3", "member:1", "page:1"];
    invalrole_removes(&mut c, &["viewer"], &keys, &[]);
    invalrole_removes(&mut c, &["admin"], &keys, &["member:1"]);
    invalrole_removes(&mut c, &["ops"], &keys, &["u:3"]);
    assert!(exists(&mut c, "page:1"));
}

#[test]
fn role_index_follows_move() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    assert_eq!(c.q(&["MOVE", "u:1", "3"]).as_int(), 1);
    invalrole_removes(&mut c, &["admin"], &FIXTURE_KEYS, &[]);
    ok(c.q(&["SELECT", "3"]), "SELECT 3");
    invalrole_removes(&mut c, &["ops"], &FIXTURE_KEYS, &["u:1"]);
    ok(c.q(&["SELECT", "0"]), "SELECT 0");
    invalrole_removes(&mut c, &["ops"], &FIXTURE_KEYS, &["u:2"]);
}

#[test]
fn role_index_follows_copy() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    assert_eq!(c.q(&["COPY", "u:1", "u:9"]).as_int(), 1);
    assert_eq!(c.q(&["COPY", "u:1", "u:3", "REPLACE"]).as_int(), 1);
    assert_eq!(c.q(&["COPY", "u:2", "u:2", "DB", "5"]).as_int(), 1);
    let keys = ["u:1", "u:2", "u:3", "u:9", "page:1"];
    invalrole_removes(&mut c, &["viewer"], &keys, &[]);
    invalrole_removes(&mut c, &["admin"], &keys, &["u:1", "u:3", "u:9"]);
    ok(c.q(&["SELECT", "5"]), "SELECT 5");
    invalrole_removes(&mut c, &["ops"], &keys, &["u:2"]);
    ok(c.q(&["SELECT", "0"]), "SELECT 0");
    assert!(exists(&mut c, "u:2"));
}

#[test]
fn role_index_follows_del_and_unlink() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    assert_eq!(c.q(&["DEL", "u:1"]).as_int(), 1);
    assert_eq!(c.q(&["UNLINK", "u:3"]).as_int(), 1);
    invalrole_removes(&mut c, &["admin", "viewer"], &FIXTURE_KEYS, &[]);
    invalrole_removes(&mut c, &["ops"], &FIXTURE_KEYS, &["u:2"]);
}

#[test]
fn role_index_follows_expiry() {
    let s = Server::builder().arg("hz", "100").start();
    let mut c = s.conn();
    fixture(&mut c);
    let json = perm_json(&["ops", "temp"], &["x:*"]);
    ok(c.q(&["PERM.SET", "u:short", &json, "1"]), "short");
    assert_eq!(c.q(&["PEXPIRE", "u:2", "30"]).as_int(), 1);
    // DBSIZE does not expire keys: only the active cycle brings it to 3.
    wait_until(WAIT, "active expiry", || c.q(&["DBSIZE"]).as_int() == 3);
    let keys = ["u:1", "u:2", "u:3", "u:short", "page:1"];
    invalrole_removes(&mut c, &["temp"], &keys, &[]);
    invalrole_removes(&mut c, &["ops"], &keys, &["u:1"]);
}

/// The server clock in unix ms (TIME).
fn server_ms(c: &mut Conn) -> i64 {
    let t = c.q(&["TIME"]);
    let p = t.as_array();
    let secs: i64 = p[0].as_str().parse().unwrap();
    let micros: i64 = p[1].as_str().parse().unwrap();
    secs * 1000 + micros / 1000
}

#[test]
fn role_index_never_reaches_a_logically_expired_entry() {
    let s = Server::start();
    let mut c = s.conn();
    ok(
        c.q(&["DEBUG", "SET-ACTIVE-EXPIRE", "0"]),
        "no active expiry",
    );
    fixture(&mut c);
    let at = server_ms(&mut c) + 30;
    assert_eq!(c.q(&["PEXPIREAT", "u:2", &at.to_string()]).as_int(), 1);
    // Poll the clock, not the key: reading the key would delete it.
    wait_until(WAIT, "u:2 logically expired", || server_ms(&mut c) > at + 1);
    assert_eq!(c.q(&["DBSIZE"]).as_int(), 4, "still stored");
    assert_eq!(c.q(&["PERM.INVALROLE", "ops"]).as_int(), 1, "u:1 only");
    assert!(!exists(&mut c, "u:1"));
    assert!(!exists(&mut c, "u:2"));
    assert_verified(&mut c);
    invalrole_removes(&mut c, &["viewer", "ops"], &FIXTURE_KEYS, &["u:3"]);
}

#[test]
fn role_index_follows_flushdb() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    ok(c.q(&["SELECT", "1"]), "SELECT 1");
    fixture(&mut c);
    ok(c.q(&["FLUSHDB"]), "FLUSHDB");
    invalrole_removes(&mut c, &["admin", "ops", "viewer"], &FIXTURE_KEYS, &[]);
    perm_set(&mut c, "u:5", &["ops"], &[]);
    invalrole_removes(&mut c, &["ops"], &["u:5"], &["u:5"]);
    ok(c.q(&["SELECT", "0"]), "SELECT 0");
    invalrole_removes(&mut c, &["ops"], &FIXTURE_KEYS, &["u:1", "u:2"]);
    ok(c.q(&["FLUSHDB", "ASYNC"]), "FLUSHDB ASYNC");
    invalrole_removes(&mut c, &["viewer"], &FIXTURE_KEYS, &[]);
    fixture(&mut c);
    invalrole_removes(&mut c, &["viewer"], &FIXTURE_KEYS, &["u:3"]);
}

#[test]
fn role_index_follows_swapdb() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    ok(c.q(&["SELECT", "1"]), "SELECT 1");
    perm_set(&mut c, "other", &["ops"], &[]);
    ok(c.q(&["SWAPDB", "0", "1"]), "SWAPDB");
    // db 1 now holds the fixture.
    invalrole_removes(&mut c, &["viewer"], &FIXTURE_KEYS, &["u:3"]);
    ok(c.q(&["SELECT", "0"]), "SELECT 0");
    let keys = ["other", "u:1", "u:2"];
    invalrole_removes(&mut c, &["admin"], &keys, &[]);
    invalrole_removes(&mut c, &["ops"], &keys, &["other"]);
    ok(c.q(&["SELECT", "1"]), "SELECT 1");
    invalrole_removes(&mut c, &["ops"], &FIXTURE_KEYS, &["u:1", "u:2"]);
}

/// After a reload: the same users, roles, permissions and TTLs as before.
#[track_caller]
fn assert_fixture_reloaded(c: &mut Conn) {
    assert_verified(c);
    assert_eq!(
        c.q(&["PERM.GET", "u:1"]),
        Value::bulk(perm_json(&["admin", "ops"], &["users:*", "reports:read"]))
    );
    assert_eq!(c.q(&["PERM.CHECK", "u:1", "users:write"]).as_int(), 1);
    let ttl = c.q(&["TTL", "u:2"]).as_int();
    assert!((1..=600).contains(&ttl), "ttl {ttl}");
    invalrole_removes(c, &["ops"], &FIXTURE_KEYS, &["u:1", "u:2"]);
    invalrole_removes(c, &["admin"], &FIXTURE_KEYS, &[]);
    invalrole_removes(c, &["viewer"], &FIXTURE_KEYS, &["u:3"]);
    assert!(exists(c, "page:1"));
    assert_eq!(c.q(&["TCACHE.INVALTAG", "ops"]).as_int(), 1);
}

#[test]
fn role_index_survives_debug_reload() {
    let s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    ok(c.q(&["DEBUG", "RELOAD"]), "DEBUG RELOAD");
    assert_fixture_reloaded(&mut c);
}

#[test]
fn role_index_survives_restart_from_rdb() {
    let mut s = Server::start();
    let mut c = s.conn();
    fixture(&mut c);
    ok(c.q(&["SELECT", "2"]), "SELECT 2");
    perm_set(&mut c, "u:1", &["viewer"], &[]);
    ok(c.q(&["SAVE"]), "SAVE");
    s.restart();
    let mut c = s.conn();
    assert_fixture_reloaded(&mut c);
    ok(c.q(&["SELECT", "2"]), "SELECT 2");
    invalrole_removes(&mut c, &["ops", "admin"], &["u:1"], &[]);
    invalrole_removes(&mut c, &["viewer"], &["u:1"], &["u:1"]);
}

#[test]
fn permission_entries_and_role_invalidations_reach_a_replica() {
    let primary = Server::start();
    let replica = Server::replica_of(&primary);
    wait_for_sync(&replica);
    let mut p = primary.conn();
    let mut r = replica.conn();
    fixture(&mut p);
    wait_until(WAIT, "fixture on the replica", || {
        r.q(&["DBSIZE"]).as_int() == 4
    });
    assert_eq!(r.q(&["PERM.CHECK", "u:1", "users:write"]).as_int(), 1);
    assert_eq!(
        r.q(&["PERM.GET", "u:2"]),
        Value::bulk(perm_json(&["ops"], &["reports:read"]))
    );
    let w = r.q(&["PERM.INVALROLE", "ops"]);
    assert!(w.is_error_starting("READONLY"), "{w:?}");
    assert_eq!(p.q(&["PERM.INVALROLE", "ops"]).as_int(), 2);
    wait_until(WAIT, "invalidation on the replica", || {
        r.q(&["DBSIZE"]).as_int() == 2
    });
    assert!(r.q(&["PERM.CHECK", "u:1", "users:write"]).is_nil());
    assert_verified(&mut r);
    // Promoted, its role index is exact.
    ok(r.q(&["REPLICAOF", "NO", "ONE"]), "promote");
    invalrole_removes(&mut r, &["admin", "ops"], &FIXTURE_KEYS, &[]);
    invalrole_removes(&mut r, &["viewer"], &FIXTURE_KEYS, &["u:3"]);
}

// ---------------------------------------------------------------------------
// Invalidation channel
// ---------------------------------------------------------------------------

const MARK: &str = "test-marker";

/// A connection subscribed to every channel (`PSUBSCRIBE *`), and a control
/// connection that publishes markers to delimit what a step published.
struct Listener {
    sub: Conn,
    ctl: Conn,
    marks: u64,
}

impl Listener {
    #[track_caller]
    fn new(s: &Server) -> Listener {
        let mut sub = s.conn();
        let r = sub.q(&["PSUBSCRIBE", "*"]);
        assert_eq!(
            r,
            Value::Array(vec![
                Value::bulk("psubscribe"),
                Value::bulk("*"),
                Value::Int(1)
            ])
        );
        Listener {
            sub,
            ctl: s.conn(),
            marks: 0,
        }
    }

    /// (channel, message) of everything published since the previous call.
    #[track_caller]
    fn published(&mut self) -> Vec<(String, String)> {
        self.marks += 1;
        let mark = self.marks.to_string();
        assert_eq!(self.ctl.q(&["PUBLISH", MARK, &mark]).as_int(), 1);
        let mut out = Vec::new();
        loop {
            let Some(msg) = self.sub.read_with_timeout(WAIT) else {
                panic!("marker {mark} not received; so far {out:?}");
            };
            let p = msg.as_array();
            assert_eq!(p.len(), 4, "{msg:?}");
            assert_eq!(p[0].as_str(), "pmessage", "{msg:?}");
            let (channel, text) = (p[2].as_str().to_string(), p[3].as_str().to_string());
            if channel == MARK && text == mark {
                return out;
            }
            out.push((channel, text));
        }
    }
}

fn on(channel: &str, msgs: &[&str]) -> Vec<(String, String)> {
    msgs.iter()
        .map(|m| (channel.to_string(), m.to_string()))
        .collect()
}

#[test]
fn invalidation_channel_is_off_by_default() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(
        c.q(&["CONFIG", "GET", "tcache.invalidation-channel"]),
        Value::Array(vec![
            Value::bulk("tcache.invalidation-channel"),
            Value::bulk("")
        ])
    );
    let mut l = Listener::new(&s);
    fixture(&mut c);
    assert_eq!(c.q(&["TCACHE.INVALTAG", "admin"]).as_int(), 1);
    assert_eq!(c.q(&["PERM.INVALROLE", "ops"]).as_int(), 2);
    assert_eq!(c.q(&["TCACHE.INVALPREFIX", "u:"]).as_int(), 1);
    assert_eq!(l.published(), vec![]);
}

#[test]
fn invalidation_channel_gets_one_message_per_tag_role_and_prefix() {
    let s = Server::start();
    let mut c = s.conn();
    let mut l = Listener::new(&s);
    ok(
        c.q(&[
            "CONFIG",
            "SET",
            "tcache.invalidation-channel",
            "cache-inval",
        ]),
        "CONFIG SET",
    );
    fixture(&mut c);
    assert_eq!(l.published(), vec![], "writes publish nothing");

    assert_eq!(c.q(&["TCACHE.INVALTAG", "admin", "nothing"]).as_int(), 1);
    assert_eq!(
        l.published(),
        on("cache-inval", &["tag:admin", "tag:nothing"])
    );
    assert_eq!(
        c.q(&["PERM.INVALROLE", "viewer", "admin", "ghost"])
            .as_int(),
        2
    );
    assert_eq!(
        l.published(),
        on("cache-inval", &["role:viewer", "role:admin", "role:ghost"])
    );
    assert_eq!(c.q(&["TCACHE.INVALPREFIX", "u:"]).as_int(), 1);
    assert_eq!(l.published(), on("cache-inval", &["prefix:u:"]));
    // Even when nothing matched.
    assert_eq!(c.q(&["TCACHE.INVALTAG", "admin"]).as_int(), 0);
    assert_eq!(c.q(&["PERM.INVALROLE", "ops"]).as_int(), 0);
    assert_eq!(c.q(&["TCACHE.INVALPREFIX", "zzz"]).as_int(), 0);
    assert_eq!(
        l.published(),
        on("cache-inval", &["tag:admin", "role:ops", "prefix:zzz"])
    );
    // Another channel, then off again.
    ok(
        c.q(&["CONFIG", "SET", "tcache.invalidation-channel", "other"]),
        "CONFIG SET other",
    );
    assert_eq!(c.q(&["TCACHE.INVALTAG", "t"]).as_int(), 0);
    assert_eq!(l.published(), on("other", &["tag:t"]));
    ok(
        c.q(&["CONFIG", "SET", "tcache.invalidation-channel", ""]),
        "CONFIG SET empty",
    );
    assert_eq!(c.q(&["TCACHE.INVALTAG", "t"]).as_int(), 0);
    assert_eq!(c.q(&["PERM.INVALROLE", "r"]).as_int(), 0);
    assert_eq!(l.published(), vec![]);
}

#[test]
fn invalidation_channel_reaches_a_plain_subscriber() {
    let s = Server::start();
    let mut c = s.conn();
    ok(
        c.q(&["CONFIG", "SET", "tcache.invalidation-channel", "inval"]),
        "CONFIG SET",
    );
    let mut sub = s.conn();
    assert_eq!(
        sub.q(&["SUBSCRIBE", "inval"]),
        Value::Array(vec![
            Value::bulk("subscribe"),
            Value::bulk("inval"),
            Value::Int(1)
        ])
    );
    perm_set(&mut c, "user:1", &["editor"], &["posts:*"]);
    assert_eq!(c.q(&["PERM.INVALROLE", "editor"]).as_int(), 1);
    let msg = sub.read_with_timeout(WAIT).expect("role message");
    assert_eq!(
        msg,
        Value::Array(vec![
            Value::bulk("message"),
            Value::bulk("inval"),
            Value::bulk("role:editor")
        ])
    );
    // RESP3 subscribers get it as a push.
    let mut sub3 = s.conn3();
    let r = sub3.q(&["SUBSCRIBE", "inval"]);
    assert_eq!(
        r,
        Value::Push(vec![
            Value::bulk("subscribe"),
            Value::bulk("inval"),
            Value::Int(1)
        ])
    );
    assert_eq!(c.q(&["TCACHE.INVALTAG", "posts"]).as_int(), 0);
    let msg = sub3.read_with_timeout(WAIT).expect("tag message");
    assert_eq!(
        msg,
        Value::Push(vec![
            Value::bulk("message"),
            Value::bulk("inval"),
            Value::bulk("tag:posts")
        ])
    );
    let msg = sub.read_with_timeout(WAIT).expect("tag message");
    assert_eq!(msg.as_array()[2], Value::bulk("tag:posts"));
}
