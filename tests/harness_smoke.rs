//! Tests of the test harness itself (tests/common) against the plain server,
//! without the module: they must pass whatever state the module is in.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;

fn plain() -> ServerBuilder {
    Server::builder().no_module()
}

#[test]
fn ping_binary_values_pipelining_and_errors() {
    let server = plain().start();
    let expected_kind = if server_binary().to_string_lossy().contains("valkey") {
        "valkey"
    } else {
        "redis"
    };
    assert_eq!(server.kind(), expected_kind, "version {}", server.version());
    eprintln!(
        "harness_smoke: {} {} on port {} in {}",
        server.kind(),
        server.version(),
        server.port,
        server.dir.display()
    );

    let mut c = server.conn();
    assert_eq!(c.q(&["PING"]), Value::Simple("PONG".into()));

    // Binary-safe keys and values, including NUL, 0xff and CRLF.
    let key: &[u8] = b"k\x00\xff\r\n";
    let val: Vec<u8> = (0..=255u8).chain([0, 0xff, b'\r', b'\n']).collect();
    assert!(c.cmd(&[b"SET", key, &val]).is_ok());
    assert_eq!(c.cmd(&[b"GET", key]).as_bytes(), &val[..]);
    assert!(c.q(&["GET", "missing"]).is_nil());

    // A large bulk reply (arrives in many TCP reads).
    let big: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    assert!(c.cmd(&[b"SET", b"big", &big]).is_ok());
    assert_eq!(c.q(&["STRLEN", "big"]).as_int(), big.len() as i64);
    let got = c.q(&["GET", "big"]);
    assert!(got.as_bytes() == big.as_slice(), "big value differs");

    // Pipelining: send everything, then read the replies in order.
    for _ in 0..1000 {
        c.send_q(&["INCR", "counter"]);
    }
    for i in 1..=1000 {
        assert_eq!(c.read().as_int(), i);
    }

    // Arrays, owned args, and errors returned as values.
    assert_eq!(
        c.cmdv(&["RPUSH".to_string(), "l".into(), "a".into(), "b".into()])
            .as_int(),
        2
    );
    let items = c.q(&["LRANGE", "l", "0", "-1"]);
    assert_eq!(items.as_array(), &[Value::bulk("a"), Value::bulk("b")]);
    assert!(c.q(&["NO-SUCH-COMMAND"]).is_error_starting("ERR"));
    assert!(c.q(&["GET", "l"]).is_error_starting("WRONGTYPE"));
    assert_eq!(
        c.q(&["PING"]),
        Value::Simple("PONG".into()),
        "conn still usable"
    );
}

#[test]
fn resp3_hello_and_every_reply_type() {
    let server = plain().start();
    let mut c = server.conn();
    let hello = c.q(&["HELLO", "3"]);
    assert!(matches!(hello, Value::Map(_)), "{hello:?}");
    assert_eq!(hello.field("proto"), Some(&Value::Int(3)));
    assert!(hello.field("version").is_some());

    // DEBUG PROTOCOL emits each RESP3 type (enable-debug-command is on by default).
    let mut p = |t: &str| c.q(&["DEBUG", "PROTOCOL", t]);
    assert_eq!(p("string"), Value::bulk("Hello World"));
    assert_eq!(p("integer"), Value::Int(12345));
    let double = p("double");
    assert!(matches!(double, Value::Double(_)), "{double:?}");
    assert_eq!(
        (double.as_f64() * 1000.0).round() as i64,
        3141,
        "{double:?}"
    );
    assert!(p("bignum").as_str().starts_with("1234567999999999999999"));
    assert!(p("null").is_nil());
    assert_eq!(p("array").as_array().len(), 3);
    assert!(matches!(p("set"), Value::Set(s) if s.len() == 3));
    assert!(matches!(p("map"), Value::Map(m) if m.len() == 3));
    assert_eq!(p("true"), Value::Bool(true));
    assert_eq!(p("false"), Value::Bool(false));
    assert_eq!(p("verbatim").as_str(), "This is a verbatim\nstring");
    // The attribute is kept aside; the reply is what follows it.
    assert_eq!(
        p("attrib"),
        Value::bulk("Some real reply following the attribute")
    );
    assert!(c.last_attribute.is_some());
    // The push message comes before the real reply (redis) or after it (valkey).
    let (reply, mut pushes) = c.cmd_collect_push(&[b"DEBUG", b"PROTOCOL", b"push"]);
    assert!(reply.as_str().contains("following the push"), "{reply:?}");
    if pushes.is_empty() {
        pushes.push(c.read());
    }
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0].as_array()[1], Value::Int(42), "{pushes:?}");
    // RESP3 INFO is a verbatim string.
    assert!(c.q(&["INFO", "server"]).as_str().contains("process_id:"));
}

