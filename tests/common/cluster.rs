//! A real local Redis Cluster / Valkey Cluster with the module loaded, for
//! integration tests: 3 primaries + 3 replicas (by default) on loopback ports
//! <= 55535 whose bus ports (port + 10000) are free too, each node in its own
//! directory with `--cluster-enabled yes --cluster-config-file nodes.conf`.
//! Slots are assigned with `CLUSTER ADDSLOTSRANGE`, nodes joined with
//! `CLUSTER MEET`, replicas attached with `CLUSTER REPLICATE`; `start` returns
//! once every node says `cluster_state:ok`, all nodes agree on the topology
//! and every replica's link is up. Every node is killed on drop.
//!
//! Helpers: the owner of a key (`CLUSTER KEYSLOT` + `CLUSTER SLOTS`), a command
//! on every primary, kill -9 of a primary and its replica's promotion,
//! `redis-cli --cluster reshard`, TAGCARD summed over the primaries, VERIFY on
//! every node, and [`Router`], a small redirect-following client (MOVED/ASK).

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use super::resp::{Conn, Value};
use super::server::{info_value, Server, ServerBuilder};

/// Hash slots of a cluster.
pub const SLOTS: u16 = 16384;
/// How long cluster formation, failover or convergence may take.
pub const CLUSTER_TIMEOUT: Duration = Duration::from_secs(40);
/// `cluster-node-timeout` of the test nodes (ms): a failover takes about
/// this long plus the election.
pub const NODE_TIMEOUT_MS: u64 = 2000;

/// The highest client port a cluster node may have (its bus is port + 10000).
const MAX_PORT: u16 = 55535;

// ---------------------------------------------------------------------------
// Key slots
// ---------------------------------------------------------------------------

/// CRC16-XMODEM, the hash of Redis Cluster.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of `key` (hash tags `{...}` honoured), computed locally.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) % SLOTS
}

/// A short hash tag (without braces) whose slot is `slot`.
pub fn slot_tag(slot: u16) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags = vec![String::new(); SLOTS as usize];
        let mut missing = SLOTS as usize;
        let mut i: u64 = 0;
        while missing > 0 {
            let t = format!("t{i}");
            let s = crc16(t.as_bytes()) % SLOTS;
            if tags[s as usize].is_empty() {
                tags[s as usize] = t;
                missing -= 1;
            }
            i += 1;
        }
        tags
    });
    &tags[slot as usize]
}

/// `<prefix>{<tag of slot>}<suffix>`: a key of slot `slot`. `prefix` must not
/// contain `{`.
pub fn key_in_slot(prefix: &str, slot: u16, suffix: impl std::fmt::Display) -> String {
    assert!(!prefix.contains('{'), "prefix {prefix:?} contains a brace");
    format!("{prefix}{{{}}}{suffix}", slot_tag(slot))
}

// ---------------------------------------------------------------------------
// CLUSTER NODES
// ---------------------------------------------------------------------------

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeLine {
    pub id: String,
    pub port: u16,
    pub primary: bool,
    /// Flag `fail` (agreed failure).
    pub failed: bool,
    /// Flag `fail?` (suspected by this node only).
    pub pfail: bool,
    pub myself: bool,
    /// The primary's id, for a replica.
    pub master_id: Option<String>,
    /// Slot ranges served, inclusive (importing/migrating markers left out).
    pub slots: Vec<(u16, u16)>,
    pub connected: bool,
}

impl NodeLine {
    /// Number of slots served.
    pub fn slot_count(&self) -> usize {
        self.slots.iter().map(|(a, b)| (*b - *a) as usize + 1).sum()
    }

    /// Every slot served, ascending.
    pub fn slot_list(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.slots.iter().flat_map(|&(a, b)| a..=b).collect();
        v.sort_unstable();
        v
    }
}

