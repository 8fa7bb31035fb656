"""The L1 near cache: coherence with invalidations from this and other processes, a fill
that raced an invalidation, a tracking connection that breaks, bounds and LRU."""

from __future__ import annotations

import multiprocessing as mp
import threading

import pytest
import redis
from _workers import writer_process
from conftest import wait_for

from redis_tcache import TCache, TCacheModule
from redis_tcache.l1 import L1Cache


def filled(t: TCache, key: str, expected: object) -> None:
    """Read until the L1 holds the key (a fill that races the push of our own write is
    discarded on purpose, so the first read may not fill)."""
    assert t.l1_sync()  # every push queued so far (our own writes' included) is applied
    wait_for(lambda: t.get(key) == expected and t.namespace + key in t.l1._data, what=f"L1 fill of {key}")


@pytest.fixture(params=[2, 3])
def tc(request, server, r):
    # the data connections may speak RESP2: tracking has its own RESP3 connection
    t = TCache(server.client(protocol=request.param), namespace="app:", l1=True)
    assert t.l1 is not None and t.l1.active
    yield t
    t.close()


def test_hits_come_from_l1_and_stats_count_them(tc, r):
    tc.set("k", {"v": 1}, 60, tags=["t"])
    filled(tc, "k", {"v": 1})
    tc.reset_stats()
    hits_before = TCacheModule(r).stats()["hits"]
    for _ in range(10):
        assert tc.get("k") == {"v": 1}
    assert TCacheModule(r).stats()["hits"] == hits_before  # the server saw none of them
    st = tc.stats()
    assert st["l1_hits"] == 10 and st["l1_misses"] == 0 and st["l2_hits"] == 0 and st["l1_entries"] == 1
    tc.delete("k")
    assert tc.get("k") is None
    st = tc.stats()
    assert st["l1_misses"] == 1 and st["l2_misses"] == 1


def test_other_clients_changes_drop_l1_entries(tc, server):
    other = TCacheModule(server.client())
    tc.set("a", 1, 60, tags=["ta"])
    tc.set("b", 2, 60, tags=["tb"])
    tc.set("c", 3, 60, tags=["tc"])
    for x, v in zip("abc", [1, 2, 3], strict=True):
        filled(tc, x, v)
    other.invaltag("app:ta")  # invalidation by another client
    other.set("app:b", "20", 60)  # overwrite by another client
    other.delete("app:c")
    wait_for(lambda: len(tc.l1) == 0, what="L1 entries dropped by tracking pushes")
    assert [tc.get(x) for x in "abc"] == [None, 20, None]


def test_logical_invalidation_reaches_l1(tc, server, r):
    """A large invalidation is logical (entries die at once, the reclaimer deletes later)."""
    r.config_set("tcache.inval-sync-max", 10)
    try:
        for i in range(50):
            tc.set(f"big:{i}", i, 60, tags=["big"])
        for i in range(50):
            filled(tc, f"big:{i}", i)
        TCacheModule(server.client()).invaltag("app:big")
        wait_for(lambda: len(tc.l1) == 0, what="L1 dropped after the reclaimer's deletes")
        assert all(tc.get(f"big:{i}") is None for i in range(50))
    finally:
        r.config_set("tcache.inval-sync-max", 128)


def test_invalidation_channel_drops_by_tag_at_once(server, r):
    r.config_set("tcache.invalidation-channel", "tcache:inval")
    r.config_set("tcache.reclaim-budget-us", 0)  # reclaimer paused: no per-key push comes
    r.config_set("tcache.inval-sync-max", 0)  # every invalidation is logical
    t = TCache(server.client(protocol=3), namespace="ch:", l1=True)
    try:
        assert t.tracker is not None and t.tracker.channel == "tcache:inval"
        t.set("x", 1, 60, tags=["tx"])
        filled(t, "x", 1)
        TCacheModule(server.client()).invaltag("ch:tx")
        wait_for(lambda: len(t.l1) == 0, what="L1 dropped by the channel's tag: message")
        assert t.get("x") is None
    finally:
        t.close()
        r.config_set("tcache.invalidation-channel", "")
        r.config_set("tcache.reclaim-budget-us", 1000)
        r.config_set("tcache.inval-sync-max", 128)


def test_no_old_value_after_invalidate_tags_returns(tc, server):
    """Readers fill the L1 concurrently; once invalidate_tags returns, no read started
    afterwards returns the invalidated value (fills in flight are discarded)."""
    writer = TCacheModule(server.client())
    stop = threading.Event()
    phase = {"after": -1}
    bad: list = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            after = phase["after"]
            v = tc.get("hot")
            reads[0] += 1
            if after >= 0 and v is not None and v <= after:
                bad.append((after, v))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(300):
            writer.set("app:hot", str(i), 60, tags=["app:g"])
            tc.invalidate_tags("g")
            phase["after"] = i
            assert tc.get("hot") is None
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert reads[0] > 300
    assert bad == []


