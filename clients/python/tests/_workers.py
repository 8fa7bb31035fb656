"""Functions run in child processes (multiprocessing, spawn) by the tests."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

from redis_tcache import TCache


def stampede_worker(port: int, key: str, counter: str, threads: int, ready: Any, go: Any, out: Any) -> None:
    """``threads`` concurrent get_or_compute callers; the computation counts itself in Redis."""
    client = redis.Redis(port=port, max_connections=threads + 8)
    tc = TCache(client, namespace="st:")
    results: list[Any] = []
    lock = threading.Lock()

    def compute() -> dict[str, Any]:
        client.incr(counter)
        time.sleep(1.0)  # a slow computation: every other caller arrives meanwhile
        return {"report": 42}

    def call() -> None:
        go.wait(30)
        v = tc.get_or_compute(key, compute, 60, tags=["reports"], lease_ms=20_000)
        with lock:
            results.append(v)

    ts = [threading.Thread(target=call) for _ in range(threads)]
    for t in ts:
        t.start()
    client.ping()
    ready.release()
    for t in ts:
        t.join(60)
    out.put((len(results), sum(1 for v in results if v == {"report": 42}), tc.computations))
    client.close()


def writer_process(port: int, key: str, tag: str, versions: int, done: Any) -> None:
    """Another process: writes versions 1..N of a key, then invalidates its tag."""
    r = redis.Redis(port=port)
    for i in range(1, versions + 1):
        r.execute_command("TCACHE.SET", key, str(i), 60, "TAGS", tag)
        time.sleep(0.001)
    r.execute_command("TCACHE.INVALTAG", tag)
    done.set()
    r.close()
