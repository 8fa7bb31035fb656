//! SPEC section 4, stampede protection: TCACHE.FETCH (hit, lease, wait,
//! stale), blocked waiters (wake-up by the value, lease lapse, timeout,
//! disconnect, CLIENT UNBLOCK, MULTI and Lua), the lease rules of
//! `TCACHE.SET ... LEASE`, stale-while-revalidate, TCACHE.STALETAG, their
//! persistence and replication, and the counters.

mod common;

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::tc::{get, stat};
use common::*;

/// How long any reply that must come "at once" or "soon" may take before the
/// test gives up (a bound for hangs, not a performance threshold).
const SOON: Duration = Duration::from_secs(10);

fn fetch(c: &mut Conn, key: &str, lease_ms: u64) -> Value {
    c.q(&["TCACHE.FETCH", key, &lease_ms.to_string()])
}

fn fetch_wait(c: &mut Conn, key: &str, lease_ms: u64, wait_ms: u64) -> Value {
    c.q(&[
        "TCACHE.FETCH",
        key,
        &lease_ms.to_string(),
        "WAIT",
        &wait_ms.to_string(),
    ])
}

/// Sends a FETCH ... WAIT without reading the reply (the client may block).
fn send_fetch_wait(c: &mut Conn, key: &str, lease_ms: u64, wait_ms: u64) {
    c.send_q(&[
        "TCACHE.FETCH",
        key,
        &lease_ms.to_string(),
        "WAIT",
        &wait_ms.to_string(),
    ]);
}

/// `TCACHE.SET key value ttl LEASE token [TAGS tags...]`, reply returned.
fn set_lease(c: &mut Conn, key: &str, value: &str, ttl: u64, token: &str, tags: &[&str]) -> Value {
    let ttl = ttl.to_string();
    let mut args = vec!["TCACHE.SET", key, value, &ttl, "LEASE", token];
    if !tags.is_empty() {
        args.push("TAGS");
        args.extend_from_slice(tags);
    }
    c.q(&args)
}

fn simple(s: &str) -> Value {
    Value::Simple(s.to_string())
}

fn wait_reply() -> Value {
    Value::Array(vec![simple("WAIT")])
}

fn hit_reply(value: &str) -> Value {
    Value::Array(vec![simple("HIT"), Value::bulk(value)])
}

fn stale_reply(value: &str) -> Value {
    Value::Array(vec![simple("STALE"), Value::bulk(value)])
}

#[track_caller]
fn assert_token_shape(token: &str, reply: &Value) {
    assert!(
        token.len() == 16 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "token is not 16 hex characters in {reply:?}"
    );
}

/// Asserts `["LEASE", token]` and returns the token.
#[track_caller]
fn lease_token(reply: &Value) -> String {
    let parts = match reply {
        Value::Array(p) => p,
        other => panic!("expected [\"LEASE\", token], got {other:?}"),
    };
    assert!(
        parts.len() == 2 && parts[0] == simple("LEASE") && matches!(parts[1], Value::Bulk(_)),
        "expected [\"LEASE\", token], got {reply:?}"
    );
    let token = parts[1].as_str().to_string();
    assert_token_shape(&token, reply);
    token
}

/// Asserts `["STALE", value, token]` and returns the token.
#[track_caller]
fn stale_token(reply: &Value, value: &str) -> String {
    let parts = match reply {
        Value::Array(p) => p,
        other => panic!("expected [\"STALE\", {value:?}, token], got {other:?}"),
    };
    assert!(
        parts.len() == 3
            && parts[0] == simple("STALE")
            && parts[1] == Value::bulk(value)
            && matches!(parts[2], Value::Bulk(_)),
        "expected [\"STALE\", {value:?}, token], got {reply:?}"
    );
    let token = parts[2].as_str().to_string();
    assert_token_shape(&token, reply);
    token
}

fn blocked_clients(s: &Server) -> i64 {
    s.info_field("clients", "blocked_clients")
        .expect("INFO clients has blocked_clients")
        .parse()
        .unwrap()
}

#[track_caller]
fn wait_blocked(s: &Server, n: i64) {
    wait_until(SOON, &format!("blocked_clients == {n}"), || {
        blocked_clients(s) == n
    });
}

/// Reads the reply a blocked client must get soon.
#[track_caller]
fn read_soon(c: &mut Conn, what: &str) -> Value {
    match c.read_with_timeout(SOON) {
        Some(v) => v,
        None => panic!("no reply within {SOON:?}: {what}"),
    }
}

/// Polls FETCH (without WAIT) until the lease of another caller has lapsed
/// and this call gets its own lease; returns the new token.
#[track_caller]
fn fetch_until_lease(c: &mut Conn, key: &str, lease_ms: u64) -> String {
    let mut got = None;
    wait_until(SOON, &format!("FETCH {key} to grant a lease"), || {
        let r = fetch(c, key, lease_ms);
        if r == wait_reply() {
            return false;
        }
        got = Some(lease_token(&r));
        true
    });
    got.unwrap()
}

/// Every connection sends `args` at (nearly) the same moment, each from its own
/// thread, and reports `(index, first reply)` on the channel as it arrives.
/// The threads give their connections back when joined.
fn all_at_once(
    conns: Vec<Conn>,
    args: &[&str],
) -> (Receiver<(usize, Value)>, Vec<JoinHandle<Conn>>) {
    let (tx, rx) = mpsc::channel();
    let barrier = Arc::new(Barrier::new(conns.len()));
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let handles = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let tx = tx.clone();
            let barrier = Arc::clone(&barrier);
            let args = args.clone();
            thread::spawn(move || {
                let refs: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
                barrier.wait();
                c.send_q(&refs);
                let reply = c.read();
                tx.send((i, reply)).expect("the test stopped listening");
                c
            })
        })
        .collect();
    (rx, handles)
}

#[track_caller]
fn recv_reply(rx: &Receiver<(usize, Value)>, what: &str) -> (usize, Value) {
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(r) => r,
        Err(RecvTimeoutError::Timeout) => panic!("no reply within 30s: {what}"),
        Err(RecvTimeoutError::Disconnected) => panic!("a client thread died: {what}"),
    }
}

fn join_all(handles: Vec<JoinHandle<Conn>>) -> Vec<Conn> {
    handles
        .into_iter()
        .map(|h| h.join().expect("client thread panicked"))
        .collect()
}

// ---------------------------------------------------------------------------
// Replies and arguments