def test_l1_converges_under_invalidation_from_another_process(tc, server):
    ctx = mp.get_context("spawn")
    done = ctx.Event()
    stop = threading.Event()
    seen: list[list[int]] = [[] for _ in range(3)]

    def reader(n: int) -> None:
        while not stop.is_set():
            v = tc.get("shared")
            if v is not None:
                seen[n].append(v)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    p = ctx.Process(target=writer_process, args=(server.port, "app:shared", "app:s", 300, done))
    p.start()
    try:
        assert done.wait(60)
        wait_for(lambda: tc.get("shared") is None, what="L1 sees the other process's final INVALTAG")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        p.join(30)
    # cross-process changes reach the L1 when their push arrives (eventual, milliseconds):
    # what was read is always a version the other process wrote, and the end state is exact
    assert sum(len(s) for s in seen) > 0
    assert all(1 <= v <= 300 for s in seen for v in s)
    wait_for(lambda: len(tc.l1) == 0, what="no L1 entry left")


def test_fill_that_raced_an_invalidation_is_discarded(tc, server):
    l1 = tc.l1
    tc.set("race", "old", 60)
    fid = l1.begin_fill("app:race")  # a reader has sent its GET and got "old"
    before = l1.invalidations
    TCacheModule(server.client()).set("app:race", '"new"', 60)  # another client overwrites
    wait_for(lambda: l1.invalidations > before, what="the overwrite's invalidation push")
    assert l1.end_fill(fid, "old", 3, (), 60) is False
    assert tc.get("race") == "new"
    assert tc.stats()["l1_fills_discarded"] >= 1


def test_tracking_connection_break_flushes_everything(tc, server, r):
    tc.set("k", "v1", 60)
    filled(tc, "k", "v1")
    ids = tc.tracker.client_ids()
    named = [int(c["id"]) for c in r.client_list() if c.get("name") == "tcache-l1-tracking"]
    assert len(ids) == 1 and set(ids) <= set(named)
    for i in ids:
        r.client_kill_filter(_id=i)
    wait_for(lambda: tc.tracker.breaks >= 1, what="the break to be seen")
    assert len(tc.l1) == 0
    r.execute_command("TCACHE.SET", "app:k", '"v2"', 60)  # maybe while nothing tracks
    wait_for(lambda: tc.l1.active, what="tracking to reconnect")
    filled(tc, "k", "v2")
    r.execute_command("TCACHE.SET", "app:k", '"v3"', 60)  # tracked again after reconnecting
    wait_for(lambda: tc.get("k") == "v3", what="a push on the new tracking connection")


def test_bounds_and_lru():
    l1 = L1Cache(max_entries=3, max_bytes=100, max_ttl=60)
    l1.set_ready(1, 1)

    def put(k: str, size: int = 10) -> None:
        assert l1.end_fill(l1.begin_fill(k), k, size, ("t",), 60)

    for k in "abc":
        put(k)
    l1.get("a")  # a is now the most recently used
    put("d")
    assert len(l1) == 3 and l1.get("b") is l1.get("zz")  # b evicted (both missing)
    put("big", 90)
    assert l1.bytes <= 100 and l1.get("big") == "big"
    assert l1.end_fill(l1.begin_fill("huge"), "x", 1000, (), 60) is False
    l1.invalidate_tags(["t"])
    assert len(l1) == 0
    l1.set_ready(0, 1)
    assert l1.get("anything") is not None  # inactive: a miss marker, never a stale value
    assert l1.end_fill(l1.begin_fill("a"), "a", 1, (), 60) is False


def test_l1_sync_applies_pending_pushes(tc, server):
    tc.set("s", 1, 60)
    filled(tc, "s", 1)
    before = tc.l1.invalidations
    TCacheModule(server.client()).set("app:s", "2", 60)
    assert tc.l1_sync() is True
    assert tc.l1.invalidations > before and tc.get("s") == 2  # no wait loop needed


def test_closed_l1_is_bypassed(server):
    c = redis.Redis(port=server.port)
    t = TCache(c, namespace="off:", l1=True, l1_ready_timeout=0.2)
    try:
        assert t.l1.active
    finally:
        t.close()
    assert not t.l1.active
    t2 = TCache(c, namespace="off:")
    t2.set("k", 1, 60)
    assert t.get("k") == 1  # closed: bypassed, served by Redis
    t2.set("k", 2, 60)
    assert t.get("k") == 2 and len(t.l1) == 0
