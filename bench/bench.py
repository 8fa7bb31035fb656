#!/usr/bin/env python3
"""tcache throughput benchmark: each tcache command side by side with the native
command (or the Lua script it replaces), interleaved, several rounds, on a server
this script starts itself. Prints medians, spread and ratios, and writes them as
JSON under bench/results/.

usage: bench/bench.py [--server PATH] [--module PATH] [--rounds N] [--requests N]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(port, *args):
    out = subprocess.run(["redis-cli", "-p", str(port), *map(str, args)],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def start(server, module, workdir):
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", workdir,
                             "--loadmodule", module, "--logfile", os.path.join(workdir, "log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if cli(port, "PING") == "PONG":
                return proc, port
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.05)
    proc.kill()
    sys.exit("server did not start")


def rps(port, requests, pipeline, clients, *command):
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-q", "-n", str(requests),
                          "-r", "100000", "-c", str(clients), "-P", str(pipeline), *command],
                         capture_output=True, text=True, check=True).stdout
    for line in out.replace("\r", "\n").splitlines():
        if "requests per second" in line:
            return float(line.split(":")[-1].split("requests")[0])
    raise RuntimeError(out)


LUA_SET_TAGS = ("redis.call('SET', KEYS[1], ARGV[1], 'EX', 3600) "
                "for i = 2, #ARGV do redis.call('SADD', 'tag:' .. ARGV[i], KEYS[1]) end "
                "return 1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default=os.environ.get("TCACHE_SERVER", "/usr/bin/redis-server"))
    ap.add_argument("--module", default=os.path.join(ROOT, "target/release/libtcache.so"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200_000)
    args = ap.parse_args()

    workdir = tempfile.mkdtemp(prefix="tcache-bench-")
    proc, port = start(args.server, args.module, workdir)
    try:
        value = "x" * 100
        report = json.dumps({"risk_score": 7.5, "summary": "y" * 900, "items": [1, 2, 3]})
        cli(port, "TCACHE.GATE.SET", "report",
            '{"type":"object","required":["risk_score"],'
            '"properties":{"risk_score":{"type":"number","exclusiveMinimum":0}}}')
        sha = cli(port, "SCRIPT", "LOAD", LUA_SET_TAGS)
        cli(port, "PERM.SET", "perm:1",
            '{"roles":["a","b"],"permissions":["users:*","reports:read","billing:view"]}', 3600)
        cli(port, "SET", "plain:1", "somevalue")
        # Keys GET / TCACHE.GET read: 100k of each.
        rps(port, 300_000, 16, 50, "SET", "key:__rand_int__", value)
        rps(port, 300_000, 16, 50, "TCACHE.SET", "tkey:__rand_int__", value, "3600",
            "TAGS", "t:__rand_int__", "shared", "all")
        pairs = [
            ("TCACHE.GET vs GET", 16,
             ["TCACHE.GET", "tkey:__rand_int__"], ["GET", "key:__rand_int__"]),
            ("TCACHE.GET vs GET (-P 1)", 1,
             ["TCACHE.GET", "tkey:__rand_int__"], ["GET", "key:__rand_int__"]),
            ("TCACHE.SET 3 tags vs SET", 16,
             ["TCACHE.SET", "tkey:__rand_int__", value, "3600", "TAGS", "t:__rand_int__", "shared", "all"],
             ["SET", "key:__rand_int__", value, "EX", "3600"]),
            ("TCACHE.SET 3 tags vs Lua SET+3 SADD", 16,
             ["TCACHE.SET", "tkey:__rand_int__", value, "3600", "TAGS", "t:__rand_int__", "shared", "all"],
             ["EVALSHA", sha, "1", "lkey:__rand_int__", value, "t:__rand_int__", "shared", "all"]),
            ("TCACHE.SET GATE report 1KB vs SET 1KB", 16,
             ["TCACHE.SET", "rkey:__rand_int__", report, "3600", "GATE", "report"],
             ["SET", "skey:__rand_int__", report]),
            ("PERM.CHECK vs GET", 16,
             ["PERM.CHECK", "perm:1", "reports:read"], ["GET", "plain:1"]),
        ]
        results = []
        for name, pipeline, ours, theirs in pairs:
            a, b = [], []
            # Pipelined runs are 3x longer, so that each lasts about a second
            # and a burst of machine noise weighs less; the order alternates
            # every round, so that neither side always runs first.
            requests = args.requests * (3 if pipeline > 1 else 1)
            for i in range(args.rounds):
                if i % 2 == 0:
                    a.append(rps(port, requests, pipeline, 50, *ours))
                    b.append(rps(port, requests, pipeline, 50, *theirs))
                else:
                    b.append(rps(port, requests, pipeline, 50, *theirs))
                    a.append(rps(port, requests, pipeline, 50, *ours))
            ratios = [x / y for x, y in zip(a, b)]
            results.append({
                "comparison": name, "pipeline": pipeline,
                "tcache_rps": a, "baseline_rps": b,
                "median_ratio": statistics.median(ratios),
                "ratio_min": min(ratios), "ratio_max": max(ratios),
            })
        version = cli(port, "INFO", "server").splitlines()
    finally:
        proc.kill()
        proc.wait()

    print(f"{'comparison':40} {'tcache rps':>12} {'baseline rps':>13} {'ratio':>6}  spread")
    for r in results:
        print(f"{r['comparison']:40} {statistics.median(r['tcache_rps']):12.0f} "
              f"{statistics.median(r['baseline_rps']):13.0f} {r['median_ratio']:6.2f}  "
              f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    path = os.path.join(ROOT, "bench", "results", time.strftime("throughput-%Y%m%dT%H%M%S.json"))
    with open(path, "w") as f:
        json.dump({"server": [l for l in version if "version" in l], "rounds": args.rounds,
                   "requests": args.requests, "requests_pipelined": args.requests * 3,
                   "results": results}, f, indent=2)
    print(f"raw figures: {path}")


if __name__ == "__main__":
    main()
