//! A seeded command fuzzer for tcache (tests/fuzz.rs, `make soak`, `make valgrind`).
//!
//! One run drives one server: batches of pipelined commands (well-formed and
//! malformed tcache commands mixed with native keyspace commands on the same
//! keys, MULTI/EXEC groups, DUMP/RESTORE of entries, SELECT, SWAPDB, FLUSHDB,
//! DEBUG RELOAD), FETCH ... WAIT waiters on other connections that are killed,
//! unblocked or time out, and a latency probe (PING in a loop on its own
//! connection). After every batch the server must answer PING and
//! TCACHE.VERIFY must say OK; no reply may be `ERR internal error`; no PING of
//! the probe may take over 1 s.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::resp::{Conn, Value};

/// The longest a single PING of the probe may take (the bound).
pub const STALL_BOUND: Duration = Duration::from_secs(1);

/// xorshift64*: deterministic per seed, no dependency.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    pub fn bytes(&mut self, max_len: u64) -> Vec<u8> {
        let n = self.below(max_len + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The seed of a run: `$TCACHE_FUZZ_SEED` (decimal or 0x-hex) or the clock.
pub fn seed_from_env() -> u64 {
    match std::env::var("TCACHE_FUZZ_SEED") {
        Ok(s) if !s.trim().is_empty() => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("TCACHE_FUZZ_SEED={s:?} is not a u64"))
        }
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// Commands per run: `$TCACHE_FUZZ_COMMANDS` or `default`.
pub fn commands_from_env(default: u64) -> u64 {
    match std::env::var("TCACHE_FUZZ_COMMANDS") {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("TCACHE_FUZZ_COMMANDS={s:?} is not a count")),
        _ => default,
    }
}

type Cmd = Vec<Vec<u8>>;

fn cmd(words: &[&[u8]]) -> Cmd {
    words.iter().map(|w| w.to_vec()).collect()
}

/// Generates commands. Keys, tags, roles and gates come from small pools so
/// that commands meet each other's data.
pub struct Gen {
    pub r: Rng,
    /// Also generate characters whose code point is a multiple of 256
    /// (U+0100, U+1F600) where they end up in error texts: redis-module
    /// 2.0.8 truncates each char of an error to a byte, meets a NUL and
    /// panics across FFI (the server aborts). Also NUL bytes in the string
    /// config `tcache.invalidation-channel` (the next CONFIG GET aborts).
    /// Off in the suite until fixed.
    pub nul_error_chars: bool,
    /// Also put MOVE and COPY ... DB inside MULTI: on Valkey 9 the module
    /// indexes the moved or copied entry in the source database (VERIFY
    /// fails). Off on Valkey until fixed.
    pub cross_db_in_multi: bool,
    /// Let the main connection send FETCH ... WAIT. On Redis 7.0 a waiter
    /// woken as its timeout passes never gets a reply, which shifts every
    /// later reply of a pipelined connection (see
    /// [`RunOpts::wake_timeout_race`]); off there.
    pub wake_timeout_race: bool,
    /// DUMP payloads of entries seen in earlier batches, for RESTORE.
    pub dumps: Vec<Vec<u8>>,
}

