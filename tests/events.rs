//! Keyspace notifications and client-side caching: what a subscriber and a
//! RESP3 tracking client see when tcache commands write or delete entries.
//!
//! TCACHE.SET fires `tcache.set` (module class `d`); every key a tcache command
//! deletes fires `del` (generic class `g`). TCACHE.GET / MGET declare their
//! keys, so `CLIENT TRACKING on` remembers what they read, and a key that
//! TCACHE.INVALTAG / DEL / INVALPREFIX removes or TCACHE.SET overwrites sends
//! `["invalidate", [key]]` to the client that read it. After a logical
//! invalidation both arrive as the reclaimer deletes the keys.

mod common;

use std::time::Duration;

use common::tc::{assert_tag, set, stat, wait_reclaimed};
use common::*;

/// How long any single notification or push may take to arrive.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Channel the control connection publishes on to mark "all events so far".
const MARKER: &str = "tcache-test-marker";

// ---------------------------------------------------------------------------
// Keyspace notifications
// ---------------------------------------------------------------------------

/// One published notification: (channel, message).
type Event = (String, String);

fn ev(channel: &str, message: &str) -> Event {
    (channel.to_string(), message.to_string())
}

/// The keyspace and keyevent notifications one event on `key` produces, in the
/// order the server publishes them (keyspace first).
fn both(event: &str, key: &str) -> Vec<Event> {
    vec![
        ev(&format!("__keyspace@0__:{key}"), event),
        ev(&format!("__keyevent@0__:{event}"), key),
    ]
}

fn sorted(mut v: Vec<Event>) -> Vec<Event> {
    v.sort();
    v
}

/// A RESP2 connection that receives every keyspace and keyevent notification
/// of db 0 plus the marker channel, and a control connection that publishes
/// the marker.
struct Subscriber {
    sub: Conn,
    ctl: Conn,
    marks: u64,
}

impl Subscriber {
    #[track_caller]
    fn new(s: &Server) -> Subscriber {
        let mut sub = s.conn();
        sub.set_read_timeout(EVENT_TIMEOUT);
        let r = sub.q(&["SUBSCRIBE", MARKER]);
        assert_eq!(
            r,
            Value::Array(vec![
                Value::bulk("subscribe"),
                Value::bulk(MARKER),
                Value::Int(1)
            ])
        );
        sub.send_q(&["PSUBSCRIBE", "__keyspace@0__:*", "__keyevent@0__:*"]);
        for (n, pattern) in [(2, "__keyspace@0__:*"), (3, "__keyevent@0__:*")] {
            assert_eq!(
                sub.read(),
                Value::Array(vec![
                    Value::bulk("psubscribe"),
                    Value::bulk(pattern),
                    Value::Int(n)
                ])
            );
        }
        Subscriber {
            sub,
            ctl: s.conn(),
            marks: 0,
        }
    }

    /// Every notification published since the previous call, in order: the
    /// control connection publishes a marker and this reads up to it (all
    /// notifications of earlier commands precede it on the connection).
    #[track_caller]
    fn events(&mut self) -> Vec<Event> {
        self.marks += 1;
        let mark = self.marks.to_string();
        assert_eq!(self.ctl.q(&["PUBLISH", MARKER, &mark]).as_int(), 1);
        let mut out = Vec::new();
        loop {
            let Some(msg) = self.sub.read_with_timeout(EVENT_TIMEOUT) else {
                panic!("marker {mark} not received within {EVENT_TIMEOUT:?}; so far {out:?}");
            };
            let parts = msg.as_array();
            match parts[0].as_str() {
                "message" => {
                    assert_eq!(parts.len(), 3, "{msg:?}");
                    assert_eq!(parts[1].as_str(), MARKER, "{msg:?}");
                    assert_eq!(parts[2].as_str(), mark, "{msg:?}");
                    return out;
                }
                "pmessage" => {
                    assert_eq!(parts.len(), 4, "{msg:?}");
                    out.push(ev(parts[2].as_str(), parts[3].as_str()));
                }
                _ => panic!("unexpected frame on the subscriber: {msg:?}"),
            }
        }
    }
}

