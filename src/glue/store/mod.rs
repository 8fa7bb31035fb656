//! The module data type `tcache-en`: one entry per key. Persistence (RDB, AOF
//! rewrite), DEBUG DIGEST, COPY, MEMORY USAGE, and the unlink hook that keeps
//! the index exact whenever Redis removes or overwrites a key.

mod io;

use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use redis_module::native_types::RedisType;
use redis_module::raw;

use crate::core::entry::{decode, encode, encode_marked, Entry};
use crate::core::index::Space;
use crate::glue::guard;
use crate::glue::raw::bytes_of;
use crate::state::gates::{self, GateDef};
use crate::state::indexes;
use crate::state::leases;
use crate::state::seq;

/// RDB encoding version of the type. Each entry is one buffer: the entry
/// codec of `core::entry` (which carries its own version byte). The aux data
/// holds the gates (version 1), then the tombstones of pending invalidations
/// (version 2). Version 1 files still load.
pub const ENCVER: i32 = 2;

pub static ENTRY_TYPE: RedisType = RedisType::new(
    "tcache-en",
    ENCVER,
    raw::RedisModuleTypeMethods {
        // Version 4 is what Redis 7.0 knows: it has unlink2 and copy.
        version: 4,
        rdb_load: Some(rdb_load),
        rdb_save: Some(rdb_save),
        aof_rewrite: Some(aof_rewrite),
        mem_usage: Some(mem_usage),
        digest: Some(digest),
        free: Some(free),
        aux_load: Some(aux_load),
        aux_save: Some(aux_save),
        aux_save_triggers: raw::REDISMODULE_AUX_BEFORE_RDB as c_int,
        free_effort: None,
        unlink: None,
        copy: None,
        defrag: None,
        mem_usage2: None,
        free_effort2: None,
        unlink2: Some(unlink2),
        copy2: Some(copy2),
        aux_save2: None,
    },
);

/// The entry behind a value pointer Redis hands to a type callback.
///
/// # Safety
/// `value` must be a pointer this module created with `Box::into_raw(Box<Entry>)`
/// and not yet freed.
unsafe fn entry<'a>(value: *const c_void) -> Option<&'a Entry> {
    value.cast::<Entry>().as_ref()
}

extern "C" fn rdb_load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    guard::callback(ptr::null_mut(), || {
        // SAFETY: `rdb` is the IO context of this running callback.
        let warn = |msg: &str| unsafe { io::log_io_warning(rdb, msg) };
        if !(1..=ENCVER).contains(&encver) {
            warn(&format!("tcache: cannot load entry encoding version {encver} (this module reads 1 to {ENCVER}); upgrade the module"),
            );
            return ptr::null_mut();
        }
        let Ok(buf) = raw::load_string_buffer(rdb) else {
            return ptr::null_mut();
        };
        match decode(buf.as_ref()) {
            Ok(e) => {
                // `decode` refused any sequence past MAX_SEQ.
                let _ = seq::observe(e.seq);
                Box::into_raw(Box::new(e)).cast()
            }
            Err(err) => {
                warn(&format!("tcache: bad entry in RDB: {err}"));
                ptr::null_mut()
            }
        }
    })
}

extern "C" fn rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    guard::callback((), || {
        // SAFETY: Redis passes a value of this type.
        let Some(e) = (unsafe { entry(value) }) else {
            return;
        };
        // An entry a pending invalidation killed carries the killed mark, so
        // that a DUMP (MIGRATE, resharding, RESTORE elsewhere) keeps it dead on
        // a node that has no tombstone for it.
        // SAFETY: `rdb` is this callback's IO context; the key name lives
        // while it runs.
        let dead = unsafe { io::key_of_io(rdb) }
            .is_some_and(|key| indexes::is_dead(unsafe { io::db_of_io(rdb) }, key, e));
        raw::save_slice(rdb, &encode_marked(e, dead));
    })
}

