#!/usr/bin/env python3
"""Invalidating one tag that holds N entries, three layouts side by side.

Every entry is `e:<n>` with a 100-byte value, ttl 3600 and 3 tags: `big` (all
N entries), `t:<n % 1000>` and `u:<n % 5000>`. Layouts:

  tcache       TCACHE.SET ... TAGS big t:.. u:..  then  TCACHE.INVALTAG big
               (logical invalidation, memory reclaimed in the background)
  tcache-sync  the same with `tcache.inval-sync-max` raised to 1e9: the module
               deletes every entry inside the command (synchronous baseline)
  lua          SET EX + SADD tag:<tag> per tag, then a Lua SSCAN+DEL script

For each size the layouts are interleaved over several rounds on one primary
with one replica attached (both started here, with a private copy of the
module). Each trial measures:
  - the invalidation command's own time: client round trip, and its INFO
    commandstats time (tcache runs it with reclaim paused, see below);
  - worst and p99 latency of a concurrent PING client and of a concurrent
    client reading a live key (TCACHE.GET, or GET for lua), each a separate
    process sending one request every 0.5 ms, over the requests in flight
    from the command until reclaim is done (+ 0.2 s);
  - time until reclaim is done (tcache: TCACHE.STATS reclaim_pending is 0 and
    DBSIZE is what should remain, reclaim pauses excluded; sync layouts: the
    command), and until memory counted for maxmemory (used_memory minus
    mem_not_counted_for_evict, i.e. without replica buffers) is back within
    max(1 MB, 5% of the fill) of its pre-fill value (given up 5 s after
    reclaim: the table then shows what was left);
  - replication bytes (master_repl_offset delta): for tcache, the logical step
    alone (reclaim paused with tcache.reclaim-budget-us 0) and the reclaim
    (bytes per reclaimed key); for the others the whole delta and per key;
  - whether the replica ends with the primary's DBSIZE.
Then memory per entry (used_memory after fill - before, / entries) for tcache
and for strings + 3 sets, each on a fresh server.

Medians and spread (min-max) are printed and written, with every raw trial, to
bench/results/invalidation-<timestamp>.json (bench/report.py reads it).

usage: bench/invalidation.py [--server PATH] [--module PATH]
           [--entries N [N ...]] [--rounds R [R ...]] [--memory-entries N]
e.g.   bench/invalidation.py --entries 100000 1000000 --rounds 3 2
Needs redis-cli and redis-py. A build without tcache.inval-sync-max /
tcache.reclaim-budget-us / reclaim_pending is measured anyway, with a warning.
"""
import argparse
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUTS = ("tcache", "tcache-sync", "lua")
VALUE = b"x" * 100
TTL = b"3600"
BIG = b"big"
SMALL_T, SMALL_U = 1000, 5000
LIVE_KEY = b"live:1"
RECLAIM_BUDGET_US = 1000
SYNC_MAX = 1_000_000_000
MARGIN_S = 0.2  # latency window after reclaim is done
IDLE_S = 1.5  # probes on the filled, idle server before the command: the machine's own noise
SETTLE_S = 5.0  # how long memory may take to come back after that

LUA_INVALIDATE = """
local cursor, n = '0', 0
repeat
  local r = redis.call('SSCAN', KEYS[1], cursor, 'COUNT', 1000)
  cursor = r[1]
  if #r[2] > 0 then n = n + redis.call('DEL', unpack(r[2])) end
until cursor == '0'
redis.call('DEL', KEYS[1])
return n
"""

WARNINGS = []


