//! Thin wrappers over the raw Redis module API that the crate does not cover:
//! selected database, clock, ACL checks for keys reached through an index,
//! replication and AOF emission with byte buffers, key names in type callbacks.

use std::ffi::{c_char, c_int, c_longlong, CStr};
use std::sync::atomic::{AtomicBool, Ordering};

use redis_module::{raw, Context, ContextFlags, RedisString, RedisValue};

use crate::core::entry::Entry;
use crate::core::index::NO_EXPIRE;
use crate::errors::NotStored;
use crate::glue::raw::{bytes_of, cstr, Arg};
use crate::glue::store::ENTRY_TYPE;

/// Set at load on Valkey, whose module API differs from Redis's in a few
/// signatures exported under the same names.
static SERVER_IS_VALKEY: AtomicBool = AtomicBool::new(false);

/// Notes which server loaded the module (from `INFO server`).
pub fn detect_server(ctx: &Context) {
    let valkey = match ctx.call("INFO", &["server"]) {
        Ok(RedisValue::SimpleString(s)) | Ok(RedisValue::BulkString(s)) => {
            s.contains("valkey_version:")
        }
        Ok(RedisValue::BulkRedisString(s)) => s.to_string_lossy().contains("valkey_version:"),
        Ok(RedisValue::StringBuffer(b)) => String::from_utf8_lossy(&b).contains("valkey_version:"),
        _ => false,
    };
    SERVER_IS_VALKEY.store(valkey, Ordering::Relaxed);
}

/// Valkey 9's `VALKEYMODULE_OPTIONS_HANDLE_ATOMIC_SLOT_MIGRATION` (not in the
/// crate's header): without it Valkey refuses `CLUSTER MIGRATESLOTS`.
const VALKEY_HANDLE_ATOMIC_SLOT_MIGRATION: c_int = 1 << 5;

/// Sets the module options: IO errors are ours to handle (a corrupt RDB or
/// RESTORE payload is refused, not an abort); on Valkey, atomic slot
/// migration is supported (keys of a slot being imported are indexed like
/// any arrival, and the import stream's TCACHE.APPLY is accepted). Call
/// after [`detect_server`].
pub fn set_module_options(ctx: &Context) {
    let mut options = redis_module::ModuleOptions::HANDLE_IO_ERRORS.bits();
    if SERVER_IS_VALKEY.load(Ordering::Relaxed) {
        options |= VALKEY_HANDLE_ATOMIC_SLOT_MIGRATION;
    }
    // SAFETY: SetModuleOptions only records the bits for this module.
    unsafe {
        if let Some(f) = raw::RedisModule_SetModuleOptions {
            f(ctx.ctx, options);
        }
    }
}

/// A binary-safe Redis string (the crate's `create_string` stops at NUL bytes).
pub fn string(ctx: &Context, b: &[u8]) -> RedisString {
    RedisString::create_from_slice(ctx.ctx, b)
}

/// The database the client has selected.
pub fn selected_db(ctx: &Context) -> i32 {
    // SAFETY: `ctx.ctx` is the live context Redis passed to this command or callback.
    unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx.ctx)) }
}

/// Selects database `db` for this context; false when out of range.
pub fn select_db(ctx: &Context, db: i32) -> bool {
    // SAFETY: as above; SelectDb validates `db` itself.
    unsafe {
        raw::RedisModule_SelectDb.is_some_and(|f| f(ctx.ctx, db) == raw::REDISMODULE_OK as c_int)
    }
}

/// Unix time in milliseconds, as Redis sees it.
pub fn now_ms() -> i64 {
    // SAFETY: Milliseconds takes no arguments and only reads the server clock.
    unsafe { raw::RedisModule_Milliseconds.map_or(0, |f| f()) }
}

