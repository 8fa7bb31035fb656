//! Hostile persistence input (issue 10): mutated DUMP payloads of tcache
//! entries, with the CRC-64 recomputed so that they reach the module's
//! loader, and RDB files whose module part is corrupted (file CRC fixed).
//! Every RESTORE gets OK or an error reply and the server stays up with
//! TCACHE.VERIFY OK; a corrupt RDB file is refused with a log line and an
//! exit status, never a crash signal.
//!
//! Mutations that keep the RDB framing intact (the entry bytes change, the
//! string length stays right) reach only the module's entry decoder; the
//! others (string lengths running past the end, wrong opcodes, cut values)
//! make the server's own reads fail inside the module's `rdb_load`, which
//! aborted the server until the module asked to handle IO errors itself
//! (finding 1, fixed in d08ff67: these tests failed before it, pass after).

mod common;

use common::fuzz::{RawConn, Rng};
use common::rdb::*;
use common::*;

/// A server whose DUMP strings are not LZF-compressed, so that the entry
/// bytes lie in the payload as they are.
fn plain_server() -> Server {
    Server::builder().arg("rdbcompression", "no").start()
}

/// Entries of every kind, dumped: cache entries with tags, binary bytes, an
/// SWR entry, a stale-marked one, permission entries with roles.
fn sample_payloads(c: &mut Conn) -> Vec<Vec<u8>> {
    let setup: &[&[&[u8]]] = &[
        &[
            b"TCACHE.SET",
            b"s:1",
            b"{\"risk_score\":7}",
            b"900",
            b"TAGS",
            b"store:1",
            b"reports",
        ],
        &[
            b"TCACHE.SET",
            b"s:2",
            b"\x00\x01\xfe",
            b"900",
            b"TAGS",
            b"\xc3\x28",
            b"",
            b"t",
        ],
        &[b"TCACHE.SET", b"s:3", b"v", b"900"],
        &[
            b"TCACHE.SET",
            b"s:4",
            b"swr",
            b"900",
            b"SWR",
            b"60",
            b"TAGS",
            b"soft",
        ],
        &[b"TCACHE.STALETAG", b"soft"],
        &[
            b"TCACHE.SET",
            b"s:5",
            b"",
            b"900",
            b"TAGS",
            b"a",
            b"b",
            b"c",
            b"d",
        ],
        &[
            b"PERM.SET",
            b"s:6",
            b"{\"roles\":[\"editor\",\"billing\"],\"permissions\":[\"reports:read\",\"users:*\"]}",
        ],
        &[
            b"PERM.SET",
            b"s:7",
            b"{\"roles\":[],\"permissions\":[]}",
            b"100",
        ],
    ];
    for cmd in setup {
        let r = c.cmd(cmd);
        assert!(!r.is_error(), "{cmd:?} -> {r:?}");
    }
    (1..=7)
        .map(|i| {
            let k = format!("s:{i}");
            let d = c.q(&["DUMP", &k]);
            let payload = d.as_bytes().to_vec();
            // The payload is a tcache module value with a valid CRC.
            let (value, _) = split_dump(&payload);
            let mv = ModuleValue::parse(value)
                .unwrap_or_else(|| panic!("DUMP {k} is not a tcache module value: {payload:02x?}"));
            assert_eq!(mv.encode(), value, "re-encoding DUMP {k}");
            payload
        })
        .collect()
}

