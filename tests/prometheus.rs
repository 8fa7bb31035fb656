//! contrib/prometheus/tcache.lua with the real prometheus-redis-exporter:
//! every `tcache_*` field of `INFO tcache` (sections tcache_stats and
//! tcache_gates) comes out of the exporter's /metrics as
//! `redis_script_values{key="<field>"}` with the value INFO gives.
//!
//! The exporter binary is `$TCACHE_REDIS_EXPORTER` or
//! `/usr/bin/prometheus-redis-exporter` (`make deps` installs it).

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tc::{ok, set, stat, wait_reclaimed};
use common::*;

/// The metric the exporter makes of the script's reply (namespace `redis`).
const METRIC: &str = "redis_script_values";
/// How long the exporter may take to serve its first successful scrape.
const EXPORTER_START: Duration = Duration::from_secs(20);

const REPORT: &str = r#"{"type":"object","required":["risk_score"],"properties":{"risk_score":{"type":"number","exclusiveMinimum":0}}}"#;
const NUMS: &str = r#"{"type":"array","items":{"type":"number"}}"#;

/// The fields of section tcache_stats the manual documents; the test also
/// checks every other field INFO prints, these must at least be there.
const STATS_FIELDS: [&str; 21] = [
    "tcache_hits",
    "tcache_misses",
    "tcache_hit_rate",
    "tcache_sets",
    "tcache_gate_rejections",
    "tcache_invalidations",
    "tcache_invalidated_entries",
    "tcache_entries",
    "tcache_tags",
    "tcache_perm_hits",
    "tcache_perm_misses",
    "tcache_leases_granted",
    "tcache_lease_sets_refused",
    "tcache_waits",
    "tcache_wait_timeouts",
    "tcache_stale_served",
    "tcache_index_bytes",
    "tcache_reclaim_pending",
    "tcache_reclaimed",
    "tcache_reclaim_slices",
    "tcache_reclaim_slice_max_us",
];

fn exporter_binary() -> PathBuf {
    match std::env::var_os("TCACHE_REDIS_EXPORTER") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("/usr/bin/prometheus-redis-exporter"),
    }
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus/tcache.lua")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot pick a free port")
}

/// A running exporter, killed on drop (also when the test panics).
struct Exporter {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Exporter {
    /// Starts the exporter on a free loopback port, scraping `server` with
    /// the tcache script, and waits until a scrape reaches the server.
    fn start(server: &Server) -> Exporter {
        let binary = exporter_binary();
        assert!(
            binary.exists(),
            "{} not found: run `make deps` (Debian package prometheus-redis-exporter) \
             or set TCACHE_REDIS_EXPORTER",
            binary.display()
        );
        let script = script_path();
        assert!(script.exists(), "{} is missing", script.display());
        let log = server.dir.join("exporter.log");
        // The port is picked free then handed over, so another process may
        // take it meanwhile: the exporter then exits at once; try another.
        for _attempt in 0..5 {
            let port = free_port();
            let out = File::create(&log).expect("create exporter.log");
            let child = Command::new(&binary)
                .arg("-redis.addr")
                .arg(format!("redis://127.0.0.1:{}", server.port))
                .arg("-web.listen-address")
                .arg(format!("127.0.0.1:{port}"))
                .arg("-script")
                .arg(&script)
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("dup exporter.log"))
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", binary.display()));
            let mut exporter = Exporter {
                child,
                port,
                log: log.clone(),
            };
            let deadline = Instant::now() + EXPORTER_START;
            loop {
                if let Ok(Some(status)) = exporter.child.try_wait() {
                    let text = exporter.log_text();
                    if text.contains("address already in use") {
                        break;
                    }
                    panic!("the exporter exited ({status}) during start-up:\n{text}");
                }
                if let Some(body) = exporter.try_scrape() {
                    if body.lines().any(|l| l == "redis_up 1") {
                        return exporter;
                    }
                }
                if Instant::now() >= deadline {
                    panic!(
                        "the exporter on port {port} did not report redis_up 1 within \
                         {EXPORTER_START:?}\n--- exporter log ---\n{}",
                        exporter.log_text()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("could not start the exporter on a free port");
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET /metrics over plain HTTP/1.0: the body of a 200 reply, else None.
    fn try_scrape(&self) -> Option<String> {
        let addr = ([127, 0, 0, 1], self.port).into();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n")
            .ok()?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).ok()?;
        let reply = String::from_utf8(reply).ok()?;
        let (head, body) = reply.split_once("\r\n\r\n")?;
        let status = head.lines().next()?;
        status
            .split_whitespace()
            .nth(1)
            .is_some_and(|code| code == "200")
            .then(|| body.to_string())
    }

    #[track_caller]
    fn scrape(&self) -> String {
        self.try_scrape().unwrap_or_else(|| {
            panic!(
                "GET /metrics on port {} failed\n--- exporter log ---\n{}",
                self.port,
                self.log_text()
            )
        })
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- exporter log ---\n{}", self.log_text());
        }
    }
}

/// `redis_script_values{key="..."} value` lines of a scrape: key -> value.
fn script_values(body: &str) -> BTreeMap<String, f64> {
    let prefix = format!("{METRIC}{{key=\"");
    body.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (key, value) = rest.split_once("\"} ")?;
            let value: f64 = value
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("metric line {l:?}: {e}"));
            Some((key.to_string(), value))
        })
        .collect()
}