/// A key handle for entries, closed on drop: read-only without touching the
/// LRU/LFU (keyspace callbacks), or writable (TCACHE.SET), with the raw calls the
/// crate does not wrap (absolute expiry).
pub struct EntryKey(*mut raw::RedisModuleKey);

impl EntryKey {
    pub fn open(ctx: &Context, name: &RedisString) -> EntryKey {
        Self::open_mode(
            ctx,
            name,
            raw::REDISMODULE_READ | raw::REDISMODULE_OPEN_KEY_NOTOUCH,
        )
    }

    pub fn open_write(ctx: &Context, name: &RedisString) -> EntryKey {
        Self::open_mode(ctx, name, raw::REDISMODULE_READ | raw::REDISMODULE_WRITE)
    }

    /// Opens the key named by a command argument.
    pub fn open_arg(ctx: &Context, name: Arg, mode: u32) -> EntryKey {
        // SAFETY: `ctx` and `name` are live for the command; OpenKey returns
        // NULL or a handle we close in Drop.
        EntryKey(unsafe {
            raw::RedisModule_OpenKey.map_or(std::ptr::null_mut(), |f| {
                f(ctx.ctx, name.as_ptr(), mode as c_int)
            })
        })
    }

    fn open_mode(ctx: &Context, name: &RedisString, mode: u32) -> EntryKey {
        // SAFETY: `ctx` and `name` are live; OpenKey returns NULL or a handle we close in Drop.
        EntryKey(unsafe {
            raw::RedisModule_OpenKey.map_or(std::ptr::null_mut(), |f| {
                f(ctx.ctx, name.inner, mode as c_int)
            })
        })
    }

    /// Whether the key holds a value that is not an entry (string, hash, ...).
    pub fn holds_other_type(&self) -> bool {
        if self.0.is_null() {
            return false;
        }
        // SAFETY: `self.0` is an open key.
        let kind = unsafe { raw::RedisModule_KeyType.map_or(0, |f| f(self.0)) };
        kind != raw::REDISMODULE_KEYTYPE_EMPTY as c_int && self.entry().is_none()
    }

    /// Stores `entry` as the key's value (a writable key that is empty or
    /// holds an entry). An entry already there is overwritten in place and
    /// does not go through the unlink hook: the caller re-indexes.
    pub fn set_entry(&mut self, entry: Entry) -> Result<(), NotStored> {
        if self.0.is_null() {
            return Err(NotStored::KeyNotOpen);
        }
        // SAFETY: `self.0` is an open key.
        if let Some(old) = unsafe { entry_ptr(self.0) } {
            // No second key lookup, no free and allocation of the value box.
            // Closing the key, opened for writing, signals the modification
            // as SetValue would.
            // SAFETY: `old` is the live Box<Entry> the key holds; `&mut self`
            // means no reference lent by `entry()` is alive.
            unsafe { *old = entry };
            return Ok(());
        }
        let value = Box::into_raw(Box::new(entry));
        // SAFETY: `self.0` is open for writing; Redis takes ownership of `value`
        // on success and frees it with the type's free callback.
        let status = unsafe {
            raw::RedisModule_ModuleTypeSetValue.map_or(raw::REDISMODULE_ERR as c_int, |f| {
                f(self.0, *ENTRY_TYPE.raw_type.borrow(), value.cast())
            })
        };
        if status != raw::REDISMODULE_OK as c_int {
            // SAFETY: Redis did not take the value; we still own it.
            drop(unsafe { Box::from_raw(value) });
            return Err(NotStored::Refused);
        }
        Ok(())
    }

    /// Deletes whatever the key holds (a writable key).
    pub fn delete(&self) {
        // SAFETY: `self.0` is NULL-checked and open for writing.
        unsafe {
            if let (false, Some(f)) = (self.0.is_null(), raw::RedisModule_DeleteKey) {
                f(self.0);
            }
        }
    }

