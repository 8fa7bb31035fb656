//! Throw-away redis-server / valkey-server processes for integration tests.
//!
//! Binary: env `TCACHE_SERVER` (default `/usr/bin/redis-server`).
//! Module: env `TCACHE_MODULE` (default `<crate>/target/release/libtcache.so`).
//! Each server gets a free port on 127.0.0.1 and its own directory under
//! `target/test-servers/`, removed on drop unless the test is panicking.

use std::fs::{self, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::resp::{Conn, Value};

/// How long a server may take to answer PING after being spawned.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long polling helpers (`wait_for_sync`, ...) wait by default.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(10);

const LOG_FILE: &str = "server.log";
const STDIO_FILE: &str = "stdio.log";

/// The server binary the tests run: `$TCACHE_SERVER` or `/usr/bin/redis-server`.
pub fn server_binary() -> PathBuf {
    match std::env::var_os("TCACHE_SERVER") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("/usr/bin/redis-server"),
    }
}

/// The module the tests load: `$TCACHE_MODULE` or `<crate>/target/release/libtcache.so`.
pub fn module_path() -> PathBuf {
    match std::env::var_os("TCACHE_MODULE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/libtcache.so"),
    }
}

/// Calls `cond` every few milliseconds until it returns true; panics after
/// `timeout` with `what` in the message.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Polls the replica's `INFO replication` until its link to the primary is up
/// and no sync is in progress.
#[track_caller]
pub fn wait_for_sync(replica: &Server) {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        let info = replica.info("replication");
        let up = info_value(&info, "master_link_status") == Some("up".into())
            && info_value(&info, "master_sync_in_progress") != Some("1".into());
        if up {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "replica on port {} did not sync within {WAIT_TIMEOUT:?}\nINFO replication:\n{info}\n\
                 replica log:\n{}",
                replica.port,
                replica.log_tail()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The value of `field:` in an INFO reply text.
pub fn info_value(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == field).then(|| v.trim().to_string())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot pick a free port")
}

fn unique_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let thread_name: String = thread::current()
        .name()
        .unwrap_or("server")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(48)
        .collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-servers")
        .join(format!("{thread_name}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Configuration of a server to start; see [`Server::builder`].
#[derive(Clone, Debug)]
pub struct ServerBuilder {
    binary: PathBuf,
    module: Option<PathBuf>,
    module_args: Vec<String>,
    args: Vec<(String, Vec<String>)>,
    port: Option<u16>,
}

impl ServerBuilder {
    /// Adds `--name value` (e.g. `.arg("maxmemory", "1mb")`). Setting `save`,
    /// `appendonly`, `enable-debug-command`, `enable-module-command` or
    /// `repl-diskless-sync-delay` replaces the harness default for it
    /// (`""`, `no`, `yes`, `yes`, `0`).
    pub fn arg(mut self, name: &str, value: &str) -> Self {
        self.args.push((name.to_string(), vec![value.to_string()]));
        self
    }

    /// Adds `--name v1 v2 ...` for options that take several words.
    pub fn arg_multi(mut self, name: &str, values: &[&str]) -> Self {
        let values = values.iter().map(|v| v.to_string()).collect();
        self.args.push((name.to_string(), values));
        self
    }

    /// Appends arguments passed to the module after its path in `--loadmodule`.
    pub fn module_args(mut self, args: &[&str]) -> Self {
        self.module_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Starts the plain server, without loading the module.
    pub fn no_module(mut self) -> Self {
        self.module = None;
        self
    }

    /// Loads this module file instead of the default.
    pub fn module(mut self, path: impl Into<PathBuf>) -> Self {
        self.module = Some(path.into());
        self
    }

    /// Runs this server binary instead of `$TCACHE_SERVER`.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = path.into();
        self
    }

    /// Tries this port first (falls back to a free one if it is taken).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Makes the server a replica of `primary` (`--replicaof 127.0.0.1 <port>`).
    pub fn replica_of(mut self, primary: &Server) -> Self {
        self.args.retain(|(n, _)| !is_name(n, "replicaof"));
        let port = primary.port.to_string();
        self.arg_multi("replicaof", &["127.0.0.1", &port])
    }

    fn has_arg(&self, name: &str) -> bool {
        self.args.iter().any(|(n, _)| is_name(n, name))
    }

    fn command_line(&self, port: u16, dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        let mut push = |name: &str, values: &[&str]| {
            v.push(format!("--{name}"));
            v.extend(values.iter().map(|s| s.to_string()));
        };
        push("port", &[&port.to_string()]);
        push("bind", &["127.0.0.1"]);
        push("dir", &[&dir.to_string_lossy()]);
        push("logfile", &[&dir.join(LOG_FILE).to_string_lossy()]);
        push("daemonize", &["no"]);
        for (name, value) in [
            ("save", ""),
            ("appendonly", "no"),
            ("enable-debug-command", "yes"),
            ("enable-module-command", "yes"),
            // Replicas sync at once instead of after the default 5 s.
            ("repl-diskless-sync-delay", "0"),
        ] {
            if !self.has_arg(name) {
                push(name, &[value]);
            }
        }
        if let Some(module) = &self.module {
            let mut words = vec![module.to_string_lossy().into_owned()];
            words.extend(self.module_args.iter().cloned());
            let words: Vec<&str> = words.iter().map(|s| s.as_str()).collect();
            push("loadmodule", &words);
        }
        for (name, values) in &self.args {
            let values: Vec<&str> = values.iter().map(|s| s.as_str()).collect();
            push(name.trim_start_matches('-'), &values);
        }
        v
    }

    /// Spawns the server and waits until it answers PING.
    #[track_caller]
    pub fn start(self) -> Server {
        if !self.binary.exists() {
            panic!(
                "server binary {} not found (set TCACHE_SERVER, or run `make deps`)",
                self.binary.display()
            );
        }
        if let Some(m) = &self.module {
            if !m.exists() {
                panic!(
                    "module {} not found: run `cargo build --release` (or set TCACHE_MODULE), \
                     or use Server::builder().no_module()",
                    m.display()
                );
            }
        }
        let dir = unique_dir();
        let mut port = self.port.unwrap_or_else(free_port);
        for _attempt in 0..8 {
            match spawn_ready(&self, port, &dir) {
                Ok(child) => {
                    return Server {
                        port,
                        dir,
                        config: self,
                        child: Some(child),
                    }
                }
                Err(StartError::PortInUse) => port = free_port(),
                Err(StartError::Failed(msg)) => panic!("{msg}"),
            }
        }
        panic!(
            "could not find a free port for the server (dir {})",
            dir.display()
        );
    }
}

/// The command line as a shell would need it (for error messages).
fn shell_words(args: &[String]) -> String {
    let quote = |a: &String| {
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            format!("{a:?}")
        } else {
            a.clone()
        }
    };
    args.iter().map(quote).collect::<Vec<_>>().join(" ")
}

fn is_name(arg: &str, name: &str) -> bool {
    arg.trim_start_matches('-').eq_ignore_ascii_case(name)
}

enum StartError {
    PortInUse,
    Failed(String),
}

fn spawn_ready(cfg: &ServerBuilder, port: u16, dir: &Path) -> Result<Child, StartError> {
    let args = cfg.command_line(port, dir);
    // Only what this start writes tells whether the port was taken.
    let log_start = fs::metadata(dir.join(LOG_FILE)).map_or(0, |m| m.len() as usize);
    let stdio = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(STDIO_FILE))
        .expect("cannot open stdio.log");
    let mut child = Command::new(&cfg.binary)
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdio.try_clone().expect("dup stdio.log"))
        .stderr(stdio)
        .spawn()
        .map_err(|e| StartError::Failed(format!("cannot spawn {}: {e}", cfg.binary.display())))?;
    let describe = |what: &str| {
        format!(
            "{what}\ncommand: {} {}\ndir: {}\n--- log tail ---\n{}",
            cfg.binary.display(),
            shell_words(&args),
            dir.display(),
            log_tail_of(dir)
        )
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let log = fs::read(dir.join(LOG_FILE)).unwrap_or_default();
                let new_log = String::from_utf8_lossy(log.get(log_start..).unwrap_or_default());
                if new_log.contains("Address already in use") {
                    return Err(StartError::PortInUse);
                }
                return Err(StartError::Failed(describe(&format!(
                    "server exited during startup ({status})"
                ))));
            }
            Ok(None) => {}
            Err(e) => return Err(StartError::Failed(describe(&format!("wait failed: {e}")))),
        }
        if answers_ping(port, child.id()) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(StartError::Failed(describe(&format!(
                "server did not answer PING on port {port} within {START_TIMEOUT:?}"
            ))));
        }
        thread::sleep(Duration::from_millis(15));
    }
}