/// The `INFO tcache` fields whose value is a word, not a number: the script
/// leaves them out (the exporter would fail the scrape on them).
const TEXT_FIELDS: &[&str] = &["tcache_cluster_invalidation"];

/// What the metrics must be, read from `INFO tcache` independently of the
/// script: every `tcache_*` field; a dict field (`tcache_gate_<g>:checked=1,
/// rejected=0`) as one name per entry (`tcache_gate_<g>_checked`); the `%`
/// of `tcache_hit_rate` dropped.
fn expected_from_info(info: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some((name, value)) = line.trim_end().split_once(':') else {
            continue;
        };
        if !name.starts_with("tcache_") || TEXT_FIELDS.contains(&name) {
            continue;
        }
        let number = |name: &str, v: &str| -> f64 {
            v.trim_end_matches('%')
                .parse()
                .unwrap_or_else(|e| panic!("INFO tcache field {name}:{v} is not a number: {e}"))
        };
        if value.contains('=') {
            for part in value.split(',') {
                let (sub, v) = part.split_once('=').expect("dict entry name=value");
                let key = format!("{name}_{sub}");
                out.insert(key.clone(), number(&key, v));
            }
        } else {
            out.insert(name.to_string(), number(name, value));
        }
    }
    out
}

fn info_tcache(c: &mut Conn) -> String {
    String::from_utf8_lossy(c.q(&["INFO", "tcache"]).as_bytes()).into_owned()
}

#[track_caller]
fn assert_metric(got: &BTreeMap<String, f64>, key: &str, want: f64) {
    match got.get(key) {
        Some(v) => assert_eq!(*v, want, "metric {METRIC}{{key=\"{key}\"}}"),
        None => panic!("no metric {METRIC}{{key=\"{key}\"}}; the script gave {got:?}"),
    }
}

/// The scraped tcache metrics are exactly the fields of INFO tcache.
#[track_caller]
fn assert_matches_info(got: &BTreeMap<String, f64>, info: &str) {
    let want = expected_from_info(info);
    for field in STATS_FIELDS {
        assert!(
            want.contains_key(field),
            "INFO tcache has no {field}:\n{info}"
        );
    }
    assert_eq!(
        got, &want,
        "scraped {METRIC} differ from INFO tcache:\n{info}"
    );
}