    /// Sets the absolute expiry `at` (Unix ms): exactly where the server has
    /// SetAbsExpire (Valkey, and Redis 7.0 patch releases such as Debian's
    /// 7.0.15, not 7.0.0); otherwise through SetExpire as `ttl_ms`, the time
    /// left, which counts from the same clock as `now_ms`.
    pub fn expire(&self, at: i64, ttl_ms: i64) {
        // SAFETY: `self.0` is open for writing and holds a value.
        unsafe {
            match (raw::RedisModule_SetAbsExpire, raw::RedisModule_SetExpire) {
                (Some(abs), _) => {
                    abs(self.0, at);
                }
                (None, Some(rel)) => {
                    rel(self.0, ttl_ms);
                }
                (None, None) => {}
            }
        }
    }

    /// The entry the key holds, if it is one of ours.
    pub fn entry(&self) -> Option<&Entry> {
        if self.0.is_null() {
            return None;
        }
        // SAFETY: `self.0` is an open key; the value pointer of a key of our type
        // is a Box<Entry> this module created, alive while the key is open.
        unsafe { entry_of(self.0) }
    }

    /// Absolute expiry in unix ms, or `NO_EXPIRE`. Exact where the server can
    /// tell it (GetAbsExpire: Valkey, Redis 7.0.15; not 7.0.0); otherwise
    /// derived from the remaining time, an already-passed expiry counting as
    /// passed.
    pub fn expire_at(&self) -> i64 {
        if self.0.is_null() {
            return NO_EXPIRE;
        }
        if let Some(at) = self.exact_expire_at() {
            return at;
        }
        // SAFETY: `self.0` is an open key.
        let rem = unsafe { raw::RedisModule_GetExpire.map_or(-1, |f| f(self.0)) };
        match rem {
            r if r < 0 => NO_EXPIRE,
            0 => now_ms() - 1,
            r => now_ms() + r,
        }
    }

    /// The stored absolute expiry, when the server offers GetAbsExpire.
    pub fn exact_expire_at(&self) -> Option<i64> {
        if self.0.is_null() {
            return None;
        }
        // SAFETY: `self.0` is an open key; GetAbsExpire only reads it.
        let at = unsafe { raw::RedisModule_GetAbsExpire.map(|f| f(self.0))? };
        Some(if at < 0 { NO_EXPIRE } else { at })
    }
}

impl Drop for EntryKey {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the handle came from OpenKey and is closed exactly once.
            unsafe {
                if let Some(close) = raw::RedisModule_CloseKey {
                    close(self.0);
                }
            }
        }
    }
}

/// The user running the current command, resolved once so that many keys can
/// be checked without a lookup each. `None` for internal clients (AOF, master).
pub struct Caller(*mut raw::RedisModuleUser);