#[test]
fn fetch_replies_hit_lease_and_wait_and_the_lease_set_stores_the_value() {
    let s = Server::start();
    for resp3 in [false, true] {
        let mut c = if resp3 { s.conn3() } else { s.conn() };
        let (k, m) = if resp3 { ("k3", "m3") } else { ("k2", "m2") };
        assert!(c.q(&["TCACHE.SET", k, "v", "100"]).is_ok());
        assert_eq!(fetch(&mut c, k, 1000), hit_reply("v"));
        let token = lease_token(&fetch(&mut c, m, 60000));
        assert_eq!(fetch(&mut c, m, 60000), wait_reply(), "resp3={resp3}");
        assert!(c.q(&["TCACHE.GET", m]).is_nil());
        assert!(set_lease(&mut c, m, "computed", 100, &token, &["x", "y"]).is_ok());
        assert_eq!(fetch(&mut c, m, 60000), hit_reply("computed"));
        assert_eq!(get(&mut c, m).as_deref(), Some(&b"computed"[..]));
        assert_eq!(
            common::tc::tags_of(&mut c, m.as_bytes()),
            Some(vec![b"x".to_vec(), b"y".to_vec()])
        );
        let ttl = c.q(&["TTL", m]).as_int();
        assert!((1..=100).contains(&ttl), "TTL {m} = {ttl}");
        // The lease ended with the SET: the same token cannot write again.
        assert!(set_lease(&mut c, m, "again", 100, &token, &[]).is_nil());
        assert_eq!(get(&mut c, m).as_deref(), Some(&b"computed"[..]));
    }
    let mut c = s.conn();
    assert_eq!(stat(&mut c, "leases_granted"), 2);
    assert_eq!(stat(&mut c, "waits"), 2);
}

#[test]
fn fetch_rejects_bad_arguments_and_grants_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    let arity = "ERR wrong number of arguments for 'tcache.fetch' command";
    let not_int = "ERR value is not an integer or out of range";
    let cases: &[(&[&str], &str)] = &[
        (&["TCACHE.FETCH"], arity),
        (&["TCACHE.FETCH", "k"], arity),
        (&["TCACHE.FETCH", "k", "1000", "WAIT"], arity),
        (&["TCACHE.FETCH", "k", "1000", "WAIT", "10", "x"], arity),
        (
            &["TCACHE.FETCH", "k", "1000", "WAIT", "10", "WAIT", "10"],
            arity,
        ),
        (&["TCACHE.FETCH", "k", "0"], not_int),
        (&["TCACHE.FETCH", "k", "-1"], not_int),
        (&["TCACHE.FETCH", "k", "86400001"], not_int),
        (&["TCACHE.FETCH", "k", "abc"], not_int),
        (&["TCACHE.FETCH", "k", "1.5"], not_int),
        (&["TCACHE.FETCH", "k", ""], not_int),
        (&["TCACHE.FETCH", "k", "99999999999999999999999"], not_int),
        (&["TCACHE.FETCH", "k", "1000", "WAIT", "0"], not_int),
        (&["TCACHE.FETCH", "k", "1000", "WAIT", "-5"], not_int),
        (&["TCACHE.FETCH", "k", "1000", "WAIT", "86400001"], not_int),
        (&["TCACHE.FETCH", "k", "1000", "WAIT", "soon"], not_int),
        (
            &["TCACHE.FETCH", "k", "1000", "WAITX", "10"],
            "ERR syntax error",
        ),
        (
            &["TCACHE.FETCH", "k", "1000", "TAGS", "10"],
            "ERR syntax error",
        ),
        (
            &["TCACHE.FETCH", "k", "1000", "LEASE", "10"],
            "ERR syntax error",
        ),
        (
            &["TCACHE.STALETAG"],
            "ERR wrong number of arguments for 'tcache.staletag' command",
        ),
    ];
    for (args, want) in cases {
        let r = c.q(args);
        assert_eq!(r, Value::Error(want.to_string()), "{args:?}");
    }
    assert_eq!(c.q(&["PING"]).as_str(), "PONG");
    assert_eq!(stat(&mut c, "leases_granted"), 0);
    assert_eq!(c.q(&["DBSIZE"]).as_int(), 0);
    // The refused calls left no lease on k, and the limits themselves are accepted.
    lease_token(&fetch(&mut c, "k", 86_400_000));
    lease_token(&c.q(&["TCACHE.FETCH", "j", "1", "wait", "86400000"]));
    lease_token(&fetch_wait(&mut c, "i", 1000, 1));
    assert_eq!(stat(&mut c, "leases_granted"), 3);
}

// ---------------------------------------------------------------------------
// One lease, many waiters

#[test]
fn hundred_concurrent_fetches_get_one_lease_and_ninety_nine_hits_after_the_store() {
    let s = Server::start();
    let mut admin = s.conn();
    let n = 100;
    let conns: Vec<Conn> = (0..n).map(|_| s.conn()).collect();
    let (rx, handles) = all_at_once(conns, &["TCACHE.FETCH", "hot", "30000", "WAIT", "30000"]);

    let (holder, first) = recv_reply(&rx, "the lease holder's reply");
    let token = lease_token(&first);
    // Everybody else is parked inside the server, and none has an answer yet.
    wait_blocked(&s, n as i64 - 1);
    assert_eq!(
        admin.q(&["PING"]).as_str(),
        "PONG",
        "the server keeps serving"
    );
    assert_eq!(fetch(&mut admin, "hot", 30000), wait_reply());
    assert!(admin.q(&["TCACHE.GET", "hot"]).is_nil());
    match rx.recv_timeout(Duration::from_millis(300)) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("a waiter was answered before the value was stored: {other:?}"),
    }

    assert!(set_lease(&mut admin, "hot", "the-value", 100, &token, &["t"]).is_ok());
    let mut answered = vec![false; n];
    answered[holder] = true;
    for _ in 1..n {
        let (i, reply) = recv_reply(&rx, "a waiter's reply after the store");
        assert!(!answered[i], "client {i} answered twice");
        answered[i] = true;
        assert_eq!(reply, hit_reply("the-value"), "client {i}");
    }
    let conns = join_all(handles);
    assert_eq!(conns.len(), n);
    wait_blocked(&s, 0);
    assert_eq!(stat(&mut admin, "leases_granted"), 1);
    assert_eq!(stat(&mut admin, "waits"), n as i64); // 99 waiters + admin's FETCH
    assert_eq!(stat(&mut admin, "wait_timeouts"), 0);
    assert_eq!(stat(&mut admin, "lease_sets_refused"), 0);
}

#[test]
fn a_plain_tcache_set_wakes_the_waiters_and_voids_the_outstanding_lease() {
    let s = Server::start();
    let mut holder = s.conn();
    let mut waiter = s.conn();
    let mut writer = s.conn();
    let token = lease_token(&fetch(&mut holder, "k", 60000));
    send_fetch_wait(&mut waiter, "k", 60000, 30000);
    wait_blocked(&s, 1);
    assert!(writer.q(&["TCACHE.SET", "k", "fresh", "100"]).is_ok());
    assert_eq!(
        read_soon(&mut waiter, "waiter after SET"),
        hit_reply("fresh")
    );
    // The key was overwritten since the lease was issued: the holder writes nothing.
    assert!(set_lease(&mut holder, "k", "old", 100, &token, &[]).is_nil());
    assert_eq!(get(&mut writer, "k").as_deref(), Some(&b"fresh"[..]));
    wait_blocked(&s, 0);
}

#[test]
fn a_value_renamed_into_the_key_wakes_the_waiters_and_voids_the_lease() {
    let s = Server::start();
    let mut holder = s.conn();
    let mut waiter = s.conn();
    let mut writer = s.conn();
    let token = lease_token(&fetch(&mut holder, "k", 60000));
    send_fetch_wait(&mut waiter, "k", 60000, 30000);
    wait_blocked(&s, 1);
    assert!(writer.q(&["TCACHE.SET", "staging", "moved", "100"]).is_ok());
    assert!(writer.q(&["RENAME", "staging", "k"]).is_ok());
    assert_eq!(get(&mut writer, "k").as_deref(), Some(&b"moved"[..]));
    // The value is stored: the waiter is answered with it, not left to wait
    // for the (now void) lease to lapse or for its own timeout.
    assert_eq!(
        read_soon(&mut waiter, "waiter after RENAME"),
        hit_reply("moved")
    );
    assert!(set_lease(&mut holder, "k", "old", 100, &token, &[]).is_nil());
    assert_eq!(get(&mut writer, "k").as_deref(), Some(&b"moved"[..]));
    wait_blocked(&s, 0);
}

