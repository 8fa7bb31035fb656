"""TCache / AsyncTCache on a 3-primary Redis Cluster and Valkey Cluster (one per kind per session)."""

from __future__ import annotations

import asyncio

import pytest
from conftest import wait_for
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from redis_tcache import AsyncTCache, GateRejected, TCache, TCacheModule

N = 60


def keys_per_node(rc: RedisCluster, keys: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in keys:
        n = rc.get_node_from_key(k)
        out[n.name] = out.get(n.name, 0) + 1
    return out


@pytest.fixture(params=[2, 3])
def tc(request, cluster, rc):
    c = cluster.client(protocol=request.param)
    t = TCache(c, namespace="app:")
    yield t
    t.close()
    c.close()


def test_commands_route_and_fan_out(tc, rc):
    keys = [f"k:{i}" for i in range(N)]
    for i, k in enumerate(keys):
        assert tc.set(k, i, 60, tags=["all", f"mod:{i % 3}"]) is True
    spread = keys_per_node(rc, ["app:" + k for k in keys])
    assert len(spread) == 3  # the keys live on every primary
    assert tc.get("k:5") == 5
    assert tc.mget(keys) == list(range(N))  # keys of many slots
    assert tc.tags("k:1") is not None and sorted(tc.tags("k:1")) == ["all", "mod:1"]
    assert tc.tag_count("all") == N
    assert sorted(tc.tag_keys("all", count=7)) == sorted(keys)
    cursor, got, steps = 0, [], 0
    while True:
        cursor, ks = tc.tag_scan("mod:0", cursor, count=5)
        got += ks
        steps += 1
        if cursor == 0:
            break
    assert sorted(got) == sorted(k for i, k in enumerate(keys) if i % 3 == 0) and steps >= 3
    st = tc.stats()
    assert st["entries"] == N and st["hit_rate"].endswith("%")
    assert tc.coordinated() is False  # today the module's invalidations are node-local
    assert tc.invalidate_tags("mod:1") == N // 3  # summed over every primary
    assert tc.stale_tags("mod:2") == N // 3
    assert tc.get("k:2") is None and tc.get("k:0") == 0
    assert tc.invalidate_prefix("k:") == N - N // 3
    assert tc.tag_count("all") == 0
    assert tc.delete(*keys) == 0
    assert tc.verify() is True


def test_coordinated_switch_sends_one_call(tc, rc):
    keys = [f"c:{i}" for i in range(30)]
    for k in keys:
        tc.set(k, 1, 60, tags=["ct"])
    spread = keys_per_node(rc, ["app:" + k for k in keys])
    tc._coordinated = True  # what INFO tcache will say once the module coordinates
    n = tc.invalidate_tags("ct")
    assert n in spread.values() and n < len(keys)  # exactly one node was asked
    tc._coordinated = None
    assert tc.invalidate_tags("ct") == len(keys) - n


def test_get_or_compute_decorator_gates_perm(tc):
    calls = []

    @tc.cached(ttl=60, key="r:{i}", tags=["r", "r:{i}"])
    def rep(i: int) -> int:
        calls.append(i)
        return i

    assert [rep(i) for i in range(10)] == list(range(10))
    assert [rep(i) for i in range(10)] == list(range(10))
    assert calls == list(range(10))
    assert tc.invalidate_tags("r") == 10
    tc.gates.set("pos", {"type": "integer", "minimum": 1})
    for node in tc.client.get_primaries():  # a gate lives on every primary
        assert "pos" in TCacheModule(tc.client).gate_list(target_nodes=node)
    for i in range(10):
        with pytest.raises(GateRejected):
            tc.set(f"g:{i}", 0, 60, gate="pos")
        assert tc.set(f"g:{i}", 1, 60, gate="pos")
    assert tc.gates.delete("pos")
    for i in range(10):
        tc.perm.set(f"u:{i}", {"roles": ["ed"], "permissions": ["p"]})
    assert tc.perm.check("u:3", "p") is True
    assert tc.perm.inval_role("ed") == 10
    tc.perm.set("u:1", {"roles": ["x"], "permissions": []})
    assert tc.perm.inval_all() == 1


def test_l1_on_cluster(cluster, rc):
    t = TCache(cluster.client(protocol=3), namespace="l1:", l1=True)
    try:
        assert t.tracker is not None and len(t.tracker.nodes) == 3 and t.l1.active
        keys = [f"k:{i}" for i in range(30)]
        for i, k in enumerate(keys):
            t.set(k, i, 60, tags=["x"])
        for i, k in enumerate(keys):
            wait_for(lambda k=k, i=i: t.get(k) == i and "l1:" + k in t.l1._data, what="L1 fill")
        other = TCacheModule(rc)  # another client
        assert sum(other.invaltag("l1:x", target_nodes=n) for n in rc.get_primaries()) == 30
        wait_for(lambda: len(t.l1) == 0, what="pushes from every node")
        assert all(t.get(k) is None for k in keys)
    finally:
        t.close()


def test_async_cluster(cluster, rc):
    async def main() -> None:
        c = AsyncRedisCluster(host="127.0.0.1", port=cluster.port, protocol=3)
        async with AsyncTCache(c, namespace="a:", l1=True) as tc:
            for i in range(20):
                await tc.set(f"k:{i}", i, 60, tags=["t"])
            assert await tc.mget([f"k:{i}" for i in range(20)]) == list(range(20))
            assert await tc.tag_count("t") == 20
            assert sorted([k async for k in tc.tag_keys("t", count=3)]) == sorted(f"k:{i}" for i in range(20))
            assert (await tc.stats())["entries"] == 20
            assert await tc.coordinated() is False
            assert await tc.get_or_compute("gc", lambda: 7, 60) == 7
            assert await tc.invalidate_tags("t") == 20
            assert await tc.get("k:3") is None
            await tc.gates.set("j", {"type": "object"})
            assert await tc.gates.delete("j")
            assert await tc.verify()
        await c.aclose()

    asyncio.run(main())


def test_raw_commands_on_cluster(rc):
    m = TCacheModule(rc)
    assert m.set("{x}1", "v", 60, tags=["t"]) is True
    assert m.get("{x}1") == b"v"
    assert m.mget(["{x}1", "{x}2"]) == [b"v", None]
    assert m.fetch("{x}2", 1000).kind == "LEASE"
    with pytest.raises(RedisClusterException, match="Missing key"):
        m.invaltag("t")  # keyless: redis-py needs target_nodes
    per_node = [m.invaltag("t", target_nodes=n) for n in rc.get_primaries()]
    assert sorted(per_node) == [0, 0, 1]


def test_cluster_pipeline(rc):
    m = TCacheModule(rc)
    with m.pipeline() as p:
        p.set("{p}1", "a", 60, tags=["pt"])
        p.set("{q}1", "b", 60, tags=["pt"])
        p.get("{p}1")
        p.tags("{q}1")
        p.fetch("{q}1", 1000)
        res = p.execute()
    assert res[0] is True and res[1] is True and res[2] == b"a" and res[3] == ["pt"]
    assert res[4].kind == "HIT" and res[4].value == b"b"