/// A mutation of the entry bytes that keeps the RDB framing intact.
fn mutate_entry(r: &mut Rng, entry: &mut Vec<u8>) {
    for _ in 0..1 + r.below(3) {
        let len = entry.len() as u64;
        match r.below(8) {
            // Flip bits of one byte.
            0..=2 if len > 0 => {
                let i = r.below(len) as usize;
                entry[i] ^= 1 << r.below(8);
            }
            // A random byte.
            3 if len > 0 => {
                let i = r.below(len) as usize;
                entry[i] = r.next() as u8;
            }
            // A little-endian u32 length field (tags, perms) set to a
            // boundary value: it sits at 18 (tags) in the entry codec.
            4 if len >= 22 => {
                let v: u32 = *r.pick(&[0, 1, 3, 0x7fff_ffff, u32::MAX, len as u32]);
                let at = if r.chance(2) {
                    18
                } else {
                    r.below(len - 3) as usize
                };
                entry[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            // Cut the entry (the string length follows).
            5 => entry.truncate(r.below(len + 1) as usize),
            // Append junk.
            6 => entry.extend(r.bytes(8)),
            // The version or kind byte.
            _ if len >= 2 => {
                let i = r.below(2) as usize;
                entry[i] = *r.pick(&[0u8, 1, 2, 0x80, 0x81, 0x82, 0xff]);
            }
            _ => entry.push(r.next() as u8),
        }
    }
}

/// A mutation that breaks the RDB framing of the module value (the server's
/// reads inside the module's loader fail), or changes the module id.
fn mutate_framing(r: &mut Rng, value: &[u8], mv: &ModuleValue) -> Vec<u8> {
    let string_at = 1 + encode_len(mv.module_id).len(); // the 05 opcode
    let len_at = string_at + 1;
    match r.below(7) {
        // The string's length field, off by a little or a lot.
        0 | 1 => {
            let len = mv.entry.len() as u64;
            let new_len = match r.below(4) {
                0 => len + 1 + r.below(8),
                1 => len.saturating_sub(1 + r.below(4)),
                2 => len + 1000,
                _ => r.next() >> r.below(64),
            };
            let mut out = value[..len_at].to_vec();
            out.extend(encode_len(new_len));
            out.extend_from_slice(&mv.entry);
            out.push(0);
            out
        }
        // One byte of the raw length encoding changed.
        2 => {
            let mut out = value.to_vec();
            out[len_at] = r.next() as u8;
            out
        }
        // A wrong opcode instead of STRING or EOF.
        3 => {
            let mut out = value.to_vec();
            let at = if r.chance(2) {
                string_at
            } else {
                out.len() - 1
            };
            out[at] = *r.pick(&[1u8, 2, 3, 4, 6, 0xff]);
            out
        }
        // The value cut anywhere after the module id.
        4 => {
            let cut = string_at + r.below((value.len() - string_at) as u64) as usize;
            value[..cut].to_vec()
        }
        // Junk after the EOF opcode, or the EOF missing.
        5 => {
            let mut out = value.to_vec();
            if r.chance(2) {
                out.pop();
            } else {
                out.extend(r.bytes(4));
            }
            out
        }
        // The module id: another encoding version or another type name.
        _ => {
            let id = match r.below(3) {
                0 => (mv.module_id & !1023) | *r.pick(&[0u64, 3, 1023]),
                1 => mv.module_id ^ (1 << (10 + r.below(54))),
                _ => r.next(),
            };
            let m = ModuleValue {
                module_id: id,
                entry: mv.entry.clone(),
            };
            m.encode()
        }
    }
}

/// Sends RESTOREs of `payloads` (each followed by reads of the key) in
/// pipelines; every reply must be OK, nil, a value or an error (not an
/// internal error), the server must stay up, and VERIFY must be OK after each
/// pipeline. Returns (restored, refused).
fn restore_all(s: &mut Server, payloads: &[Vec<u8>], what: &str) -> (usize, usize) {
    let mut c = RawConn::connect(s.port).expect("connect");
    let (mut restored, mut refused) = (0, 0);
    for (n, chunk) in payloads.chunks(25).enumerate() {
        let mut sent: Vec<(usize, Vec<Vec<u8>>)> = Vec::new();
        for (i, p) in chunk.iter().enumerate() {
            let key = format!("m:{}", (n * 25 + i) % 40).into_bytes();
            let w = |a: &[&[u8]]| -> Vec<Vec<u8>> { a.iter().map(|x| x.to_vec()).collect() };
            for cmd in [
                w(&[b"RESTORE", &key, b"0", p, b"REPLACE"]),
                w(&[b"TCACHE.GET", &key]),
                w(&[b"TCACHE.TAGS", &key]),
                w(&[b"PERM.GET", &key]),
                w(&[b"PERM.CHECK", &key, b"users:write", b"reports:read"]),
                w(&[b"MEMORY", b"USAGE", &key]),
                w(&[b"DEBUG", b"DIGEST-VALUE", &key]),
                w(&[b"TCACHE.FETCH", &key, b"100"]),
                w(&[b"DUMP", &key]),
            ] {
                c.send(&cmd).expect("send");
                sent.push((n * 25 + i, cmd));
            }
        }
        for (i, cmd) in &sent {
            let v = match c.read() {
                Ok(v) => v,
                Err(e) => {
                    let s_running = s.is_running()
                        && Conn::try_connect(s.port, std::time::Duration::from_secs(1))
                            .is_ok_and(|mut c| c.try_cmd(&[b"PING"]).is_ok());
                    panic!(
                        "{what}: no reply to {:?} (server alive: {s_running}): {e}\n\
                         payload {i}: {}\nlog:\n{}",
                        common::fuzz::show_cmd(cmd),
                        hex(&payloads[*i]),
                        s.log_tail()
                    );
                }
            };
            if let Value::Error(e) = &v {
                assert!(
                    !e.contains("internal error"),
                    "{what}: {:?} -> {e}; payload {}",
                    common::fuzz::show_cmd(cmd),
                    hex(&payloads[*i])
                );
            }
            if cmd[0] == b"RESTORE" {
                if v.is_ok() {
                    restored += 1;
                } else {
                    assert!(v.is_error(), "RESTORE -> {v:?}");
                    refused += 1;
                }
            }
        }
        let mut check = s.conn();
        assert_eq!(check.q(&["PING"]).as_str(), "PONG", "{what}");
        let v = check.q(&["TCACHE.VERIFY"]);
        assert!(v.is_ok(), "{what}: VERIFY after chunk {n} -> {v:?}");
    }
    (restored, refused)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn seed() -> u64 {
    common::fuzz::seed_from_env()
}

#[test]
fn the_crc_is_the_one_redis_uses() {
    assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    // The valid payload of the issue's reproducer.
    let p = unhex("0781b5c69c85ef9e9c02051c01000000000000000000000000000000000005000000010000007476000a00d17d3df42bfae35c");
    let (value, version) = split_dump(&p);
    assert_eq!(make_dump(value, version), p);
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Mutated entry bytes inside well-framed module values, CRC fixed: the
/// module's decoder refuses or accepts each, and nothing breaks.
#[test]
fn mutated_entries_in_well_framed_dumps_are_refused_or_restored_never_a_crash() {
    let mut s = plain_server();
    let mut c = s.conn();
    let samples = sample_payloads(&mut c);
    let seed = seed();
    eprintln!("corrupt entries: seed {seed} (TCACHE_FUZZ_SEED replays)");
    let mut r = Rng::new(seed);
    let payloads: Vec<Vec<u8>> = (0..3000)
        .map(|_| {
            let p = r.pick(&samples).clone();
            let (value, version) = split_dump(&p);
            let mut mv = ModuleValue::parse(value).expect("sample parses");
            mutate_entry(&mut r, &mut mv.entry);
            make_dump(&mv.encode(), version)
        })
        .collect();
    let (restored, refused) = restore_all(&mut s, &payloads, &format!("entries, seed {seed}"));
    eprintln!("corrupt entries: {restored} restored, {refused} refused");
    assert_eq!(restored + refused, payloads.len());
    assert!(
        refused > 0,
        "no mutation was refused: the mutations do nothing"
    );
    assert!(s.is_running());
}

/// Module values whose framing is broken (string lengths past the end,
/// wrong opcodes, cut values, other module ids), CRC fixed.
#[test]
fn broken_module_framing_in_dumps_is_refused_never_a_crash() {
    let mut s = plain_server();
    let mut c = s.conn();
    let samples = sample_payloads(&mut c);
    let seed = seed();
    eprintln!("corrupt framing: seed {seed} (TCACHE_FUZZ_SEED replays)");
    let mut r = Rng::new(seed ^ 0xf4a3);
    let mut payloads: Vec<Vec<u8>> = vec![
        // The issue's reproducer: one length byte changed.
        unhex("0781b5c69c85ef9e9c02053f01000000000000000000000000000000000005000000010000007476000a00c7c893c848c43963"),
    ];
    payloads.extend((0..2000).map(|_| {
        let p = r.pick(&samples).clone();
        let (value, version) = split_dump(&p);
        let mv = ModuleValue::parse(value).expect("sample parses");
        make_dump(&mutate_framing(&mut r, value, &mv), version)
    }));
    let (restored, refused) = restore_all(&mut s, &payloads, &format!("framing, seed {seed}"));
    eprintln!("corrupt framing: {restored} restored, {refused} refused");
    assert!(
        refused > payloads.len() / 2,
        "{restored} restored, {refused} refused"
    );
    assert!(s.is_running());
}

/// An RDB file saved by the module, for the file tests: entries, gates, and
/// (with the reclaimer paused) tombstones of a logical invalidation.
fn saved_rdb() -> Vec<u8> {
    let mut s = Server::builder()
        .module_args(&["inval-sync-max", "0", "reclaim-budget-us", "0"])
        .arg("rdbcompression", "no")
        .start();
    let mut c = s.conn();
    let _ = sample_payloads(&mut c);
    ok(c.q(&[
        "TCACHE.GATE.SET",
        "report",
        r#"{"type":"object"}"#,
        "PREFIX",
        "report:",
    ]));
    ok(c.q(&["TCACHE.SET", "report:1", "{}", "900", "TAGS", "gone"]));
    assert_eq!(c.q(&["TCACHE.INVALTAG", "gone"]).as_int(), 1);
    ok(c.q(&["SAVE"]));
    let rdb = std::fs::read(s.dir.join("dump.rdb")).expect("read dump.rdb");
    s.stop();
    rdb
}

fn ok(v: Value) {
    assert!(v.is_ok(), "{v:?}");
}

/// Offsets just after each occurrence of the module id (`0x81` + 8 bytes)
/// in an RDB file: the starts of the module's own parts (aux data and each
/// entry value).
fn module_parts(rdb: &[u8], module_id: u64) -> Vec<usize> {
    let mut pat = vec![0x81];
    pat.extend_from_slice(&module_id.to_be_bytes());
    rdb.windows(pat.len())
        .enumerate()
        .filter(|(_, w)| *w == pat.as_slice())
        .map(|(i, _)| i + pat.len())
        .collect()
}

/// RDB files whose module part is corrupted (file CRC fixed): the server
/// either loads them (and VERIFY is OK) or exits with an error status and a
/// log line; never a crash signal.
#[test]
fn corrupt_module_data_in_an_rdb_file_is_refused_with_a_log_line() {
    let rdb = saved_rdb();
    let id = {
        let mut s = plain_server();
        let mut c = s.conn();
        let p = sample_payloads(&mut c);
        s.stop();
        let (value, _) = split_dump(&p[0]);
        ModuleValue::parse(value).expect("parse").module_id
    };
    let parts = module_parts(&rdb, id);
    assert!(parts.len() >= 8, "module parts found in the RDB: {parts:?}");
    let seed = seed();
    eprintln!("corrupt rdb: seed {seed}");
    let mut r = Rng::new(seed ^ 0x0dd);
    let (mut loaded, mut refused, mut checker_hangs) = (0, 0, 0);
    for round in 0..60 {
        let mut bad = rdb.clone();
        let start = *r.pick(&parts);
        // Just after the id: the aux `when` / the entry's opcode, then a
        // length. Change one of the first bytes (lengths, opcodes) or flip
        // one further in.
        let span = if r.chance(2) { 3 } else { 24 };
        let at = start + r.below(span) as usize;
        if at >= bad.len() - 9 {
            continue;
        }
        bad[at] = match r.below(3) {
            0 => bad[at] ^ (1 << r.below(8)),
            1 => bad[at].wrapping_add(1 + r.below(4) as u8),
            _ => r.next() as u8,
        };
        fix_file_crc(&mut bad);
        match start_on_rdb(&bad, "corrupt") {
            LoadOutcome::Loaded(run) => {
                let mut c = Conn::connect(run.port);
                let v = c.q(&["TCACHE.VERIFY"]);
                assert!(v.is_ok(), "round {round}: loaded, then VERIFY -> {v:?}");
                loaded += 1;
            }
            LoadOutcome::Exited { status, log } => {
                use std::os::unix::process::ExitStatusExt as _;
                // A change that makes the server's own RDB parser read a key
                // twice ends in its own panic ("Duplicated key found in RDB
                // file", SIGABRT) before any module code runs: the server
                // refusing the file its way, not a module crash.
                let servers_own_refusal = log.contains("Duplicated key found in RDB file");
                assert!(
                    servers_own_refusal
                        || (status.signal().is_none() && !log.contains("crashed by signal")),
                    "round {round} (byte {at} changed): the server crashed: {status}\n{log}"
                );
                assert!(
                    log.contains("tcache")
                        || log.contains("RDB")
                        || log.contains("rdb")
                        || log.contains("corrupt"),
                    "round {round}: exited ({status}) without saying why:\n{log}"
                );
                refused += 1;
            }
            LoadOutcome::RefusedThenHung { log } => {
                // The server logged the refusal; its own RDB checker then
                // spun instead of exiting (a server bug, not the module's).
                eprintln!(
                    "corrupt rdb: round {round} (byte {at} changed): refused, then the \
                     server's RDB checker hung (killed)"
                );
                assert!(!log.contains("crashed by signal"), "round {round}:\n{log}");
                refused += 1;
                checker_hangs += 1;
            }
        }
    }
    eprintln!(
        "corrupt rdb: {loaded} loaded, {refused} refused ({checker_hangs} of them then hung \
         in the server's RDB checker)"
    );
    assert!(refused > 0, "no corrupt file was refused");
}
