#!/usr/bin/env python3
"""TCACHE.INVALTAG of one big tag: a 3-shard cluster vs one standalone node.

Not part of `make bench` or `make test`; run it by hand:

    make build venv
    .venv/bin/python bench/cluster_invaltag.py [--server PATH] [--module PATH]
        [--entries 1000000] [--rounds 3] [--shards 3] [--modes logical paused sync]

Every entry is `e:<n>` (no hash tag, so the keys spread over all slots) with a
100-byte value, ttl 3600 and 3 tags: `big` (all N entries), `t:<n % 1000>` and
`u:<n % 5000>` (the shape bench/invalidation.py uses). Each round fills
(redis-cli --pipe; on the cluster one pipe per shard, straight to the owner of
each key, in parallel) and then invalidates `big`:

  standalone  one node, TCACHE.INVALTAG big
  cluster     the same command sent to one primary, which coordinates it over
              the cluster bus (every primary applies it; the reply comes once
              the owners of all 16384 slots confirmed). The reply must be N.

Measured, per trial:
  client_s   time the client waits: from releasing the command(s) until the
             last reply is in;
  server_s   INFO commandstats usec of TCACHE.INVALTAG on each node;
  card0_s    time until TAGCARD big (summed over the primaries) is 0;
  reclaim_s  time (from the command) until reclaim_pending is 0 on every node and DBSIZE summed
             over the nodes is 0 (the background deletes of a logical
             invalidation are over).

Modes: `logical` keeps the default tcache.inval-sync-max (128), so a 1M-entry
tag is invalidated logically and reclaimed in the background; `paused` is the
same with the reclaimer paused (tcache.reclaim-budget-us 0) until the last
reply is in, so that the nodes' reclaimers (each keeps its event loop busy)
do not compete for the CPUs with the replies still on their way; `sync` sets
tcache.inval-sync-max to 1e9, so every node deletes its share inside the
command. No replicas (a shard is one primary). All nodes run on this machine:
with fewer cores than shards the cluster's shards share CPUs.

Prints a table of medians (min-max) and writes every trial to
bench/results/cluster_invaltag-<timestamp>.json.
"""
import argparse
import binascii
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALUE = b"x" * 100
TTL = b"3600"
BIG = b"big"
SMALL_T, SMALL_U = 1000, 5000
SLOTS = 16384
SYNC_MAX = 1_000_000_000
POLL_S = 0.002


# ---------------------------------------------------------------- protocol


def bulk(s):
    return b"$%d\r\n%s\r\n" % (len(s), s)


