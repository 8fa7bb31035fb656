"""200 concurrent get_or_compute callers in 4 processes compute once (leases + server-side WAIT)."""

from __future__ import annotations

import multiprocessing as mp

import redis
from _workers import stampede_worker


def test_200_callers_4_processes_compute_once(server, r):
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    ready = ctx.Semaphore(0)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=stampede_worker, args=(server.port, "report:1", "computations", 50, ready, go, out))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    try:
        c = redis.Redis(port=server.port)
        for _ in procs:  # every process started its 50 callers
            assert ready.acquire(timeout=60)
        go.set()
        results = [out.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert [n for n, _, _ in results] == [50, 50, 50, 50]
    assert all(ok == 50 for _, ok, _ in results)
    assert int(c.get("computations")) == 1
    assert sum(comp for _, _, comp in results) == 1
    st = c.execute_command("TCACHE.STATS")
    c.close()
    assert st is not None