fn config_events(c: &mut Conn, flags: &str) {
    let r = c.q(&["CONFIG", "SET", "notify-keyspace-events", flags]);
    assert!(
        r.is_ok(),
        "CONFIG SET notify-keyspace-events {flags} -> {r:?}"
    );
}

#[test]
fn tcache_set_publishes_tcache_set_keyspace_and_keyevent_notifications() {
    let s = Server::builder()
        .arg("notify-keyspace-events", "KEA")
        .start();
    let mut c = s.conn();
    let mut sub = Subscriber::new(&s);

    set(&mut c, "user:1", "alice", 100, &["users", "team:a"]);
    assert_eq!(sub.events(), both("tcache.set", "user:1"));

    // Overwriting fires it again; a refused NX / XX write fires nothing.
    set(&mut c, "user:1", "alice2", 200, &["users"]);
    assert!(c.q(&["TCACHE.SET", "user:1", "x", "5", "NX"]).is_nil());
    assert!(c.q(&["TCACHE.SET", "ghost", "x", "5", "XX"]).is_nil());
    assert_eq!(sub.events(), both("tcache.set", "user:1"));

    // A key without tags, and binary-looking names, are reported verbatim.
    set(&mut c, "a b:c", "v", 10, &[]);
    assert_eq!(sub.events(), both("tcache.set", "a b:c"));

    // Reads fire nothing.
    assert_eq!(c.q(&["TCACHE.GET", "user:1"]), Value::bulk("alice2"));
    assert_eq!(
        c.q(&["TCACHE.MGET", "user:1", "nope"]),
        Value::Array(vec![Value::bulk("alice2"), Value::Nil])
    );
    assert_eq!(c.q(&["TCACHE.TAGCARD", "users"]).as_int(), 1);
    assert_eq!(sub.events(), vec![]);
}

#[test]
fn invaltag_publishes_del_for_each_removed_key_and_nothing_else() {
    let s = Server::start();
    let mut c = s.conn();
    config_events(&mut c, "KEA");
    set(&mut c, "user:1", "a", 100, &["users", "t1"]);
    set(&mut c, "user:2", "b", 100, &["users"]);
    set(&mut c, "post:1", "c", 100, &["posts", "t1"]);
    set(&mut c, "post:2", "d", 100, &["posts"]);
    let mut sub = Subscriber::new(&s);

    assert_eq!(c.q(&["TCACHE.INVALTAG", "t1", "users"]).as_int(), 3);
    let mut want = both("del", "user:1");
    want.extend(both("del", "user:2"));
    want.extend(both("del", "post:1"));
    assert_eq!(sorted(sub.events()), sorted(want));
    assert_tag(&mut c, "posts", &["post:2"]);

    // A tag nothing carries deletes and publishes nothing.
    assert_eq!(c.q(&["TCACHE.INVALTAG", "t1", "nobody"]).as_int(), 0);
    assert_eq!(sub.events(), vec![]);
}

#[test]
fn tcache_del_publishes_del_only_for_keys_it_removed() {
    let s = Server::builder()
        .arg("notify-keyspace-events", "KEA")
        .start();
    let mut c = s.conn();
    set(&mut c, "a", "1", 100, &["t"]);
    set(&mut c, "b", "2", 100, &["t"]);
    assert!(c.q(&["SET", "plain", "x"]).is_ok());
    let mut sub = Subscriber::new(&s);

    assert_eq!(c.q(&["TCACHE.DEL", "a", "missing", "b", "a"]).as_int(), 2);
    let mut want = both("del", "a");
    want.extend(both("del", "b"));
    assert_eq!(sorted(sub.events()), sorted(want));

    // A key of another type: WRONGTYPE, nothing deleted, nothing published.
    set(&mut c, "c", "3", 100, &["t"]);
    assert_eq!(sub.events(), both("tcache.set", "c"));
    assert!(c
        .q(&["TCACHE.DEL", "c", "plain"])
        .is_error_starting("WRONGTYPE"));
    assert_eq!(sub.events(), vec![]);
    assert_tag(&mut c, "t", &["c"]);
}

