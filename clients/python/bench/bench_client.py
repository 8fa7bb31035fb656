"""Measure the Python client against a local Redis with the module (one run, one server).

    .venv/bin/python clients/python/bench/bench_client.py [--server /usr/bin/redis-server]
        [--module target/release/libtcache.so] [--seconds 3]

Reports, single-threaded and sequential (one request at a time on loopback):
  * plain redis-py ``GET`` of a string key (the baseline);
  * ``TCache.get`` served by the L1 (hits), ratio to the baseline;
  * ``TCache.get`` with the L1 on and every read an L1 miss (L1 of 1 entry, 1000 keys
    in turn: each read is a GET+TAGS+PTTL pipeline and an L1 fill), ratio to the baseline;
  * ``TCache.get`` without L1 (TCACHE.GET + JSON decoding), ratio to the baseline;
  * computations for 200 concurrent ``get_or_compute`` callers spread over 4 processes.
Timing is reported, never asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import redis

from redis_tcache import TCache

ROOT = Path(__file__).resolve().parents[3]
VALUE = {"store": 42, "risk_score": 7.5, "summary": "x" * 60}


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rate(fn: Callable[[int], Any], seconds: float) -> float:
    """Calls per second of fn(i), measured over about ``seconds`` (after a warm-up)."""
    for i in range(2000):
        fn(i)
    n, start = 0, time.perf_counter()
    end = start + seconds
    while True:
        for i in range(1000):
            fn(n + i)
        n += 1000
        now = time.perf_counter()
        if now >= end:
            return n / (now - start)


def stampede_proc(port: int, threads: int, ready: Any, go: Any, out: Any) -> None:
    client = redis.Redis(port=port, max_connections=threads + 8)
    tc = TCache(client, namespace="bench:")
    got: list[Any] = []

    def compute() -> dict[str, Any]:
        client.incr("bench:computations")
        time.sleep(1.0)
        return VALUE

    def call() -> None:
        go.wait(60)
        got.append(tc.get_or_compute("stampede", compute, 60, tags=["reports"], lease_ms=30_000))

    ts = [threading.Thread(target=call) for _ in range(threads)]
    for t in ts:
        t.start()
    client.ping()
    ready.release()
    for t in ts:
        t.join(120)
    out.put((len(got), sum(1 for v in got if v == VALUE)))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default=shutil.which("redis-server") or "/usr/bin/redis-server")
    default_module = os.environ.get("TCACHE_MODULE", str(ROOT / "target/release/libtcache.so"))
    ap.add_argument("--module", default=default_module)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    port, d = free_port(), tempfile.mkdtemp(prefix="tcache-pybench-")
    proc = subprocess.Popen(
        [a.server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", d,
         "--maxclients", "2000", "--loadmodule", a.module],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        end = time.monotonic() + 15
        while True:
            try:
                if redis.Redis(port=port).ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > end or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        out_v = subprocess.run([a.server, "--version"], capture_output=True, text=True).stdout
        version = out_v.split()[2].removeprefix("v=")
        r = redis.Redis(port=port)
        tc_l1 = TCache(redis.Redis(port=port, protocol=3), namespace="b1:", l1=True)
        tc_miss = TCache(redis.Redis(port=port, protocol=3), namespace="b2:", l1=True, l1_max_entries=1)
        tc_off = TCache(redis.Redis(port=port, protocol=3), namespace="b3:")

        raw = tc_off.codec.encode(VALUE)
        r.set("plain", raw)
        tc_l1.set("hot", VALUE, 3600, tags=["t1", "t2"])
        while tc_l1.get("hot") != VALUE or "b1:hot" not in tc_l1.l1._data:
            time.sleep(0.001)
        for i in range(1000):
            tc_miss.set(f"k{i}", VALUE, 3600, tags=["t1", "t2"])
        tc_off.set("hot", VALUE, 3600, tags=["t1", "t2"])

        res: dict[str, float] = {}
        res["plain_get"] = rate(lambda i: r.get("plain"), a.seconds)
        res["l1_hit"] = rate(lambda i: tc_l1.get("hot"), a.seconds)
        hits0 = tc_l1.l1.hits
        res["l1_miss"] = rate(lambda i: tc_miss.get(f"k{i % 1000}"), a.seconds)
        res["l1_off"] = rate(lambda i: tc_off.get("hot"), a.seconds)
        res["plain_get_again"] = rate(lambda i: r.get("plain"), a.seconds)
        base = (res["plain_get"] + res["plain_get_again"]) / 2
        st_miss = tc_miss.stats()

        ctx = mp.get_context("spawn")
        ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=stampede_proc, args=(port, 50, ready, go, out)) for _ in range(4)]
        for p in procs:
            p.start()
        for _ in procs:
            ready.acquire(timeout=60)
        t0 = time.perf_counter()
        go.set()
        outs = [out.get(timeout=180) for _ in procs]
        elapsed = time.perf_counter() - t0
        for p in procs:
            p.join(30)
        computations = int(r.get("bench:computations") or 0)

        py = sys.version.split()[0]
        print(f"server: redis {version} with tcache; client: redis-py {redis.__version__}, Python {py}")
        print(f"value: {len(raw)} bytes of JSON; sequential single-threaded calls for ~{a.seconds:.0f} s each")
        runs = f"{res['plain_get']:,.0f} / {res['plain_get_again']:,.0f}"
        print(f"plain redis-py GET            {base:12,.0f} ops/s  (mean of two runs: {runs})")
        hit, miss = res["l1_hit"], res["l1_miss"]
        print(f"TCache.get, L1 hit            {hit:12,.0f} ops/s  = {hit / base:6.2f}x plain GET  (l1_hits {hits0})")
        print(
            f"TCache.get, L1 miss + fill    {miss:12,.0f} ops/s  = {miss / base:6.2f}x plain GET"
            f"  (l1_misses {st_miss['l1_misses']}, l1_hits {st_miss['l1_hits']})"
        )
        print(f"TCache.get, no L1             {res['l1_off']:12,.0f} ops/s  = {res['l1_off'] / base:6.2f}x plain GET")
        print(f"stampede: 200 get_or_compute callers in 4 processes -> computations = {computations}; "
              f"callers answered {sum(n for n, _ in outs)}, with the value {sum(ok for _, ok in outs)}; "
              f"{elapsed:.2f} s (compute takes 1 s)")
        for t in (tc_l1, tc_miss, tc_off):
            t.close()
        return 0 if computations == 1 else 1
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
