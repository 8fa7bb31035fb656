"""Degraded mode: Redis killed and restarted under a running cache (own server per kind)."""

from __future__ import annotations

import asyncio
import shutil

import pytest
import redis
import redis.asyncio
from conftest import KINDS, spawn, wait_for
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_tcache import AsyncTCache, TCache


@pytest.fixture(params=KINDS)
def own_server(request):
    s = spawn(request.param)
    try:
        yield s
    finally:
        s.stop()
        shutil.rmtree(s.dir, ignore_errors=True)


def test_redis_killed_and_restarted(own_server, caplog):
    s = own_server
    c = redis.Redis(port=s.port, socket_timeout=2, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    tc = TCache(c, namespace="d:", degraded=True, degraded_ttl=30, probe_interval=0.1)
    assert tc.set("a", 1, 60, tags=["t"]) is True
    assert tc.get("a") == 1
    s.stop()  # Redis dies
    with caplog.at_level("WARNING", logger="redis_tcache.degraded"):
        assert tc.get("a") is None  # the call succeeds: local cache (empty)
    assert any("degraded mode" in rec.getMessage() for rec in caplog.records)
    assert tc.set("b", {"x": 1}, 60, tags=["tb"]) is True
    assert tc.get("b") == {"x": 1}
    assert tc.get_or_compute("c", lambda: "computed", 60) == "computed"
    assert tc.get_or_compute("c", lambda: "again", 60) == "computed"
    assert tc.invalidate_tags("tb") == 1 and tc.get("b") is None
    st = tc.stats()
    assert st["degraded"] is True and st["degraded_trips"] == 1
    assert st["degraded_reads"] >= 3 and st["degraded_writes"] >= 2 and st["degraded_entries"] == 1
    s.start()  # Redis is back (empty: no persistence)
    wait_for(lambda: tc.get("c") is None and not tc.breaker.open, what="switch back to Redis")
    st = tc.stats()
    assert st["degraded_recoveries"] == 1 and st["degraded_entries"] == 0  # local entries dropped
    assert tc.set("a", 2, 60) is True
    assert c.execute_command("TCACHE.GET", "d:a") == b"2"  # writes reach Redis again
    c.close()


def test_without_degraded_mode_errors_propagate(own_server):
    s = own_server
    c = redis.Redis(port=s.port, socket_timeout=2, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    tc = TCache(c)
    s.stop()
    with pytest.raises(redis.ConnectionError):
        tc.get("a")
    s.start()
    c.close()


def test_async_degraded(own_server):
    s = own_server

    async def main() -> None:
        c = redis.asyncio.Redis(port=s.port, socket_timeout=2, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
        tc = AsyncTCache(c, namespace="ad:", degraded=True, probe_interval=0.1)
        assert await tc.set("a", 1, 60) is True
        s.stop()
        assert await tc.get("a") is None
        assert await tc.get_or_compute("b", lambda: 5, 60) == 5
        assert await tc.get("b") == 5
        assert (await tc.stats())["degraded"] is True
        s.start()
        end = asyncio.get_running_loop().time() + 15
        while tc.breaker.open:
            await tc.get("probe")
            assert asyncio.get_running_loop().time() < end, "breaker did not close"
            await asyncio.sleep(0.01)
        assert await tc.get("b") is None  # local entries dropped on switching back
        assert await tc.set("a", 2, 60) is True
        await c.aclose()

    asyncio.run(main())