const KEY_PREFIXES: &[&str] = &["a:", "b:", "report:", "perm:", "tenantA:", ""];
const KEYWORDS: &[&str] = &[
    "NX", "XX", "GATE", "LEASE", "SWR", "TAGS", "WAIT", "COUNT", "PREFIX", "RESET", "nx", "tags",
];
const GATE_NAMES: &[&str] = &[
    "g0",
    "g1",
    "g2",
    "report",
    "json",
    "perm",
    "",
    "g\x00\u{ff}",
];
const PATTERNS: &[&str] = &[
    "^a",
    "b+$",
    "^[a-z]{1,5}$",
    "(x|y)*z",
    "\\d+",
    "^(a+)+$",
    "(?=a)b",
    "[",
    "\\p{L}+",
    ".{0,20}",
    "^report:[0-9]+$",
    "(a|aa)*c",
    "\\bword\\b",
    "",
];
const PERMISSIONS: &[&str] = &[
    "users:write",
    "users:*",
    "reports:read",
    "*",
    "",
    "users",
    "a:b:c",
];

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen {
            r: Rng::new(seed),
            nul_error_chars: false,
            cross_db_in_multi: true,
            wake_timeout_race: true,
            dumps: Vec::new(),
        }
    }

    fn key(&mut self) -> Vec<u8> {
        match self.r.below(40) {
            0 => {
                let mut k = b"bin:\x00\xff".to_vec();
                k.extend(self.r.below(4).to_string().bytes());
                k
            }
            1 => Vec::new(),
            2 => self.r.bytes(12),
            _ => {
                let p = *self.r.pick(KEY_PREFIXES);
                format!("{p}{}", self.r.below(30)).into_bytes()
            }
        }
    }

    fn tag(&mut self) -> Vec<u8> {
        match self.r.below(30) {
            0 => Vec::new(),
            1 => self.r.bytes(8),
            2 => vec![b'L'; 250 + self.r.below(10) as usize],
            3 => b"\xc3\x28".to_vec(),
            _ => format!("t{}", self.r.below(12)).into_bytes(),
        }
    }

    fn role(&mut self) -> String {
        format!("r{}", self.r.below(6))
    }

    fn prefix(&mut self) -> Vec<u8> {
        match self.r.below(8) {
            0 => Vec::new(),
            1 => self.key(),
            _ => {
                let p = *self.r.pick(KEY_PREFIXES);
                let mut v = p.as_bytes().to_vec();
                if self.r.chance(2) {
                    v.extend(self.r.below(4).to_string().bytes());
                }
                v
            }
        }
    }

    fn int_token(&mut self) -> Vec<u8> {
        let s: String = match self.r.below(16) {
            0 => "0".into(),
            1 => "-1".into(),
            2 => "315360000".into(),
            3 => "315360001".into(),
            4 => "9223372036854775807".into(),
            5 => "-9223372036854775808".into(),
            6 => "99999999999999999999999".into(),
            7 => "abc".into(),
            8 => "".into(),
            9 => "1.5".into(),
            10 => " 1".into(),
            11 => "+5".into(),
            12 => "0x10".into(),
            _ => (1 + self.r.below(500)).to_string(),
        };
        s.into_bytes()
    }

    fn ttl(&mut self) -> Vec<u8> {
        if self.r.chance(25) {
            return self.int_token();
        }
        match self.r.below(10) {
            0 => b"1".to_vec(),
            1 => b"2".to_vec(),
            _ => (1 + self.r.below(600)).to_string().into_bytes(),
        }
    }

    fn json_value(&mut self, depth: u32) -> String {
        let leaf = depth == 0 || self.r.chance(3);
        if leaf {
            return match self.r.below(12) {
                0 => "null".into(),
                1 => "true".into(),
                2 => "false".into(),
                3 => "0".into(),
                4 => "-0.0".into(),
                5 => "1e308".into(),
                6 => format!("{}", self.r.below(20) as i64 - 5),
                7 if self.nul_error_chars => "\"\\u00e9\\ud83d\\ude00\\u0100\"".into(),
                7 => "\"\\u00e9\\ud83d\\ude01\\u0101\"".into(),
                8 => "\"report:12\"".into(),
                9 => "\"aaaab\"".into(),
                10 => "1.5".into(),
                _ => format!("\"{}\"", "x".repeat(self.r.below(12) as usize)),
            };
        }
        if self.r.chance(2) {
            let n = self.r.below(4);
            let items: Vec<String> = (0..n).map(|_| self.json_value(depth - 1)).collect();
            format!("[{}]", items.join(","))
        } else {
            let names = [
                "risk_score",
                "roles",
                "permissions",
                "x",
                "a",
                "summary",
                "xa",
            ];
            let n = self.r.below(4);
            let items: Vec<String> = (0..n)
                .map(|_| {
                    let name = *self.r.pick(&names);
                    format!("\"{name}\":{}", self.json_value(depth - 1))
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }

    fn perm_json(&mut self) -> String {
        let roles: Vec<String> = (0..self.r.below(4))
            .map(|_| format!("\"{}\"", self.role()))
            .collect();
        let perms: Vec<String> = (0..self.r.below(4))
            .map(|_| format!("\"{}\"", self.r.pick(PERMISSIONS)))
            .collect();
        let extra = if self.r.chance(4) {
            format!(",\"name\":{}", self.json_value(2))
        } else {
            String::new()
        };
        format!(
            "{{\"roles\":[{}],\"permissions\":[{}]{extra}}}",
            roles.join(","),
            perms.join(",")
        )
    }

    fn value(&mut self) -> Vec<u8> {
        match self.r.below(14) {
            0 => self.r.bytes(40),
            1 => b"not json".to_vec(),
            2 => b"{".to_vec(),
            3 => b"NaN".to_vec(),
            4 => {
                let d = 100 + self.r.below(60) as usize;
                format!("{}{}", "[".repeat(d), "]".repeat(d)).into_bytes()
            }
            5 => b"{\"a\":\"\xff\xfe\"}".to_vec(),
            6 => self.perm_json().into_bytes(),
            7 => format!("{{\"risk_score\":{}}}", self.r.below(10)).into_bytes(),
            8 if self.r.chance(4) => vec![b'v'; 1000 + self.r.below(20_000) as usize],
            _ => self.json_value(3).into_bytes(),
        }
    }

    /// A small random JSON Schema (or, sometimes, something that is not one).
    pub fn schema(&mut self, depth: u32) -> String {
        let types = [
            "\"object\"",
            "\"array\"",
            "\"string\"",
            "\"number\"",
            "\"integer\"",
            "\"boolean\"",
            "\"null\"",
            "[\"string\",\"null\"]",
            "\"nonsense\"",
        ];
        if depth == 0 {
            return match self.r.below(6) {
                0 => "true".into(),
                1 => "false".into(),
                2 => "{}".into(),
                _ => format!("{{\"type\":{}}}", self.r.pick(&types)),
            };
        }
        let n = self.r.below(400) as i64 - 100;
        match self.r.below(22) {
            0 => format!("{{\"type\":{}}}", self.r.pick(&types)),
            1 => format!(
                "{{\"type\":\"object\",\"required\":[\"risk_score\"],\"properties\":{{\"risk_score\":{}}}}}",
                self.schema(depth - 1)
            ),
            2 => format!(
                "{{\"type\":\"array\",\"items\":{},\"minItems\":{}}}",
                self.schema(depth - 1),
                self.r.below(3)
            ),
            3 => format!("{{\"minimum\":{n}}}"),
            4 => format!("{{\"maximum\":{n},\"exclusiveMinimum\":{}}}", n - 50),
            5 => format!(
                "{{\"minLength\":{},\"maxLength\":{}}}",
                self.r.below(5),
                self.r.below(30)
            ),
            6 => format!(
                "{{\"enum\":[{},{}]}}",
                self.json_value(1),
                self.json_value(1)
            ),
            7 => format!("{{\"const\":{}}}", self.json_value(2)),
            8 => {
                let p = self.r.pick(PATTERNS).replace('\\', "\\\\");
                format!("{{\"type\":\"string\",\"pattern\":\"{p}\"}}")
            }
            9 => format!(
                "{{\"allOf\":[{},{}]}}",
                self.schema(depth - 1),
                self.schema(depth - 1)
            ),
            10 => format!(
                "{{\"anyOf\":[{},{}]}}",
                self.schema(depth - 1),
                self.schema(depth - 1)
            ),
            11 => format!(
                "{{\"oneOf\":[{},{}]}}",
                self.schema(depth - 1),
                self.schema(depth - 1)
            ),
            12 => format!("{{\"not\":{}}}", self.schema(depth - 1)),
            13 => {
                let p = self.r.pick(PATTERNS).replace('\\', "\\\\");
                format!(
                    "{{\"patternProperties\":{{\"{p}\":{}}},\"additionalProperties\":false}}",
                    self.schema(depth - 1)
                )
            }
            14 => format!(
                "{{\"$defs\":{{\"a\":{}}},\"$ref\":\"#/$defs/a\"}}",
                self.schema(depth - 1)
            ),
            15 => "{\"$ref\":\"http://example.com/schema.json\"}".into(),
            16 => "{\"$ref\":\"#/$defs/missing\"}".into(),
            17 => "{\"type\":".into(),
            18 => "{\"minimum\":\"x\"}".into(),
            19 => format!(
                "{{\"type\":\"object\",\"properties\":{{\"roles\":{},\"permissions\":{}}}}}",
                self.schema(depth - 1),
                self.schema(depth - 1)
            ),
            20 => String::from_utf8_lossy(&self.r.bytes(20)).into_owned(),
            _ => self.schema(depth - 1),
        }
    }

    fn gate(&mut self) -> Vec<u8> {
        if self.nul_error_chars && self.r.chance(20) {
            return "g\u{100}".as_bytes().to_vec();
        }
        self.r.pick(GATE_NAMES).as_bytes().to_vec()
    }

    /// One well-formed (or nearly) tcache command.
    fn tcache_cmd(&mut self) -> Cmd {
        let r = &mut self.r;
        match r.below(40) {
            0..=9 => {
                let mut c = cmd(&[b"TCACHE.SET"]);
                c.push(self.key());
                c.push(self.value());
                c.push(self.ttl());
                match self.r.below(12) {
                    0 => c.push(b"NX".to_vec()),
                    1 => c.push(b"xx".to_vec()),
                    _ => {}
                }
                if self.r.chance(6) {
                    c.push(b"GATE".to_vec());
                    c.push(self.gate());
                }
                if self.r.chance(8) {
                    c.push(b"SWR".to_vec());
                    c.push((1 + self.r.below(20)).to_string().into_bytes());
                }
                if self.r.chance(10) {
                    c.push(b"LEASE".to_vec());
                    c.push(format!("{:016x}", self.r.next()).into_bytes());
                }
                let n = self.r.below(5);
                if n > 0 || self.r.chance(30) {
                    c.push(b"TAGS".to_vec());
                    for _ in 0..n {
                        c.push(self.tag());
                    }
                }
                c
            }
            10..=13 => vec![b"TCACHE.GET".to_vec(), self.key()],
            14 => {
                let mut c = cmd(&[b"TCACHE.MGET"]);
                for _ in 0..1 + self.r.below(5) {
                    c.push(self.key());
                }
                c
            }
            15 => {
                let mut c = cmd(&[b"TCACHE.DEL"]);
                for _ in 0..1 + self.r.below(3) {
                    c.push(self.key());
                }
                c
            }
            16 => vec![b"TCACHE.TAGS".to_vec(), self.key()],
            17 | 18 => {
                let mut c = cmd(&[b"TCACHE.INVALTAG"]);
                for _ in 0..1 + self.r.below(3) {
                    c.push(self.tag());
                }
                c
            }
            19 => vec![b"TCACHE.INVALPREFIX".to_vec(), self.prefix()],
            20 => vec![b"TCACHE.TAGCARD".to_vec(), self.tag()],
            21 => {
                let cursor = match self.r.below(4) {
                    0 => self.int_token(),
                    _ => b"0".to_vec(),
                };
                let mut c = vec![b"TCACHE.TAGSCAN".to_vec(), self.tag(), cursor];
                if self.r.chance(2) {
                    c.push(b"COUNT".to_vec());
                    c.push(self.int_token());
                }
                c
            }
            22 => {
                if self.r.chance(4) {
                    cmd(&[b"TCACHE.STATS", b"RESET"])
                } else {
                    cmd(&[b"TCACHE.STATS"])
                }
            }
            23 => {
                let mut c = cmd(&[b"TCACHE.FETCH"]);
                c.push(self.key());
                c.push((1 + self.r.below(300)).to_string().into_bytes());
                if self.r.chance(3) {
                    c.push(b"WAIT".to_vec());
                    c.push((1 + self.r.below(10)).to_string().into_bytes());
                }
                c
            }
            24 => {
                let mut c = cmd(&[b"TCACHE.STALETAG"]);
                for _ in 0..1 + self.r.below(2) {
                    c.push(self.tag());
                }
                c
            }
            25 | 26 => {
                let mut c = cmd(&[b"TCACHE.GATE.SET"]);
                c.push(self.gate());
                c.push(self.schema(3).into_bytes());
                if self.r.chance(2) {
                    c.push(b"PREFIX".to_vec());
                    // An empty prefix governs every key: rare, else the run is
                    // mostly refused writes.
                    let p = if self.r.chance(8) {
                        Vec::new()
                    } else {
                        let mut p = self.prefix();
                        if p.is_empty() {
                            p = b"report:".to_vec();
                        }
                        p
                    };
                    c.push(p);
                }
                c
            }
            27 => vec![b"TCACHE.GATE.GET".to_vec(), self.gate()],
            28 => vec![b"TCACHE.GATE.DEL".to_vec(), self.gate()],
            29 => cmd(&[b"TCACHE.GATE.LIST"]),
            30 => {
                let v = self.value();
                vec![b"TCACHE.GATE.CHECK".to_vec(), self.gate(), v]
            }
            31 | 32 => {
                let mut c = cmd(&[b"PERM.SET"]);
                c.push(self.key());
                c.push(if self.r.chance(6) {
                    self.value()
                } else {
                    self.perm_json().into_bytes()
                });
                if self.r.chance(2) {
                    c.push(self.ttl());
                }
                c
            }
            33 => vec![b"PERM.GET".to_vec(), self.key()],
            34 => {
                let mut c = vec![b"PERM.CHECK".to_vec(), self.key()];
                for _ in 0..1 + self.r.below(3) {
                    c.push(self.r.pick(PERMISSIONS).as_bytes().to_vec());
                }
                c
            }
            35 => vec![b"PERM.INVALUSER".to_vec(), self.key()],
            36 => {
                let role = self.role();
                vec![b"PERM.INVALROLE".to_vec(), role.into_bytes()]
            }
            37 => {
                if self.r.chance(4) {
                    cmd(&[b"PERM.INVALALL"])
                } else {
                    vec![b"TCACHE.GET".to_vec(), self.key()]
                }
            }
            38 => {
                // Internal commands, refused from clients.
                if self.r.chance(2) {
                    let v = self.r.bytes(40);
                    vec![b"TCACHE.APPLY".to_vec(), self.key(), v]
                } else {
                    let t = self.tag();
                    vec![
                        b"TCACHE.APPLYINVAL".to_vec(),
                        self.int_token(),
                        b"TAG".to_vec(),
                        t,
                    ]
                }
            }
            _ => cmd(&[b"TCACHE.VERIFY"]),
        }
    }

    /// Breaks a command: drops, repeats, inserts or replaces arguments.
    fn mangle(&mut self, mut c: Cmd) -> Cmd {
        for _ in 0..1 + self.r.below(2) {
            let at = 1 + self.r.below(c.len() as u64) as usize;
            match self.r.below(7) {
                0 if c.len() > 1 => {
                    c.truncate(at.min(c.len()));
                }
                1 if at < c.len() => {
                    c.remove(at);
                }
                2 if at < c.len() => {
                    let dup = c[at].clone();
                    c.insert(at, dup);
                }
                3 => {
                    let w = self.r.pick(KEYWORDS).as_bytes().to_vec();
                    c.insert(at.min(c.len()), w);
                }
                4 if at < c.len() => c[at] = self.int_token(),
                5 if at < c.len() => c[at] = self.r.bytes(16),
                _ => c.push(self.r.bytes(6)),
            }
        }
        if self.r.chance(5) {
            c[0] = c[0].to_ascii_lowercase();
        }
        c
    }

    /// One native keyspace command on the same keys.
    fn native_cmd(&mut self) -> Cmd {
        let k = self.key();
        match self.r.below(36) {
            0 | 1 => vec![b"DEL".to_vec(), k, self.key()],
            2 => vec![b"UNLINK".to_vec(), k],
            3 | 4 => {
                let mut c = vec![b"SET".to_vec(), k, b"plain".to_vec()];
                if self.r.chance(2) {
                    c.push(b"EX".to_vec());
                    c.push(b"100".to_vec());
                }
                c
            }
            5 => vec![b"GET".to_vec(), k],
            6 | 7 => vec![b"RENAME".to_vec(), k, self.key()],
            8 => vec![b"RENAMENX".to_vec(), k, self.key()],
            9 => vec![
                b"MOVE".to_vec(),
                k,
                self.r.below(4).to_string().into_bytes(),
            ],
            10 | 11 => {
                let mut c = vec![b"COPY".to_vec(), k, self.key()];
                if self.r.chance(2) {
                    c.push(b"DB".to_vec());
                    c.push(self.r.below(4).to_string().into_bytes());
                }
                if self.r.chance(2) {
                    c.push(b"REPLACE".to_vec());
                }
                c
            }
            12 => vec![
                b"EXPIRE".to_vec(),
                k,
                self.r.below(3).to_string().into_bytes(),
            ],
            13 | 14 => vec![
                b"PEXPIRE".to_vec(),
                k,
                (1 + self.r.below(60)).to_string().into_bytes(),
            ],
            15 => vec![b"PERSIST".to_vec(), k],
            16 => vec![b"PTTL".to_vec(), k],
            17 => vec![b"TYPE".to_vec(), k],
            18 | 19 => vec![b"DUMP".to_vec(), k],
            20 | 21 => {
                if self.dumps.is_empty() {
                    return vec![b"DUMP".to_vec(), k];
                }
                let payload = self.r.pick(&self.dumps).clone();
                let ttl = match self.r.below(4) {
                    0 => (1 + self.r.below(2000)).to_string(),
                    _ => "0".to_string(),
                };
                let mut c = vec![b"RESTORE".to_vec(), k, ttl.into_bytes(), payload];
                if self.r.chance(3) {
                    c.push(b"REPLACE".to_vec());
                }
                c
            }
            22 => {
                let a = self.r.below(4).to_string().into_bytes();
                let b = self.r.below(4).to_string().into_bytes();
                vec![b"SWAPDB".to_vec(), a, b]
            }
            23 => {
                if self.r.chance(8) {
                    if self.r.chance(2) {
                        cmd(&[b"FLUSHDB", b"ASYNC"])
                    } else {
                        cmd(&[b"FLUSHDB"])
                    }
                } else {
                    vec![b"EXISTS".to_vec(), k]
                }
            }
            24 => vec![b"MEMORY".to_vec(), b"USAGE".to_vec(), k],
            25 => vec![b"DEBUG".to_vec(), b"DIGEST-VALUE".to_vec(), k],
            26 => cmd(&[b"DEBUG", b"DIGEST"]),
            27 => vec![b"OBJECT".to_vec(), b"ENCODING".to_vec(), k],
            28 => cmd(&[b"SCAN", b"0", b"COUNT", b"50", b"TYPE", b"tcache-en"]),
            29 => vec![b"HSET".to_vec(), k, b"f".to_vec(), b"v".to_vec()],
            30 => vec![b"SADD".to_vec(), k, b"m".to_vec()],
            31 => vec![b"SELECT".to_vec(), self.r.below(4).to_string().into_bytes()],
            32 => vec![b"GETDEL".to_vec(), k],
            33 => vec![b"PEXPIREAT".to_vec(), k, b"1".to_vec()],
            34 => match self.r.below(6) {
                0 => cmd(&[b"RANDOMKEY"]),
                1 => cmd(&[b"INFO", b"tcache"]),
                2 => cmd(&[b"CONFIG", b"GET", b"tcache.*"]),
                _ => {
                    // Module configs, in and out of range; put back to the
                    // run's values after every batch (`reset_configs`).
                    let (name, value): (&[u8], Vec<u8>) = match self.r.below(4) {
                        0 => (b"tcache.max-tags", self.int_token()),
                        1 => (b"tcache.max-tag-bytes", self.int_token()),
                        2 => (b"tcache.reclaim-budget-us", self.int_token()),
                        _ => {
                            let mut t = self.tag();
                            // A NUL byte in this config aborts the server at
                            // the next CONFIG GET (open module bug, see
                            // tests/fuzz.rs); kept out unless asked for.
                            if !self.nul_error_chars {
                                t.retain(|&b| b != 0);
                            }
                            (b"tcache.invalidation-channel", t)
                        }
                    };
                    vec![b"CONFIG".to_vec(), b"SET".to_vec(), name.to_vec(), value]
                }
            },
            _ => vec![b"TTL".to_vec(), k],
        }
    }

    /// One command (or a MULTI ... EXEC group) for the main connection.
    pub fn next_group(&mut self) -> Vec<Cmd> {
        if self.r.chance(40) {
            let mut out = vec![cmd(&[b"MULTI"])];
            for _ in 0..1 + self.r.below(6) {
                let c = self.single();
                let name = c[0].to_ascii_uppercase();
                let cross_db = name == b"MOVE"
                    || (name == b"COPY" && c.iter().any(|w| w.eq_ignore_ascii_case(b"DB")));
                if cross_db && !self.cross_db_in_multi {
                    out.push(cmd(&[b"PING"]));
                } else {
                    out.push(c);
                }
            }
            out.push(if self.r.chance(8) {
                cmd(&[b"DISCARD"])
            } else {
                cmd(&[b"EXEC"])
            });
            return out;
        }
        vec![self.single()]
    }

    fn single(&mut self) -> Cmd {
        let c = if self.r.chance(3) {
            self.native_cmd()
        } else {
            self.tcache_cmd()
        };
        let c = if self.r.chance(7) { self.mangle(c) } else { c };
        let mut c = tame(c);
        if !self.nul_error_chars {
            c = c.into_iter().map(without_nul_chars).collect();
        }
        if self.wake_timeout_race {
            c
        } else {
            no_wait(c)
        }
    }
}

/// `w` without characters whose code point is a multiple of 256 (see
/// [`Gen::nul_error_chars`]): random bytes form them now and then (`c4 80`
/// is U+0100). Such a word is replaced by its lossy text with those
/// characters turned into `x`.
fn without_nul_chars(w: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&w);
    let bad = |c: char| (c as u32) >= 0x100 && (c as u32) & 0xff == 0;
    if !text.chars().any(bad) {
        return w;
    }
    text.chars()
        .map(|c| if bad(c) { 'x' } else { c })
        .collect::<String>()
        .into_bytes()
}

/// A FETCH without its `WAIT timeout` (see [`Gen::wake_timeout_race`]).
fn no_wait(mut c: Cmd) -> Cmd {
    if c[0].eq_ignore_ascii_case(b"TCACHE.FETCH") {
        if let Some(i) = c.iter().position(|w| w.eq_ignore_ascii_case(b"WAIT")) {
            c.truncate(i);
        }
    }
    c
}

/// Keeps the main connection from blocking for long: a FETCH whose WAIT
/// timeout came out large (mangling) waits at most 20 ms. MULTI, EXEC and
/// DISCARD are never produced by mangling (they would unbalance groups).
fn tame(mut c: Cmd) -> Cmd {
    let name = c[0].to_ascii_uppercase();
    if matches!(&name[..], b"MULTI" | b"EXEC" | b"DISCARD" | b"WATCH") {
        c[0] = b"PING".to_vec();
    }
    if name == b"TCACHE.FETCH" {
        for i in 1..c.len() {
            if c[i].eq_ignore_ascii_case(b"WAIT") {
                if let Some(t) = c.get_mut(i + 1) {
                    let ok = std::str::from_utf8(t)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .is_some_and(|n| n <= 20);
                    if !ok {
                        *t = b"20".to_vec();
                    }
                }
            }
        }
    }
    c
}

/// What one fuzz run saw.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub commands: u64,
    pub batches: u64,
    pub replies: BTreeMap<String, u64>,
    pub waiter_rounds: u64,
    pub waiters_killed: u64,
    pub waiters_unblocked: u64,
    pub waiter_replies: BTreeMap<String, u64>,
    pub non_utf8_lines: u64,
    pub probe_pings: u64,
    pub probe_max: Duration,
    pub elapsed: Duration,
}