// ---------------------------------------------------------------------------
// Lapse, timeout, disconnect, CLIENT UNBLOCK

#[test]
fn a_lapsed_lease_goes_to_the_next_caller_and_its_token_writes_nothing() {
    let s = Server::start();
    let mut a = s.conn();
    let mut b = s.conn();
    let t1 = lease_token(&fetch(&mut a, "k", 200));
    assert_eq!(fetch(&mut b, "k", 200), wait_reply());
    let t2 = fetch_until_lease(&mut b, "k", 60000);
    assert_ne!(t1, t2, "a lapsed lease must be replaced by a new token");
    assert!(set_lease(&mut a, "k", "late", 100, &t1, &[]).is_nil());
    assert!(a.q(&["TCACHE.GET", "k"]).is_nil());
    assert!(set_lease(&mut b, "k", "ontime", 100, &t2, &[]).is_ok());
    assert_eq!(fetch(&mut a, "k", 200), hit_reply("ontime"));

    // Lapsed with nobody else asking: the late SET is still refused, and the
    // next FETCH gets a new lease.
    let t3 = lease_token(&fetch(&mut a, "j", 100));
    thread::sleep(Duration::from_millis(400));
    assert!(set_lease(&mut a, "j", "late", 100, &t3, &[]).is_nil());
    assert_eq!(a.q(&["EXISTS", "j"]).as_int(), 0);
    let t4 = lease_token(&fetch(&mut a, "j", 60000));
    assert_ne!(t3, t4);
    assert_eq!(stat(&mut a, "lease_sets_refused"), 2);
}

#[test]
fn a_lapsed_lease_is_handed_to_the_oldest_blocked_waiter() {
    let s = Server::start();
    let mut holder = s.conn();
    let mut first = s.conn();
    let mut second = s.conn();
    // Long enough for both waiters to block first, even on a busy machine.
    let t1 = lease_token(&fetch(&mut holder, "k", 2000));
    send_fetch_wait(&mut first, "k", 60000, 30000);
    wait_blocked(&s, 1);
    send_fetch_wait(&mut second, "k", 60000, 30000);
    wait_blocked(&s, 2);

    let t2 = lease_token(&read_soon(&mut first, "oldest waiter after the lapse"));
    assert_ne!(t1, t2);
    // The younger waiter keeps waiting, now for the new holder.
    assert_eq!(blocked_clients(&s), 1);
    assert!(second
        .read_with_timeout(Duration::from_millis(100))
        .is_none());
    assert_eq!(fetch(&mut holder, "k", 2000), wait_reply());

    assert!(set_lease(&mut holder, "k", "stale", 100, &t1, &[]).is_nil());
    assert!(set_lease(&mut first, "k", "v", 100, &t2, &[]).is_ok());
    assert_eq!(
        read_soon(&mut second, "younger waiter after the store"),
        hit_reply("v")
    );
    wait_blocked(&s, 0);
    assert_eq!(stat(&mut holder, "leases_granted"), 2);
    assert_eq!(stat(&mut holder, "wait_timeouts"), 0);
}

#[test]
fn a_lease_handed_to_a_waiter_that_lapses_in_turn_goes_to_the_next_waiter() {
    let s = Server::start();
    let mut holder = s.conn();
    let mut first = s.conn();
    let mut second = s.conn();
    let t1 = lease_token(&fetch(&mut holder, "k", 2000));
    // The first waiter asks for a short lease, the second for a long one.
    send_fetch_wait(&mut first, "k", 500, 30000);
    wait_blocked(&s, 1);
    send_fetch_wait(&mut second, "k", 60000, 30000);
    wait_blocked(&s, 2);
    let t2 = lease_token(&read_soon(&mut first, "first waiter after the lapse"));
    // The first waiter never stores; its own lease lapses and moves on.
    let t3 = lease_token(&read_soon(
        &mut second,
        "second waiter after the next lapse",
    ));
    assert!(t1 != t2 && t2 != t3 && t1 != t3, "{t1} {t2} {t3}");
    wait_blocked(&s, 0);
    assert!(set_lease(&mut first, "k", "late", 100, &t2, &[]).is_nil());
    assert!(set_lease(&mut second, "k", "v", 100, &t3, &[]).is_ok());
    assert_eq!(fetch(&mut holder, "k", 1000), hit_reply("v"));
    assert_eq!(stat(&mut holder, "leases_granted"), 3);
    assert_eq!(stat(&mut holder, "wait_timeouts"), 0);
}

#[test]
fn a_wait_timeout_answers_wait_counts_it_and_leaves_the_lease_alone() {
    let s = Server::start();
    let mut holder = s.conn();
    let mut waiter = s.conn();
    let token = lease_token(&fetch(&mut holder, "k", 60000));
    send_fetch_wait(&mut waiter, "k", 60000, 100);
    assert_eq!(read_soon(&mut waiter, "waiter's timeout"), wait_reply());
    wait_blocked(&s, 0);
    assert_eq!(stat(&mut holder, "waits"), 1);
    assert_eq!(stat(&mut holder, "wait_timeouts"), 1);
    // Still the holder's lease.
    assert_eq!(fetch(&mut waiter, "k", 60000), wait_reply());
    assert!(set_lease(&mut holder, "k", "v", 100, &token, &[]).is_ok());
    assert_eq!(fetch_wait(&mut waiter, "k", 60000, 100), hit_reply("v"));
    assert_eq!(stat(&mut holder, "wait_timeouts"), 1);
    assert_eq!(stat(&mut holder, "lease_sets_refused"), 0);
}

#[test]
fn blocked_clients_that_disconnect_leave_nothing_behind() {
    let s = Server::start();
    let mut holder = s.conn();
    let long = lease_token(&fetch(&mut holder, "long", 60000));
    // Lapses only after every waiter has blocked and gone.
    let short = lease_token(&fetch(&mut holder, "short", 3000));
    let mut waiters = Vec::new();
    for i in 0..10 {
        let mut w = s.conn();
        let key = if i % 2 == 0 { "long" } else { "short" };
        send_fetch_wait(&mut w, key, 60000, 30000);
        waiters.push(w);
    }
    wait_blocked(&s, 10);
    drop(waiters);
    wait_blocked(&s, 0);
    wait_until(SOON, "the waiters' connections to close", || {
        let list = holder.q(&["CLIENT", "LIST"]);
        !String::from_utf8_lossy(list.as_bytes()).contains("cmd=tcache.fetch")
    });

    // The short lease lapses with nobody left to hand it to: the next caller gets one.
    let short2 = fetch_until_lease(&mut holder, "short", 60000);
    assert_ne!(short, short2);
    assert!(set_lease(&mut holder, "short", "s", 100, &short2, &[]).is_ok());
    // The long lease is intact and its SET works.
    assert_eq!(fetch(&mut holder, "long", 60000), wait_reply());
    assert!(set_lease(&mut holder, "long", "l", 100, &long, &[]).is_ok());
    let mut c = s.conn();
    assert_eq!(fetch_wait(&mut c, "long", 1000, 1000), hit_reply("l"));
    assert_eq!(fetch_wait(&mut c, "short", 1000, 1000), hit_reply("s"));
    // Blocking still works afterwards.
    let t = lease_token(&fetch(&mut holder, "again", 60000));
    send_fetch_wait(&mut c, "again", 60000, 30000);
    wait_blocked(&s, 1);
    assert!(set_lease(&mut holder, "again", "a", 100, &t, &[]).is_ok());
    assert_eq!(read_soon(&mut c, "waiter on 'again'"), hit_reply("a"));
    wait_blocked(&s, 0);
}