def warn(message):
    if message not in WARNINGS:
        WARNINGS.append(message)
        print(f"WARNING: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- protocol


def bulk(s):
    return b"$%d\r\n%s\r\n" % (len(s), s)


def resp(*args):
    return b"*%d\r\n" % len(args) + b"".join(bulk(a if isinstance(a, bytes) else str(a).encode())
                                              for a in args)


def reply_complete(buf):
    """True when buf holds one whole simple or bulk-string reply."""
    end = buf.find(b"\r\n")
    if end < 0:
        return False
    if buf[:1] != b"$":
        return True
    size = int(buf[1:end])
    return size < 0 or len(buf) >= end + 2 + size + 2


# ---------------------------------------------------------------- servers


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A redis-server with the module, in its own temp dir, on a free port."""

    def __init__(self, binary, module, *extra):
        self.dir = tempfile.mkdtemp(prefix="tcache-inval-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--logfile", os.path.join(self.dir, "log"),
             "--loadmodule", module, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.r = redis.Redis(port=self.port, socket_timeout=300)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.r.ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = self.log_tail()
                    self.stop()
                    raise RuntimeError(f"{binary} did not start on port {self.port}:\n{log}")
                time.sleep(0.05)

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

    def info(self, section, field):
        return int(self.r.info(section)[field])

    def counted_memory(self):
        """Memory counted for maxmemory: used_memory without replica buffers and backlog."""
        m = self.r.info("memory")
        return int(m["used_memory"]) - int(m.get("mem_not_counted_for_evict", 0))

    def config_get(self, name):
        got = self.r.config_get(name)
        return got.get(name)

    def config_set(self, name, value):
        """CONFIG SET; False (and a warning) when this build has no such config."""
        try:
            self.r.config_set(name, value)
            return True
        except redis.ResponseError as e:
            warn(f"CONFIG SET {name} {value} refused ({e}): this build does not have it")
            return False


def attach_replica(primary, replica):
    replica.r.execute_command("REPLICAOF", "127.0.0.1", primary.port)
    wait_until(lambda: replica.r.info("replication").get("master_link_status") == "up"
               and not int(replica.r.info("replication").get("master_sync_in_progress", 0)),
               60, "replica link up")
    primary.r.execute_command("WAIT", 1, 60000)


def wait_until(condition, timeout_s, what=None, interval_s=0.005):
    """Poll condition(); the monotonic time it first held, or None on timeout
    (with a warning naming `what`, if given)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return time.monotonic()
        if time.monotonic() > deadline:
            if what:
                warn(f"timed out after {timeout_s:g} s waiting for {what}")
            return None
        time.sleep(interval_s)


def stats(server):
    """TCACHE.STATS as a dict of str -> value (flat RESP2 array or RESP3 map)."""
    raw = server.r.execute_command("TCACHE.STATS")
    if isinstance(raw, dict):
        items = raw.items()
    else:
        items = zip(raw[0::2], raw[1::2])
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in items}


# ---------------------------------------------------------------- filling


def tcache_commands(start, stop):
    head = b"*8\r\n" + bulk(b"TCACHE.SET")
    mid = bulk(VALUE) + bulk(TTL) + bulk(b"TAGS") + bulk(BIG)
    for n in range(start, stop):
        yield b"".join((head, bulk(b"e:%d" % n), mid,
                        bulk(b"t:%d" % (n % SMALL_T)), bulk(b"u:%d" % (n % SMALL_U))))


def lua_layout_commands(start, stop):
    """What client-side tagging writes: SET EX, then one SADD per tag."""
    set_head, set_tail = b"*5\r\n" + bulk(b"SET"), bulk(VALUE) + bulk(b"EX") + bulk(TTL)
    sadd = b"*3\r\n" + bulk(b"SADD")
    big = bulk(b"tag:" + BIG)
    for n in range(start, stop):
        key = bulk(b"e:%d" % n)
        yield b"".join((set_head, key, set_tail, sadd, big, key,
                        sadd, bulk(b"tag:t:%d" % (n % SMALL_T)), key,
                        sadd, bulk(b"tag:u:%d" % (n % SMALL_U)), key))


