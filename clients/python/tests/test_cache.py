"""TCache / AsyncTCache on a single node: the cache object API, leases, SWR, decorator,
gates (also from a Pydantic model), permissions, serialization and compression."""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis
import redis.asyncio
from pydantic import BaseModel, Field

from redis_tcache import AsyncTCache, GateRejected, TCache, TCacheModule
from redis_tcache.serializer import ZLIB_MARKER


@pytest.fixture(params=[2, 3])
def tc(request, server, r):
    c = server.client(protocol=request.param)
    t = TCache(c, namespace="app:")
    yield t
    t.close()
    c.close()


def test_set_get_tags_and_invalidation(tc, r):
    assert tc.set("report:1", {"risk": 7}, 60, tags=["store:1", "reports"]) is True
    assert tc.set("report:2", {"risk": 3}, 60, tags=["store:2", "reports"]) is True
    assert r.exists("app:report:1") == 1  # namespaced key
    assert tc.get("report:1") == {"risk": 7}
    assert tc.get("nope", default="d") == "d"
    assert tc.mget(["report:1", "nope", "report:2"]) == [{"risk": 7}, None, {"risk": 3}]
    assert sorted(tc.tags("report:1")) == ["reports", "store:1"]
    assert tc.tag_count("reports") == 2
    assert sorted(tc.tag_keys("reports", count=1)) == ["report:1", "report:2"]
    assert tc.invalidate_tags("store:1") == 1
    assert tc.get("report:1") is None
    assert tc.stale_tags("reports") == 1
    assert tc.get("report:2") is None  # stale: a miss for get
    tc.set("persona:lua:1", "x", 60)
    tc.set("persona:lua:2", "y", 60)
    tc.set("persona:py:1", "z", 60)
    assert tc.invalidate_prefix("persona:lua:") == 2
    assert tc.get("persona:py:1") == "z"
    assert tc.delete("persona:py:1", "nope") == 1
    assert tc.set("n", 1, 60, nx=True) is True and tc.set("n", 2, 60, nx=True) is False
    assert tc.verify() is True
    st = tc.stats()
    assert st["l2_hits"] >= 3 and st["l2_misses"] >= 3 and st["entries"] >= 1
    assert st["hit_rate"].endswith("%")


def test_get_or_compute_lease_and_stale_set_protection(tc, r):
    calls = []
    assert tc.get_or_compute("k", lambda: calls.append(1) or {"v": 1}, 60, tags=["t"]) == {"v": 1}
    assert tc.get_or_compute("k", lambda: calls.append(1) or {"v": 2}, 60, tags=["t"]) == {"v": 1}
    assert len(calls) == 1
    tc.invalidate_tags("t")

    other = TCache(redis.Redis(port=r.connection_pool.connection_kwargs["port"]), namespace="app:")

    def compute_racing_an_invalidation() -> dict:
        # the data this value is built from changes while we compute
        other.invalidate_tags("t")
        return {"v": "old"}

    assert tc.get_or_compute("k", compute_racing_an_invalidation, 60, tags=["t"]) == {"v": "old"}
    assert tc.get("k") is None  # the old value was not written back
    assert tc.stats()["client_lease_sets_refused"] == 1
    assert tc.get_or_compute("k", lambda: {"v": "new"}, 60, tags=["t"]) == {"v": "new"}
    assert tc.get("k") == {"v": "new"}


def test_waiters_wait_inside_the_server(tc):
    started = threading.Event()
    release = threading.Event()
    results: list = []

    def slow() -> str:
        started.set()
        release.wait(10)
        return "computed"

    tc.reset_stats()
    t1 = threading.Thread(target=lambda: results.append(tc.get_or_compute("w", slow, 60, lease_ms=10_000)))
    t1.start()
    assert started.wait(10)
    t2 = threading.Thread(target=lambda: results.append(tc.get_or_compute("w", lambda: "second", 60)))
    t2.start()
    from conftest import wait_for

    wait_for(lambda: tc.server_stats()["waits"] >= 1, what="the second caller to wait in the server")
    release.set()
    t1.join(10)
    t2.join(10)
    assert results == ["computed", "computed"]
    assert tc.stats()["computations"] == 1