thread_local! {
    /// The user a cluster-wide invalidation is applied for on a node other than
    /// its coordinator (that context has no client of its own).
    static AS_USER: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with every ACL check made for `user`.
pub fn as_user<R>(user: &[u8], f: impl FnOnce() -> R) -> R {
    AS_USER.with(|u| *u.borrow_mut() = Some(user.to_vec()));
    let r = f();
    AS_USER.with(|u| *u.borrow_mut() = None);
    r
}

/// Whether `user` exists on this node.
pub fn user_exists(ctx: &Context, user: &[u8]) -> bool {
    Caller::named(ctx, user).is_some()
}

/// The name of the user running the current command; `None` for internal
/// clients (primary, AOF) and contexts without a client.
pub fn current_user_name(ctx: &Context) -> Option<Vec<u8>> {
    if let Some(name) = AS_USER.with(|u| u.borrow().clone()) {
        return Some(name);
    }
    if internal_client(ctx) {
        return None;
    }
    // SAFETY: GetCurrentUserName returns a new string (or NULL), copied and freed here.
    unsafe {
        let p = raw::RedisModule_GetCurrentUserName?(ctx.ctx);
        if p.is_null() {
            return None;
        }
        let name = bytes_of(p).to_vec();
        if let Some(free) = raw::RedisModule_FreeString {
            free(ctx.ctx, p);
        }
        Some(name)
    }
}

/// Whether the command comes from the primary or an AOF being loaded: such a
/// client has no user (Redis 7.0's RM_GetCurrentUserName dereferences it and
/// crashes), and what it replays was checked where it first ran.
pub fn internal_client(ctx: &Context) -> bool {
    ctx.get_flags()
        .intersects(ContextFlags::REPLICATED | ContextFlags::LOADING)
}

impl Caller {
    /// The calling user; `None` for internal clients (primary, AOF).
    pub fn current(ctx: &Context) -> Option<Caller> {
        Caller::named(ctx, &current_user_name(ctx)?)
    }

    /// The user called `name`, if it exists on this node.
    fn named(ctx: &Context, name: &[u8]) -> Option<Caller> {
        let name = string(ctx, name);
        // SAFETY: `name` is a live string for the call; GetModuleUserFromUserName
        // returns a user we free in Drop (or NULL).
        let user = unsafe { raw::RedisModule_GetModuleUserFromUserName?(name.inner) };
        (!user.is_null()).then_some(Caller(user))
    }

    /// Whether this user may delete `key`.
    pub fn may_delete(&self, key: &RedisString) -> bool {
        self.may(key, raw::REDISMODULE_CMD_KEY_DELETE)
    }

    /// Whether this user may modify `key`.
    pub fn may_update(&self, key: &RedisString) -> bool {
        self.may(key, raw::REDISMODULE_CMD_KEY_UPDATE)
    }

    /// Whether this user may read `key`.
    pub fn may_read(&self, key: &RedisString) -> bool {
        self.may(key, raw::REDISMODULE_CMD_KEY_ACCESS)
    }

    /// Whether this user may `flag` every key starting with `prefix`, where the
    /// server can tell (RedisModule_ACLCheckKeyPrefixPermissions: Valkey, Redis
    /// 7.4+); `None` where it cannot (Redis 7.0).
    pub fn may_prefix(&self, ctx: &Context, prefix: &[u8], flag: u32) -> Option<bool> {
        // SAFETY: the API pointer is written once at load.
        let check = unsafe { raw::RedisModule_ACLCheckKeyPrefixPermissions }?;
        let ok = raw::REDISMODULE_OK as c_int;
        if SERVER_IS_VALKEY.load(Ordering::Relaxed) {
            // Valkey exports the function under the same name with its own
            // signature: (user, const char *prefix, size_t len, unsigned flags).
            type ValkeyCheck = unsafe extern "C" fn(
                *mut raw::RedisModuleUser,
                *const c_char,
                usize,
                std::ffi::c_uint,
            ) -> c_int;
            // SAFETY: on Valkey the pointer is that function (valkeymodule.h);
            // both are plain C function pointers of the same size.
            let check: ValkeyCheck = unsafe { std::mem::transmute(check) };
            // SAFETY: `self.0` is a valid user until Drop; `prefix` is live.
            return Some(
                unsafe { check(self.0, prefix.as_ptr().cast(), prefix.len(), flag) } == ok,
            );
        }
        let p = string(ctx, prefix);
        // SAFETY: `self.0` is a valid user until Drop; `p` is a live string.
        Some(unsafe { check(self.0, p.inner, flag as c_int) } == ok)
    }

    /// Whether this user may run the command `argv` (name and arguments).
    pub fn may_run(&self, ctx: &Context, argv: &[&[u8]]) -> bool {
        // SAFETY: the API pointer is written once at load.
        let Some(check) = (unsafe { raw::RedisModule_ACLCheckCommandPermissions }) else {
            return false;
        };
        let strings: Vec<RedisString> = argv.iter().map(|a| string(ctx, a)).collect();
        let mut ptrs: Vec<*mut raw::RedisModuleString> = strings.iter().map(|s| s.inner).collect();
        let Ok(argc) = c_int::try_from(ptrs.len()) else {
            return false;
        };
        // SAFETY: `self.0` is a valid user; `ptrs` holds `argc` live strings
        // (kept alive by `strings`) for the duration of the call.
        unsafe { check(self.0, ptrs.as_mut_ptr(), argc) == raw::REDISMODULE_OK as c_int }
    }

    fn may(&self, key: &RedisString, flag: u32) -> bool {
        // SAFETY: `self.0` is a valid user until Drop; `key.inner` is a live string.
        unsafe {
            raw::RedisModule_ACLCheckKeyPermissions.is_some_and(|f| {
                f(self.0, key.inner, flag as c_int) == raw::REDISMODULE_OK as c_int
            })
        }
    }
}

/// Whether the current user may delete every one of `names` (one user
/// lookup, one check a key). Internal clients (AOF, master) may.
pub fn may_delete_all(ctx: &Context, names: &[RedisString]) -> bool {
    Caller::current(ctx).is_none_or(|caller| names.iter().all(|n| caller.may_delete(n)))
}

impl Drop for Caller {
    fn drop(&mut self) {
        // SAFETY: the user was returned by GetModuleUserFromUserName and is freed once.
        unsafe {
            if let Some(free) = raw::RedisModule_FreeModuleUser {
                free(self.0);
            }
        }
    }
}

/// PUBLISH `message` on `channel` (to this node's subscribers).
pub fn publish(ctx: &Context, channel: &RedisString, message: &RedisString) {
    // SAFETY: both strings are live for the call; PublishMessage copies what it keeps.
    unsafe {
        if let Some(publish) = raw::RedisModule_PublishMessage {
            publish(ctx.ctx, channel.inner, message.inner);
        }
    }
}

/// Replicates `TCACHE.APPLY key blob` then `PEXPIREAT key at` (absolute time).
pub fn replicate_apply(ctx: &Context, key: &RedisString, blob: &[u8], expire_at_ms: Option<i64>) {
    // One command, not APPLY then PEXPIREAT: each RM_Replicate looks the
    // command up by name and builds its argv, a tenth of a TCACHE.SET.
    // SAFETY: the format strings match the arguments: "sb" is a RedisModuleString
    // and a (pointer, length) buffer, "cl" a C string and a long long.
    unsafe {
        let Some(rep) = raw::RedisModule_Replicate else {
            return;
        };
        match expire_at_ms {
            Some(at) => rep(
                ctx.ctx,
                cstr(b"TCACHE.APPLY\0"),
                cstr(b"sbcl\0"),
                key.inner,
                blob.as_ptr().cast::<c_char>(),
                blob.len(),
                cstr(b"PXAT\0"),
                at as c_longlong,
            ),
            None => rep(
                ctx.ctx,
                cstr(b"TCACHE.APPLY\0"),
                cstr(b"sb\0"),
                key.inner,
                blob.as_ptr().cast::<c_char>(),
                blob.len(),
            ),
        };
    }
}

/// Replicates `DEL key ...` for keys this command deleted, in chunks so that no
/// single replicated command grows without bound.
pub fn replicate_del(ctx: &Context, keys: &[RedisString]) {
    const CHUNK: usize = 1024;
    for chunk in keys.chunks(CHUNK) {
        replicate_argv(ctx, b"DEL\0", chunk);
    }
}

/// Replicates `TCACHE.APPLYINVAL seq kind name ...`: a logical invalidation.
pub fn replicate_invalidation(ctx: &Context, seq: u64, kind: &[u8], names: &[&[u8]]) {
    let mut argv = vec![string(ctx, seq.to_string().as_bytes()), string(ctx, kind)];
    argv.extend(names.iter().map(|n| string(ctx, n)));
    replicate_argv(ctx, b"TCACHE.APPLYINVAL\0", &argv);
}

/// Replicates `command` (NUL-terminated) with `args`.
fn replicate_argv(ctx: &Context, command: &'static [u8], args: &[RedisString]) {
    let mut argv: Vec<*mut raw::RedisModuleString> = args.iter().map(|k| k.inner).collect();
    // SAFETY: "v" takes an array of RedisModuleString pointers and its length;
    // every pointer is a live string owned by `args` for the whole call, and
    // `command` ends with NUL.
    unsafe {
        if let Some(rep) = raw::RedisModule_Replicate {
            rep(
                ctx.ctx,
                cstr(command),
                cstr(b"v\0"),
                argv.as_mut_ptr(),
                argv.len(),
            );
        }
    }
}

/// Calls `f` with every entry of the selected database and its key name.
///
/// RM_Scan directly: the crate's `KeysCursor` retains every key name it
/// hands out and never releases it (about 30 bytes lost per key and scan).
pub fn for_each_entry<F: FnMut(&[u8], &Entry)>(ctx: &Context, mut f: F) {
    extern "C" fn visit<F: FnMut(&[u8], &Entry)>(
        _ctx: *mut raw::RedisModuleCtx,
        name: *mut raw::RedisModuleString,
        key: *mut raw::RedisModuleKey,
        data: *mut std::ffi::c_void,
    ) {
        crate::glue::guard::callback((), || {
            // SAFETY: `data` is the `&mut F` passed to RM_Scan below, alive for
            // the scan; `key` is an open key (or NULL) valid during the call.
            let f = unsafe { &mut *data.cast::<F>() };
            // SAFETY: RM_Scan passes a live key name for the call.
            if let Some(e) = unsafe { entry_of(key) } {
                f(unsafe { bytes_of(name) }, e);
            }
        })
    }
    // SAFETY: the cursor is created and destroyed here; `f` outlives every
    // RM_Scan call, which only calls `visit` synchronously.
    unsafe {
        let (Some(create), Some(scan), Some(destroy)) = (
            raw::RedisModule_ScanCursorCreate,
            raw::RedisModule_Scan,
            raw::RedisModule_ScanCursorDestroy,
        ) else {
            return;
        };
        let cursor = create();
        let data = (&mut f as *mut F).cast::<std::ffi::c_void>();
        while scan(ctx.ctx, cursor, Some(visit::<F>), data) != 0 {}
        destroy(cursor);
    }
}

/// Fires keyspace event `event` on `key` (the crate's wrapper allocates a
/// C string on every call; this is on TCACHE.SET's path).
pub fn notify(
    ctx: &Context,
    class: redis_module::NotifyEvent,
    event: &'static CStr,
    key: &RedisString,
) {
    // SAFETY: `ctx` and `key` are live; `event` is NUL-terminated and static.
    unsafe {
        if let Some(f) = raw::RedisModule_NotifyKeyspaceEvent {
            f(ctx.ctx, class.bits(), event.as_ptr(), key.inner);
        }
    }
}

/// The entry an open key holds, if it is one of ours.
///
/// # Safety
/// `key` must be NULL or an open key, and the returned reference must not
/// outlive it.
unsafe fn entry_of<'a>(key: *mut raw::RedisModuleKey) -> Option<&'a Entry> {
    entry_ptr(key)?.as_ref()
}

/// The value pointer of an open key that holds one of our entries.
///
/// # Safety
/// `key` must be NULL or an open key.
unsafe fn entry_ptr(key: *mut raw::RedisModuleKey) -> Option<*mut Entry> {
    if key.is_null() {
        return None;
    }
    let ty = raw::RedisModule_ModuleTypeGetType?(key);
    if ty.is_null() || ty != *ENTRY_TYPE.raw_type.borrow() {
        return None;
    }
    let value = raw::RedisModule_ModuleTypeGetValue?(key).cast::<Entry>();
    (!value.is_null()).then_some(value)
}