def fill(server, layout, n):
    """Pipe the layout's writes for e:0..e:n-1 through redis-cli --pipe."""
    commands = tcache_commands if layout.startswith("tcache") else lua_layout_commands
    proc = subprocess.Popen(["redis-cli", "-p", str(server.port), "--pipe"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        chunk = 20_000
        for start in range(0, n, chunk):
            proc.stdin.write(b"".join(commands(start, min(n, start + chunk))))
        proc.stdin.close()
        out = proc.stdout.read().decode(errors="replace")
    except BaseException:
        proc.kill()  # interrupted mid-stream: redis-cli would wait for more input
        raise
    finally:
        proc.wait()
    if proc.returncode != 0 or "errors: 0," not in out:
        raise RuntimeError(f"fill failed: {out.strip()}")


def write_live_key(server, layout):
    if layout.startswith("tcache"):
        server.r.execute_command("TCACHE.SET", LIVE_KEY, VALUE, TTL, "TAGS", "live")
        return ["TCACHE.GET", LIVE_KEY]
    server.r.set(LIVE_KEY, VALUE, ex=int(TTL))
    return ["GET", LIVE_KEY]


def big_card(server, layout):
    if layout == "lua":
        return server.r.scard(b"tag:" + BIG)
    return server.r.execute_command("TCACHE.TAGCARD", BIG)


# ---------------------------------------------------------------- latency probes


def probe_loop(port, command, interval_s, ready, stop, conn):
    """Child process: send `command` in a loop, one at a time; record
    (start, latency) pairs on the monotonic clock; send them back on stop."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=300)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = resp(*command)

    def roundtrip():
        sock.sendall(payload)
        buf = sock.recv(65536)
        while not reply_complete(buf):
            buf += sock.recv(65536)
        return buf

    expected, samples, bad = roundtrip(), array("d"), 0
    ready.set()
    while not stop.is_set():
        t = time.monotonic()
        got = roundtrip()
        samples.append(t)
        samples.append(time.monotonic() - t)
        bad += got != expected
        time.sleep(interval_s)
    conn.send((samples.tobytes(), bad, expected[:40]))
    sock.close()


class Probe:
    def __init__(self, port, command, interval_s):
        ctx = multiprocessing.get_context("fork")
        self.ready, self.stop_event = ctx.Event(), ctx.Event()
        self.conn, child = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=probe_loop, daemon=True,
                                args=(port, command, interval_s, self.ready, self.stop_event, child))
        self.proc.start()
        if not self.ready.wait(10):
            self.kill()
            raise RuntimeError(f"probe {command} did not start")
        self.name = command[0]

    def finish(self):
        """Stop; list of (start, latency)."""
        self.stop_event.set()
        raw, bad, expected = self.conn.recv()
        self.proc.join(5)
        if bad:
            warn(f"{bad} {self.name} replies differed from the first one ({expected!r})")
        flat = array("d")
        flat.frombytes(raw)
        return list(zip(flat[0::2], flat[1::2]))

    def kill(self):
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()


def window_latency(samples, t_from, t_to):
    """Worst and p99 latency of the requests in flight between t_from and t_to."""
    lat = sorted(d for s, d in samples if s + d >= t_from and s <= t_to)
    if not lat:
        return {"worst_s": None, "p99_s": None, "samples": 0}
    return {"worst_s": lat[-1], "p99_s": lat[max(0, math.ceil(0.99 * len(lat)) - 1)],
            "samples": len(lat)}


# ---------------------------------------------------------------- one trial


class Caps:
    """Which parts of the reclaim interface this module build has."""

    def __init__(self, server):
        self.sync_max = server.config_get("tcache.inval-sync-max")
        self.budget = server.config_get("tcache.reclaim-budget-us")
        self.reclaim_pending = "reclaim_pending" in stats(server)
        if self.sync_max is None:
            warn("tcache.inval-sync-max is not in this build: 'tcache-sync' runs like 'tcache'")
        if self.budget is None:
            warn("tcache.reclaim-budget-us is not in this build: the logical step cannot be "
                 "isolated; its replication bytes include every deletion")
        if not self.reclaim_pending:
            warn("TCACHE.STATS has no reclaim_pending in this build: taken as 0")

    def as_dict(self):
        return {"inval_sync_max": self.sync_max, "reclaim_budget_us": self.budget,
                "reclaim_pending": self.reclaim_pending}


def reset(primary, replica, caps):
    """Empty both servers and put the module configs back to their defaults."""
    primary.r.flushall()
    primary.r.execute_command("WAIT", 1, 60000)
    for s in (primary, replica):
        if caps.sync_max is not None:
            s.config_set("tcache.inval-sync-max", caps.sync_max)
        if caps.budget is not None:
            s.config_set("tcache.reclaim-budget-us", caps.budget)


def reclaim_done(primary, remaining):
    pipe = primary.r.pipeline(transaction=False)
    pipe.execute_command("TCACHE.STATS")
    pipe.dbsize()
    raw, size = pipe.execute()
    fields = raw if isinstance(raw, dict) else dict(zip(raw[0::2], raw[1::2]))
    pending = int(fields.get(b"reclaim_pending", fields.get("reclaim_pending", 0)))
    return pending == 0 and size == remaining


def invalidate(primary, replica, layout, n, caps, sha):
    """Run the command; returns timings (monotonic) and replication offsets."""
    offset = lambda: primary.info("replication", "master_repl_offset")
    paused = layout == "tcache" and caps.budget is not None
    if paused:
        for s in (primary, replica):
            s.config_set("tcache.reclaim-budget-us", 0)
    primary.r.config_resetstat()
    o0 = offset()
    t0 = time.monotonic()
    if layout == "lua":
        removed = primary.r.evalsha(sha, 1, b"tag:" + BIG)
    else:
        removed = primary.r.execute_command("TCACHE.INVALTAG", BIG)
    t1 = time.monotonic()
    o1 = offset()
    name = "cmdstat_evalsha" if layout == "lua" else "cmdstat_tcache.invaltag"
    server_s = primary.r.info("commandstats").get(name, {}).get("usec", 0) / 1e6
    resumed = t1
    if paused:
        resumed = time.monotonic()
        for s in (primary, replica):
            s.config_set("tcache.reclaim-budget-us", caps.budget)
    return {"removed": removed, "t0": t0, "t1": t1, "resumed": resumed, "o0": o0, "o1": o1,
            "server_s": server_s}


def trial(primary, replica, layout, n, caps, interval_s):
    reset(primary, replica, caps)
    live = write_live_key(primary, layout)
    sha = primary.r.script_load(LUA_INVALIDATE) if layout == "lua" else None
    base_mem = primary.counted_memory()
    t = time.monotonic()
    fill(primary, layout, n)
    fill_s = time.monotonic() - t
    primary.r.execute_command("WAIT", 1, 300000)
    card, size_full = big_card(primary, layout), primary.r.dbsize()
    if card != n:
        raise RuntimeError(f"{layout}: tag big holds {card} entries, expected {n}")
    full_mem = primary.counted_memory()
    remaining = size_full - n - (1 if layout == "lua" else 0)
    if layout == "tcache-sync" and caps.sync_max is not None:
        for s in (primary, replica):
            s.config_set("tcache.inval-sync-max", SYNC_MAX)

    probes = []
    try:
        probes += [Probe(primary.port, ["PING"], interval_s), Probe(primary.port, live, interval_s)]
        time.sleep(0.1)
        idle_from = time.monotonic()
        time.sleep(IDLE_S)
        idle_to = time.monotonic()
        run = invalidate(primary, replica, layout, n, caps, sha)
        if run["removed"] != n:
            warn(f"{layout}: the invalidation reported {run['removed']} entries removed, not {n}")
        done = wait_until(lambda: reclaim_done(primary, remaining), 600, f"{layout} reclaim")
        o_done = primary.info("replication", "master_repl_offset")
        time.sleep(MARGIN_S)
        samples = [p.finish() for p in probes]
    finally:
        for p in probes:
            p.kill()

    near = base_mem + max(1 << 20, 0.05 * (full_mem - base_mem))
    mem_at = wait_until(lambda: primary.counted_memory() <= near, SETTLE_S, interval_s=0.02)
    residual = primary.counted_memory() - base_mem

    primary.r.execute_command("WAIT", 1, 30000)
    wait_until(lambda: replica.r.dbsize() == primary.r.dbsize(), 30, "replica DBSIZE", 0.02)
    replica_size = replica.r.dbsize()

    pause = run["resumed"] - run["t1"]
    to_reclaim = (done - run["t0"] - pause) if done else None
    reclaim_bytes = o_done - run["o1"]
    whole = o_done - run["o0"]
    window_to = (done or run["t1"]) + MARGIN_S
    return {
        "layout": layout, "entries": n, "removed": run["removed"], "fill_s": fill_s,
        "fill_bytes": full_mem - base_mem, "command_s": run["t1"] - run["t0"],
        "server_command_s": run["server_s"],
        "reclaim_s": to_reclaim,
        "memory_back_s": (mem_at - run["t0"] - pause) if mem_at else None,
        "residual_bytes": residual,
        "ping": window_latency(samples[0], run["t0"], window_to),
        "ping_idle": window_latency(samples[0], idle_from, idle_to),
        "get": window_latency(samples[1], run["t0"], window_to),
        "repl_logical_bytes": run["o1"] - run["o0"] if layout == "tcache" else None,
        "repl_reclaim_bytes": reclaim_bytes if layout == "tcache" else None,
        "repl_bytes": whole,
        "repl_bytes_per_key": (reclaim_bytes if layout == "tcache" else whole) / n,
        "primary_dbsize": primary.r.dbsize(), "replica_dbsize": replica_size,
        "replica_dbsize_equal": replica_size == primary.r.dbsize(),
    }


# ---------------------------------------------------------------- memory per entry


def memory_per_entry(binary, module, layout, n):
    """(used_memory after fill - before) / n on a fresh server."""
    server = Server(binary, module)
    try:
        before = server.info("memory", "used_memory")
        fill(server, layout, n)
        after = server.info("memory", "used_memory")
        index = stats(server).get("index_bytes") if layout == "tcache" else None
        return {"layout": layout, "entries": n, "keys": server.r.dbsize(),
                "bytes": after - before, "bytes_per_entry": (after - before) / n,
                "index_bytes": int(index) if index is not None else None}
    finally:
        server.stop()


# ---------------------------------------------------------------- summary and output

METRICS = ("command_s", "server_command_s", "ping.worst_s", "ping.p99_s", "ping_idle.worst_s",
           "ping_idle.p99_s", "get.worst_s", "get.p99_s", "reclaim_s",
           "memory_back_s", "residual_bytes", "repl_logical_bytes", "repl_reclaim_bytes",
           "repl_bytes", "repl_bytes_per_key", "fill_s")


def metric(t, path):
    for part in path.split("."):
        t = t.get(part) if isinstance(t, dict) else None
    return t


def summarize(trials):
    """{layout: {metric: {median, min, max, missing}}} over the rounds."""
    out = {}
    for layout in LAYOUTS:
        rows = [t for t in trials if t["layout"] == layout]
        out[layout] = {"rounds": len(rows),
                       "replica_dbsize_equal": all(t["replica_dbsize_equal"] for t in rows)}
        for m in METRICS:
            values = [metric(t, m) for t in rows]
            present = [v for v in values if v is not None]
            out[layout][m] = ({"median": statistics.median(present), "min": min(present),
                               "max": max(present), "missing": len(values) - len(present)}
                              if present else None)
    return out


def fmt_ms(seconds):
    if seconds is None:
        return "-"
    ms = seconds * 1000
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def fmt_bytes(b):
    if b is None:
        return "-"
    return f"{b / 1048576:.1f}M" if abs(b) >= 1 << 20 else f"{b / 1024:.1f}K" if abs(b) >= 10240 else f"{b:.0f}"


def cell(summary, m, fmt):
    s = summary.get(m)
    if not s:
        return "-"
    text = fmt(s["median"]) if s["min"] == s["max"] else \
        f"{fmt(s['median'])} ({fmt(s['min'])}-{fmt(s['max'])})"
    return text + (f" [{s['missing']} n/a]" if s["missing"] else "")


def print_size(size):
    n, summary = size["entries"], size["summary"]
    print(f"\nINVALTAG of a tag holding {n:,} entries: median (min-max) over "
          f"{size['rounds']} rounds; times in ms")
    columns = [("command", "command_s", fmt_ms), ("in server", "server_command_s", fmt_ms),
               ("worst PING", "ping.worst_s", fmt_ms), ("p99 PING", "ping.p99_s", fmt_ms),
               ("idle worst", "ping_idle.worst_s", fmt_ms), ("idle p99", "ping_idle.p99_s", fmt_ms),
               ("worst GET", "get.worst_s", fmt_ms), ("p99 GET", "get.p99_s", fmt_ms),
               ("reclaimed", "reclaim_s", fmt_ms), ("memory back", "memory_back_s", fmt_ms)]
    print_table(summary, columns)
    print("  command: client round trip (tcache: with reclaim paused, to isolate the logical "
          "step); in server: INFO commandstats\n"
          f"  idle worst/p99: PING on the same filled server during {IDLE_S:g} s before the "
          "command, nothing else running (the machine's own noise)\n"
          "  reclaimed: entries deleted (tcache: reclaim_pending 0, pause excluded; others: the "
          "command)\n  memory back: maxmemory-counted memory within max(1 MB, 5% of the fill) of "
          "its pre-fill value ('-': not within 5 s of reclaim, see 'memory left')")
    print("replication (master_repl_offset delta) and what is left")
    columns = [("logical step", "repl_logical_bytes", fmt_bytes),
               ("reclaim", "repl_reclaim_bytes", fmt_bytes),
               ("whole", "repl_bytes", fmt_bytes),
               ("bytes/key", "repl_bytes_per_key", lambda b: f"{b:.1f}"),
               ("memory left", "residual_bytes", fmt_bytes)]
    print_table(summary, columns, extra=("replica=primary",
                                         lambda s: "yes" if s["replica_dbsize_equal"] else "NO"))


def print_table(summary, columns, extra=None):
    rows = [[layout] + [cell(summary[layout], m, f) for _, m, f in columns]
            + ([extra[1](summary[layout])] if extra else []) for layout in LAYOUTS]
    head = ["layout"] + [c[0] for c in columns] + ([extra[0]] if extra else [])
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  " + "  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(r, widths))))


def print_memory(memory):
    print(f"\nmemory per entry (100-byte value, 3 tags; {memory['entries']:,} entries, "
          f"fresh server each)")
    for m in memory["layouts"]:
        name = {"tcache": "tcache", "lua": "strings + 3 sets"}[m["layout"]]
        index = f"  (index {m['index_bytes'] / m['entries']:.0f} B/entry)" if m["index_bytes"] else ""
        print(f"  {name:18} {m['bytes_per_entry']:7.0f} B/entry{index}")


def trial_line(t):
    return (f"  {t['layout']:12} n={t['entries']:<8} fill {t['fill_s']:5.1f}s  "
            f"command {fmt_ms(t['command_s'])} ms  worst PING {fmt_ms(t['ping']['worst_s'])} ms  "
            f"reclaimed {fmt_ms(t['reclaim_s'])} ms  repl {fmt_bytes(t['repl_bytes'])}")


# ---------------------------------------------------------------- main


def module_copy(module, workdir):
    """A private copy, so a rebuild during the run changes nothing."""
    path = os.path.join(workdir, "libtcache.so")
    shutil.copy2(module, path)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    return path, {"path": module, "sha256_16": digest,
                  "mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(os.path.getmtime(module)))}


# No replica disconnect during a 1M fill, no replication PING in the offsets, and
# no BUSY replies while the Lua script runs (they would hide its latency).
SERVER_OPTS = ("--busy-reply-threshold", "600000", "--client-output-buffer-limit", "replica 0 0 0", "--repl-ping-replica-period", "600",
             "--repl-timeout", "3600", "--repl-diskless-sync", "yes",
             "--repl-diskless-sync-delay", "0")


def run_sizes(binary, module, sizes, interval_s):
    primary = Server(binary, module, *SERVER_OPTS)
    replica = None
    try:
        replica = Server(binary, module, *SERVER_OPTS)
        attach_replica(primary, replica)
        caps = Caps(primary)
        version = [f"{k}:{v}" for k, v in primary.r.info("server").items() if "version" in k]
        results = []
        for n, rounds in sizes:
            print(f"INVALTAG of {n:,} entries, {rounds} rounds, layouts interleaved", flush=True)
            trials = []
            for r in range(rounds):
                for layout in LAYOUTS[r % 3:] + LAYOUTS[:r % 3]:
                    trials.append(trial(primary, replica, layout, n, caps, interval_s))
                    print(trial_line(trials[-1]), flush=True)
            primary.r.flushall()
            results.append({"entries": n, "rounds": rounds, "trials": trials,
                            "summary": summarize(trials)})
        return results, caps, version
    finally:
        for s in (replica, primary):
            if s:
                s.stop()


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default=os.environ.get("TCACHE_SERVER", "/usr/bin/redis-server"))
    ap.add_argument("--module", default=os.path.join(ROOT, "target/release/libtcache.so"))
    ap.add_argument("--entries", type=int, nargs="+", default=[100_000])
    ap.add_argument("--rounds", type=int, nargs="+", default=[3],
                    help="rounds per size (one value for all sizes, or one per size)")
    ap.add_argument("--memory-entries", type=int, default=100_000)
    ap.add_argument("--probe-interval-ms", type=float, default=0.5,
                    help="pause between two requests of a latency probe")
    args = ap.parse_args()
    if len(args.rounds) not in (1, len(args.entries)):
        ap.error("--rounds takes one value or one per --entries value")
    args.sizes = list(zip(args.entries, args.rounds * len(args.entries)
                          if len(args.rounds) == 1 else args.rounds))
    return args


def main():
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    load_start = os.getloadavg()[0]
    workdir = tempfile.mkdtemp(prefix="tcache-inval-module-")
    try:
        module, module_info = module_copy(args.module, workdir)
        sizes, caps, version = run_sizes(args.server, module, args.sizes,
                                         args.probe_interval_ms / 1000)
        print(f"memory per entry, {args.memory_entries:,} entries", flush=True)
        memory = {"entries": args.memory_entries,
                  "layouts": [memory_per_entry(args.server, module, layout, args.memory_entries)
                              for layout in ("tcache", "lua")]}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    for size in sizes:
        print_size(size)
    print_memory(memory)
    load = {"start": load_start, "end": os.getloadavg()[0], "cpus": os.cpu_count()}
    print(f"\nload average (1 min) {load['start']:.2f} at start, {load['end']:.2f} at end, "
          f"{load['cpus']} CPUs; the replica and the probes run on this machine too")
    for w in WARNINGS:
        print(f"WARNING: {w}")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    path = os.path.join(ROOT, "bench", "results",
                        time.strftime("invalidation-%Y%m%dT%H%M%S.json"))
    with open(path, "w") as f:
        json.dump({"server": version, "module": module_info, "capabilities": caps.as_dict(),
                   "warnings": WARNINGS, "value_bytes": len(VALUE), "ttl": int(TTL),
                   "tags": ["big", f"t:<n%{SMALL_T}>", f"u:<n%{SMALL_U}>"],
                   "load_average_1min": load, "sizes": sizes, "memory": memory}, f, indent=2)
    print(f"raw figures: {path}")


if __name__ == "__main__":
    main()