#[test]
fn invalprefix_publishes_del_for_each_removed_key() {
    let s = Server::start();
    let mut c = s.conn();
    config_events(&mut c, "KEA");
    set(&mut c, "sess:1", "a", 100, &["s"]);
    set(&mut c, "sess:2", "b", 100, &[]);
    set(&mut c, "sessions", "c", 100, &["s"]);
    set(&mut c, "user:1", "d", 100, &["s"]);
    let mut sub = Subscriber::new(&s);

    assert_eq!(c.q(&["TCACHE.INVALPREFIX", "sess:"]).as_int(), 2);
    let mut want = both("del", "sess:1");
    want.extend(both("del", "sess:2"));
    assert_eq!(sorted(sub.events()), sorted(want));
    assert_tag(&mut c, "s", &["sessions", "user:1"]);

    assert_eq!(c.q(&["TCACHE.INVALPREFIX", "nothing:"]).as_int(), 0);
    assert_eq!(sub.events(), vec![]);
}

#[test]
fn set_events_need_class_d_and_deletion_events_need_class_g() {
    let s = Server::start();
    let mut c = s.conn();
    let mut sub = Subscriber::new(&s);

    // Module class only, keyevent channel only.
    config_events(&mut c, "Ed");
    set(&mut c, "k1", "v", 100, &["t"]);
    assert_eq!(sub.events(), vec![ev("__keyevent@0__:tcache.set", "k1")]);
    assert_eq!(c.q(&["TCACHE.INVALTAG", "t"]).as_int(), 1);
    assert_eq!(sub.events(), vec![], "del is not in class d");

    // Module class only, keyspace channel only.
    config_events(&mut c, "Kd");
    set(&mut c, "k2", "v", 100, &["t"]);
    assert_eq!(sub.events(), vec![ev("__keyspace@0__:k2", "tcache.set")]);

    // Generic class only: deletions are reported, sets are not.
    config_events(&mut c, "Kg");
    set(&mut c, "k3", "v", 100, &["t"]);
    assert_eq!(sub.events(), vec![], "tcache.set is not in class g");
    assert_eq!(c.q(&["TCACHE.INVALTAG", "t"]).as_int(), 2);
    assert_eq!(
        sorted(sub.events()),
        sorted(vec![
            ev("__keyspace@0__:k2", "del"),
            ev("__keyspace@0__:k3", "del")
        ])
    );

    // Notifications off: nothing at all.
    config_events(&mut c, "");
    set(&mut c, "k4", "v", 100, &["t"]);
    assert_eq!(c.q(&["TCACHE.DEL", "k4"]).as_int(), 1);
    assert_eq!(sub.events(), vec![]);
}

#[test]
fn replica_publishes_tcache_set_and_del_when_it_applies_the_stream() {
    let primary = Server::start();
    let replica = Server::replica_of(&primary);
    wait_for_sync(&replica);
    let mut r = replica.conn();
    config_events(&mut r, "KEA");
    let mut sub = Subscriber::new(&replica);
    let mut p = primary.conn();

    set(&mut p, "a", "1", 100, &["t"]);
    set(&mut p, "b", "2", 100, &["t", "u"]);
    assert_eq!(p.q(&["WAIT", "1", "5000"]).as_int(), 1);
    // Each write arrives as one TCACHE.APPLY carrying its expiry: the replica
    // reports it as the primary did, once.
    let mut want = Vec::new();
    for key in ["a", "b"] {
        want.extend(both("tcache.set", key));
    }
    assert_eq!(sub.events(), want);

    assert_eq!(p.q(&["TCACHE.INVALTAG", "u"]).as_int(), 1);
    assert_eq!(p.q(&["WAIT", "1", "5000"]).as_int(), 1);
    assert_eq!(sub.events(), both("del", "b"));
    assert_tag(&mut r, "t", &["a"]);
}

// ---------------------------------------------------------------------------
// Client-side caching (RESP3 tracking)
// ---------------------------------------------------------------------------

/// A RESP3 connection with `CLIENT TRACKING on`.
#[track_caller]
fn tracking_client(s: &Server) -> Conn {
    let mut t = s.conn3();
    t.set_read_timeout(EVENT_TIMEOUT);
    let r = t.q(&["CLIENT", "TRACKING", "on"]);
    assert!(r.is_ok(), "CLIENT TRACKING on -> {r:?}");
    t
}

