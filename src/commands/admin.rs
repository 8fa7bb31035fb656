//! TCACHE.VERIFY, TCACHE.STATS and the `INFO tcache` section.

use std::ffi::{c_int, c_long};

use redis_module::{raw, Context, RedisString, RedisValue};

use std::collections::BTreeSet;

use super::is_dead;
use crate::core::index::label_name;
use crate::core::verify::{self, Snapshot};
use crate::errors::{Error, NoPerm, Reply};
use crate::glue::api;
use crate::glue::guard;
use crate::state::gates;
use crate::state::indexes;
use crate::state::stats::{self, Figure};

/// TCACHE.VERIFY
pub fn verify(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() != 1 {
        return Err(Error::WrongArity);
    }
    let lost = indexes::lost_updates();
    let mut problems = Vec::new();
    if lost > 0 {
        problems.push(format!("{lost} index updates were lost to re-entrancy"));
    }
    let original = api::selected_db(ctx);
    let mut db = 0;
    while api::select_db(ctx, db) {
        let (rebuilt, dead) = rebuild(ctx);
        let (live, queued) =
            indexes::with_db(db, |ix| (ix.snapshot(), ix.dead_keys())).unwrap_or_default();
        if let Some(d) = verify::diff(db, &live.entries, &rebuilt) {
            problems.push(d);
        }
        if let Some(d) = verify::corruption(db, &live.corruption) {
            problems.push(d);
        }
        if let Some(d) = verify::diff_dead(db, &queued, &dead) {
            problems.push(d);
        }
        db += 1;
    }
    api::select_db(ctx, original);
    // Indexes of databases that do not exist must be empty.
    for extra in db..indexes::db_count() as i32 {
        if indexes::with_db(extra, |ix| !ix.is_empty()).unwrap_or(false) {
            problems.push(format!(
                "db {extra}: index for a database that does not exist"
            ));
        }
    }
    if problems.is_empty() {
        Ok(RedisValue::SimpleStringStatic("OK"))
    } else {
        Err(Error::IndexDiffers(problems))
    }
}

/// Every live entry of the selected database with its tags, and the keys of
/// the dead ones (killed by an invalidation, not yet reclaimed), read from the
/// keyspace.
fn rebuild(ctx: &Context) -> (Snapshot, BTreeSet<Vec<u8>>) {
    let mut out = Snapshot::new();
    let mut dead = BTreeSet::new();
    api::for_each_entry(ctx, |name, e| {
        if is_dead(ctx, name, e) {
            dead.insert(name.to_vec());
            return;
        }
        out.insert(
            name.to_vec(),
            e.tags().map(|t| label_name(e.space(), t)).collect(),
        );
    });
    (out, dead)
}

/// TCACHE.STATS [RESET]
pub fn stats(ctx: &Context, args: Vec<RedisString>) -> Reply {
    match args.len() {
        1 => {}
        2 if args[1].as_slice().eq_ignore_ascii_case(b"RESET") => {
            // An admin action, as CONFIG RESETSTAT is for the server's own.
            if let Some(caller) = api::Caller::current(ctx) {
                if !caller.may_run(ctx, &[b"CONFIG", b"RESETSTAT"]) {
                    return Err(Error::NoPerm(NoPerm::ResetStats));
                }
            }
            stats::reset();
            return Ok(RedisValue::SimpleStringStatic("OK"));
        }
        2 => return Err(Error::Syntax),
        _ => return Err(Error::WrongArity),
    }
    // A map in RESP3, a flat name/value array in RESP2, in the documented order,
    // then `gates`: name -> {checked, rejected, last_rejection}.
    let figures = stats::figures(&indexes::figures());
    let gates = gates::counters();
    raw::reply_with_map(ctx.ctx, figures.len() as c_long + 1);
    for (name, f) in figures {
        bulk(ctx, name.as_bytes());
        match f {
            Figure::Count(n) => {
                raw::reply_with_long_long(ctx.ctx, n as i64);
            }
            Figure::Text(s) => bulk(ctx, s.as_bytes()),
        }
    }
    bulk(ctx, b"gates");
    raw::reply_with_map(ctx.ctx, gates.len() as c_long);
    for (name, checked, rejected, last) in gates {
        bulk(ctx, &name);
        raw::reply_with_map(ctx.ctx, 3);
        bulk(ctx, b"checked");
        raw::reply_with_long_long(ctx.ctx, checked as i64);
        bulk(ctx, b"rejected");
        raw::reply_with_long_long(ctx.ctx, rejected as i64);
        bulk(ctx, b"last_rejection");
        bulk(ctx, last.as_bytes());
    }
    Ok(RedisValue::NoReply)
}

fn bulk(ctx: &Context, b: &[u8]) {
    raw::reply_with_string_buffer(ctx.ctx, b.as_ptr().cast(), b.len());
}

/// The `INFO tcache` callback: section `tcache_stats` with the same figures.
pub extern "C" fn info(ctx: *mut raw::RedisModuleInfoCtx, for_crash_report: c_int) {
    // A crash report runs on the crashing thread, which may hold the gate or
    // index lock: taking it would hang the dying server instead of letting it
    // exit (seen: a crash inside a gate check deadlocked here).
    if for_crash_report != 0 {
        return;
    }
    guard::callback((), || {
        raw::add_info_section(ctx, Some("stats"));
        for (name, f) in stats::figures(&indexes::figures()) {
            match f {
                Figure::Count(n) => raw::add_info_field_unsigned_long_long(ctx, name, n),
                Figure::Text(s) => raw::add_info_field_str(ctx, name, &s),
            };
        }
        // tcache_cluster_invalidation:coordinated in cluster mode (one node
        // takes a cluster-wide invalidation), local otherwise.
        raw::add_info_section(ctx, Some("cluster"));
        let mode = if crate::glue::cluster::coordinated() {
            "coordinated"
        } else {
            "local"
        };
        raw::add_info_field_str(ctx, "cluster_invalidation", mode);
        let (in_flight, remembered, recent) = crate::state::cluster::figures();
        raw::add_info_field_unsigned_long_long(ctx, "cluster_inflight", in_flight as u64);
        raw::add_info_field_unsigned_long_long(ctx, "cluster_remembered", remembered as u64);
        raw::add_info_field_unsigned_long_long(ctx, "cluster_recent", recent as u64);
        // tcache_gates: one dictionary field per gate, e.g.
        // tcache_gate_report:checked=10,rejected=2 (names made INFO-safe).
        raw::add_info_section(ctx, Some("gates"));
        for (name, checked, rejected, _) in gates::counters() {
            let field: String = String::from_utf8_lossy(&name)
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            raw::add_info_begin_dict_field(ctx, &format!("gate_{field}"));
            raw::add_info_field_unsigned_long_long(ctx, "checked", checked);
            raw::add_info_field_unsigned_long_long(ctx, "rejected", rejected);
            raw::add_info_end_dict_field(ctx);
        }
    })
}