/// Parses the text of `CLUSTER NODES`.
pub fn parse_cluster_nodes(text: &str) -> Vec<NodeLine> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(f.len() >= 8, "CLUSTER NODES line {line:?}");
        // ip:port@cport[,hostname]
        let addr = f[1].split(',').next().unwrap_or("");
        let port = addr
            .split('@')
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let flags: Vec<&str> = f[2].split(',').collect();
        let mut slots = Vec::new();
        for s in &f[8..] {
            if s.starts_with('[') {
                continue;
            }
            let (a, b) = match s.split_once('-') {
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                None => {
                    let a: u16 = s.parse().unwrap();
                    (a, a)
                }
            };
            slots.push((a, b));
        }
        slots.sort_unstable();
        out.push(NodeLine {
            id: f[0].to_string(),
            port,
            primary: flags.contains(&"master"),
            failed: flags.contains(&"fail"),
            pfail: flags.contains(&"fail?"),
            myself: flags.contains(&"myself"),
            master_id: (f[3] != "-").then(|| f[3].to_string()),
            slots,
            connected: f[7] == "connected",
        });
    }
    out.sort();
    out
}

/// The text of a bulk/verbatim reply, panicking on anything else.
#[track_caller]
fn text_of(v: &Value, what: &str) -> String {
    match v {
        Value::Bulk(b) | Value::Verbatim(b) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("{what}: got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port <= 55535 that is free together with its bus port (+10000). Chosen
/// below the kernel's ephemeral range (32768+) so that outgoing connections do
/// not take them, and spread by process id so that parallel runs rarely meet.
fn cluster_port() -> u16 {
    const LOW: u16 = 12000;
    const SPAN: u16 = 10000; // client ports 12000..22000, bus ports 22000..32000
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = (std::process::id() % SPAN as u32) as u16;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(97, Ordering::SeqCst);
        let port = LOW + (base.wrapping_add(n)) % SPAN;
        if port_free(port) && port_free(port + 10000) {
            return port;
        }
    }
    panic!("no free port pair (p, p+10000) below {MAX_PORT}");
}

/// The `redis-cli` used for `--cluster reshard`: `$TCACHE_REDIS_CLI` or
/// `redis-cli` from `PATH` (Debian's redis-tools works against Valkey too).
pub fn redis_cli() -> PathBuf {
    match std::env::var_os("TCACHE_REDIS_CLI") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("redis-cli"),
    }
}

// ---------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------

/// A running local cluster; every node is killed on drop.
pub struct Cluster {
    /// Nodes in start order: primaries first, then replicas.
    nodes: Vec<Server>,
    /// Node ids, same order as `nodes`.
    ids: Vec<String>,
    /// Ports of nodes killed by [`Cluster::kill_primary`].
    dead: BTreeSet<u16>,
}

impl Cluster {
    /// 3 primaries + 3 replicas with the module and default settings.
    #[track_caller]
    pub fn start() -> Cluster {
        Cluster::start_with(3, 1, |b| b)
    }

    /// `primaries` primaries, each with `replicas` replicas; `configure`
    /// adjusts every node's builder (module args, extra server options).
    #[track_caller]
    pub fn start_with(
        primaries: usize,
        replicas: usize,
        configure: impl Fn(ServerBuilder) -> ServerBuilder,
    ) -> Cluster {
        assert!((1..=SLOTS as usize).contains(&primaries));
        let total = primaries * (1 + replicas);
        let mut nodes = Vec::with_capacity(total);
        for _ in 0..total {
            let node_timeout = NODE_TIMEOUT_MS.to_string();
            let builder = configure(
                Server::builder()
                    .port(cluster_port())
                    .arg("cluster-enabled", "yes")
                    .arg("cluster-config-file", "nodes.conf")
                    .arg("cluster-node-timeout", &node_timeout)
                    // A replica may always take over, however long its link was down.
                    .arg("cluster-replica-validity-factor", "0")
                    // Replicas stay where the test put them.
                    .arg("cluster-allow-replica-migration", "no"),
            );
            let server = builder.start();
            assert!(
                server.port <= MAX_PORT,
                "cluster node got port {} (> {MAX_PORT}): its chosen port was taken",
                server.port
            );
            nodes.push(server);
        }
        let ids: Vec<String> = nodes
            .iter()
            .map(|s| s.conn().q(&["CLUSTER", "MYID"]).as_str().to_string())
            .collect();
        let cluster = Cluster {
            nodes,
            ids,
            dead: BTreeSet::new(),
        };

        // Slots: equal contiguous ranges over the primaries.
        for i in 0..primaries {
            let lo = (SLOTS as usize * i / primaries).to_string();
            let hi = (SLOTS as usize * (i + 1) / primaries - 1).to_string();
            let r = cluster.nodes[i]
                .conn()
                .q(&["CLUSTER", "ADDSLOTSRANGE", &lo, &hi]);
            assert!(r.is_ok(), "CLUSTER ADDSLOTSRANGE {lo} {hi} -> {r:?}");
        }
        // Everyone meets node 0.
        let first = cluster.nodes[0].port.to_string();
        for s in &cluster.nodes[1..] {
            let r = s.conn().q(&["CLUSTER", "MEET", "127.0.0.1", &first]);
            assert!(r.is_ok(), "CLUSTER MEET -> {r:?}");
        }
        cluster.wait_for("every node to know every other node", |c| {
            c.nodes.iter().all(|s| {
                let view = c.view_of(s.port);
                view.len() == total && view.iter().all(|n| n.connected || n.myself)
            })
        });
        // Replicas: node primaries + i*replicas + j follows primary i.
        for i in 0..primaries {
            for j in 0..replicas {
                let r = &cluster.nodes[primaries + i * replicas + j];
                let reply = r.conn().q(&["CLUSTER", "REPLICATE", &cluster.ids[i]]);
                assert!(reply.is_ok(), "CLUSTER REPLICATE -> {reply:?}");
            }
        }
        cluster.wait_stable();
        // The topology is the one asked for.
        let view = cluster.view();
        for i in 0..primaries {
            let line = view.iter().find(|n| n.id == cluster.ids[i]).unwrap();
            assert!(line.primary, "node {i} is not a primary: {view:?}");
            for j in 0..replicas {
                let rid = &cluster.ids[primaries + i * replicas + j];
                let r = view.iter().find(|n| &n.id == rid).unwrap();
                assert_eq!(
                    r.master_id.as_ref(),
                    Some(&cluster.ids[i]),
                    "replica {rid}: {view:?}"
                );
            }
        }
        cluster
    }

    /// The server binary's kind: "redis" or "valkey".
    pub fn kind(&self) -> &'static str {
        let live = self.live_ports()[0];
        self.server(live).kind()
    }

    /// Ports of every node still running.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .map(|s| s.port)
            .filter(|p| !self.dead.contains(p))
            .collect()
    }

    pub fn is_alive(&self, port: u16) -> bool {
        !self.dead.contains(&port) && self.nodes.iter().any(|s| s.port == port)
    }

    /// The server process on `port`.
    #[track_caller]
    pub fn server(&self, port: u16) -> &Server {
        self.nodes
            .iter()
            .find(|s| s.port == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    /// A new connection to the node on `port`.
    #[track_caller]
    pub fn conn(&self, port: u16) -> Conn {
        assert!(self.is_alive(port), "node {port} is not running");
        Conn::connect(port)
    }

    /// The node id of the node on `port`.
    #[track_caller]
    pub fn id_of(&self, port: u16) -> &str {
        let i = self
            .nodes
            .iter()
            .position(|s| s.port == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"));
        &self.ids[i]
    }

    /// The port of the node with id `id`.
    #[track_caller]
    pub fn port_of_id(&self, id: &str) -> u16 {
        let i = self
            .ids
            .iter()
            .position(|x| x == id)
            .unwrap_or_else(|| panic!("no cluster node with id {id}"));
        self.nodes[i].port
    }

    /// `CLUSTER NODES` as seen by the node on `port`.
    #[track_caller]
    pub fn view_of(&self, port: u16) -> Vec<NodeLine> {
        let r = self.conn(port).q(&["CLUSTER", "NODES"]);
        parse_cluster_nodes(&text_of(&r, "CLUSTER NODES"))
    }

    /// `CLUSTER NODES` as seen by the first live node.
    #[track_caller]
    pub fn view(&self) -> Vec<NodeLine> {
        self.view_of(self.live_ports()[0])
    }

    /// Ports of the live primaries that serve at least one slot, in port order.
    #[track_caller]
    pub fn primaries(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .view()
            .iter()
            .filter(|n| n.primary && !n.failed && n.slot_count() > 0 && self.is_alive(n.port))
            .map(|n| n.port)
            .collect();
        v.sort_unstable();
        v
    }

    /// Ports of the live replicas of the primary on `port`.
    #[track_caller]
    pub fn replicas_of(&self, port: u16) -> Vec<u16> {
        let id = self.id_of(port).to_string();
        self.view()
            .iter()
            .filter(|n| n.master_id.as_deref() == Some(&id) && self.is_alive(n.port))
            .map(|n| n.port)
            .collect()
    }

    /// The slots served by the node on `port`, ascending.
    #[track_caller]
    pub fn slots_of(&self, port: u16) -> Vec<u16> {
        self.view()
            .iter()
            .find(|n| n.port == port)
            .map(|n| n.slot_list())
            .unwrap_or_default()
    }

    /// `CLUSTER KEYSLOT key` (checked against the local computation).
    #[track_caller]
    pub fn keyslot(&self, key: &[u8]) -> u16 {
        let port = self.live_ports()[0];
        let slot = self.conn(port).cmd(&[b"CLUSTER", b"KEYSLOT", key]).as_int() as u16;
        assert_eq!(slot, key_slot(key), "CLUSTER KEYSLOT vs local CRC16");
        slot
    }

    /// The port of the primary serving `slot`, from `CLUSTER SLOTS`.
    #[track_caller]
    pub fn slot_owner(&self, slot: u16) -> u16 {
        let port = self.live_ports()[0];
        slot_map(&mut self.conn(port))[slot as usize]
            .unwrap_or_else(|| panic!("slot {slot} has no owner in CLUSTER SLOTS"))
    }

    /// The port of the primary that owns `key`.
    #[track_caller]
    pub fn owner_of(&self, key: &[u8]) -> u16 {
        self.slot_owner(self.keyslot(key))
    }

    /// A connection to the primary that owns `key`.
    #[track_caller]
    pub fn conn_for_key(&self, key: &[u8]) -> Conn {
        self.conn(self.owner_of(key))
    }

    /// Runs `args` on every live primary: `(port, reply)` in port order.
    #[track_caller]
    pub fn on_primaries(&self, args: &[&str]) -> Vec<(u16, Value)> {
        self.primaries()
            .into_iter()
            .map(|p| (p, self.conn(p).q(args)))
            .collect()
    }

    /// Runs `args` on every live node (replicas too): `(port, reply)`.
    #[track_caller]
    pub fn on_all(&self, args: &[&str]) -> Vec<(u16, Value)> {
        self.live_ports()
            .into_iter()
            .map(|p| (p, self.conn(p).q(args)))
            .collect()
    }

    /// `CONFIG SET name value` on every live node; the returned guard sets the
    /// previous values back (on the nodes still running) when dropped.
    #[track_caller]
    pub fn config_set_all(&self, name: &str, value: &str) -> ConfigRestore {
        let mut saved = Vec::new();
        for port in self.live_ports() {
            let mut c = self.conn(port);
            let old = c.q(&["CONFIG", "GET", name]);
            let old = old.as_array();
            assert_eq!(old.len(), 2, "CONFIG GET {name} on {port}: {old:?}");
            saved.push((port, name.to_string(), old[1].as_str().to_string()));
            let r = c.q(&["CONFIG", "SET", name, value]);
            assert!(r.is_ok(), "CONFIG SET {name} {value} on {port} -> {r:?}");
        }
        ConfigRestore { saved }
    }

    /// `TCACHE.TAGCARD tag` summed over the primaries (what a client does today).
    #[track_caller]
    pub fn tagcard_sum(&self, tag: &str) -> i64 {
        self.on_primaries(&["TCACHE.TAGCARD", tag])
            .iter()
            .map(|(_, v)| v.as_int())
            .sum()
    }

    /// Waits until every live replica has acknowledged its primary's stream
    /// (`WAIT n` on each primary with n live replicas).
    #[track_caller]
    pub fn sync_replicas(&self) {
        for p in self.primaries() {
            let n = self.replicas_of(p).len();
            if n == 0 {
                continue;
            }
            let got = self.conn(p).q(&["WAIT", &n.to_string(), "20000"]).as_int();
            assert_eq!(got as usize, n, "WAIT {n} on primary {p}");
        }
    }

    /// Syncs the replicas, then `TCACHE.VERIFY` must say OK on every live node.
    #[track_caller]
    pub fn verify_all(&self) {
        self.sync_replicas();
        for (port, r) in self.on_all(&["TCACHE.VERIFY"]) {
            assert!(r.is_ok(), "TCACHE.VERIFY on node {port} -> {r:?}");
        }
    }

    /// Calls `cond` until it holds; panics after [`CLUSTER_TIMEOUT`] with
    /// `what` and every live node's `CLUSTER NODES`.
    #[track_caller]
    pub fn wait_for(&self, what: &str, mut cond: impl FnMut(&Cluster) -> bool) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        let mut pause = Duration::from_millis(10);
        loop {
            if cond(self) {
                return;
            }
            if Instant::now() >= deadline {
                let mut dump = String::new();
                for port in self.live_ports() {
                    let nodes = Conn::try_connect(port, Duration::from_secs(1))
                        .ok()
                        .and_then(|mut c| c.try_cmd(&[b"CLUSTER", b"NODES"]).ok());
                    dump.push_str(&format!("--- node {port}: CLUSTER NODES ---\n{nodes:?}\n"));
                }
                panic!("timed out after {CLUSTER_TIMEOUT:?} waiting for {what}\n{dump}");
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// True when every live node says `cluster_state:ok`, all live nodes
    /// describe the same topology (same ids, roles, primaries and slots, no
    /// slot in migration), the killed nodes are marked `fail` and the others
    /// are not, and every live replica's link to its primary is up.
    pub fn is_stable(&self) -> bool {
        let live = self.live_ports();
        let mut first: Option<Vec<NodeLine>> = None;
        for &port in &live {
            let Ok(mut c) = Conn::try_connect(port, Duration::from_secs(1)) else {
                return false;
            };
            let info = match c.try_cmd(&[b"CLUSTER", b"INFO"]) {
                Ok(Value::Bulk(b)) | Ok(Value::Verbatim(b)) => {
                    String::from_utf8_lossy(&b).into_owned()
                }
                _ => return false,
            };
            if info_value(&info, "cluster_state").as_deref() != Some("ok") {
                return false;
            }
            let text = match c.try_cmd(&[b"CLUSTER", b"NODES"]) {
                Ok(Value::Bulk(b)) | Ok(Value::Verbatim(b)) => {
                    String::from_utf8_lossy(&b).into_owned()
                }
                _ => return false,
            };
            if text.contains("->-") || text.contains("-<-") {
                return false; // a slot is migrating or importing
            }
            let mut view = parse_cluster_nodes(&text);
            for n in &view {
                let dead = self.dead.contains(&n.port);
                if n.failed != dead || n.pfail || (!dead && !n.myself && !n.connected) {
                    return false;
                }
            }
            for n in &mut view {
                n.myself = false;
                n.connected = true;
            }
            match &first {
                None => first = Some(view),
                Some(f) if *f != view => return false,
                Some(_) => {}
            }
            let role = match c.try_cmd(&[b"INFO", b"replication"]) {
                Ok(Value::Bulk(b)) | Ok(Value::Verbatim(b)) => {
                    String::from_utf8_lossy(&b).into_owned()
                }
                _ => return false,
            };
            if info_value(&role, "role").as_deref() == Some("slave")
                && (info_value(&role, "master_link_status").as_deref() != Some("up")
                    || info_value(&role, "master_sync_in_progress").as_deref() != Some("0"))
            {
                return false;
            }
        }
        first.is_some()
    }

    /// Waits until [`Cluster::is_stable`].
    #[track_caller]
    pub fn wait_stable(&self) {
        self.wait_for(
            "a stable cluster (state ok, one topology, replica links up)",
            |c| c.is_stable(),
        );
    }

    /// kill -9 the primary on `port`, then waits until one of its replicas
    /// has been promoted by the cluster (it serves the slots the primary
    /// served) and the cluster is stable again. Returns the new primary's port.
    #[track_caller]
    pub fn kill_primary(&mut self, port: u16) -> u16 {
        let slots = self.slots_of(port);
        assert!(!slots.is_empty(), "node {port} serves no slot");
        let replicas = self.replicas_of(port);
        assert!(!replicas.is_empty(), "primary {port} has no live replica");
        let i = self.nodes.iter().position(|s| s.port == port).unwrap();
        self.nodes[i].kill();
        self.dead.insert(port);
        self.wait_for("a replica of the killed primary to be promoted", |c| {
            replicas.iter().any(|&r| {
                let Ok(mut conn) = Conn::try_connect(r, Duration::from_secs(1)) else {
                    return false;
                };
                matches!(conn.try_cmd(&[b"INFO", b"replication"]),
                    Ok(Value::Bulk(b)) | Ok(Value::Verbatim(b))
                        if info_value(&String::from_utf8_lossy(&b), "role").as_deref() == Some("master"))
                    && c.is_stable()
            })
        });
        let new = self.slot_owner(slots[0]);
        assert!(replicas.contains(&new), "slot {} went to {new}", slots[0]);
        assert_eq!(self.slots_of(new), slots, "the new primary's slots");
        new
    }

    /// `redis-cli --cluster reshard 127.0.0.1:<from> --cluster-from <id>
    /// --cluster-to <id> --cluster-slots <n> --cluster-yes`; panics with its
    /// output if it fails. Returns its output. redis-cli moves the lowest `n`
    /// slots of `from` (MIGRATE, 10 keys per call).
    #[track_caller]
    pub fn reshard(&self, from: u16, to: u16, n: usize) -> String {
        let out = Command::new(redis_cli())
            .args([
                "--cluster",
                "reshard",
                &format!("127.0.0.1:{from}"),
                "--cluster-from",
                self.id_of(from),
                "--cluster-to",
                self.id_of(to),
                "--cluster-slots",
                &n.to_string(),
                "--cluster-yes",
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", redis_cli().display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && !text.contains("[ERR]"),
            "redis-cli --cluster reshard failed ({}):\n{text}",
            out.status
        );
        text
    }

    /// A redirect-following client seeded with every live node.
    pub fn router(&self) -> Router {
        Router::new(self.live_ports())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &mut self.nodes {
            s.kill();
        }
    }
}

/// Sets configuration values back when dropped; see [`Cluster::config_set_all`].
pub struct ConfigRestore {
    saved: Vec<(u16, String, String)>,
}

impl Drop for ConfigRestore {
    fn drop(&mut self) {
        for (port, name, value) in &self.saved {
            if let Ok(mut c) = Conn::try_connect(*port, Duration::from_secs(1)) {
                let _ = c.try_cmd(&[b"CONFIG", b"SET", name.as_bytes(), value.as_bytes()]);
            }
        }
    }
}

/// `CLUSTER SLOTS` as a table slot -> port of the primary.
#[track_caller]
pub fn slot_map(c: &mut Conn) -> Vec<Option<u16>> {
    let mut map = vec![None; SLOTS as usize];
    let r = c.q(&["CLUSTER", "SLOTS"]);
    for range in r.as_array() {
        let f = range.as_array();
        let (lo, hi) = (f[0].as_int() as usize, f[1].as_int() as usize);
        let port = f[2].as_array()[1].as_int() as u16;
        for s in &mut map[lo..=hi] {
            *s = Some(port);
        }
    }
    map
}

// ---------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------

/// A minimal cluster client: sends a keyed command to the owner of its first
/// key (`args[1]`), follows `MOVED` (updating its slot table) and `ASK`
/// (`ASKING` + the command on the importing node), and retries `TRYAGAIN`,
/// `CLUSTERDOWN` and lost connections until [`CLUSTER_TIMEOUT`].
pub struct Router {
    seeds: Vec<u16>,
    slots: Vec<Option<u16>>,
    conns: HashMap<u16, Conn>,
    /// MOVED replies followed.
    pub moved: u64,
    /// ASK replies followed.
    pub asked: u64,
}

impl Router {
    #[track_caller]
    pub fn new(seeds: Vec<u16>) -> Router {
        let mut r = Router {
            seeds,
            slots: vec![None; SLOTS as usize],
            conns: HashMap::new(),
            moved: 0,
            asked: 0,
        };
        assert!(r.refresh(), "no seed node answered CLUSTER SLOTS");
        r
    }

    /// Reloads the slot table from the first seed that answers.
    fn refresh(&mut self) -> bool {
        for &port in &self.seeds {
            let Ok(mut c) = Conn::try_connect(port, Duration::from_secs(1)) else {
                continue;
            };
            c.set_read_timeout(Duration::from_secs(5));
            if let Ok(Value::Array(_)) = c.try_cmd(&[b"CLUSTER", b"SLOTS"]) {
                self.slots = slot_map(&mut c);
                return true;
            }
        }
        false
    }

    fn conn(&mut self, port: u16) -> Option<&mut Conn> {
        match self.conns.entry(port) {
            Entry::Occupied(e) => Some(e.into_mut()),
            Entry::Vacant(e) => {
                Some(e.insert(Conn::try_connect(port, Duration::from_secs(1)).ok()?))
            }
        }
    }

    fn try_on(&mut self, port: u16, asking: bool, args: &[&[u8]]) -> Option<Value> {
        let c = self.conn(port)?;
        let r = (|| {
            if asking {
                c.try_send(&[b"ASKING"])?;
            }
            c.try_send(args)?;
            if asking {
                c.try_read()?;
            }
            c.try_read()
        })();
        match r {
            Ok(v) => Some(v),
            Err(_) => {
                self.conns.remove(&port);
                None
            }
        }
    }

    /// Runs a keyed command on the owner of `args[1]`.
    #[track_caller]
    pub fn cmd(&mut self, args: &[&[u8]]) -> Value {
        assert!(args.len() >= 2, "a keyed command needs a key");
        let slot = key_slot(args[1]);
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        let mut target: Option<(u16, bool)> = None; // (port, asking)
        loop {
            assert!(
                Instant::now() < deadline,
                "{:?}: no answer from the cluster within {CLUSTER_TIMEOUT:?}",
                String::from_utf8_lossy(args[0])
            );
            let (port, asking) = match target.take() {
                Some(t) => t,
                None => match self.slots[slot as usize] {
                    Some(p) => (p, false),
                    None => {
                        self.refresh();
                        thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                },
            };
            let Some(reply) = self.try_on(port, asking, args) else {
                self.refresh();
                thread::sleep(Duration::from_millis(20));
                continue;
            };
            if let Value::Error(e) = &reply {
                let words: Vec<&str> = e.split_whitespace().collect();
                let to_port = |w: &str| w.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
                match words.first().copied() {
                    Some("MOVED") if words.len() == 3 => {
                        let p = to_port(words[2]).expect("MOVED port");
                        self.slots[slot as usize] = Some(p);
                        self.moved += 1;
                        continue;
                    }
                    Some("ASK") if words.len() == 3 => {
                        self.asked += 1;
                        target = Some((to_port(words[2]).expect("ASK port"), true));
                        continue;
                    }
                    Some("TRYAGAIN") | Some("CLUSTERDOWN") => {
                        thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    _ => {}
                }
            }
            return reply;
        }
    }

    /// `cmd` with `&str` args.
    #[track_caller]
    pub fn q(&mut self, args: &[&str]) -> Value {
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.cmd(&refs)
    }
}