#[test]
fn client_unblock_answers_wait_and_leaves_nothing_behind() {
    let s = Server::start();
    let mut holder = s.conn();
    let mut waiter = s.conn();
    let mut admin = s.conn();
    let id = waiter.q(&["CLIENT", "ID"]).as_int().to_string();
    let token = lease_token(&fetch(&mut holder, "k", 60000));
    send_fetch_wait(&mut waiter, "k", 60000, 30000);
    wait_blocked(&s, 1);
    assert_eq!(admin.q(&["CLIENT", "UNBLOCK", &id]), Value::Int(1));
    assert_eq!(read_soon(&mut waiter, "unblocked waiter"), wait_reply());
    wait_blocked(&s, 0);
    assert_eq!(admin.q(&["CLIENT", "UNBLOCK", &id]), Value::Int(0));
    // The lease is still the holder's.
    assert_eq!(fetch(&mut waiter, "k", 60000), wait_reply());
    assert!(set_lease(&mut holder, "k", "v", 100, &token, &[]).is_ok());
    assert_eq!(fetch_wait(&mut waiter, "k", 60000, 30000), hit_reply("v"));

    // Blocked again on a short lease, then unblocked: the lapse that follows
    // finds nobody to hand the lease to, and the next caller gets it.
    let t1 = lease_token(&fetch(&mut holder, "j", 3000));
    send_fetch_wait(&mut waiter, "j", 60000, 30000);
    wait_blocked(&s, 1);
    assert_eq!(admin.q(&["CLIENT", "UNBLOCK", &id]), Value::Int(1));
    assert_eq!(
        read_soon(&mut waiter, "unblocked waiter on j"),
        wait_reply()
    );
    wait_blocked(&s, 0);
    let t2 = fetch_until_lease(&mut admin, "j", 60000);
    assert_ne!(t1, t2);
    assert!(set_lease(&mut admin, "j", "w", 100, &t2, &[]).is_ok());
    assert_eq!(fetch(&mut waiter, "j", 1000), hit_reply("w"));
    assert_eq!(waiter.q(&["PING"]).as_str(), "PONG");
}

#[test]
fn client_unblock_error_releases_the_waiter_and_leaves_nothing_behind() {
    let s = Server::start();
    let mut holder = s.conn();
    let mut waiter = s.conn();
    let mut admin = s.conn();
    let id = waiter.q(&["CLIENT", "ID"]).as_int().to_string();
    let t1 = lease_token(&fetch(&mut holder, "k", 3000));
    send_fetch_wait(&mut waiter, "k", 60000, 30000);
    wait_blocked(&s, 1);
    assert_eq!(admin.q(&["CLIENT", "UNBLOCK", &id, "ERROR"]), Value::Int(1));
    let r = read_soon(&mut waiter, "waiter unblocked with ERROR");
    assert!(r.is_error_starting("UNBLOCKED"), "{r:?}");
    wait_blocked(&s, 0);
    // The lapse finds no waiter to hand the lease to.
    let t2 = fetch_until_lease(&mut admin, "k", 60000);
    assert_ne!(t1, t2);
    send_fetch_wait(&mut waiter, "k", 60000, 30000);
    wait_blocked(&s, 1);
    assert!(set_lease(&mut admin, "k", "v", 100, &t2, &[]).is_ok());
    assert_eq!(
        read_soon(&mut waiter, "waiter after the store"),
        hit_reply("v")
    );
    wait_blocked(&s, 0);
}

// ---------------------------------------------------------------------------
// MULTI and Lua never block

#[test]
fn fetch_inside_multi_answers_without_blocking() {
    let s = Server::start();
    let mut holder = s.conn();
    let mut c = s.conn();
    let token = lease_token(&fetch(&mut holder, "busy", 60000));
    assert!(c.q(&["TCACHE.SET", "hit", "h", "100"]).is_ok());
    assert!(c.q(&["MULTI"]).is_ok());
    for key in ["busy", "free", "hit"] {
        assert_eq!(
            fetch_wait(&mut c, key, 1000, 5000),
            simple("QUEUED"),
            "FETCH {key} in MULTI"
        );
    }
    let r = c.q(&["EXEC"]);
    let items = r.as_array();
    assert_eq!(items.len(), 3, "{r:?}");
    assert_eq!(items[0], wait_reply(), "{r:?}");
    let free = lease_token(&items[1]);
    assert_eq!(items[2], hit_reply("h"), "{r:?}");
    assert_eq!(blocked_clients(&s), 0);
    assert_eq!(
        stat(&mut c, "wait_timeouts"),
        0,
        "it did not block until the timeout"
    );
    assert_eq!(stat(&mut c, "waits"), 1);
    // The lease granted inside MULTI is a real one.
    assert_eq!(fetch(&mut holder, "free", 1000), wait_reply());
    assert!(set_lease(&mut c, "free", "f", 100, &free, &[]).is_ok());
    assert!(set_lease(&mut holder, "busy", "b", 100, &token, &[]).is_ok());
    assert_eq!(fetch(&mut c, "busy", 1000), hit_reply("b"));
}

#[test]
fn fetch_inside_lua_answers_without_blocking() {
    let s = Server::start();
    let mut holder = s.conn();
    let mut c = s.conn();
    let script = "return redis.call('TCACHE.FETCH', KEYS[1], '1000', 'WAIT', '5000')";
    let token = lease_token(&fetch(&mut holder, "busy", 60000));
    assert!(c.q(&["TCACHE.SET", "hit", "h", "100"]).is_ok());
    assert_eq!(c.q(&["EVAL", script, "1", "busy"]), wait_reply());
    assert_eq!(c.q(&["EVAL", script, "1", "hit"]), hit_reply("h"));
    let free = lease_token(&c.q(&["EVAL", script, "1", "free"]));
    assert_eq!(blocked_clients(&s), 0);
    assert_eq!(
        stat(&mut c, "wait_timeouts"),
        0,
        "it did not block until the timeout"
    );
    assert_eq!(stat(&mut c, "waits"), 1);
    assert_eq!(fetch(&mut holder, "free", 1000), wait_reply());
    assert!(set_lease(&mut c, "free", "f", 100, &free, &[]).is_ok());
    assert_eq!(fetch(&mut holder, "free", 1000), hit_reply("f"));
    assert!(set_lease(&mut holder, "busy", "b", 100, &token, &[]).is_ok());
    assert_eq!(c.q(&["EVAL", script, "1", "busy"]), hit_reply("b"));
}