def key_slot(key):
    """Redis Cluster hash slot (CRC16-XMODEM = binascii.crc_hqx), hash tags honoured."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return binascii.crc_hqx(key, 0) % SLOTS


def set_command(n):
    return b"".join((b"*8\r\n", bulk(b"TCACHE.SET"), bulk(b"e:%d" % n), bulk(VALUE), bulk(TTL),
                     bulk(b"TAGS"), bulk(BIG), bulk(b"t:%d" % (n % SMALL_T)),
                     bulk(b"u:%d" % (n % SMALL_U))))


# ---------------------------------------------------------------- servers


def port_pair_free(port):
    for p in (port, port + 10000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def cluster_ports(count, taken):
    """Ports <= 55535 whose bus port (+10000) is free, below the ephemeral range."""
    out = []
    port = 12000 + os.getpid() % 8000
    while len(out) < count:
        port = 12000 + (port - 12000 + 37) % 10000
        if port not in taken and port_pair_free(port):
            out.append(port)
            taken.add(port)
    return out


def wait_until(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


class Node:
    """A server with the module, in its own temp dir, killed by stop()."""

    def __init__(self, binary, module, port, cluster):
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="tcache-cluster-bench-")
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.dir,
                "--logfile", os.path.join(self.dir, "log"), "--loadmodule", module]
        if cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", "60000"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.r = redis.Redis(port=port, socket_timeout=600, protocol=2)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{binary} exited on port {port}: {self.log_tail()}")
            try:
                return self.r.ping()
            except redis.ConnectionError:
                return False
        wait_until(up, 10, f"server on port {port}")

    def log_tail(self, lines=5):
        try:
            with open(os.path.join(self.dir, "log"), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def cmd(self, *args):
        return self.r.execute_command(*args)

    def stat(self, name):
        raw = self.cmd("TCACHE.STATS")
        fields = dict(zip(raw[0::2], raw[1::2])) if isinstance(raw, list) else raw
        return int(fields.get(name.encode(), fields.get(name, 0)))

    def invaltag_usec(self):
        return int(self.r.info("commandstats").get("cmdstat_tcache.invaltag", {}).get("usec", 0))


def start_cluster(binary, module, shards, taken):
    nodes = []
    try:
        for port in cluster_ports(shards, taken):
            nodes.append(Node(binary, module, port, cluster=True))
        for i, n in enumerate(nodes):
            n.cmd("CLUSTER", "ADDSLOTSRANGE", SLOTS * i // shards, SLOTS * (i + 1) // shards - 1)
        for n in nodes[1:]:
            n.cmd("CLUSTER", "MEET", "127.0.0.1", nodes[0].port)

        def ok():
            for n in nodes:
                info = n.cmd("CLUSTER", "INFO").decode()
                if "cluster_state:ok" not in info or f"cluster_known_nodes:{shards}" not in info:
                    return False
            return True
        wait_until(ok, 60, "cluster_state:ok on every node")
        owner = [None] * SLOTS
        for lo, hi, primary, *_ in nodes[0].cmd("CLUSTER", "SLOTS"):
            port = int(primary[1])
            node = next(n for n in nodes if n.port == port)
            for s in range(lo, hi + 1):
                owner[s] = node
        return nodes, owner
    except BaseException:
        for n in nodes:
            n.stop()
        raise


# ---------------------------------------------------------------- fill


def pipe(node, data):
    proc = subprocess.run(["redis-cli", "-p", str(node.port), "--pipe"], input=data, check=False,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0 or "errors: 0," not in out:
        raise RuntimeError(f"fill of node {node.port} failed: {out.strip()}")


def fill(nodes, owner, n):
    """Each node gets the SETs of its keys through its own redis-cli --pipe, in parallel."""
    streams = {id(node): [] for node in nodes}
    for i in range(n):
        node = nodes[0] if owner is None else owner[key_slot(b"e:%d" % i)]
        streams[id(node)].append(set_command(i))
    t0 = time.monotonic()
    errors = []

    def run(node):
        try:
            pipe(node, b"".join(streams[id(node)]))
        except (OSError, RuntimeError) as e:  # reported below
            errors.append(e)
    threads = [threading.Thread(target=run, args=(node,)) for node in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    total = sum(node.cmd("TCACHE.TAGCARD", BIG) for node in nodes)
    if total != n:
        raise RuntimeError(f"TAGCARD big summed to {total}, expected {n}")
    return time.monotonic() - t0, {node.port: len(streams[id(node)]) for node in nodes}


# ---------------------------------------------------------------- one trial


def trial(kind, nodes, owner, n, mode):
    sync_max = SYNC_MAX if mode == "sync" else 128
    for node in nodes:
        node.cmd("FLUSHALL")
        node.cmd("CONFIG", "SET", "tcache.inval-sync-max", sync_max)
        node.cmd("CONFIG", "SET", "tcache.reclaim-budget-us", 0 if mode == "paused" else 1000)
    fill_s, per_node = fill(nodes, owner, n)
    for node in nodes:
        node.r.config_resetstat()
    # One dedicated connection and thread per node, released together.
    conns = [redis.Redis(port=node.port, socket_timeout=600, protocol=2) for node in nodes]
    for c in conns:
        c.ping()
    go = threading.Event()
    replies = [None] * len(nodes)
    done_at = [0.0] * len(nodes)

    def send(i):
        go.wait()
        replies[i] = conns[i].execute_command("TCACHE.INVALTAG", BIG)
        done_at[i] = time.monotonic()
    # One command, to the first node: in cluster mode it coordinates the rest.
    threads = [threading.Thread(target=send, args=(0,))]
    for t in threads:
        t.start()
    time.sleep(0.05)  # let every thread reach go.wait()
    t0 = time.monotonic()
    go.set()
    for t in threads:
        t.join()
    client_s = done_at[0] - t0
    if mode == "paused":
        for node in nodes:
            node.cmd("CONFIG", "SET", "tcache.reclaim-budget-us", 1000)
    removed = replies[0]
    if removed != n:
        raise RuntimeError(f"INVALTAG replied {removed}, expected {n}")
    # TAGCARD summed to 0, then nothing left to reclaim and nothing stored.
    card0_at = None
    reclaim_at = None
    deadline = time.monotonic() + 600
    while reclaim_at is None and time.monotonic() < deadline:
        now = time.monotonic()
        if card0_at is None and sum(c.execute_command("TCACHE.TAGCARD", BIG) for c in conns) == 0:
            card0_at = now
        pending = 0
        size = 0
        for node in nodes:
            pending += node.stat("reclaim_pending")
            size += node.r.dbsize()
        if pending == 0 and size == 0:
            reclaim_at = now
        else:
            time.sleep(POLL_S)
    for c in conns:
        c.close()
    return {
        "kind": kind, "mode": mode, "entries": n, "nodes": len(nodes),
        "entries_per_node": per_node, "fill_s": fill_s,
        "client_s": client_s,
        "per_node_client_s": [done_at[0] - t0],
        "server_s": [node.invaltag_usec() / 1e6 for node in nodes],
        "replies": replies,
        "card0_s": None if card0_at is None else card0_at - t0,
        "reclaim_s": None if reclaim_at is None else reclaim_at - t0,
    }


# ---------------------------------------------------------------- report


def ms(s):
    return "-" if s is None else f"{s * 1000:.2f}"


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{ms(statistics.median(values))} ({ms(min(values))}-{ms(max(values))})"


def print_table(trials):
    print()
    print(f"{'layout':26} {'client ms':>24} {'server ms (max node)':>24} "
          f"{'TAGCARD 0 ms':>22} {'reclaimed ms':>24}")
    keys = []
    for t in trials:
        k = (t["kind"], t["mode"])
        if k not in keys:
            keys.append(k)
    for kind, mode in keys:
        ts = [t for t in trials if t["kind"] == kind and t["mode"] == mode]
        name = f"{kind} ({ts[0]['nodes']} node{'s' if ts[0]['nodes'] > 1 else ''}), {mode}"
        print(f"{name:26} {spread([t['client_s'] for t in ts]):>24} "
              f"{spread([max(t['server_s']) for t in ts]):>24} "
              f"{spread([t['card0_s'] for t in ts]):>22} {spread([t['reclaim_s'] for t in ts]):>24}")
    print("medians over the rounds (min-max); cluster: one INVALTAG to one primary, which coordinates the others; server ms is that node's own command time")


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default=shutil.which("redis-server") or "/usr/bin/redis-server")
    ap.add_argument("--module", default=os.path.join(ROOT, "target/release/libtcache.so"))
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--modes", nargs="+", default=["logical", "paused", "sync"],
                    choices=["logical", "paused", "sync"])
    args = ap.parse_args()

    workdir = tempfile.mkdtemp(prefix="tcache-cluster-bench-mod-")
    module = os.path.join(workdir, "libtcache.so")  # a private copy: rebuilds change nothing
    shutil.copy2(args.module, module)
    with open(module, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    taken = set()
    standalone = None
    cluster = []
    trials = []
    try:
        standalone = Node(args.server, module, cluster_ports(1, taken)[0], cluster=False)
        cluster, owner = start_cluster(args.server, module, args.shards, taken)
        version = {k: v for k, v in standalone.r.info("server").items() if "version" in k}
        print(f"server {args.server} {version}, module sha256 {digest}, "
              f"{os.cpu_count()} CPUs, {args.entries:,} entries, {args.rounds} rounds", flush=True)
        for r in range(args.rounds):
            for mode in args.modes:
                order = [("standalone", [standalone], None), ("cluster", cluster, owner)]
                if r % 2:
                    order.reverse()
                for kind, nodes, own in order:
                    t = trial(kind, nodes, own, args.entries, mode)
                    trials.append(t)
                    print(f"  round {r} {kind:10} {mode:7} fill {t['fill_s']:5.1f}s  "
                          f"client {ms(t['client_s'])} ms  per node "
                          f"{[ms(x) for x in t['per_node_client_s']]}  server "
                          f"{[ms(x) for x in t['server_s']]}  TAGCARD 0 {ms(t['card0_s'])} ms  "
                          f"reclaimed {ms(t['reclaim_s'])} ms", flush=True)
    finally:
        if standalone:
            standalone.stop()
        for n in cluster:
            n.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(trials)
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    path = os.path.join(ROOT, "bench/results",
                        time.strftime("cluster_invaltag-%Y%m%d-%H%M%S.json"))
    with open(path, "w") as f:
        json.dump({"server": args.server, "version": version, "module_sha256_16": digest,
                   "cpus": os.cpu_count(), "trials": trials}, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