fn reply_class(v: &Value) -> String {
    match v {
        Value::Error(e) => {
            // The error code and the first two plain words, as the class.
            let words: Vec<&str> = e
                .split_whitespace()
                .take(3)
                .take_while(|w| w.bytes().all(|b| b.is_ascii_alphabetic() || b == b':'))
                .collect();
            if words.first() == Some(&"GATE") {
                return "GATE".into();
            }
            words.join(" ")
        }
        Value::Nil => "nil".into(),
        Value::Int(_) => "int".into(),
        Value::Simple(s) if s == "OK" || s == "QUEUED" || s == "PONG" => s.clone(),
        Value::Simple(_) => "simple".into(),
        Value::Bulk(_) | Value::Verbatim(_) => "bulk".into(),
        Value::Array(a) => match a.first() {
            Some(Value::Simple(s)) if ["HIT", "LEASE", "WAIT", "STALE"].contains(&s.as_str()) => {
                format!("array {s}")
            }
            _ => "array".into(),
        },
        Value::Map(_) => "map".into(),
        _ => "other".into(),
    }
}

/// True for replies that mean the module hit a bug.
fn is_bug_reply(v: &Value) -> bool {
    match v {
        Value::Error(e) => {
            let l = e.to_ascii_lowercase();
            l.contains("internal error") || l.contains("panic")
        }
        Value::Array(a) => a.iter().any(is_bug_reply),
        _ => false,
    }
}

