"""Load figure: the report endpoint through tcache vs straight from PostgreSQL, same run.

By default it starts its own stack (PostgreSQL, tcache, the app under uvicorn with
--workers processes), warms the reports, then alternates the two modes for --rounds rounds
of --seconds each (bounded also by --max-requests per round), loopback only:

    .venv/bin/python -m refapp.loadgen            (from examples/app)

Prints requests/s, p50 and p99 per mode (all rounds pooled, and per round)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from typing import Any

import aiohttp
import httpx

from refapp import harness


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


async def run_mode(url: str, mode: str, stores: list[int], concurrency: int, seconds: float,
                   max_requests: int, seed: int) -> dict[str, Any]:
    rnd = random.Random(seed)
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def worker() -> None:
            nonlocal errors, sent
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                sid = rnd.choice(stores)
                t0 = time.perf_counter()
                async with session.get(f"/reports/{sid}", params={"source": mode}) as r:
                    await r.read()
                    ok = r.status == 200
                dt = time.perf_counter() - t0
                if ok:
                    latencies.append(dt)
                else:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    return {"mode": mode, "requests": len(latencies), "errors": errors, "seconds": elapsed,
            "rps": len(latencies) / elapsed, "p50_ms": pct(latencies, 50) * 1000,
            "p99_ms": pct(latencies, 99) * 1000,
            "mean_ms": (statistics.fmean(latencies) * 1000) if latencies else float("nan")}


async def warm(url: str, stores: list[int]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        for sid in stores:
            r = await client.get(f"/reports/{sid}")
            r.raise_for_status()
            r = await client.get(f"/reports/{sid}", params={"source": "db"})
            r.raise_for_status()


async def races(url: str, stores: list[int], count: int, concurrency: int) -> dict[str, Any]:
    """The race endpoint ``count`` times: each call times one PostgreSQL read and one tcache
    read of the same report, concurrently, inside the app (no HTTP in those times)."""
    db_s: list[float] = []
    cache_s: list[float] = []
    wins = {"cache": 0, "db": 0, "none": 0}
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one(i: int) -> None:
            async with sem, session.get(f"/reports/{stores[i % len(stores)]}/race") as r:
                body = await r.json()
            db_s.append(body["db"]["seconds"])
            cache_s.append(body["cache"]["seconds"])
            wins[body["winner"]] += 1

        await asyncio.gather(*(one(i) for i in range(count)))
    db_s.sort()
    cache_s.sort()
    return {"count": count, "wins": wins,
            "db_p50_ms": pct(db_s, 50) * 1000, "db_p99_ms": pct(db_s, 99) * 1000,
            "cache_p50_ms": pct(cache_s, 50) * 1000, "cache_p99_ms": pct(cache_s, 99) * 1000}


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    stores = list(range(1, args.stores + 1))
    await warm(url, stores)
    rounds: list[dict[str, Any]] = []
    for i in range(args.rounds):
        order = ["cache", "db"] if i % 2 == 0 else ["db", "cache"]
        for mode in order:
            res = await run_mode(url, mode, stores, args.concurrency, args.seconds, args.max_requests, seed=i)
            res["round"] = i + 1
            rounds.append(res)
            print(f"round {i + 1} {mode:5s}: {res['requests']:6d} ok {res['errors']:3d} err  "
                  f"{res['rps']:8.1f} req/s  p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:6.2f} ms", flush=True)
    summary = {}
    for mode in ("cache", "db"):
        rs = [r for r in rounds if r["mode"] == mode]
        summary[mode] = {
            "rps_median": statistics.median(r["rps"] for r in rs),
            "p50_ms_median": statistics.median(r["p50_ms"] for r in rs),
            "p99_ms_median": statistics.median(r["p99_ms"] for r in rs),
            "requests": sum(r["requests"] for r in rs), "errors": sum(r["errors"] for r in rs),
        }
    race = await races(url, stores, args.races, 8)
    return {"rounds": rounds, "summary": summary, "race": race}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="an app already running (default: start a stack)")
    ap.add_argument("--server", default=os.environ.get("TCACHE_SERVER"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stores", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-requests", type=int, default=200_000)
    ap.add_argument("--races", type=int, default=1000, help="race calls after the rounds")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.url:
        if not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
            ap.error("loopback URLs only")
        result = asyncio.run(measure(args.url, args))
    else:
        with harness.running_stack(args.server) as stack:
            env = harness.app_env(stack.pg, stack.srv, TCACHE_APP_GEN_DELAY="0.05")
            app = harness.start_app(env, workers=args.workers)
            stack.apps.append(app)
            result = asyncio.run(measure(app.url, args))
            result["server"] = os.path.basename(stack.srv.binary)
    result["workers"] = args.workers
    result["concurrency"] = args.concurrency
    s = result["summary"]
    print(f"\nmedian of {args.rounds} rounds, {args.concurrency} concurrent clients, {args.workers} workers:")
    for mode, label in (("cache", "tcache"), ("db", "PostgreSQL")):
        print(f"  {label:10s} {s[mode]['rps_median']:8.1f} req/s  p50 {s[mode]['p50_ms_median']:6.2f} ms  "
              f"p99 {s[mode]['p99_ms_median']:6.2f} ms  ({s[mode]['requests']} requests, {s[mode]['errors']} errors)")
    rc = result["race"]
    print(f"race endpoint, {rc['count']} calls (read times inside the app, both reads at once): "
          f"tcache p50 {rc['cache_p50_ms']:.2f} ms p99 {rc['cache_p99_ms']:.2f} ms, "
          f"PostgreSQL p50 {rc['db_p50_ms']:.2f} ms p99 {rc['db_p99_ms']:.2f} ms, wins {rc['wins']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