/// True if the server on `port` is process `pid` and replies PONG.
fn answers_ping(port: u16, pid: u32) -> bool {
    let Ok(mut c) = Conn::try_connect(port, Duration::from_millis(200)) else {
        return false;
    };
    c.set_read_timeout(Duration::from_millis(500));
    match c.try_cmd(&[b"PING"]) {
        Ok(Value::Simple(s)) if s == "PONG" => {}
        _ => return false,
    }
    // Make sure it is our process and not another server that took the port.
    match c.try_cmd(&[b"INFO", b"server"]) {
        Ok(Value::Bulk(b)) | Ok(Value::Verbatim(b)) => {
            info_value(&String::from_utf8_lossy(&b), "process_id") == Some(pid.to_string())
        }
        _ => false,
    }
}

fn log_tail_of(dir: &Path) -> String {
    let mut out = tail(&dir.join(LOG_FILE), 40);
    let stdio = tail(&dir.join(STDIO_FILE), 20);
    if !stdio.trim().is_empty() {
        out.push_str("\n--- stdout/stderr ---\n");
        out.push_str(&stdio);
    }
    out
}

/// A running server process, killed on drop.
pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    config: ServerBuilder,
    child: Option<Child>,
}

impl Server {
    /// A builder defaulting to `$TCACHE_SERVER` with `$TCACHE_MODULE` loaded.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            binary: server_binary(),
            module: Some(module_path()),
            module_args: Vec::new(),
            args: Vec::new(),
            port: None,
        }
    }

    /// Starts a server with the module and default settings.
    #[track_caller]
    pub fn start() -> Server {
        Server::builder().start()
    }

    /// Starts a replica of `primary` with the same binary, module and args.
    #[track_caller]
    pub fn replica_of(primary: &Server) -> Server {
        let mut cfg = primary.config.clone();
        cfg.port = None;
        cfg.replica_of(primary).start()
    }

    /// A new RESP2 connection.
    #[track_caller]
    pub fn conn(&self) -> Conn {
        Conn::connect(self.port)
    }

    /// A new connection switched to RESP3 with `HELLO 3`.
    #[track_caller]
    pub fn conn3(&self) -> Conn {
        Conn::connect_resp3(self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The text of `INFO <section>`.
    #[track_caller]
    pub fn info(&self, section: &str) -> String {
        match self.conn().q(&["INFO", section]) {
            Value::Bulk(b) | Value::Verbatim(b) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("INFO {section} on port {}: got {other:?}", self.port),
        }
    }

    /// One `field:value` of `INFO <section>`.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        info_value(&self.info(section), field)
    }

    /// "valkey" or "redis", from `INFO server`.
    pub fn kind(&self) -> &'static str {
        let info = self.info("server");
        let valkey = info_value(&info, "valkey_version").is_some()
            || info_value(&info, "server_name").is_some_and(|n| n.eq_ignore_ascii_case("valkey"));
        if valkey {
            "valkey"
        } else {
            "redis"
        }
    }

    /// The server's own version (`valkey_version` for valkey, else `redis_version`).
    pub fn version(&self) -> String {
        let info = self.info("server");
        info_value(&info, "valkey_version")
            .or_else(|| info_value(&info, "redis_version"))
            .unwrap_or_default()
    }

    /// The last lines of the server log (and of its stdout/stderr, if any).
    pub fn log_tail(&self) -> String {
        log_tail_of(&self.dir)
    }

    /// Stops the server: `SHUTDOWN NOSAVE NOW`, then SIGKILL if it is still
    /// up after a few seconds. Files in `dir` are kept. No-op if stopped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(mut c) = Conn::try_connect(self.port, Duration::from_secs(1)) {
            c.set_read_timeout(Duration::from_secs(5));
            let _ = c.try_cmd(&[b"SHUTDOWN", b"NOSAVE", b"NOW"]);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILLs the server (a crash: nothing is flushed). No-op if stopped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if running, then starts it again with the same
    /// binary, args, port and directory (so it loads its RDB/AOF from there).
    #[track_caller]
    pub fn restart(&mut self) {
        self.stop();
        match spawn_ready(&self.config, self.port, &self.dir) {
            Ok(child) => self.child = Some(child),
            Err(StartError::PortInUse) => panic!(
                "restart: port {} is taken by another process\n{}",
                self.port,
                self.log_tail()
            ),
            Err(StartError::Failed(msg)) => panic!("restart failed: {msg}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "test failed: server dir kept at {} (port {})\n--- log tail ---\n{}",
                self.dir.display(),
                self.port,
                self.log_tail()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
