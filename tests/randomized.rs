//! Thousands of mixed operations from several clients at once; after each batch
//! TCACHE.VERIFY is OK and every tag holds exactly the entries that carry it.
//! Run twice: with the default config, and with `tcache.inval-sync-max 0`, so
//! that every invalidation is logical (tombstones, dead entries hidden at once,
//! the reclaimer deleting them between batches and during the comparison).

mod common;

use std::collections::BTreeMap;
use std::thread;

use common::tc::{assert_verified, tags_of, tagscan_all};
use common::*;

const CLIENTS: usize = 4;
const BATCHES: usize = 10;
const OPS_PER_CLIENT: usize = 500;
const KEYS: u64 = 60;
const TAGS: u64 = 8;

/// xorshift64*: deterministic per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn key(r: &mut Rng) -> String {
    let prefix = ["a:", "b:", "c:"][r.below(3) as usize];
    format!("{prefix}{}", r.below(KEYS))
}

fn tag(r: &mut Rng) -> String {
    format!("t{}", r.below(TAGS))
}

fn one_op(c: &mut Conn, r: &mut Rng) {
    let k = key(r);
    let reply = match r.below(14) {
        0..=4 => {
            let ttl = (1 + r.below(3) * 100).to_string();
            let mut args = vec![
                "TCACHE.SET".to_string(),
                k,
                "v".repeat(1 + r.below(50) as usize),
                ttl,
            ];
            if r.below(5) == 0 {
                args.push(if r.below(2) == 0 { "NX" } else { "XX" }.to_string());
            }
            let n = r.below(4);
            if n > 0 {
                args.push("TAGS".into());
                for _ in 0..n {
                    args.push(tag(r));
                }
            }
            c.cmdv(&args)
        }
        5 => c.q(&["DEL", &k]),
        6 => c.q(&["UNLINK", &k]),
        7 => c.q(&["TCACHE.DEL", &k, &key(r)]),
        8 => c.q(&["TCACHE.INVALTAG", &tag(r)]),
        9 => {
            let p = ["a:", "b:1", "c:2"][r.below(3) as usize];
            c.q(&["TCACHE.INVALPREFIX", p])
        }
        10 => c.q(&["RENAME", &k, &key(r)]),
        11 => c.q(&["SET", &k, "plain"]),
        12 => c.q(&["COPY", &k, &key(r), "REPLACE"]),
        _ => c.q(&["PEXPIRE", &k, &(1 + r.below(30)).to_string()]),
    };
    // Errors such as WRONGTYPE (a plain string met by a tcache command) or
    // "no such key" (RENAME) are expected; a crash or internal error is not.
    if reply.is_error() {
        let e = reply.as_error();
        assert!(
            e.starts_with("WRONGTYPE")
                || e.starts_with("ERR no such key")
                || e.starts_with("ERR source and destination objects are the same"),
            "unexpected error {e}"
        );
    }
}

/// Every tag's members, rebuilt from the entries with TCACHE.TAGS.
fn expected_tags(c: &mut Conn) -> BTreeMap<Vec<u8>, Vec<Vec<u8>>> {
    let mut out: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    let mut cursor = "0".to_string();
    loop {
        let r = c.q(&["SCAN", &cursor, "COUNT", "100", "TYPE", "tcache-en"]);
        let parts = r.as_array();
        cursor = parts[0].as_str().to_string();
        for k in parts[1].as_array() {
            let k = k.as_bytes().to_vec();
            // Expired between SCAN and TAGS: skip.
            if let Some(tags) = tags_of(c, &k) {
                for t in tags {
                    out.entry(t).or_default().push(k.clone());
                }
            }
        }
        if cursor == "0" {
            break;
        }
    }
    for keys in out.values_mut() {
        keys.sort();
    }
    out
}

#[test]
fn mixed_concurrent_workload_keeps_every_index_exact() {
    mixed_workload(&[]);
}

#[test]
fn mixed_concurrent_workload_with_logical_invalidations_keeps_every_index_exact() {
    mixed_workload(&["inval-sync-max", "0"]);
}

fn mixed_workload(module_args: &[&str]) {
    let s = Server::builder()
        .module_args(module_args)
        .arg("hz", "50")
        .start();
    let port = s.port;
    let mut checker = s.conn();
    for batch in 0..BATCHES {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|w| {
                thread::spawn(move || {
                    let mut c = Conn::connect(port);
                    let mut r = Rng(0x9E37_79B9_7F4A_7C15 ^ ((batch * CLIENTS + w) as u64 + 1));
                    for _ in 0..OPS_PER_CLIENT {
                        one_op(&mut c, &mut r);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker failed");
        }
        // Freeze expiry while comparing, so both views describe the same moment.
        assert!(checker.q(&["DEBUG", "SET-ACTIVE-EXPIRE", "0"]).is_ok());
        assert_verified(&mut checker);
        // Keys past their expiry but not yet deleted are invisible to both
        // views. A key may still expire while they are read (PEXPIRE of a
        // few ms, ttl 1 s), and nothing else changes: so every key TAGSCAN
        // returns must be in the view read before it, and every key of the
        // view read after it must be returned (equality when none expired).
        let before = expected_tags(&mut checker);
        let got: Vec<Vec<Vec<u8>>> = (0..TAGS)
            .map(|t| tagscan_all(&mut checker, format!("t{t}").as_bytes()))
            .collect();
        let after = expected_tags(&mut checker);
        for (t, got) in got.iter().enumerate() {
            let name = format!("t{t}");
            let view = |m: &BTreeMap<Vec<u8>, Vec<Vec<u8>>>| {
                m.get(name.as_bytes()).cloned().unwrap_or_default()
            };
            let (was, is) = (view(&before), view(&after));
            let extra: Vec<_> = got.iter().filter(|k| !was.contains(k)).collect();
            let missing: Vec<_> = is.iter().filter(|k| !got.contains(k)).collect();
            assert!(
                extra.is_empty() && missing.is_empty(),
                "batch {batch}, tag {name}: TAGSCAN {got:?}, before {was:?}, after {is:?}"
            );
        }
        assert!(checker.q(&["DEBUG", "SET-ACTIVE-EXPIRE", "1"]).is_ok());
    }
    assert_eq!(checker.q(&["PING"]).as_str(), "PONG");
}