/// The latency probe: PING in a loop on its own connection.
struct Probe {
    stop: Arc<AtomicBool>,
    worst_us: Arc<AtomicU64>,
    pings: Arc<AtomicU64>,
    /// Set to a description when a PING took over the bound or failed.
    failure: Arc<Mutex<Option<String>>>,
    handle: Option<JoinHandle<()>>,
}

impl Probe {
    fn start(port: u16, enabled: bool) -> Probe {
        let stop = Arc::new(AtomicBool::new(!enabled));
        let worst_us = Arc::new(AtomicU64::new(0));
        let pings = Arc::new(AtomicU64::new(0));
        let failure = Arc::new(Mutex::new(None));
        let (s, w, p, f) = (
            stop.clone(),
            worst_us.clone(),
            pings.clone(),
            failure.clone(),
        );
        let handle = thread::spawn(move || {
            let mut c = Conn::connect(port);
            // A stall is reported as a failure; a much longer one must not
            // leave the probe waiting forever.
            c.set_read_timeout(Duration::from_secs(600));
            while !s.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let r = c.try_cmd(&[b"PING"]);
                let dt = t0.elapsed();
                p.fetch_add(1, Ordering::Relaxed);
                w.fetch_max(dt.as_micros() as u64, Ordering::Relaxed);
                let bad = match &r {
                    Ok(Value::Simple(s)) if s == "PONG" => {
                        (dt > STALL_BOUND).then(|| format!("a PING took {dt:?}"))
                    }
                    other => Some(format!("PING -> {other:?} after {dt:?}")),
                };
                if let Some(msg) = bad {
                    let mut g = f.lock().unwrap_or_else(|e| e.into_inner());
                    if g.is_none() {
                        *g = Some(msg);
                    }
                    if r.is_err() {
                        return;
                    }
                }
                // Pacing, not a wait on a condition: one PING every ~2 ms
                // leaves the CPU to the server and the fuzzer.
                thread::sleep(Duration::from_millis(2));
            }
        });
        Probe {
            stop,
            worst_us,
            pings,
            failure,
            handle: Some(handle),
        }
    }

    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn finish(&mut self) -> (u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        (
            self.pings.load(Ordering::Relaxed),
            Duration::from_micros(self.worst_us.load(Ordering::Relaxed)),
        )
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct WaiterStats {
    rounds: u64,
    killed: u64,
    unblocked: u64,
    replies: BTreeMap<String, u64>,
    failure: Option<String>,
}

/// FETCH ... WAIT waiters on their own connections, in rounds: one client
/// takes the lease, a few others block on the key; then some are killed
/// (CLIENT KILL ID), some unblocked (CLIENT UNBLOCK [ERROR]), the others get
/// their value, their lease or their timeout.
///
/// `race`: waiters on the fuzzed keys, with timeouts and wake-ups mixed
/// freely. Without it (Redis 7.0, see `RunOpts::wake_timeout_race`) they
/// use keys of their own and each round either only times out (long lease,
/// nothing stored) or is only woken (long timeout, the value is stored).
fn waiters(port: u16, seed: u64, race: bool, stop: Arc<AtomicBool>) -> WaiterStats {
    let mut st = WaiterStats::default();
    let mut r = Rng::new(seed ^ 0x5741_4954);
    let mut admin = Conn::connect(port);
    let Ok(mut setter) = RawConn::connect(port) else {
        st.failure = Some("cannot connect".into());
        return st;
    };
    while !stop.load(Ordering::Relaxed) && st.failure.is_none() {
        st.rounds += 1;
        // Without `race`: 0 times out only, 1 is woken only.
        let mode = if race { 2 } else { r.below(2) };
        let key = if race {
            format!("{}{}", r.pick(&["a:", "b:", "report:"]), r.below(30))
        } else if mode == 0 {
            // Never stored by anyone, in any database: nothing but the
            // timeout (or a kill) can end these waits.
            format!("wt:{}", r.below(30))
        } else {
            format!("w:{}", r.below(30))
        };
        let lease_ms = match mode {
            0 => "600000".to_string(),
            _ => (20 + r.below(300)).to_string(),
        };
        // The lease holder (or a hit, if the key holds a value).
        let first = match setter.q(&["TCACHE.FETCH", &key, &lease_ms]) {
            Ok(v) => v,
            Err(e) => {
                st.failure = Some(format!("lease FETCH {key}: no reply: {e}"));
                break;
            }
        };
        let token = match first.as_array_opt() {
            Some([Value::Simple(k), Value::Bulk(t)]) if k == "LEASE" => {
                Some(String::from_utf8_lossy(t).into_owned())
            }
            _ => None,
        };
        if is_bug_reply(&first) {
            st.failure = Some(format!("waiter lease FETCH {key} -> {first:?}"));
            break;
        }
        let n = 1 + r.below(4) as usize;
        let mut blocked: Vec<(RawConn, String, u64)> = Vec::new();
        for _ in 0..n {
            let Ok(mut c) = RawConn::connect(port) else {
                st.failure = Some("cannot connect a waiter".into());
                return st;
            };
            let id = match c.q(&["CLIENT", "ID"]) {
                Ok(Value::Int(i)) => i.to_string(),
                other => {
                    st.failure = Some(format!("CLIENT ID -> {other:?}"));
                    return st;
                }
            };
            let wait_ms = match mode {
                1 => 10_000,
                _ => 5 + r.below(250),
            };
            let wait = wait_ms.to_string();
            let words: Vec<Vec<u8>> = ["TCACHE.FETCH", &key, &lease_ms, "WAIT", &wait]
                .iter()
                .map(|w| w.as_bytes().to_vec())
                .collect();
            if let Err(e) = c.send(&words) {
                st.failure = Some(format!("send FETCH WAIT: {e}"));
                return st;
            }
            blocked.push((c, id, wait_ms));
        }
        // Half the time, act once they are blocked; else at once (they may
        // not have been read yet).
        if r.chance(2) {
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                let info = admin.q(&["INFO", "clients"]);
                let text = String::from_utf8_lossy(info.as_bytes()).into_owned();
                let blocked_now = super::server::info_value(&text, "blocked_clients")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if blocked_now > 0 {
                    break;
                }
                thread::sleep(Duration::from_millis(1));
            }
        }
        let action = match mode {
            0 => 4,
            1 => r.below(2),
            _ => r.below(5),
        };
        match action {
            0 => {
                if let Some(t) = token.as_ref().filter(|_| mode != 1 || r.chance(2)) {
                    let ttl = (1 + r.below(100)).to_string();
                    let reply = setter
                        .q(&["TCACHE.SET", &key, "from-lease", &ttl, "LEASE", t])
                        .unwrap_or_else(|e| Value::Error(format!("no reply: {e}")));
                    *st.replies
                        .entry(format!("lease set {}", reply_class(&reply)))
                        .or_default() += 1;
                } else if mode == 1 {
                    let _ = setter.q(&["TCACHE.SET", &key, "plain-set", "50"]);
                }
            }
            1 => {
                if let Err(e) = setter.q(&["TCACHE.SET", &key, "plain-set", "50"]) {
                    st.failure = Some(format!("TCACHE.SET {key}: no reply: {e}"));
                }
            }
            _ => {}
        }
        let mut keep = Vec::new();
        for (c, id, wait_ms) in blocked {
            match r.below(6) {
                0 => {
                    let reply = admin.q(&["CLIENT", "KILL", "ID", &id]);
                    if !matches!(reply, Value::Int(_) | Value::Simple(_)) {
                        st.failure = Some(format!("CLIENT KILL ID {id} -> {reply:?}"));
                    }
                    st.killed += 1;
                    drop(c);
                }
                1 => {
                    let how: &[&str] = if r.chance(2) {
                        &["ERROR"]
                    } else {
                        &["TIMEOUT"]
                    };
                    let mut args = vec!["CLIENT", "UNBLOCK", &id];
                    args.extend_from_slice(how);
                    let reply = admin.q(&args);
                    st.unblocked += 1;
                    let what = format!("after CLIENT UNBLOCK {id} {} -> {reply:?}", how[0]);
                    keep.push((c, wait_ms, what));
                }
                2 => drop(c), // a plain disconnect while blocked
                _ => keep.push((c, wait_ms, format!("client {id}, left alone"))),
            }
        }
        for (mut c, wait_ms, what) in keep {
            // A waiter answers within its timeout; 30 s more is a hang.
            let _ = c.set_read_timeout(Duration::from_millis(wait_ms) + Duration::from_secs(30));
            match c.read() {
                Ok(v) => {
                    if is_bug_reply(&v) {
                        st.failure = Some(format!("blocked FETCH {key} -> {v:?}"));
                    }
                    let ok_shape = match &v {
                        Value::Array(a) => matches!(
                            a.first(),
                            Some(Value::Simple(s)) if ["HIT", "LEASE", "WAIT", "STALE"].contains(&s.as_str())
                        ),
                        Value::Error(_) => true,
                        _ => false,
                    };
                    if !ok_shape {
                        st.failure = Some(format!("blocked FETCH {key} -> {v:?}"));
                    }
                    *st.replies.entry(reply_class(&v)).or_default() += 1;
                }
                Err(e) => {
                    let list = admin.q(&["CLIENT", "LIST"]);
                    let list = String::from_utf8_lossy(list.as_bytes()).into_owned();
                    let info = admin.q(&["INFO", "clients"]);
                    let info = String::from_utf8_lossy(info.as_bytes()).into_owned();
                    let stats = admin.q(&["TCACHE.STATS"]);
                    st.failure = Some(format!(
                        "CLIENT LIST:\n{list}\nINFO clients:\n{info}\nTCACHE.STATS {stats:?}\n\
                         blocked FETCH {key} {lease_ms} WAIT {wait_ms} ({what}; lease holder \
                         got {first:?}, then action {action}) got no reply: {e}"
                    ));
                }
            }
        }
    }
    st
}

