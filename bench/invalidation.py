#!/usr/bin/env python3
"""Invalidating one tag that holds N entries, and memory per entry: tcache
(TCACHE.SET ... TAGS + TCACHE.INVALTAG) against the client-side layout it
replaces (SET EX + SADD per tag, and a Lua script that SSCANs the tag set and
deletes its members). For each: the command's own time, the worst PING latency
a concurrent client saw meanwhile, and used_memory per entry with 3 tags.
(Replication bytes and reclaim time are not measured yet.)

usage: bench/invalidation.py [--server PATH] [--module PATH] [--entries N]
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(server, module):
    port, workdir = free_port(), tempfile.mkdtemp(prefix="tcache-inval-")
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--dir", workdir, "--loadmodule", module,
                             "--logfile", os.path.join(workdir, "log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = redis.Redis(port=port)
    for _ in range(100):
        try:
            r.ping()
            return proc, r, port
        except redis.ConnectionError:
            time.sleep(0.05)
    sys.exit("server did not start")


def fill(port, n, *command):
    subprocess.run(["redis-benchmark", "-p", str(port), "-q", "-n", str(n), "-c", "20", "-P", "64",
                    "-r", str(n), *command], check=True, capture_output=True)


def worst_ping_during(port, action):
    worst, stop = [0.0], threading.Event()

    def pinger():
        r = redis.Redis(port=port)
        while not stop.is_set():
            t = time.perf_counter()
            r.ping()
            worst[0] = max(worst[0], time.perf_counter() - t)

    th = threading.Thread(target=pinger)
    th.start()
    time.sleep(0.2)
    t = time.perf_counter()
    result = action()
    took = time.perf_counter() - t
    time.sleep(0.2)
    stop.set()
    th.join()
    return result, took, worst[0]


def measure(server, module, n, layout):
    proc, r, port = start(server, module)
    # Note: -r N picks keys at random, so about 63% of N are distinct entries.
    try:
        base = int(r.info("memory")["used_memory"])
        if layout == "tcache":
            fill(port, n, "TCACHE.SET", "k:__rand_int__", "x" * 100, "3600",
                 "TAGS", "big", "t:__rand_int__", "u:__rand_int__")
        else:
            script = r.script_load("redis.call('SET', KEYS[1], ARGV[1], 'EX', 3600) "
                                   "for i = 2, #ARGV do redis.call('SADD', ARGV[i], KEYS[1]) end")
            fill(port, n, "EVALSHA", script, "1", "k:__rand_int__", "x" * 100,
                 "big", "t:__rand_int__", "u:__rand_int__")
        keys = r.dbsize()
        entries = r.scard("big") if layout == "plain" else r.execute_command("TCACHE.TAGCARD", "big")
        per_entry = (int(r.info("memory")["used_memory"]) - base) / entries
        if layout == "tcache":
            action = lambda: r.execute_command("TCACHE.INVALTAG", "big")
        else:
            sha = r.script_load(LUA_INVALIDATE)
            action = lambda: r.evalsha(sha, 1, "big")
        removed, took, worst = worst_ping_during(port, action)
        return {"layout": layout, "entries": entries, "keys": keys, "removed": removed,
                "command_s": took, "worst_ping_s": worst, "bytes_per_entry": per_entry}
    finally:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default=os.environ.get("TCACHE_SERVER", "/usr/bin/redis-server"))
    ap.add_argument("--module", default=os.path.join(ROOT, "target/release/libtcache.so"))
    ap.add_argument("--entries", type=int, default=100_000)
    args = ap.parse_args()
    print(f"{'layout':8} {'entries':>8} {'removed':>8} {'command':>9} {'worst PING':>11} "
          f"{'bytes/entry':>12}")
    for layout in ("tcache", "plain"):
        m = measure(args.server, args.module, args.entries, layout)
        print(f"{m['layout']:8} {m['entries']:8} {m['removed']:8} {m['command_s']*1000:7.0f}ms "
              f"{m['worst_ping_s']*1000:9.0f}ms {m['bytes_per_entry']:12.0f}")


if __name__ == "__main__":
    main()
