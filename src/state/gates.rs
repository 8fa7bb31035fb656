//! The registry of quality gates: named, compiled JSON Schemas, optionally
//! bound to a key prefix, with per-gate counters. Module-global (gates are not
//! per database), main-thread only, persisted as RDB aux data and replicated as
//! the commands that change them.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::core::gate::{check_json, Gate};
use crate::core::perm;
use crate::errors::Error;

/// The built-in gates, always present, never replaced.
pub const BUILTIN: [&[u8]; 2] = [b"json", b"perm"];

pub struct Registered {
    pub gate: Gate,
    pub prefix: Option<Vec<u8>>,
    pub checked: u64,
    pub rejected: u64,
    pub last_rejection: String,
}

static GATES: Mutex<BTreeMap<Vec<u8>, Registered>> = Mutex::new(BTreeMap::new());

pub fn lock() -> MutexGuard<'static, BTreeMap<Vec<u8>, Registered>> {
    GATES.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registered {
    /// A gate with its counters at zero.
    fn new(gate: Gate, prefix: Option<Vec<u8>>) -> Registered {
        Registered {
            gate,
            prefix,
            checked: 0,
            rejected: 0,
            last_rejection: String::new(),
        }
    }
}

/// Adds or replaces a gate (its counters start again).
pub fn install(name: Vec<u8>, gate: Gate, prefix: Option<Vec<u8>>) {
    lock().insert(name, Registered::new(gate, prefix));
}

/// Checks `value` against gate `name` (built-in or registered) and counts it.
pub fn check(name: &[u8], value: &[u8]) -> Result<(), Error> {
    run(name, value, true)
}

/// Like `check`, counting nothing: TCACHE.GATE.CHECK.
pub fn dry_run(name: &[u8], value: &[u8]) -> Result<(), Error> {
    run(name, value, false)
}

fn run(name: &[u8], value: &[u8], count: bool) -> Result<(), Error> {
    let refused = |why| Error::Gate {
        gate: name.to_vec(),
        why,
    };
    let builtin = match name {
        b"json" => Some(check_json(value).map_err(refused)),
        b"perm" => Some(perm::parse(value).map(drop).map_err(Error::Perm)),
        _ => None,
    };
    if let Some(verdict) = builtin {
        if verdict.is_err() && count {
            crate::state::stats::GATE_REJECTIONS.incr();
        }
        return verdict;
    }
    let mut gates = lock();
    let g = gates
        .get_mut(name)
        .ok_or_else(|| Error::NoSuchGate(name.to_vec()))?;
    let verdict = g.gate.check(value, crate::state::config::gate_max_work());
    if count {
        g.checked += 1;
        if let Err(r) = &verdict {
            g.rejected += 1;
            g.last_rejection = r.to_string();
            crate::state::stats::GATE_REJECTIONS.incr();
        }
    }
    verdict.map_err(refused)
}

/// The gate bound to the longest prefix of `key`, if any.
fn prefix_gate(key: &[u8]) -> Option<Vec<u8>> {
    lock()
        .iter()
        .filter_map(|(name, g)| g.prefix.as_deref().map(|p| (name, p)))
        .filter(|(_, p)| key.starts_with(p))
        .max_by_key(|(_, p)| p.len())
        .map(|(name, _)| name.clone())
}

/// The checks of a TCACHE.SET: the gate named with `GATE`, and the gate bound to
/// the most specific prefix of the key (which no client can skip).
pub fn check_for_set(key: &[u8], named: Option<&[u8]>, value: &[u8]) -> Result<(), Error> {
    let bound = prefix_gate(key);
    if let Some(name) = named {
        check(name, value)?;
    }
    match bound {
        Some(b) if Some(&b[..]) != named => check(&b, value),
        _ => Ok(()),
    }
}

/// A gate as it is persisted: what `TCACHE.GATE.SET` was given.
pub struct GateDef {
    pub name: Vec<u8>,
    pub schema: Vec<u8>,
    pub prefix: Option<Vec<u8>>,
}

/// Every registered gate, for persistence.
pub fn snapshot() -> Vec<GateDef> {
    lock()
        .iter()
        .map(|(n, g)| GateDef {
            name: n.clone(),
            schema: g.gate.schema().to_vec(),
            prefix: g.prefix.clone(),
        })
        .collect()
}

/// Replaces every gate with `list` (an RDB load); returns the gates whose schema
/// no longer compiles, with the reason.
pub fn replace_all(list: Vec<GateDef>) -> Vec<(Vec<u8>, String)> {
    let mut refused = Vec::new();
    let mut fresh = BTreeMap::new();
    for GateDef {
        name,
        schema,
        prefix,
    } in list
    {
        match Gate::compile(&name, &schema) {
            Ok(gate) => {
                fresh.insert(name, Registered::new(gate, prefix));
            }
            Err(e) => refused.push((name, e.to_string())),
        }
    }
    *lock() = fresh;
    refused
}

/// The per-gate counters, for TCACHE.STATS.
pub fn counters() -> Vec<(Vec<u8>, u64, u64, String)> {
    lock()
        .iter()
        .map(
            |(
                n,
                Registered {
                    checked,
                    rejected,
                    last_rejection,
                    ..
                },
            )| { (n.clone(), *checked, *rejected, last_rejection.clone()) },
        )
        .collect()
}