trait ArrayOpt {
    fn as_array_opt(&self) -> Option<&[Value]>;
}

impl ArrayOpt for Value {
    fn as_array_opt(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Options of a run.
pub struct RunOpts {
    pub seed: u64,
    pub commands: u64,
    pub batch: usize,
    /// A label for messages (server and configuration).
    pub label: String,
    /// Run the waiter thread.
    pub waiters: bool,
    /// DEBUG RELOAD now and then (1 in this many batches; 0: never).
    pub reload_every: u64,
    /// Run the latency probe (off under valgrind, where everything is slow).
    pub probe: bool,
    /// See [`Gen::nul_error_chars`].
    pub nul_error_chars: bool,
    /// See [`Gen::cross_db_in_multi`].
    pub cross_db_in_multi: bool,
    /// Let a waiter's WAIT timeout fall due while it is being woken. On Redis
    /// 7.0 such a waiter never gets a reply (open module bug, see tests/fuzz.rs
    /// `a_waiter_woken_as_its_timeout_passes_still_gets_a_reply`); off there.
    pub wake_timeout_race: bool,
}

/// Runs the fuzzer against the server on `port`. Panics (with the seed in
/// the message) on a crash, a stall, a failed VERIFY or a bug reply.
pub fn run(port: u16, opts: &RunOpts) -> Report {
    let start = Instant::now();
    let label = &opts.label;
    let seed = opts.seed;
    eprintln!(
        "fuzz[{label}]: seed {seed} (replay: TCACHE_FUZZ_SEED={seed}), {} commands",
        opts.commands
    );
    let mut probe = Probe::start(port, opts.probe);
    let stop = Arc::new(AtomicBool::new(false));
    let waiter = opts.waiters.then(|| {
        let s = stop.clone();
        let race = opts.wake_timeout_race;
        thread::spawn(move || waiters(port, seed, race, s))
    });
    let mut g = Gen::new(seed);
    g.nul_error_chars = opts.nul_error_chars;
    g.cross_db_in_multi = opts.cross_db_in_multi;
    g.wake_timeout_race = opts.wake_timeout_race;
    let mut checker = Conn::connect(port);
    // A second stream of the same commands from a user limited to some keys
    // (read-only on others), so the module's ACL paths are fuzzed too.
    let acl = checker.q(&[
        "ACL",
        "SETUSER",
        "fuzz",
        "on",
        ">fuzz",
        "resetkeys",
        "~tenantA:*",
        "~a:*",
        "%R~report:*",
        "+@all",
    ]);
    assert!(acl.is_ok(), "ACL SETUSER -> {acl:?}");
    let connect = || RawConn::connect(port).unwrap_or_else(|e| panic!("connect to {port}: {e}"));
    let mut conns = [connect(), connect()];
    match conns[1].q(&["AUTH", "fuzz", "fuzz"]) {
        Ok(v) if v.is_ok() => {}
        other => panic!("AUTH fuzz -> {other:?}"),
    }
    let defaults = reset_configs(&mut checker, None);
    let mut report = Report {
        seed,
        ..Report::default()
    };
    let verify_each = std::env::var_os("TCACHE_FUZZ_VERIFY_EACH").is_some_and(|v| !v.is_empty());
    let mut history: Vec<String> = Vec::new();
    let mut dumps_seen = 0usize;
    let mut in_multi = [false, false];
    let fail = |what: String, report: &Report, history: &[String]| -> ! {
        stop.store(true, Ordering::Relaxed);
        panic!(
            "fuzz[{label}] seed {seed} (replay with TCACHE_FUZZ_SEED={seed}; \
             TCACHE_FUZZ_VERIFY_EACH=1 checks after every command): {what}\n\
             after {} commands in {} batches; the last commands of the connection:\n  {}",
            report.commands,
            report.batches,
            history.join("\n  ")
        );
    };
    while report.commands < opts.commands {
        // (connection, command): 0 the main connection, 1 the ACL-limited one.
        let mut batch: Vec<(usize, Cmd)> = Vec::with_capacity(opts.batch + 8);
        while batch.len() < opts.batch {
            let on = usize::from(g.r.chance(6));
            batch.extend(g.next_group().into_iter().map(|c| (on, c)));
        }
        if opts.reload_every > 0 && g.r.chance(opts.reload_every) {
            batch.push((0, cmd(&[b"DEBUG", b"RELOAD"])));
        }
        // Pipelined in chunks so the socket buffers stay small; one at a
        // time, with VERIFY after each, when TCACHE_FUZZ_VERIFY_EACH is set
        // (to find the command that broke an index).
        let chunk_len = if verify_each { 1 } else { 200 };
        for chunk in batch.chunks(chunk_len) {
            for (on, a) in chunk {
                if let Err(e) = conns[*on].send(a) {
                    fail(
                        format!("send failed (server gone?): {e}"),
                        &report,
                        &history,
                    );
                }
            }
            for (on, a) in chunk {
                let v = match conns[*on].read() {
                    Ok(v) => v,
                    Err(e) => fail(
                        format!(
                            "no reply to {:?} (server crashed or hung): {e}",
                            show_cmd(a)
                        ),
                        &report,
                        &history,
                    ),
                };
                if history.len() >= 40 {
                    history.remove(0);
                }
                history.push(format!("{:?} -> {v:?}", show_cmd(a)));
                if is_bug_reply(&v) {
                    fail(format!("{:?} -> {v:?}", show_cmd(a)), &report, &history);
                }
                let name = a[0].to_ascii_uppercase();
                if name == b"DUMP" {
                    if let Value::Bulk(p) = &v {
                        if g.dumps.len() < 64 {
                            g.dumps.push(p.clone());
                        } else {
                            g.dumps[dumps_seen % 64] = p.clone();
                        }
                        dumps_seen += 1;
                    }
                }
                if name == b"MULTI" && v.is_ok() {
                    in_multi[*on] = true;
                } else if name == b"EXEC" || name == b"DISCARD" {
                    in_multi[*on] = false;
                }
                *report.replies.entry(reply_class(&v)).or_default() += 1;
                if verify_each && !in_multi[0] && !in_multi[1] {
                    match checker.try_cmd(&[b"TCACHE.VERIFY"]) {
                        Ok(v) if v.is_ok() => {}
                        other => fail(
                            format!("TCACHE.VERIFY after {:?} -> {other:?}", show_cmd(a)),
                            &report,
                            &history,
                        ),
                    }
                }
            }
        }
        report.commands += batch.len() as u64;
        report.batches += 1;
        reset_configs(&mut checker, Some(&defaults));
        match checker.try_cmd(&[b"PING"]) {
            Ok(Value::Simple(s)) if s == "PONG" => {}
            other => fail(
                format!("PING after the batch -> {other:?}"),
                &report,
                &history,
            ),
        }
        match checker.try_cmd(&[b"TCACHE.VERIFY"]) {
            Ok(v) if v.is_ok() => {}
            other => fail(
                format!("TCACHE.VERIFY after the batch -> {other:?}"),
                &report,
                &history,
            ),
        }
        if let Some(f) = probe.failure() {
            fail(format!("latency probe: {f}"), &report, &history);
        }
        if let Some(w) = &waiter {
            if w.is_finished() {
                // It only stops early on a failure.
                stop.store(true, Ordering::Relaxed);
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(w) = waiter {
        match w.join() {
            Ok(ws) => {
                if let Some(f) = ws.failure {
                    fail(format!("waiters: {f}"), &report, &history);
                }
                report.waiter_rounds = ws.rounds;
                report.waiters_killed = ws.killed;
                report.waiters_unblocked = ws.unblocked;
                report.waiter_replies = ws.replies;
            }
            Err(_) => fail(
                "the waiter thread panicked (see above)".into(),
                &report,
                &history,
            ),
        }
    }
    let (pings, worst) = probe.finish();
    if let Some(f) = probe.failure() {
        fail(format!("latency probe: {f}"), &report, &history);
    }
    report.probe_pings = pings;
    report.non_utf8_lines = conns[0].non_utf8_lines + conns[1].non_utf8_lines;
    report.probe_max = worst;
    match checker.try_cmd(&[b"TCACHE.VERIFY"]) {
        Ok(v) if v.is_ok() => {}
        other => fail(
            format!("final TCACHE.VERIFY -> {other:?}"),
            &report,
            &history,
        ),
    }
    report.elapsed = start.elapsed();
    eprintln!(
        "fuzz[{label}]: seed {seed}: {} commands in {} batches, {:.1} s; probe {} PINGs, worst {:?}; \
         waiters {} rounds ({} killed, {} unblocked); {} error/status lines not UTF-8\n  replies: {:?}\n  waiter replies: {:?}",
        report.commands,
        report.batches,
        report.elapsed.as_secs_f64(),
        report.probe_pings,
        report.probe_max,
        report.waiter_rounds,
        report.waiters_killed,
        report.waiters_unblocked,
        report.non_utf8_lines,
        report.replies,
        report.waiter_replies,
    );
    report
}

/// The module configs the fuzzer changes: read them (`None`), or set them
/// back to `saved`. Returns what was read or set.
fn reset_configs(c: &mut Conn, saved: Option<&[(String, String)]>) -> Vec<(String, String)> {
    const NAMES: [&str; 4] = [
        "tcache.max-tags",
        "tcache.max-tag-bytes",
        "tcache.reclaim-budget-us",
        "tcache.invalidation-channel",
    ];
    match saved {
        None => NAMES
            .iter()
            .map(|n| {
                let r = c.q(&["CONFIG", "GET", n]);
                let v = r.as_array().get(1).map(|v| v.as_str().to_string());
                (n.to_string(), v.unwrap_or_default())
            })
            .collect(),
        Some(saved) => {
            for (n, v) in saved {
                let r = c.q(&["CONFIG", "SET", n, v]);
                assert!(r.is_ok(), "CONFIG SET {n} {v} -> {r:?}");
            }
            saved.to_vec()
        }
    }
}

/// A command for messages: words as escaped ASCII, long ones cut.
pub fn show_cmd(c: &Cmd) -> Vec<String> {
    c.iter()
        .map(|w| {
            let s = w.escape_ascii().to_string();
            if s.len() > 120 {
                format!("{}...({} bytes)", &s[..120], w.len())
            } else {
                s
            }
        })
        .collect()
}

/// A RESP2 connection for the fuzzer's main stream that, unlike
/// [`Conn`], accepts error and status lines that are not UTF-8 (the module
/// echoes user bytes in some errors); such lines are decoded lossily and
/// counted. Its reply parser is hand-written because the `redis` crate's
/// (1.8.2) refuses such a line as a parse error, which ends the connection.
pub struct RawConn {
    reader: std::io::BufReader<std::net::TcpStream>,
    pub non_utf8_lines: u64,
}

impl RawConn {
    pub fn connect(port: u16) -> std::io::Result<RawConn> {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        // A reply that does not come in 120 s is a hang (the probe reports
        // stalls over 1 s long before this).
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        stream.set_write_timeout(Some(Duration::from_secs(120)))?;
        Ok(RawConn {
            reader: std::io::BufReader::with_capacity(64 * 1024, stream),
            non_utf8_lines: 0,
        })
    }

    /// Sends `&str` words and reads the reply.
    pub fn q(&mut self, args: &[&str]) -> std::io::Result<Value> {
        let words: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        self.send(&words)?;
        self.read()
    }

    pub fn set_read_timeout(&mut self, t: Duration) -> std::io::Result<()> {
        self.reader.get_ref().set_read_timeout(Some(t))
    }

    pub fn send(&mut self, args: &[Vec<u8>]) -> std::io::Result<()> {
        self.send_many(&[args.to_vec()])
    }

    /// Writes several commands with one write (they reach the server in the
    /// same read, so it runs them in the same event-loop iteration).
    pub fn send_many(&mut self, cmds: &[Vec<Vec<u8>>]) -> std::io::Result<()> {
        use std::io::Write;
        let mut buf = Vec::new();
        for args in cmds {
            let mut cmd = redis::Cmd::new();
            for a in args {
                cmd.arg(a.as_slice());
            }
            cmd.write_packed_command(&mut buf);
        }
        self.reader.get_mut().write_all(&buf)
    }

    fn line(&mut self) -> std::io::Result<Vec<u8>> {
        use std::io::BufRead;
        let mut line = Vec::new();
        if self.reader.read_until(b'\n', &mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed by server",
            ));
        }
        if !line.ends_with(b"\r\n") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line not ended by CRLF: {}", line.escape_ascii()),
            ));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    fn text(&mut self, b: &[u8]) -> String {
        match std::str::from_utf8(b) {
            Ok(s) => s.to_string(),
            Err(_) => {
                self.non_utf8_lines += 1;
                String::from_utf8_lossy(b).into_owned()
            }
        }
    }

    pub fn read(&mut self) -> std::io::Result<Value> {
        use std::io::Read;
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        let line = self.line()?;
        let Some((&kind, rest)) = line.split_first() else {
            return Err(bad("empty reply line".into()));
        };
        let int = |b: &[u8]| -> std::io::Result<i64> {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(format!("bad integer {}", b.escape_ascii())))
        };
        Ok(match kind {
            b'+' => Value::Simple(self.text(rest)),
            b'-' => Value::Error(self.text(rest)),
            b':' => Value::Int(int(rest)?),
            b'$' => {
                let n = int(rest)?;
                if n < 0 {
                    Value::Nil
                } else {
                    let mut data = vec![0u8; n as usize + 2];
                    self.reader.read_exact(&mut data)?;
                    if !data.ends_with(b"\r\n") {
                        return Err(bad("bulk not followed by CRLF".into()));
                    }
                    data.truncate(n as usize);
                    Value::Bulk(data)
                }
            }
            b'*' => {
                let n = int(rest)?;
                if n < 0 {
                    Value::Nil
                } else {
                    let mut items = Vec::with_capacity(n.min(4096) as usize);
                    for _ in 0..n {
                        items.push(self.read()?);
                    }
                    Value::Array(items)
                }
            }
            _ => return Err(bad(format!("unknown reply line {}", line.escape_ascii()))),
        })
    }
}
