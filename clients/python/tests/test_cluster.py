"""TCache / AsyncTCache on a 3-primary Redis Cluster and Valkey Cluster (one per kind per session)."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from conftest import Cluster, wait_for
from redis._parsers.base import BaseParser
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException, ResponseError

from redis_tcache import AsyncTCache, GateRejected, TCache, TCacheModule, Unconfirmed

N = 60
MODULE_MESSAGES = "9"  # cluster-bus message type of module messages (Redis 7.0, Valkey 9)


def keys_per_node(rc: RedisCluster, keys: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in keys:
        n = rc.get_node_from_key(k)
        out[n.name] = out.get(n.name, 0) + 1
    return out


def node(port: int) -> redis.Redis:
    return redis.Redis(port=port)


def calls(cluster: Cluster, command: str) -> dict[int, int]:
    """``INFO commandstats`` calls of ``command`` (lower case) on each node, by port."""
    out: dict[int, int] = {}
    for n in cluster.nodes:
        with node(n.port) as c:
            out[n.port] = int(c.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))
    return out


@contextmanager
def received(cluster: Cluster, command: str) -> Iterator[dict[int, int]]:
    """The calls of ``command`` each node received inside the block, by port (filled at exit)."""
    got: dict[int, int] = {}
    before = calls(cluster, command)
    yield got
    after = calls(cluster, command)
    got.update({p: after[p] - before[p] for p in before})


def tagcards(cluster: Cluster, tag: str) -> dict[int, int]:
    """``TCACHE.TAGCARD tag`` on each node, by port."""
    out: dict[int, int] = {}
    for n in cluster.nodes:
        with node(n.port) as c:
            out[n.port] = int(c.execute_command("TCACHE.TAGCARD", tag))
    return out


def slot_ranges(cluster: Cluster, port: int) -> list[tuple[int, int]]:
    """The slot ranges ``port`` owns, from ``CLUSTER SLOTS``, in order."""
    with node(cluster.port) as c:
        rows = c.execute_command("CLUSTER", "SLOTS")
    return sorted((int(r[0]), int(r[1])) for r in rows if int(r[2][1]) == port)


def tagged_everywhere(tc: TCache, rc: RedisCluster, tag: str, n: int = 30) -> dict[str, int]:
    """``n`` entries tagged ``tag``, on every primary; the entries per node name."""
    keys = [f"{tag}:{i}" for i in range(n)]
    for k in keys:
        assert tc.set(k, 1, 60, tags=[tag])
    spread = keys_per_node(rc, ["app:" + k for k in keys])
    assert len(spread) == 3
    return spread


@contextmanager
def deaf(cluster: Cluster, port: int, timeout_ms: int = 500) -> Iterator[None]:
    """``tcache.cluster-timeout-ms`` at ``timeout_ms`` on every node and the node on ``port``
    deaf to module cluster-bus messages, both undone at exit."""
    old = {}
    for n in cluster.nodes:
        with node(n.port) as c:
            old[n.port] = c.config_get("tcache.cluster-timeout-ms")["tcache.cluster-timeout-ms"]
            c.config_set("tcache.cluster-timeout-ms", timeout_ms)
    try:
        with node(port) as c:
            c.execute_command("DEBUG", "DROP-CLUSTER-PACKET-FILTER", MODULE_MESSAGES)
        try:
            yield
        finally:
            with node(port) as c:
                c.execute_command("DEBUG", "DROP-CLUSTER-PACKET-FILTER", "-1")
    finally:
        for n in cluster.nodes:
            with node(n.port) as c:
                c.config_set("tcache.cluster-timeout-ms", old[n.port])


def settled(cluster: Cluster) -> bool:
    """No node has a cluster-wide invalidation in flight."""
    for n in cluster.nodes:
        with node(n.port) as c:
            if int(c.info("tcache")["tcache_cluster_inflight"]) != 0:
                return False
    return True


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
    assert tc.coordinated() is True  # INFO tcache: tcache_cluster_invalidation:coordinated
    assert tc.invalidate_tags("mod:1") == N // 3  # the cluster-wide count
    assert tc.stale_tags("mod:2") == N // 3
    assert tc.get("k:2") is None and tc.get("k:0") == 0
    assert tc.invalidate_prefix("k:") == N - N // 3
    assert tc.tag_count("all") == 0
    assert tc.delete(*keys) == 0
    assert tc.verify() is True


def test_each_invalidation_is_one_call_with_the_cluster_wide_count(tc, rc, cluster):
    assert tc.coordinated() is True
    keys = [f"k:{i}" for i in range(N)]
    for i, k in enumerate(keys):
        tc.set(k, i, 60, tags=["all", f"mod:{i % 3}"])
    assert len(keys_per_node(rc, ["app:" + k for k in keys])) == 3
    users = [f"u:{i}" for i in range(N)]
    for i, u in enumerate(users):
        assert tc.perm.set(u, {"roles": ["ed" if i % 2 else "ro"], "permissions": ["p"]})
    assert len(keys_per_node(rc, ["app:" + u for u in users])) == 3

    def one_call(command, fn, *args):
        with received(cluster, command) as got:
            n = fn(*args)
        assert sorted(got.values()) == [0, 0, 1], f"{command} reached {got}"
        return n

    assert one_call("tcache.invaltag", tc.invalidate_tags, "mod:1") == N // 3
    assert sum(tagcards(cluster, "app:mod:1").values()) == 0
    assert one_call("tcache.staletag", tc.stale_tags, "mod:2") == N // 3
    assert all(tc.get(f"k:{i}") is None for i in range(2, N, 3))  # stale everywhere
    assert one_call("tcache.invalprefix", tc.invalidate_prefix, "k:") == N - N // 3
    assert sum(tagcards(cluster, "app:all").values()) == 0
    assert one_call("perm.invalrole", tc.perm.inval_role, "ed") == N // 2
    assert tc.perm.check("u:1", "p") is None and tc.perm.check("u:0", "p") is True
    assert one_call("perm.invalall", tc.perm.inval_all) == N - N // 2
    assert all(tc.perm.get(u) is None for u in users)


def test_fan_out_path_still_sums(tc, rc, cluster):
    """With the switch forced off (a module that does not coordinate), the client sends each
    invalidation to every primary: the first one applies it cluster-wide, the others find
    nothing left, and the sum is still the cluster-wide count."""
    tc._coordinated = False
    spread = tagged_everywhere(tc, rc, "fo")
    with received(cluster, "tcache.invaltag") as got:
        assert tc.invalidate_tags("fo") == sum(spread.values())
    assert sorted(got.values()) == [1, 1, 1]
    spread = tagged_everywhere(tc, rc, "fo2")
    assert tc._each_primary(tc.cmd.invaltag, "app:fo2") == [sum(spread.values()), 0, 0]
    tagged_everywhere(tc, rc, "fo3")
    assert tc.stale_tags("fo3") == 30
    assert tc.invalidate_prefix("fo") == 30  # the stale fo3 entries


def test_unconfirmed_names_the_deaf_primary_and_repeating_finishes(tc, rc, cluster):
    spread = tagged_everywhere(tc, rc, "lost")
    primaries = tc._primaries()
    coord, mute = primaries[0], primaries[1]
    tc.pick = lambda nodes: next(n for n in nodes if n.port == coord.port)  # not the deaf one
    with deaf(cluster, mute.port):
        with pytest.raises(Unconfirmed) as ei:
            tc.invalidate_tags("lost")
    e = ei.value
    assert isinstance(e, ResponseError)
    assert e.command == "TCACHE.INVALTAG" and "repeating it is safe" in str(e)
    assert e.slots == slot_ranges(cluster, mute.port)
    left = tagcards(cluster, "app:lost")
    assert left == {n.port: (spread[mute.name] if n.port == mute.port else 0) for n in cluster.nodes}
    wait_for(lambda: settled(cluster), what="no invalidation in flight")
    assert tc.invalidate_tags("lost") == spread[mute.name]  # repeating is safe: the rest, once
    assert sum(tagcards(cluster, "app:lost").values()) == 0


def test_unconfirmed_parsing():
    text = (
        "TCACHE.INVALTAG was not confirmed within 1500 ms (tcache.cluster-timeout-ms) by the owners"
        " of slots 5461-10922,16000; it was applied where confirmed, and repeating it is safe"
    )
    e = BaseParser.parse_error("UNCONFIRMED " + text)
    assert type(e) is Unconfirmed and isinstance(e, ResponseError)
    assert e.command == "TCACHE.INVALTAG" and e.slots == [(5461, 10922), (16000, 16000)]
    again = pickle.loads(pickle.dumps(e))
    assert type(again) is Unconfirmed and again.slots == e.slots and again.command == e.command
    assert Unconfirmed("something else").slots == []


def test_invalidation_in_pipelines(tc, rc, cluster):
    """A cluster pipeline is never a transaction (``transaction`` is ignored): an invalidation
    in it is one coordinated call. A MULTI on one node of a cluster is refused by the module
    and the refusal is raised, not swallowed."""
    spread = tagged_everywhere(tc, rc, "pl")
    m = TCacheModule(rc)
    with received(cluster, "tcache.invaltag") as got:
        with m.pipeline(transaction=True) as p:
            p.invaltag("app:pl")
            assert p.execute() == [sum(spread.values())]
    assert sorted(got.values()) == [0, 0, 1]
    spread = tagged_everywhere(tc, rc, "tx")
    one = TCacheModule(node(cluster.port))
    with one.pipeline(transaction=True) as p:
        p.invaltag("app:tx")
        with pytest.raises(ResponseError, match="cannot run inside MULTI or a script"):
            p.execute()
    assert tc.tag_count("tx") == sum(spread.values())  # nothing was invalidated


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
        other = TCacheModule(rc)  # another client: one call, applied on every primary
        assert other.invaltag("l1:x", target_nodes=rc.get_primaries()[0]) == 30
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
            assert await tc.coordinated() is True
            assert await tc.get_or_compute("gc", lambda: 7, 60) == 7
            with received(cluster, "tcache.invaltag") as got:
                assert await tc.invalidate_tags("t") == 20
            assert sorted(got.values()) == [0, 0, 1]
            assert await tc.get("k:3") is None
            for i in range(20):
                await tc.set(f"s:{i}", i, 60, tags=["st"])
                await tc.perm.set(f"u:{i}", {"roles": ["r"], "permissions": []})
            with received(cluster, "tcache.staletag") as got:
                assert await tc.stale_tags("st") == 20
            assert sorted(got.values()) == [0, 0, 1]
            with received(cluster, "tcache.invalprefix") as got:
                assert await tc.invalidate_prefix("s:") == 20
            assert sorted(got.values()) == [0, 0, 1]
            with received(cluster, "perm.invalrole") as got:
                assert await tc.perm.inval_role("r") == 20
            assert sorted(got.values()) == [0, 0, 1]
            tc._coordinated = False  # the fan-out path: every primary asked, the replies summed
            for i in range(20):
                await tc.set(f"f:{i}", i, 60, tags=["ft"])
            with received(cluster, "tcache.invaltag") as got:
                assert await tc.invalidate_tags("ft") == 20
            assert sorted(got.values()) == [1, 1, 1]
            tc._coordinated = None
            m = TCacheModule(c)
            for i in range(20):
                await tc.set(f"p:{i}", i, 60, tags=["pt"])
            with received(cluster, "tcache.invaltag") as got:
                async with m.pipeline() as p:  # keyless: redis-py's async pipeline needs target_nodes
                    p.invaltag("a:pt", target_nodes=c.get_primaries()[1])
                    assert await p.execute() == [20]
            assert sorted(got.values()) == [0, 0, 1]
            await tc.gates.set("j", {"type": "object"})
            assert await tc.gates.delete("j")
            assert await tc.verify()
        await c.aclose()

    asyncio.run(main())


def test_async_unconfirmed(cluster, rc):
    async def main() -> None:
        c = AsyncRedisCluster(host="127.0.0.1", port=cluster.port)
        async with AsyncTCache(c, namespace="au:") as tc:
            for i in range(30):
                await tc.set(f"k:{i}", i, 60, tags=["lost"])
            primaries = tc._primaries()
            coord, mute = primaries[0], primaries[2]
            tc.pick = lambda nodes: next(n for n in nodes if n.port == coord.port)
            on_mute = tagcards(cluster, "au:lost")[mute.port]
            assert 0 < on_mute < 30
            with deaf(cluster, mute.port):
                with pytest.raises(Unconfirmed) as ei:
                    await tc.stale_tags("lost")
            assert ei.value.command == "TCACHE.STALETAG"
            assert ei.value.slots == slot_ranges(cluster, mute.port)
            wait_for(lambda: settled(cluster), what="no invalidation in flight")
            with deaf(cluster, mute.port):
                with pytest.raises(Unconfirmed) as ei:
                    await tc.invalidate_tags("lost")
            assert ei.value.command == "TCACHE.INVALTAG"
            want = {n.port: on_mute if n.port == mute.port else 0 for n in cluster.nodes}
            assert tagcards(cluster, "au:lost") == want
            wait_for(lambda: settled(cluster), what="no invalidation in flight")
            assert await tc.invalidate_tags("lost") == on_mute
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
    assert per_node == [1, 0, 0]  # the first call applied on every primary


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