/// Reads invalidation pushes until `count` keys have been named (bounded by
/// EVENT_TIMEOUT per push), then checks with a PING round trip that no other
/// push is pending. Returns the invalidated keys, sorted.
#[track_caller]
fn invalidations(t: &mut Conn, count: usize) -> Vec<String> {
    let mut keys = Vec::new();
    while keys.len() < count {
        let Some(msg) = t.read_with_timeout(EVENT_TIMEOUT) else {
            panic!("expected {count} invalidated keys, got only {keys:?} within {EVENT_TIMEOUT:?}");
        };
        keys.extend(invalidated_keys(&msg));
    }
    assert_eq!(keys.len(), count, "too many keys invalidated: {keys:?}");
    assert_no_pending_push(t);
    keys.sort();
    keys
}

/// The keys of one `["invalidate", [key ...]]` push.
#[track_caller]
fn invalidated_keys(msg: &Value) -> Vec<String> {
    let Value::Push(parts) = msg else {
        panic!("expected an invalidation push, got {msg:?}");
    };
    assert_eq!(parts.len(), 2, "{msg:?}");
    assert_eq!(parts[0], Value::bulk("invalidate"), "{msg:?}");
    parts[1]
        .as_array()
        .iter()
        .map(|k| k.as_str().to_string())
        .collect()
}

/// Everything the server queued for `t` before this PING precedes its PONG.
#[track_caller]
fn assert_no_pending_push(t: &mut Conn) {
    let (reply, pushes) = t.cmd_collect_push(&[b"PING"]);
    assert_eq!(reply, Value::Simple("PONG".into()));
    assert!(pushes.is_empty(), "unexpected pushes: {pushes:?}");
}

#[test]
fn invaltag_invalidates_a_key_the_tracking_client_read_with_get() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, "user:1", "alice", 100, &["users"]);
    set(&mut c, "user:2", "bob", 100, &["users"]);
    set(&mut c, "other", "x", 100, &["misc"]);
    let mut t = tracking_client(&s);
    assert_eq!(t.q(&["TCACHE.GET", "user:1"]), Value::bulk("alice"));
    assert_eq!(t.q(&["TCACHE.GET", "other"]), Value::bulk("x"));

    // user:2 was never read by the tracking client: no push for it.
    assert_eq!(c.q(&["TCACHE.INVALTAG", "users"]).as_int(), 2);
    let msg = t
        .read_with_timeout(EVENT_TIMEOUT)
        .expect("no invalidation push after TCACHE.INVALTAG");
    assert_eq!(
        msg,
        Value::Push(vec![
            Value::bulk("invalidate"),
            Value::Array(vec![Value::bulk("user:1")])
        ])
    );
    assert_no_pending_push(&mut t);
    assert!(t.q(&["TCACHE.GET", "user:1"]).is_nil());
    assert_eq!(t.q(&["TCACHE.GET", "other"]), Value::bulk("x"));
}

#[test]
fn tcache_set_overwrite_invalidates_a_key_the_tracking_client_read() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, "k", "v1", 100, &["t"]);
    let mut t = tracking_client(&s);
    assert_eq!(t.q(&["TCACHE.GET", "k"]), Value::bulk("v1"));

    set(&mut c, "k", "v2", 100, &["t"]);
    assert_eq!(invalidations(&mut t, 1), vec!["k"]);
    // Tracking is one-shot: reading again re-arms it for the next write.
    assert_eq!(t.q(&["TCACHE.GET", "k"]), Value::bulk("v2"));
    set(&mut c, "k", "v3", 100, &["u"]);
    assert_eq!(invalidations(&mut t, 1), vec!["k"]);
    // Not read since: a further overwrite sends nothing.
    set(&mut c, "k", "v4", 100, &["u"]);
    assert_no_pending_push(&mut t);

    // A write to a key the client never read sends it nothing.
    set(&mut c, "other", "x", 100, &["u"]);
    assert_no_pending_push(&mut t);
    assert_eq!(t.q(&["TCACHE.GET", "k"]), Value::bulk("v4"));
}