extern "C" fn aof_rewrite(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    value: *mut c_void,
) {
    guard::callback((), || {
        // Gates are module-global: the first entry of a rewrite carries them
        // (the rewrite runs in a fresh child, so the flag starts false there).
        if !GATES_EMITTED.swap(true, Ordering::Relaxed) {
            for g in gates::snapshot() {
                // SAFETY: `aof` is this aof_rewrite callback's IO context.
                unsafe { io::emit_aof_gate(aof, &g.name, &g.schema, g.prefix.as_deref()) };
            }
        }
        // SAFETY: Redis passes a value of this type.
        let Some(e) = (unsafe { entry(value) }) else {
            return;
        };
        // An entry an invalidation killed is left out: the rewritten AOF
        // carries no tombstones, and the entry is gone for readers already.
        // SAFETY: `aof` and `key` are this callback's, alive while it runs.
        let (db, name) = unsafe { (io::db_of_io(aof), bytes_of(key)) };
        if indexes::is_dead(db, name, e) {
            return;
        }
        // Redis appends PEXPIREAT for keys with an expiry after this.
        // SAFETY: `aof` and `key` are this aof_rewrite callback's.
        unsafe { io::emit_aof_apply(aof, key, &encode(e)) };
    })
}

extern "C" fn mem_usage(value: *const c_void) -> usize {
    // SAFETY: Redis passes a value of this type.
    guard::callback(0, || unsafe { entry(value) }.map_or(0, Entry::mem_usage))
}

extern "C" fn digest(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    guard::callback((), || {
        // SAFETY: Redis passes a value of this type and a live digest.
        unsafe {
            let (Some(e), Some(add), Some(end)) = (
                entry(value),
                raw::RedisModule_DigestAddStringBuffer,
                raw::RedisModule_DigestEndSequence,
            ) else {
                return;
            };
            add(md, e.value().as_ptr().cast(), e.value().len());
            for t in e.tags() {
                add(md, t.as_ptr().cast(), t.len());
            }
            end(md);
        }
    })
}

extern "C" fn free(value: *mut c_void) {
    // May run on a lazy-free thread: touch nothing but the value itself.
    guard::callback((), || {
        if !value.is_null() {
            // SAFETY: the pointer came from Box::into_raw and Redis frees it once.
            drop(unsafe { Box::from_raw(value.cast::<Entry>()) });
        }
    })
}

extern "C" fn copy2(ctx: *mut raw::RedisModuleKeyOptCtx, value: *const c_void) -> *mut c_void {
    // The copy is indexed by the `copy_to` keyspace event, once it is in place.
    guard::callback(ptr::null_mut(), || {
        // SAFETY: Redis passes a value of this type.
        let Some(e) = (unsafe { entry(value) }) else {
            return ptr::null_mut();
        };
        let copy = e.clone();
        // A copy of a dead entry is dead too, wherever it lands.
        // SAFETY: `ctx` is this callback's option context; the name is used
        // only inside the callback.
        if let Some((key, db)) = unsafe { io::opt_ctx_key(ctx) } {
            if indexes::is_dead(db, key, e) {
                copy.killed.set();
            }
        }
        Box::into_raw(Box::new(copy)).cast()
    })
}

/// Set in an AOF-rewrite child once the gates are written.
static GATES_EMITTED: AtomicBool = AtomicBool::new(false);

/// Module-global state travels in the RDB as aux data, before the keys:
/// the gates, `[count]` then per gate `[name][schema][has_prefix][prefix]`;
/// then (version 2) the tombstones, `[count]` then per tombstone
/// `[db][kind: 0 tag, 1 role, 2 prefix][name][seq]`, so that entries an
/// invalidation killed stay dead when they load and are reclaimed.
extern "C" fn aux_save(rdb: *mut raw::RedisModuleIO, _when: c_int) {
    guard::callback((), || {
        let all = gates::snapshot();
        raw::save_unsigned(rdb, all.len() as u64);
        for g in all {
            raw::save_slice(rdb, &g.name);
            raw::save_slice(rdb, &g.schema);
            raw::save_unsigned(rdb, g.prefix.is_some().into());
            raw::save_slice(rdb, g.prefix.as_deref().unwrap_or_default());
        }
        let tombs = indexes::tombs();
        raw::save_unsigned(rdb, tombs.len() as u64);
        for (db, space, name, seq) in tombs {
            raw::save_unsigned(rdb, db as u64);
            raw::save_unsigned(rdb, tomb_kind(space));
            raw::save_slice(rdb, &name);
            raw::save_unsigned(rdb, seq);
        }
    })
}