// ---------------------------------------------------------------------------
// Lease rules

#[test]
fn stale_set_race_invaltag_after_the_lease_refuses_the_set_and_the_next_fetch_gets_a_new_lease() {
    let s = Server::start();
    let mut reader = s.conn();
    let mut writer = s.conn();
    // The reader misses, gets the lease, and reads the database...
    let token = lease_token(&fetch(&mut reader, "user:1", 60000));
    // ... meanwhile a writer updates the database and invalidates the tag ...
    assert_eq!(writer.q(&["TCACHE.INVALTAG", "users"]).as_int(), 0);
    // ... so the reader's old value must not be cached.
    assert!(set_lease(&mut reader, "user:1", "old", 100, &token, &["a", "users"]).is_nil());
    assert_eq!(reader.q(&["EXISTS", "user:1"]).as_int(), 0);
    assert!(reader.q(&["TCACHE.GET", "user:1"]).is_nil());
    assert_eq!(reader.q(&["TCACHE.TAGCARD", "users"]).as_int(), 0);
    assert_eq!(stat(&mut reader, "lease_sets_refused"), 1);
    // The refused SET ended the lease: the next FETCH gets a new one (no WAIT).
    let token2 = lease_token(&fetch(&mut writer, "user:1", 60000));
    assert_ne!(token, token2);
    // That invalidation predates the new lease, so it does not refuse it.
    assert!(set_lease(&mut writer, "user:1", "new", 100, &token2, &["users"]).is_ok());
    assert_eq!(fetch(&mut reader, "user:1", 60000), hit_reply("new"));
    assert_eq!(stat(&mut reader, "lease_sets_refused"), 1);
}

#[test]
fn invalidating_a_tag_the_set_does_not_carry_does_not_refuse_it() {
    let s = Server::start();
    let mut c = s.conn();
    let token = lease_token(&fetch(&mut c, "k", 60000));
    assert_eq!(c.q(&["TCACHE.INVALTAG", "other"]).as_int(), 0);
    assert_eq!(c.q(&["TCACHE.INVALPREFIX", "j"]).as_int(), 0);
    assert!(set_lease(&mut c, "k", "v", 100, &token, &["mine"]).is_ok());
    assert_eq!(get(&mut c, "k").as_deref(), Some(&b"v"[..]));
    assert_eq!(stat(&mut c, "lease_sets_refused"), 0);
}

#[test]
fn invalprefix_covering_the_key_refuses_the_lease_set() {
    let s = Server::start();
    let mut c = s.conn();
    let token = lease_token(&fetch(&mut c, "user:7", 60000));
    assert_eq!(c.q(&["TCACHE.INVALPREFIX", "user:"]).as_int(), 0);
    assert!(set_lease(&mut c, "user:7", "old", 100, &token, &[]).is_nil());
    assert_eq!(c.q(&["EXISTS", "user:7"]).as_int(), 0);
    let token2 = lease_token(&fetch(&mut c, "user:7", 60000));
    assert_ne!(token, token2);
    assert!(set_lease(&mut c, "user:7", "new", 100, &token2, &[]).is_ok());
    assert_eq!(get(&mut c, "user:7").as_deref(), Some(&b"new"[..]));
}

#[test]
fn deleting_or_overwriting_the_key_after_the_lease_refuses_the_set() {
    let s = Server::start();
    let mut c = s.conn();
    let mut other = s.conn();
    // Stale entries (leased to their refresher) removed by TCACHE.DEL, DEL, UNLINK.
    for key in ["a", "b", "c"] {
        assert!(c.q(&["TCACHE.SET", key, "old", "100", "TAGS", "t"]).is_ok());
    }
    assert_eq!(c.q(&["TCACHE.STALETAG", "t"]).as_int(), 3);
    for (key, del) in [("a", "TCACHE.DEL"), ("b", "DEL"), ("c", "UNLINK")] {
        let token = stale_token(&fetch(&mut c, key, 60000), "old");
        assert_eq!(other.q(&[del, key]).as_int(), 1);
        assert!(
            set_lease(&mut c, key, "refresh", 100, &token, &[]).is_nil(),
            "{del}"
        );
        assert_eq!(c.q(&["EXISTS", key]).as_int(), 0, "{del}");
    }
    // A stale entry overwritten by another TCACHE.SET, and by a plain SET.
    assert!(c.q(&["TCACHE.SET", "d", "old", "100", "TAGS", "u"]).is_ok());
    assert!(c.q(&["TCACHE.SET", "e", "old", "100", "TAGS", "u"]).is_ok());
    assert_eq!(c.q(&["TCACHE.STALETAG", "u"]).as_int(), 2);
    let td = stale_token(&fetch(&mut c, "d", 60000), "old");
    let te = stale_token(&fetch(&mut c, "e", 60000), "old");
    assert!(other.q(&["TCACHE.SET", "d", "newer", "100"]).is_ok());
    assert!(other.q(&["SET", "e", "plain"]).is_ok());
    assert_eq!(other.q(&["DEL", "e"]).as_int(), 1);
    assert!(set_lease(&mut c, "d", "refresh", 100, &td, &[]).is_nil());
    assert_eq!(get(&mut c, "d").as_deref(), Some(&b"newer"[..]));
    assert!(set_lease(&mut c, "e", "refresh", 100, &te, &[]).is_nil());
    assert_eq!(c.q(&["EXISTS", "e"]).as_int(), 0);
    // A missing key leased, then written by another TCACHE.SET and deleted again.
    let tf = lease_token(&fetch(&mut c, "f", 60000));
    assert!(other.q(&["TCACHE.SET", "f", "newer", "100"]).is_ok());
    assert_eq!(other.q(&["TCACHE.DEL", "f"]).as_int(), 1);
    assert!(set_lease(&mut c, "f", "mine", 100, &tf, &[]).is_nil());
    assert_eq!(c.q(&["EXISTS", "f"]).as_int(), 0);
    assert_eq!(stat(&mut c, "lease_sets_refused"), 6);
    // Each of those keys now hands out a new lease.
    for key in ["a", "b", "c", "e", "f"] {
        lease_token(&fetch(&mut c, key, 60000));
    }
}