#[test]
fn blocked_client_and_read_with_timeout() {
    let server = plain().start();
    let mut waiter = server.conn();
    let mut pusher = server.conn();
    waiter.send_q(&["BLPOP", "queue", "0"]);
    assert_eq!(waiter.read_with_timeout(Duration::from_millis(100)), None);
    wait_until(Duration::from_secs(5), "BLPOP to block", || {
        server.info_field("clients", "blocked_clients") == Some("1".into())
    });
    assert_eq!(pusher.q(&["LPUSH", "queue", "job"]).as_int(), 1);
    let got = waiter.read_with_timeout(Duration::from_secs(5));
    assert_eq!(
        got,
        Some(Value::Array(vec![Value::bulk("queue"), Value::bulk("job")]))
    );
}

#[test]
fn restart_keeps_data_after_save_and_with_aof() {
    let mut server = plain().start();
    let port = server.port;
    let mut c = server.conn();
    assert!(c.q(&["SET", "persisted", "yes"]).is_ok());
    assert!(c.q(&["SAVE"]).is_ok());
    assert!(c.q(&["SET", "unsaved", "lost"]).is_ok());
    server.restart();
    assert_eq!(server.port, port);
    let mut c = server.conn();
    assert_eq!(c.q(&["GET", "persisted"]), Value::bulk("yes"));
    assert!(
        c.q(&["GET", "unsaved"]).is_nil(),
        "SHUTDOWN NOSAVE must not save"
    );

    // appendfsync always: with everysec a write may still be in memory when
    // the reply is sent, and SIGKILL below would lose it.
    let mut aof = plain()
        .arg("appendonly", "yes")
        .arg("appendfsync", "always")
        .start();
    let mut c = aof.conn();
    assert_eq!(
        c.q(&["CONFIG", "GET", "appendonly"]).field("appendonly"),
        Some(&Value::bulk("yes"))
    );
    assert!(c.q(&["SET", "a", "1"]).is_ok());
    assert_eq!(c.q(&["INCR", "a"]).as_int(), 2);
    aof.kill(); // a crash: only the AOF can bring the data back
    aof.restart();
    assert_eq!(aof.conn().q(&["GET", "a"]), Value::bulk("2"));
}

#[test]
fn replica_syncs_after_wait() {
    let primary = plain().start();
    let replica = Server::replica_of(&primary);
    wait_for_sync(&replica);
    assert_eq!(
        replica.info_field("replication", "role").as_deref(),
        Some("slave")
    );

    let mut p = primary.conn();
    assert!(p.q(&["SET", "replicated", "value\x00"]).is_ok());
    assert_eq!(p.q(&["WAIT", "1", "5000"]).as_int(), 1);
    let mut r = replica.conn();
    assert_eq!(r.q(&["GET", "replicated"]), Value::bulk("value\x00"));
    assert!(r.q(&["SET", "x", "1"]).is_error_starting("READONLY"));
}

#[test]
fn taken_port_falls_back_to_a_free_one() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().port();
    let start = Instant::now();
    let server = plain().port(taken).start();
    assert_ne!(server.port, taken);
    assert_eq!(server.conn().q(&["PING"]), Value::Simple("PONG".into()));
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
#[should_panic(expected = "not found")]
fn missing_module_is_a_clear_error() {
    let _ = Server::builder()
        .module("/nonexistent/libtcache.so")
        .start();
}