#[test]
fn exporter_exports_every_tcache_info_field() {
    let server = Server::start();
    let mut c = server.conn();

    // Two gates, one bound to a prefix; a name with a dot, as INFO keeps it.
    ok(
        c.q(&["TCACHE.GATE.SET", "report", REPORT, "PREFIX", "report:"]),
        "GATE.SET report",
    );
    ok(
        c.q(&["TCACHE.GATE.SET", "user.profile", NUMS]),
        "GATE.SET user.profile",
    );
    for (key, value) in [
        ("report:1", r#"{"risk_score":7}"#),
        ("report:2", r#"{"risk_score":3}"#),
    ] {
        let store = format!("store:{}", &key[7..]);
        ok(
            c.q(&["TCACHE.SET", key, value, "900", "TAGS", &store, "reports"]),
            key,
        );
    }
    for bad in [r#"{"risk_score":0}"#, "not json"] {
        let r = c.q(&["TCACHE.SET", "report:1", bad, "900"]);
        assert!(r.is_error_starting("GATE report"), "{bad} -> {r:?}");
    }
    ok(
        c.q(&[
            "TCACHE.SET",
            "u:1",
            "[1,2]",
            "900",
            "GATE",
            "user.profile",
            "TAGS",
            "users",
        ]),
        "TCACHE.SET u:1",
    );
    let r = c.q(&[
        "TCACHE.SET",
        "u:2",
        r#"["x"]"#,
        "900",
        "GATE",
        "user.profile",
    ]);
    assert!(r.is_error_starting("GATE user.profile"), "{r:?}");

    // 3 hits, 2 misses.
    for key in ["report:1", "report:2", "u:1", "missing:1", "missing:2"] {
        c.q(&["TCACHE.GET", key]);
    }
    // One synchronous invalidation, then a logical one and its reclaim.
    assert_eq!(c.q(&["TCACHE.INVALTAG", "store:2"]).as_int(), 1);
    ok(
        c.q(&["CONFIG", "SET", "tcache.inval-sync-max", "0"]),
        "CONFIG SET",
    );
    assert_eq!(c.q(&["TCACHE.INVALTAG", "users"]).as_int(), 1);
    wait_reclaimed(&mut c);
    // A lease, and a second caller told to wait; a permission miss.
    assert_eq!(
        c.q(&["TCACHE.FETCH", "f:1", "60000"]).as_array()[0].as_str(),
        "LEASE"
    );
    assert_eq!(
        c.q(&["TCACHE.FETCH", "f:1", "60000"]).as_array()[0].as_str(),
        "WAIT"
    );
    assert!(c.q(&["PERM.CHECK", "perm:1", "read"]).is_nil());

    let exporter = Exporter::start(&server);
    let body = exporter.scrape();
    assert!(
        body.lines()
            .any(|l| l == "redis_exporter_last_scrape_error{err=\"\"} 0"),
        "the scrape reported an error:\n{}",
        body.lines()
            .filter(|l| l.contains("scrape_error"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let got = script_values(&body);
    let info = info_tcache(&mut c);
    assert_matches_info(&got, &info);

    // Values known from what this test did (independently of INFO).
    let hits = stat(&mut c, "hits") as f64;
    let misses = stat(&mut c, "misses") as f64;
    assert_metric(&got, "tcache_hits", 3.0);
    assert_metric(&got, "tcache_misses", misses);
    assert!(misses >= 2.0, "misses {misses}");
    let rate = hits * 100.0 / (hits + misses);
    assert!(
        (got["tcache_hit_rate"] - rate).abs() <= 0.0051,
        "tcache_hit_rate {} for {hits} hits, {misses} misses",
        got["tcache_hit_rate"]
    );
    assert_metric(&got, "tcache_sets", 3.0);
    assert_metric(&got, "tcache_gate_rejections", 3.0);
    assert_metric(&got, "tcache_gate_report_checked", 4.0);
    assert_metric(&got, "tcache_gate_report_rejected", 2.0);
    assert_metric(&got, "tcache_gate_user.profile_checked", 2.0);
    assert_metric(&got, "tcache_gate_user.profile_rejected", 1.0);
    assert_metric(&got, "tcache_invalidations", 2.0);
    assert_metric(&got, "tcache_invalidated_entries", 2.0);
    assert_metric(&got, "tcache_entries", 1.0);
    assert_metric(&got, "tcache_tags", 2.0);
    assert_metric(&got, "tcache_reclaimed", 1.0);
    assert_metric(&got, "tcache_reclaim_pending", 0.0);
    assert_metric(&got, "tcache_leases_granted", 1.0);
    assert_metric(&got, "tcache_waits", 1.0);
    assert_metric(&got, "tcache_perm_misses", 1.0);
    assert!(got["tcache_reclaim_slices"] >= 1.0, "{got:?}");
    assert!(got["tcache_index_bytes"] > 0.0, "{got:?}");

    // Every scrape reads the live figures: more hits, a reset gate.
    for _ in 0..5 {
        c.q(&["TCACHE.GET", "report:1"]);
    }
    ok(
        c.q(&["TCACHE.GATE.SET", "report", REPORT, "PREFIX", "report:"]),
        "GATE.SET report again",
    );
    let got = script_values(&exporter.scrape());
    assert_matches_info(&got, &info_tcache(&mut c));
    assert_metric(&got, "tcache_hits", 8.0);
    assert_metric(&got, "tcache_gate_report_checked", 0.0);
    assert_metric(&got, "tcache_gate_user.profile_checked", 2.0);
}

/// The script declares itself read-only and `allow-stale`, so a replica
/// whose primary is gone (with `replica-serve-stale-data no`, where a plain
/// EVAL is refused with MASTERDOWN) still has its tcache metrics scraped.
#[test]
fn exporter_scrapes_a_stale_replica() {
    let server = Server::start();
    let mut c = server.conn();
    set(&mut c, "k", "v", 900, &["t"]);
    // A "primary" that accepts the connection into its backlog and never
    // answers: the link stays down, and no other test's server (which could
    // pick a port that was free a moment ago) can become this one's primary.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind a silent primary");
    let gone = silent
        .local_addr()
        .expect("silent primary port")
        .port()
        .to_string();
    ok(
        c.q(&["CONFIG", "SET", "replica-serve-stale-data", "no"]),
        "CONFIG SET",
    );
    ok(c.q(&["REPLICAOF", "127.0.0.1", &gone]), "REPLICAOF");
    let plain = c.q(&["EVAL", "return redis.call('INFO','tcache')", "0"]);
    assert!(plain.is_error_starting("MASTERDOWN"), "{plain:?}");

    let exporter = Exporter::start(&server);
    let got = script_values(&exporter.scrape());
    assert_matches_info(&got, &info_tcache(&mut c));
    assert_metric(&got, "tcache_entries", 1.0);
    assert_metric(&got, "tcache_sets", 1.0);
    let link = server.info_field("replication", "master_link_status");
    assert_eq!(
        link.as_deref(),
        Some("down"),
        "the replica must still be stale"
    );
    drop(silent);
}