#[test]
fn a_lease_token_is_valid_only_for_its_own_key_and_made_up_tokens_are_refused() {
    let s = Server::start();
    let mut c = s.conn();
    let ta = lease_token(&fetch(&mut c, "a", 60000));
    let tb = lease_token(&fetch(&mut c, "b", 60000));
    assert_ne!(ta, tb);
    assert!(set_lease(&mut c, "b", "from-a", 100, &ta, &[]).is_nil());
    assert!(set_lease(&mut c, "nolease", "from-a", 100, &ta, &[]).is_nil());
    for fake in [
        "0123456789abcdef",
        "ffffffffffffffff",
        "0000000000000000",
        "nothex",
        "",
    ] {
        assert!(
            set_lease(&mut c, "b", "fake", 100, fake, &[]).is_nil(),
            "token {fake:?}"
        );
    }
    // Flip one hex digit of the real token.
    let mut near = tb.clone().into_bytes();
    near[15] = if near[15] == b'0' { b'1' } else { b'0' };
    let near = String::from_utf8(near).unwrap();
    assert!(set_lease(&mut c, "b", "near", 100, &near, &[]).is_nil());
    assert_eq!(c.q(&["DBSIZE"]).as_int(), 0, "nothing written");
    // Neither wrong tokens nor the other key's token ended the real leases.
    assert_eq!(fetch(&mut c, "a", 60000), wait_reply());
    assert_eq!(fetch(&mut c, "b", 60000), wait_reply());
    assert!(set_lease(&mut c, "b", "vb", 100, &tb, &[]).is_ok());
    assert!(set_lease(&mut c, "a", "va", 100, &ta, &[]).is_ok());
    assert_eq!(fetch(&mut c, "a", 60000), hit_reply("va"));
    assert_eq!(fetch(&mut c, "b", 60000), hit_reply("vb"));
    // A token works once.
    assert!(set_lease(&mut c, "a", "again", 100, &ta, &[]).is_nil());
    assert_eq!(get(&mut c, "a").as_deref(), Some(&b"va"[..]));
    assert_eq!(stat(&mut c, "lease_sets_refused"), 9);
}

#[test]
fn a_waiter_gets_a_lease_after_the_holders_set_is_refused() {
    let s = Server::start();
    let mut holder = s.conn();
    let mut waiter = s.conn();
    let t1 = lease_token(&fetch(&mut holder, "k", 500));
    send_fetch_wait(&mut waiter, "k", 60000, 30000);
    wait_blocked(&s, 1);
    assert_eq!(holder.q(&["TCACHE.INVALTAG", "t"]).as_int(), 0);
    assert!(set_lease(&mut holder, "k", "old", 100, &t1, &["t"]).is_nil());
    // Nothing was stored: the waiter is not told HIT, it gets its own lease
    // (at the latest when the refused one would have lapsed).
    let t2 = lease_token(&read_soon(&mut waiter, "waiter after the refused SET"));
    assert_ne!(t1, t2);
    assert_eq!(fetch(&mut holder, "k", 60000), wait_reply());
    assert!(set_lease(&mut waiter, "k", "new", 100, &t2, &["t"]).is_ok());
    assert_eq!(fetch(&mut holder, "k", 60000), hit_reply("new"));
    wait_blocked(&s, 0);
}

// ---------------------------------------------------------------------------
// Stale-while-revalidate and STALETAG

#[test]
fn swr_keeps_the_entry_as_stale_then_it_disappears() {
    let s = Server::start();
    let mut c = s.conn();
    // The native expiry covers ttl + swr.
    assert!(c
        .q(&["TCACHE.SET", "long", "v", "100", "SWR", "1000"])
        .is_ok());
    let pttl = c.q(&["PTTL", "long"]).as_int();
    assert!((1_000_000..=1_100_000).contains(&pttl), "PTTL {pttl}");
    let ttl = c.q(&["TTL", "long"]).as_int();
    assert!((1000..=1100).contains(&ttl), "TTL {ttl}");
    assert_eq!(get(&mut c, "long").as_deref(), Some(&b"v"[..]));
    assert_eq!(fetch(&mut c, "long", 1000), hit_reply("v"));

    assert!(c
        .q(&["TCACHE.SET", "k", "old", "1", "SWR", "4", "TAGS", "t"])
        .is_ok());
    let pttl = c.q(&["PTTL", "k"]).as_int();
    assert!(pttl > 1000 && pttl <= 5000, "PTTL {pttl}");
    wait_until(SOON, "k to turn stale", || {
        c.q(&["TCACHE.GET", "k"]).is_nil()
    });
    assert_eq!(
        c.q(&["EXISTS", "k"]).as_int(),
        1,
        "a stale entry stays stored"
    );
    let r = c.q(&["TCACHE.MGET", "k", "long"]);
    assert_eq!(r, Value::Array(vec![Value::Nil, Value::bulk("v")]));
    let token = stale_token(&fetch(&mut c, "k", 60000), "old");
    assert_eq!(fetch(&mut c, "k", 60000), stale_reply("old"));
    assert_eq!(fetch_wait(&mut c, "k", 60000, 30000), stale_reply("old"));
    // The end of the stale window removes the key for real.
    wait_until(SOON, "k to expire", || c.q(&["EXISTS", "k"]).as_int() == 0);
    assert!(c.q(&["TCACHE.GET", "k"]).is_nil());
    assert_eq!(c.q(&["TCACHE.TAGCARD", "t"]).as_int(), 0);
    // It was removed after the refresher's lease was issued.
    assert!(set_lease(&mut c, "k", "late", 100, &token, &[]).is_nil());
    assert_eq!(c.q(&["EXISTS", "k"]).as_int(), 0);
    assert_eq!(stat(&mut c, "stale_served"), 3);
}

#[test]
fn swr_stale_entry_has_one_refresher_among_fifty_concurrent_readers() {
    let s = Server::start();
    let mut admin = s.conn();
    assert!(admin
        .q(&["TCACHE.SET", "page", "v1", "1", "SWR", "600", "TAGS", "p"])
        .is_ok());
    wait_until(SOON, "page to turn stale", || {
        admin.q(&["TCACHE.GET", "page"]).is_nil()
    });
    let n = 50;
    let conns: Vec<Conn> = (0..n).map(|_| s.conn()).collect();
    let (rx, handles) = all_at_once(conns, &["TCACHE.FETCH", "page", "30000", "WAIT", "30000"]);
    // Nobody blocks on a stale entry: every reader is answered without any SET.
    let mut refresher = None;
    let mut others = 0;
    for _ in 0..n {
        let (i, reply) = recv_reply(&rx, "a reader of the stale entry");
        if reply == stale_reply("v1") {
            others += 1;
        } else {
            let token = stale_token(&reply, "v1");
            assert!(
                refresher.is_none(),
                "a second refresher: client {i} got {reply:?}"
            );
            refresher = Some(token);
        }
    }
    let token = refresher.expect("no reader got the refresh token");
    assert_eq!(others, n - 1);
    let conns = join_all(handles);
    assert_eq!(blocked_clients(&s), 0);
    assert_eq!(stat(&mut admin, "stale_served"), n as i64);
    assert_eq!(stat(&mut admin, "leases_granted"), 1);

    assert!(set_lease(&mut admin, "page", "v2", 100, &token, &["p"]).is_ok());
    let (rx, handles) = all_at_once(conns, &["TCACHE.FETCH", "page", "30000", "WAIT", "30000"]);
    for _ in 0..n {
        let (i, reply) = recv_reply(&rx, "a reader after the refresh");
        assert_eq!(reply, hit_reply("v2"), "client {i}");
    }
    join_all(handles);
    assert_eq!(get(&mut admin, "page").as_deref(), Some(&b"v2"[..]));
    assert_eq!(stat(&mut admin, "leases_granted"), 1);
    assert_eq!(stat(&mut admin, "stale_served"), n as i64);
}