def test_wait_timeout_reissues_fetch(tc):
    tc.reset_stats()
    m = TCacheModule(redis.Redis(port=tc.client.connection_pool.connection_kwargs["port"]))
    lease = m.fetch("app:wt", 60_000)
    assert lease.kind == "LEASE"
    done: list = []
    t = threading.Thread(target=lambda: done.append(tc.get_or_compute("wt", lambda: "mine", 60, wait_ms=50)))
    t.start()
    # the caller re-issues FETCH WAIT after each 50 ms timeout until the holder stores
    from conftest import wait_for

    wait_for(lambda: tc.stats()["wait_timeouts"] >= 2, what="wait timeouts")
    assert m.set("app:wt", '"holder"', 60, lease=lease.token) is True
    t.join(10)
    assert done == ["holder"]


def test_swr_one_refresher_others_served_stale(tc):
    assert tc.get_or_compute("s", lambda: "v1", 60, tags=["st"], swr=60) == "v1"
    tc.stale_tags("st")
    m = TCacheModule(redis.Redis(port=tc.client.connection_pool.connection_kwargs["port"]))
    first = m.fetch("app:s", 10_000)
    assert first.kind == "STALE" and first.token  # somebody else is refreshing now
    assert tc.get_or_compute("s", lambda: "never", 60, tags=["st"], swr=60) == "v1"  # served stale
    assert m.set("app:s", '"v2"', 60, lease=first.token, tags=["app:st"]) is True
    assert tc.get_or_compute("s", lambda: "never", 60) == "v2"
    tc.stale_tags("st")
    assert tc.get_or_compute("s", lambda: "v3", 60, tags=["st"]) == "v3"  # we refresh


def test_decorator(tc):
    calls: list = []

    @tc.cached(ttl=900, key="report:{store_id}", tags=["store:{store_id}", "reports"], swr=60)
    def report(store_id: int, verbose: bool = False) -> dict:
        calls.append(store_id)
        return {"store": store_id}

    assert report(1) == {"store": 1} and report(1) == {"store": 1} and report(store_id=1) == {"store": 1}
    assert calls == [1]
    assert report.key(1) == "report:1"
    assert sorted(tc.tags("report:1")) == ["reports", "store:1"]
    assert report.invalidate(1) == 1
    report(1)
    assert calls == [1, 1]
    tc.invalidate_tags("reports")
    report(1)
    assert calls == [1, 1, 1]

    @tc.cached(ttl=60)
    def plain(a: int, b: int = 2) -> int:
        calls.append("plain")
        return a + b

    assert plain(1) == 3 and plain(1, 2) == 3 and plain(1, b=2) == 3
    assert calls.count("plain") == 1
    with pytest.raises(TypeError):

        @tc.cached(ttl=60)
        async def nope() -> int:
            return 1


class Report(BaseModel):
    risk_score: float = Field(gt=0)
    summary: str


def test_gates_from_dict_json_and_pydantic(tc):
    assert tc.gates.set("report", Report, prefix="report:") is True
    assert tc.gates.get("report")["properties"]["risk_score"]["exclusiveMinimum"] == 0
    assert "report" in tc.gates.list()
    assert tc.set("report:1", {"risk_score": 7, "summary": "ok"}, 60) is True
    with pytest.raises(GateRejected) as ei:
        tc.set("report:1", {"risk_score": 0, "summary": "bad"}, 60)
    assert ei.value.gate == "report" and ei.value.pointer == "/risk_score"
    assert tc.get("report:1") == {"risk_score": 7, "summary": "ok"}  # the good one stays
    with pytest.raises(GateRejected):
        tc.gates.check("report", {"risk_score": -1, "summary": ""})
    assert tc.gates.check("report", {"risk_score": 1, "summary": ""}) is True
    assert tc.gates.set("small", '{"type":"integer"}') is True
    assert tc.gates.set("obj", {"type": "object"}) is True
    assert tc.set("x", 5, 60, gate="small") is True
    with pytest.raises(GateRejected):
        tc.set("x", "five", 60, gate="small")
    for g in ("report", "small", "obj"):
        assert tc.gates.delete(g) is True
    assert tc.gates.delete("obj") is False


def test_compression_never_for_gated_writes(server, r):
    tc = TCache(server.client(), namespace="z:", compress_threshold=100)
    big = {"text": "a" * 5000}
    tc.set("big", big, 60)
    raw = r.execute_command("TCACHE.GET", "z:big")
    assert raw.startswith(ZLIB_MARKER) and len(raw) < 1000
    assert tc.get("big") == big
    tc.set("gated", big, 60, gate="json")
    assert r.execute_command("TCACHE.GET", "z:gated").startswith(b"{")
    tc.gates.set("doc", {"type": "object"}, prefix="doc:")
    tc.set("doc:1", big, 60)  # a prefix gate: the module must see the JSON
    assert r.execute_command("TCACHE.GET", "z:doc:1").startswith(b"{")
    assert tc.get("doc:1") == big
    tc.gates.delete("doc")