fn tomb_kind(space: Option<Space>) -> u64 {
    match space {
        Some(Space::Tags) => 0,
        Some(Space::Roles) => 1,
        None => 2,
    }
}

fn tomb_space(kind: u64) -> Option<Option<Space>> {
    match kind {
        0 => Some(Some(Space::Tags)),
        1 => Some(Some(Space::Roles)),
        2 => Some(None),
        _ => None,
    }
}

/// Reads the tombstones of aux data version 2 and replays them.
fn load_tombs(rdb: *mut raw::RedisModuleIO) -> Result<(), redis_module::error::Error> {
    let n = raw::load_unsigned(rdb)?;
    for _ in 0..n {
        let db = i32::try_from(raw::load_unsigned(rdb)?)
            .map_err(|_| redis_module::error::Error::generic("bad tombstone db"))?;
        let space = tomb_space(raw::load_unsigned(rdb)?)
            .ok_or_else(|| redis_module::error::Error::generic("bad tombstone kind"))?;
        let name = raw::load_string_buffer(rdb)?.as_ref().to_vec();
        let seq = raw::load_unsigned(rdb)?;
        if !seq::observe(seq) {
            return Err(redis_module::error::Error::generic(
                "tombstone sequence out of range",
            ));
        }
        indexes::bury(db, space, &name, seq);
    }
    Ok(())
}

extern "C" fn aux_load(rdb: *mut raw::RedisModuleIO, encver: c_int, _when: c_int) -> c_int {
    const ERR: c_int = raw::REDISMODULE_ERR as c_int;
    guard::callback(ERR, || {
        // SAFETY: `rdb` is the IO context of this running callback.
        let warn = |msg: &str| unsafe { io::log_io_warning(rdb, msg) };
        if !(1..=ENCVER).contains(&encver) {
            warn(&format!("tcache: cannot load gates of encoding {encver}"));
            return ERR;
        }
        let read = || -> Result<Vec<GateDef>, redis_module::error::Error> {
            let n = raw::load_unsigned(rdb)?;
            let mut out = Vec::new();
            for _ in 0..n {
                let name = raw::load_string_buffer(rdb)?.as_ref().to_vec();
                let schema = raw::load_string_buffer(rdb)?.as_ref().to_vec();
                let has_prefix = raw::load_unsigned(rdb)? != 0;
                let prefix = raw::load_string_buffer(rdb)?.as_ref().to_vec();
                out.push(GateDef {
                    name,
                    schema,
                    prefix: has_prefix.then_some(prefix),
                });
            }
            Ok(out)
        };
        let Ok(list) = read() else {
            return ERR;
        };
        if encver >= 2 && load_tombs(rdb).is_err() {
            warn("tcache: bad tombstones in RDB");
            return ERR;
        }
        let refused = gates::replace_all(list);
        for (name, why) in refused {
            warn(&format!(
                "tcache: gate '{}' not loaded: {why}",
                String::from_utf8_lossy(&name)
            ));
        }
        raw::REDISMODULE_OK as c_int
    })
}

/// Called whenever a key of this type leaves a database: DEL, UNLINK, expiry,
/// eviction, overwrite by another type, RENAME/MOVE source, module deletes.
/// (A tcache write over an entry overwrites it in place, without this hook.)
extern "C" fn unlink2(ctx: *mut raw::RedisModuleKeyOptCtx, value: *const c_void) {
    guard::callback((), || {
        // SAFETY: Redis passes a value of this type.
        let Some(e) = (unsafe { entry(value) }) else {
            return;
        };
        // SAFETY: `ctx` is this callback's option context; the name is used
        // only inside the callback.
        if let Some((key, db)) = unsafe { io::opt_ctx_key(ctx) } {
            indexes::with_db(db, |ix| {
                // Leaving while dead (RENAME, MOVE...): stays dead where it lands.
                if ix.dead().kills(key, e.space(), e.tags(), e.seq) {
                    e.killed.set();
                }
                ix.remove(key, e.tags())
            });
            leases::revoke(db, key);
        }
    })
}