#[test]
fn staletag_marks_live_entries_stale_once_and_keeps_their_expiry() {
    let s = Server::start();
    let mut c = s.conn();
    assert!(c.q(&["TCACHE.SET", "a", "1", "100", "TAGS", "t"]).is_ok());
    assert!(c
        .q(&["TCACHE.SET", "b", "2", "100", "TAGS", "t", "u"])
        .is_ok());
    assert!(c.q(&["TCACHE.SET", "c", "3", "100", "TAGS", "u"]).is_ok());
    assert!(c.q(&["TCACHE.SET", "d", "4", "100"]).is_ok());
    assert!(c
        .q(&["TCACHE.SET", "e", "5", "1", "SWR", "600", "TAGS", "w"])
        .is_ok());
    let pttl_before = c.q(&["PTTL", "a"]).as_int();

    assert_eq!(c.q(&["TCACHE.STALETAG", "t"]).as_int(), 2);
    assert_eq!(c.q(&["TCACHE.STALETAG", "t"]).as_int(), 0, "already stale");
    assert_eq!(c.q(&["TCACHE.STALETAG", "t", "u", "nosuchtag"]).as_int(), 1);
    assert_eq!(c.q(&["TCACHE.STALETAG", "nosuchtag"]).as_int(), 0);
    // An entry past its SWR ttl is already stale too.
    wait_until(SOON, "e to turn stale", || {
        c.q(&["TCACHE.GET", "e"]).is_nil()
    });
    assert_eq!(c.q(&["TCACHE.STALETAG", "w"]).as_int(), 0);

    let r = c.q(&["TCACHE.MGET", "a", "b", "c", "d"]);
    assert_eq!(
        r,
        Value::Array(vec![Value::Nil, Value::Nil, Value::Nil, Value::bulk("4")])
    );
    assert_eq!(c.q(&["DBSIZE"]).as_int(), 5, "stale entries stay stored");
    let pttl_after = c.q(&["PTTL", "a"]).as_int();
    assert!(
        pttl_after > 0 && pttl_after <= pttl_before && pttl_after > 50_000,
        "the native expiry is kept: {pttl_before} -> {pttl_after}"
    );
    assert_eq!(
        common::tc::tags_of(&mut c, b"b"),
        Some(vec![b"t".to_vec(), b"u".to_vec()])
    );
    assert_eq!(c.q(&["TCACHE.TAGCARD", "t"]).as_int(), 2);
    common::tc::assert_verified(&mut c);

    let token = stale_token(&fetch(&mut c, "a", 60000), "1");
    assert_eq!(fetch(&mut c, "a", 60000), stale_reply("1"));
    assert_eq!(fetch(&mut c, "d", 60000), hit_reply("4"));
    assert!(set_lease(&mut c, "a", "1b", 100, &token, &["t"]).is_ok());
    assert_eq!(fetch(&mut c, "a", 60000), hit_reply("1b"));
    assert_eq!(get(&mut c, "a").as_deref(), Some(&b"1b"[..]));
    // Refreshed, it is live again and can be marked again.
    assert_eq!(c.q(&["TCACHE.STALETAG", "t"]).as_int(), 1);
    assert!(c.q(&["TCACHE.GET", "a"]).is_nil());
    // INVALTAG still deletes stale entries.
    assert_eq!(c.q(&["TCACHE.INVALTAG", "u"]).as_int(), 2);
    assert_eq!(c.q(&["EXISTS", "b", "c"]).as_int(), 0);
}

#[test]
fn stale_marks_survive_debug_reload_and_restart_but_leases_do_not() {
    let s0 = Server::start();
    let mut s = s0;
    let mut c = s.conn();
    assert!(c
        .q(&["TCACHE.SET", "soft", "s", "1000", "TAGS", "t"])
        .is_ok());
    assert!(c
        .q(&["TCACHE.SET", "fresh", "f", "1000", "TAGS", "other"])
        .is_ok());
    assert!(c.q(&["TCACHE.SET", "swr", "w", "1", "SWR", "1000"]).is_ok());
    assert_eq!(c.q(&["TCACHE.STALETAG", "t"]).as_int(), 1);
    wait_until(SOON, "swr to turn stale", || {
        c.q(&["TCACHE.GET", "swr"]).is_nil()
    });
    let leased = lease_token(&fetch(&mut c, "missing", 600_000));

    let check = |c: &mut Conn, when: &str| {
        assert!(c.q(&["TCACHE.GET", "soft"]).is_nil(), "{when}");
        assert!(c.q(&["TCACHE.GET", "swr"]).is_nil(), "{when}");
        assert_eq!(get(c, "fresh").as_deref(), Some(&b"f"[..]), "{when}");
        assert_eq!(
            c.q(&["EXISTS", "soft", "swr", "fresh"]).as_int(),
            3,
            "{when}"
        );
        let pttl = c.q(&["PTTL", "soft"]).as_int();
        assert!(pttl > 900_000, "{when}: PTTL soft {pttl}");
        let pttl = c.q(&["PTTL", "swr"]).as_int();
        assert!(pttl > 900_000, "{when}: PTTL swr {pttl}");
        // Stale, with one refresher.
        stale_token(&fetch(c, "soft", 600_000), "s");
        assert_eq!(fetch(c, "soft", 600_000), stale_reply("s"), "{when}");
        stale_token(&fetch(c, "swr", 600_000), "w");
        assert_eq!(fetch(c, "swr", 600_000), stale_reply("w"), "{when}");
        assert_eq!(
            c.q(&["TCACHE.STALETAG", "t"]).as_int(),
            0,
            "{when}: still stale"
        );
        common::tc::assert_verified(c);
    };

    assert!(c.q(&["DEBUG", "RELOAD"]).is_ok());
    check(&mut c, "after DEBUG RELOAD");

    assert!(c.q(&["SAVE"]).is_ok());
    drop(c);
    s.restart();
    let mut c = s.conn();
    check(&mut c, "after restart");
    // Leases were not persisted: a new lease, and the old token writes nothing.
    let fresh = lease_token(&fetch(&mut c, "missing", 60000));
    assert_ne!(fresh, leased);
    assert!(set_lease(&mut c, "missing", "x", 100, &leased, &[]).is_nil());
    assert!(set_lease(&mut c, "missing", "y", 100, &fresh, &[]).is_ok());
    assert_eq!(get(&mut c, "missing").as_deref(), Some(&b"y"[..]));
}