def test_perm(tc):
    assert tc.perm.set("user:17", {"roles": ["editor", "billing"], "permissions": ["reports:read", "users:*"]}, 60)
    assert tc.perm.check("user:17", "users:write") is True
    assert tc.perm.check("user:17", "reports:write", "users:x") == [False, True]
    assert tc.perm.check("user:99", "reports:read") is None
    assert tc.perm.get("user:17")["roles"] == ["editor", "billing"]
    assert tc.perm.inval_role("editor") == 1
    assert tc.perm.get("user:17") is None
    tc.perm.set("user:1", '{"roles":["a"],"permissions":[]}')
    tc.perm.set("user:2", {"roles": ["b"], "permissions": []})
    assert tc.perm.inval_user("user:1") == 1
    assert tc.perm.inval_all() == 1
    with pytest.raises(GateRejected):
        tc.perm.set("user:3", {"roles": "x"})


def test_async_cache(server, r):
    async def main() -> None:
        c = redis.asyncio.Redis(port=server.port, protocol=3)
        async with AsyncTCache(c, namespace="a:", l1=True) as tc:
            assert await tc.set("k", {"v": 1}, 60, tags=["t"]) is True
            assert tc.l1_sync()
            end = asyncio.get_running_loop().time() + 10
            while "a:k" not in tc.l1._data:  # the push of our own SET may discard a first fill
                assert await tc.get("k") == {"v": 1}
                assert asyncio.get_running_loop().time() < end, "no L1 fill"
                await asyncio.sleep(0.005)
            tc.reset_local_stats()
            assert await tc.get("k") == {"v": 1}
            assert (await tc.stats())["l1_hits"] == 1
            assert await tc.mget(["k", "x"]) == [{"v": 1}, None]
            assert await tc.tags("k") == ["t"]
            assert await tc.tag_count("t") == 1
            assert [k async for k in tc.tag_keys("t")] == ["k"]
            assert await tc.invalidate_tags("t") == 1
            assert await tc.get("k") is None
            calls: list = []

            @tc.cached(ttl=60, key="r:{i}", tags=["r"])
            async def rep(i: int) -> int:
                calls.append(i)
                await asyncio.sleep(0.2)
                return i * 2

            assert await asyncio.gather(*(rep(3) for _ in range(20))) == [6] * 20
            assert calls == [3]
            assert rep.key(3) == "r:3"
            assert await rep.invalidate(3) == 1
            assert await tc.get_or_compute("sync", lambda: 5, 60) == 5
            await tc.gates.set("m", Report)
            with pytest.raises(GateRejected):
                await tc.set("m1", {"risk_score": 0, "summary": ""}, 60, gate="m")
            assert await tc.gates.delete("m")
            await tc.perm.set("u", {"roles": ["r"], "permissions": ["p"]})
            assert await tc.perm.check("u", "p") is True
            assert await tc.perm.inval_role("r") == 1
            await tc.invalidate_prefix("")
            assert await tc.verify()
        await c.aclose()

    asyncio.run(main())


def test_async_waiter_outlasts_the_read_timeout_of_a_client_from_url(server, r):
    """A computation longer than redis-py's read timeout (5 s by default, from_url
    included): the waiter's FETCH ... WAIT is cut under it and asked again, so the waiter
    gets the value instead of a TimeoutError."""

    async def main() -> None:
        c = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{server.port}")
        started = asyncio.Event()
        release = asyncio.Event()
        async with AsyncTCache(c, namespace="fu:") as tc:

            async def slow() -> str:
                started.set()
                await release.wait()
                return "computed"

            holder = asyncio.create_task(tc.get_or_compute("k", slow, 60, lease_ms=60_000))
            await asyncio.wait_for(started.wait(), 10)
            waiter = asyncio.create_task(tc.get_or_compute("k", lambda: "second", 60, lease_ms=60_000))
            loop = asyncio.get_running_loop()
            # Held past the 5 s read timeout, the waiter meanwhile re-asking from within.
            end = loop.time() + 6.5
            while loop.time() < end:
                assert not waiter.done() or waiter.exception() is None
                await asyncio.sleep(0.1)
            release.set()
            assert await asyncio.wait_for(holder, 10) == "computed"
            assert await asyncio.wait_for(waiter, 10) == "computed"
        await c.aclose()

    asyncio.run(main())
