//! RDB helpers for the corruption tests and fixtures: the CRC-64 Redis puts
//! at the end of DUMP payloads and RDB files (Jones polynomial, reflected,
//! as in Redis's crc64.c), and the layout of a module value in a DUMP.

/// CRC-64/Jones as Redis computes it: reflected, polynomial
/// 0xad93d23594c935a9, initial value 0, no final xor.
pub fn crc64(data: &[u8]) -> u64 {
    const POLY_REFLECTED: u64 = 0x95ac_9329_ac4b_c9b5;
    let mut crc = 0u64;
    for &b in data {
        crc ^= u64::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY_REFLECTED
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// A DUMP payload is `[value][RDB version: 2 bytes LE][CRC-64 LE of all
/// before it]`. Returns the value part and the version bytes.
pub fn split_dump(payload: &[u8]) -> (&[u8], [u8; 2]) {
    assert!(payload.len() > 10, "DUMP payload too short: {payload:02x?}");
    let body_end = payload.len() - 10;
    let crc = u64::from_le_bytes(payload[payload.len() - 8..].try_into().unwrap());
    assert_eq!(
        crc,
        crc64(&payload[..payload.len() - 8]),
        "the DUMP payload's CRC does not match: the CRC function is wrong"
    );
    (
        &payload[..body_end],
        [payload[body_end], payload[body_end + 1]],
    )
}

/// Builds a DUMP payload from a value part and an RDB version, with its CRC.
pub fn make_dump(value: &[u8], version: [u8; 2]) -> Vec<u8> {
    let mut out = value.to_vec();
    out.extend_from_slice(&version);
    let crc = crc64(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Rewrites the CRC-64 at the end of an RDB file (the last 8 bytes) to
/// match its content.
pub fn fix_file_crc(rdb: &mut [u8]) {
    let n = rdb.len();
    assert!(n > 8);
    let crc = crc64(&rdb[..n - 8]);
    rdb[n - 8..].copy_from_slice(&crc.to_le_bytes());
}

/// RDB length encoding (as rdbSaveLen writes it).
pub fn encode_len(n: u64) -> Vec<u8> {
    if n < 1 << 6 {
        vec![n as u8]
    } else if n < 1 << 14 {
        vec![0x40 | (n >> 8) as u8, n as u8]
    } else if n <= u64::from(u32::MAX) {
        let mut v = vec![0x80];
        v.extend_from_slice(&(n as u32).to_be_bytes());
        v
    } else {
        let mut v = vec![0x81];
        v.extend_from_slice(&n.to_be_bytes());
        v
    }
}

/// Reads an RDB length at `b[at..]`: (value, bytes used).
pub fn decode_len(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let first = *b.get(at)?;
    match first >> 6 {
        0 => Some((u64::from(first & 0x3f), 1)),
        1 => Some((
            (u64::from(first & 0x3f) << 8) | u64::from(*b.get(at + 1)?),
            2,
        )),
        _ if first == 0x80 => Some((
            u64::from(u32::from_be_bytes(b.get(at + 1..at + 5)?.try_into().ok()?)),
            5,
        )),
        _ if first == 0x81 => Some((
            u64::from_be_bytes(b.get(at + 1..at + 9)?.try_into().ok()?),
            9,
        )),
        _ => None,
    }
}

/// The parts of a module value as DUMP writes it for tcache: `07` (module
/// type, v2), the 64-bit module id (`0x81` + 8 bytes BE: 54 bits of type
/// name, 10 bits of encoding version), opcode `05` (string), its length,
/// the entry bytes, opcode `00` (EOF).
#[derive(Clone, Debug)]
pub struct ModuleValue {
    pub module_id: u64,
    pub entry: Vec<u8>,
}

impl ModuleValue {
    pub fn parse(value: &[u8]) -> Option<ModuleValue> {
        if value.first() != Some(&7) {
            return None;
        }
        let (module_id, n) = decode_len(value, 1)?;
        let mut at = 1 + n;
        if value.get(at) != Some(&5) {
            return None;
        }
        at += 1;
        let (len, n) = decode_len(value, at)?;
        at += n;
        let entry = value.get(at..at + len as usize)?.to_vec();
        at += len as usize;
        (value.get(at) == Some(&0) && at + 1 == value.len())
            .then_some(ModuleValue { module_id, entry })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![7];
        v.extend(encode_len(self.module_id));
        v.push(5);
        v.extend(encode_len(self.entry.len() as u64));
        v.extend_from_slice(&self.entry);
        v.push(0);
        v
    }

    /// The module id's encoding version (its 10 low bits).
    pub fn encver(&self) -> u64 {
        self.module_id & 1023
    }
}

/// What a server did with an RDB file it was started on.
pub enum LoadOutcome {
    /// It loaded the file and answers on this port (killed on drop).
    Loaded(Running),
    /// It exited during start-up: its exit status and its log.
    Exited {
        status: std::process::ExitStatus,
        log: String,
    },
    /// It logged that it refuses the file ("Internal error in RDB reading"),
    /// then did not exit: the server's own RDB checker, which it runs after
    /// a refusal, spins on some corrupt module values (seen on Valkey 9.1.2,
    /// in `rdbLoadCheckModuleValue` under `redis_check_rdb`). Killed.
    RefusedThenHung { log: String },
}

/// A server started by [`start_on_rdb`]; killed and its directory removed on drop.
pub struct Running {
    pub port: u16,
    pub dir: std::path::PathBuf,
    child: std::process::Child,
}

impl Running {
    pub fn log(&self) -> String {
        std::fs::read(self.dir.join("server.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Starts `$TCACHE_SERVER` with the module on `rdb` (written as dump.rdb in a
/// fresh directory under target/test-servers) and waits, with a deadline,
/// until it either answers PING after loading or exits.
pub fn start_on_rdb(rdb: &[u8], tag: &str) -> LoadOutcome {
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-servers")
        .join(format!("rdb-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create server dir");
    std::fs::write(dir.join("dump.rdb"), rdb).expect("write dump.rdb");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let stdio = std::fs::File::create(dir.join("stdio.log")).expect("stdio.log");
    let mut child = Command::new(super::server::server_binary())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(&dir)
        .args([
            "--dbfilename",
            "dump.rdb",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--logfile")
        .arg(dir.join("server.log"))
        .arg("--loadmodule")
        .arg(super::server::module_path())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(stdio.try_clone().expect("dup"))
        .stderr(stdio)
        .spawn()
        .expect("spawn server");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused_at: Option<Instant> = None;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut log = std::fs::read(dir.join("server.log"))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            log.push_str(&String::from_utf8_lossy(
                &std::fs::read(dir.join("stdio.log")).unwrap_or_default(),
            ));
            if status.signal().is_none() && !std::thread::panicking() {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return LoadOutcome::Exited { status, log };
        }
        if let Ok(mut c) = super::resp::Conn::try_connect(port, Duration::from_millis(200)) {
            c.set_read_timeout(Duration::from_secs(5));
            if let Ok(super::resp::Value::Simple(s)) = c.try_cmd(&[b"PING"]) {
                if s == "PONG" {
                    return LoadOutcome::Loaded(Running { port, dir, child });
                }
            }
        }
        let log = || {
            std::fs::read(dir.join("server.log"))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        if refused_at.is_none() && log().contains("Internal error in RDB reading") {
            refused_at = Some(Instant::now());
        }
        // Refused, but not gone 10 s later: the checker hangs (a bound for
        // "never", not a timing expectation).
        if refused_at.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
            let _ = child.kill();
            let _ = child.wait();
            let log = log();
            let _ = std::fs::remove_dir_all(&dir);
            return LoadOutcome::RefusedThenHung { log };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "server on {} neither loaded nor exited in 30 s",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