#[test]
fn stale_marks_reach_replicas_by_full_sync_and_by_the_stream() {
    let p = Server::start();
    let mut pc = p.conn();
    // Marked before the replica exists: travels in the full sync.
    assert!(pc
        .q(&["TCACHE.SET", "before", "b", "1000", "TAGS", "t1"])
        .is_ok());
    assert_eq!(pc.q(&["TCACHE.STALETAG", "t1"]).as_int(), 1);
    let r = Server::replica_of(&p);
    wait_for_sync(&r);
    let mut rc = r.conn();
    // Marked afterwards: travels in the replication stream.
    assert!(pc
        .q(&["TCACHE.SET", "after", "a", "1000", "TAGS", "t2"])
        .is_ok());
    assert!(pc
        .q(&["TCACHE.SET", "fresh", "f", "1000", "TAGS", "t3"])
        .is_ok());
    assert!(pc
        .q(&["TCACHE.SET", "swr", "w", "1", "SWR", "1000"])
        .is_ok());
    assert_eq!(pc.q(&["TCACHE.STALETAG", "t2"]).as_int(), 1);
    assert_eq!(pc.q(&["WAIT", "1", "10000"]).as_int(), 1);
    wait_until(SOON, "fresh on the replica", || {
        get(&mut rc, "fresh").is_some()
    });
    wait_until(SOON, "swr to turn stale on the replica", || {
        rc.q(&["TCACHE.GET", "swr"]).is_nil()
    });
    for key in ["before", "after", "swr"] {
        assert!(rc.q(&["TCACHE.GET", key]).is_nil(), "{key} on the replica");
        assert_eq!(
            rc.q(&["EXISTS", key]).as_int(),
            1,
            "{key} stays stored on the replica"
        );
        let pttl = rc.q(&["PTTL", key]).as_int();
        assert!(pttl > 900_000, "{key} PTTL on the replica: {pttl}");
    }
    assert_eq!(get(&mut rc, "fresh").as_deref(), Some(&b"f"[..]));
    common::tc::assert_verified(&mut rc);

    // The primary's refresher stores the new value; the replica serves it.
    let token = stale_token(&fetch(&mut pc, "after", 60000), "a");
    assert!(set_lease(&mut pc, "after", "a2", 1000, &token, &["t2"]).is_ok());
    assert_eq!(pc.q(&["WAIT", "1", "10000"]).as_int(), 1);
    wait_until(SOON, "the refreshed value on the replica", || {
        get(&mut rc, "after").as_deref() == Some(&b"a2"[..])
    });
}

// ---------------------------------------------------------------------------
// Counters

#[test]
fn stats_count_leases_refusals_waits_timeouts_and_stale_serves() {
    let s = Server::start();
    let mut c = s.conn();
    let mut c3 = s.conn3();
    let names = [
        "leases_granted",
        "lease_sets_refused",
        "waits",
        "wait_timeouts",
        "stale_served",
    ];
    let all = |c: &mut Conn| -> Vec<i64> { names.iter().map(|n| stat(c, n)).collect() };
    assert_eq!(all(&mut c), vec![0, 0, 0, 0, 0]);

    let token = lease_token(&fetch(&mut c, "k", 60000));
    assert_eq!(fetch(&mut c3, "k", 60000), wait_reply());
    assert_eq!(fetch_wait(&mut c3, "k", 60000, 50), wait_reply());
    assert!(set_lease(&mut c, "k", "v", 100, "0123456789abcdef", &[]).is_nil());
    assert!(set_lease(&mut c, "k", "v", 100, &token, &[]).is_ok());
    assert_eq!(fetch(&mut c, "k", 60000), hit_reply("v"));
    assert_eq!(all(&mut c), vec![1, 1, 2, 1, 0]);
    assert_eq!(all(&mut c3), vec![1, 1, 2, 1, 0], "RESP3 map");

    assert!(c.q(&["TCACHE.SET", "s", "x", "100", "TAGS", "t"]).is_ok());
    assert_eq!(c.q(&["TCACHE.STALETAG", "t"]).as_int(), 1);
    let st = stale_token(&fetch(&mut c, "s", 60000), "x");
    assert_eq!(fetch(&mut c3, "s", 60000), stale_reply("x"));
    assert!(set_lease(&mut c, "s", "y", 100, &st, &[]).is_ok());
    assert_eq!(stat(&mut c, "stale_served"), 2);
    assert_eq!(stat(&mut c, "leases_granted"), 2);
    assert_eq!(stat(&mut c, "lease_sets_refused"), 1);

    let t3 = lease_token(&fetch(&mut c, "gone", 60000));
    assert_eq!(c.q(&["TCACHE.INVALPREFIX", "go"]).as_int(), 0);
    assert!(set_lease(&mut c, "gone", "v", 100, &t3, &[]).is_nil());
    for conn in [&mut c, &mut c3] {
        assert_eq!(stat(conn, "leases_granted"), 3);
        assert_eq!(stat(conn, "lease_sets_refused"), 2);
        assert_eq!(stat(conn, "wait_timeouts"), 1);
        assert_eq!(stat(conn, "stale_served"), 2);
    }
    // The same figures in INFO, for exporters.
    let info = s.info("tcache");
    for (name, want) in [
        ("leases_granted", "3"),
        ("lease_sets_refused", "2"),
        ("wait_timeouts", "1"),
        ("stale_served", "2"),
    ] {
        assert_eq!(
            info_value(&info, &format!("tcache_{name}")).as_deref(),
            Some(want),
            "INFO tcache {name}"
        );
    }
    assert!(c.q(&["TCACHE.STATS", "RESET"]).is_ok());
    assert_eq!(all(&mut c3), vec![0, 0, 0, 0, 0]);
}

#[test]
fn tcache_del_of_a_key_without_value_still_revokes_its_lease() {
    let s = Server::start();
    let mut c = s.conn();
    let token = lease_token(&fetch(&mut c, "a", 60_000));
    assert_eq!(c.q(&["TCACHE.DEL", "a"]).as_int(), 0);
    assert!(set_lease(&mut c, "a", "old", 100, &token, &[]).is_nil());
    assert!(c.q(&["TCACHE.GET", "a"]).is_nil());
    let fresh = lease_token(&fetch(&mut c, "a", 60_000));
    assert_ne!(fresh, token);
}

#[test]
fn staletag_after_a_refresh_lease_refuses_the_refreshers_set() {
    let s = Server::start();
    let mut c = s.conn();
    tc::set(&mut c, "r", "v1", 100, &["t"]);
    assert_eq!(c.q(&["TCACHE.STALETAG", "t"]).as_int(), 1);
    let token = stale_token(&fetch(&mut c, "r", 60_000), "v1");
    // A second change of the data behind tag t while the refresher computes.
    assert_eq!(c.q(&["TCACHE.STALETAG", "t"]).as_int(), 0, "already stale");
    assert!(set_lease(&mut c, "r", "v2-from-old-read", 100, &token, &["t"]).is_nil());
    assert_eq!(fetch(&mut c, "r", 60_000).as_array()[0], simple("STALE"));
}

#[test]
fn a_refused_lease_write_hands_the_lease_to_the_oldest_waiter_at_once() {
    let s = Server::start();
    let mut holder = s.conn();
    let mut waiter = s.conn();
    let mut other = s.conn();
    let t1 = lease_token(&fetch(&mut holder, "k", 60_000));
    // The waiter would otherwise sleep for its whole minute.
    send_fetch_wait(&mut waiter, "k", 60_000, 60_000);
    wait_until(SOON, "the waiter to block", || {
        info_value(&s.info("clients"), "blocked_clients").as_deref() == Some("1")
    });
    assert_eq!(other.q(&["TCACHE.INVALTAG", "t1"]).as_int(), 0);
    assert!(set_lease(&mut holder, "k", "old", 100, &t1, &["t1"]).is_nil());
    let handed = waiter
        .read_with_timeout(SOON)
        .unwrap_or_else(|| panic!("the waiter was not woken when the lease write was refused"));
    let t2 = lease_token(&handed);
    assert_ne!(t1, t2);
    // The new holder's write goes through; a newcomer now waits on it.
    assert_eq!(fetch(&mut other, "k", 60_000), wait_reply());
    assert!(set_lease(&mut waiter, "k", "new", 100, &t2, &["t1"]).is_ok());
    assert_eq!(get(&mut other, "k").as_deref(), Some(&b"new"[..]));
}