#[test]
fn keys_read_with_mget_are_tracked_including_missing_ones() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, "a", "1", 100, &["t"]);
    set(&mut c, "b", "2", 100, &["t"]);
    set(&mut c, "c", "3", 100, &["t"]);
    let mut t = tracking_client(&s);
    assert_eq!(
        t.q(&["TCACHE.MGET", "a", "b", "nothing"]),
        Value::Array(vec![Value::bulk("1"), Value::bulk("2"), Value::Nil])
    );

    // c was not read: only a and b are invalidated.
    assert_eq!(c.q(&["TCACHE.INVALTAG", "t"]).as_int(), 3);
    assert_eq!(invalidations(&mut t, 2), vec!["a", "b"]);

    // The missing key was read too: creating it invalidates it.
    set(&mut c, "nothing", "now", 100, &[]);
    assert_eq!(invalidations(&mut t, 1), vec!["nothing"]);
}

#[test]
fn tcache_del_and_invalprefix_invalidate_keys_the_tracking_client_read() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, "sess:1", "a", 100, &[]);
    set(&mut c, "sess:2", "b", 100, &[]);
    set(&mut c, "user:1", "c", 100, &[]);
    let mut t = tracking_client(&s);
    assert_eq!(
        t.q(&["TCACHE.MGET", "sess:1", "sess:2", "user:1"]),
        Value::Array(vec![Value::bulk("a"), Value::bulk("b"), Value::bulk("c")])
    );

    assert_eq!(c.q(&["TCACHE.DEL", "user:1", "missing"]).as_int(), 1);
    assert_eq!(invalidations(&mut t, 1), vec!["user:1"]);
    assert_eq!(c.q(&["TCACHE.INVALPREFIX", "sess:"]).as_int(), 2);
    assert_eq!(invalidations(&mut t, 2), vec!["sess:1", "sess:2"]);
}

#[test]
fn keys_read_with_perm_get_and_perm_check_are_tracked() {
    let s = Server::start();
    let mut c = s.conn();
    let json = r#"{"roles":["editor"],"permissions":["users:*"]}"#;
    for key in ["perm:1", "perm:2", "perm:3"] {
        assert!(c.q(&["PERM.SET", key, json]).is_ok());
    }
    let mut t = tracking_client(&s);
    assert_eq!(t.q(&["PERM.GET", "perm:1"]), Value::bulk(json));
    assert_eq!(t.q(&["PERM.CHECK", "perm:2", "users:write"]).as_int(), 1);
    // perm:3 was never read by the tracking client: no push for it.
    assert_eq!(c.q(&["PERM.INVALROLE", "editor"]).as_int(), 3);
    assert_eq!(invalidations(&mut t, 2), vec!["perm:1", "perm:2"]);
}

/// A logical invalidation (above `tcache.inval-sync-max`) deletes in the
/// background: each key the reclaimer deletes fires `del`, and a tracking
/// client that read it is told, as with the synchronous path.
#[test]
fn keys_the_reclaimer_deletes_fire_del_and_reach_tracking_clients() {
    let s = Server::start();
    let mut c = s.conn();
    config_events(&mut c, "KEA");
    assert!(c
        .q(&["CONFIG", "SET", "tcache.inval-sync-max", "0"])
        .is_ok());
    set(&mut c, "user:1", "alice", 100, &["users"]);
    set(&mut c, "user:2", "bob", 100, &["users"]);
    set(&mut c, "other", "x", 100, &["misc"]);
    let mut t = tracking_client(&s);
    assert_eq!(t.q(&["TCACHE.GET", "user:1"]), Value::bulk("alice"));
    assert_eq!(t.q(&["TCACHE.GET", "other"]), Value::bulk("x"));
    let mut sub = Subscriber::new(&s);

    assert_eq!(c.q(&["TCACHE.INVALTAG", "users"]).as_int(), 2);
    wait_reclaimed(&mut c);
    assert_eq!(stat(&mut c, "reclaimed"), 2, "deleted by the reclaimer");
    let mut want = both("del", "user:1");
    want.extend(both("del", "user:2"));
    assert_eq!(sorted(sub.events()), sorted(want));
    assert_eq!(invalidations(&mut t, 1), vec!["user:1".to_string()]);
    assert_eq!(t.q(&["TCACHE.GET", "other"]), Value::bulk("x"));
}
