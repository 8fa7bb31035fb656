"""The app on a 3-primary cluster (Redis 7.0 Cluster or Valkey 9 Cluster, whichever
TCACHE_SERVER is), with two app processes: the services keep their guarantees when the keys
live on several shards and every invalidation is sent to one primary and applied on all."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.cluster import RedisCluster

from refapp import harness
from refapp.db import STORES, USERS
from refapp.reports import report_key
from tests.conftest import Env, running_env, wait_until
from tests.test_permissions import PERMS, allows, check_all, grants

PROVIDER_VOICES = {"acme": 1, "polly": 31, "vocalis": 61}  # one voice id of each provider (seed order)


@pytest.fixture(scope="module")
def cenv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with running_env(Path(tmp_path_factory.mktemp("app-cluster-logs")), cluster=True) as e:
        yield e


@pytest.fixture(scope="module")
def rc(cenv: Env) -> Iterator[RedisCluster]:
    c = RedisCluster(host="127.0.0.1", port=cenv.stack.srv.port, decode_responses=True)
    yield c
    c.close()


def nodes(env: Env) -> list[harness.TcacheServer]:
    srv = env.stack.srv
    assert isinstance(srv, harness.TcacheCluster)
    return srv.nodes


def shard(rc: RedisCluster, key: str) -> int:
    """The port of the primary holding ``key``."""
    return int(rc.get_node_from_key(key).port)


def node_stats(env: Env) -> list[dict[str, Any]]:
    """``TCACHE.STATS`` of each primary (a flat name/value array in RESP2)."""
    out = []
    for n in nodes(env):
        with redis.Redis(port=n.port, decode_responses=True) as c:
            reply = c.execute_command("TCACHE.STATS")
        out.append(dict(zip(reply[0::2], reply[1::2], strict=True)) if isinstance(reply, list) else reply)
    return out


def summed(env: Env, name: str) -> int:
    return sum(int(s[name]) for s in node_stats(env))


async def reads(urls: list[str], stores: list[int], n: int) -> dict[int, list[httpx.Response]]:
    """``n`` concurrent GET /reports/{id} per store, over the apps in turn."""
    limits = httpx.Limits(max_connections=n * len(stores), max_keepalive_connections=n * len(stores))
    async with httpx.AsyncClient(timeout=120, limits=limits) as c:
        asked = [(s, urls[i % len(urls)]) for s in stores for i in range(n)]
        got = await asyncio.gather(*(c.get(f"{u}/reports/{s}") for s, u in asked))
    out: dict[int, list[httpx.Response]] = {s: [] for s in stores}
    for (s, _), r in zip(asked, got, strict=True):
        assert r.status_code == 200, r.text
        out[s].append(r)
    return out


def generation_ids(responses: list[httpx.Response]) -> set[int]:
    return {int(r.json()["generation_id"]) for r in responses}


def test_reports_on_every_shard_compute_once_and_a_reset_is_final(cenv: Env, rc: RedisCluster) -> None:
    by_shard: dict[int, int] = {}
    for s in range(1, STORES + 1):
        by_shard.setdefault(shard(rc, report_key(s)), s)
    stores = sorted(by_shard.values())
    assert len(stores) == 3, "one store whose report lives on each primary"
    a, b = cenv.a.url, cenv.b.url

    # 40 concurrent readers per store, over both processes: one generation per store
    first = asyncio.run(reads([a, b], stores, 40))
    old = {}
    for s in stores:
        ids = generation_ids(first[s])
        assert len(ids) == 1 and cenv.computations("report", str(s)) == 1, f"store {s}: {ids}"
        old[s] = ids.pop()

    # a reset (one INVALTAG, applied on every primary) and no reader sees the old report
    for s in stores:
        r = httpx.post(f"{b}/reports/{s}/reset", timeout=30)
        assert r.status_code == 200 and r.json()["cache_entries_dropped"] == 1, r.text
    after = asyncio.run(reads([b, a], stores, 20))
    for s in stores:
        ids = generation_ids(after[s])
        assert old[s] not in ids and len(ids) == 1, f"store {s}: {ids}"
        assert cenv.computations("report", str(s)) == 2

    # a reset while a generation runs: its lease write (on the key's shard) is refused
    for s in stores:
        assert httpx.post(f"{b}/reports/{s}/reset", timeout=30).status_code == 200
    refused_before = summed(cenv, "lease_sets_refused")

    async def reset_during_generation() -> tuple[dict[int, httpx.Response], dict[int, list[httpx.Response]]]:
        async with httpx.AsyncClient(timeout=120) as c:
            running = {s: asyncio.ensure_future(c.get(f"{a}/reports/{s}")) for s in stores}
            # each store's third generation has started (it takes GEN_DELAY; a slow poll
            # that sees it finished makes the reset come after it, checked below)
            await asyncio.to_thread(wait_until, lambda: cenv.sqlval(
                "SELECT count(*) FROM computations WHERE kind = 'report' AND subject = ANY($1)",
                [str(s) for s in stores]) == 3 * len(stores), 30, "generations started")
            resets = await asyncio.gather(*(c.post(f"{b}/reports/{s}/reset") for s in stores))
            assert all(r.status_code == 200 for r in resets)
            late = await reads([a, b], stores, 10)
            return {s: await f for s, f in running.items()}, late

    early, late = asyncio.run(reset_during_generation())
    for s in stores:
        stale = early[s].json()
        epoch = int(cenv.sqlval("SELECT report_epoch FROM stores WHERE id = $1", s))
        assert stale["epoch"] == epoch - 1  # computed before the reset: fine for that early reader
        for r in late[s]:
            assert r.json()["generation_id"] != stale["generation_id"], f"store {s}: old report after the reset"
            assert r.json()["epoch"] == epoch
        stored = cenv.sql("SELECT generation_id FROM reports WHERE store_id = $1", s)
        assert len(stored) == 1 and stored[0]["generation_id"] != stale["generation_id"]
        cached = rc.execute_command("TCACHE.GET", report_key(s))
        assert cached is not None and json.loads(cached)["generation_id"] == stored[0]["generation_id"]
        assert cenv.computations("report", str(s)) == 4
    finished_after_reset = int(cenv.sqlval(
        """SELECT count(*) FROM computations c WHERE c.id = ANY($1) AND c.finished_at >
           (SELECT max(e.at) FROM app_events e WHERE e.kind = 'reset' AND e.subject = 'store:' || c.subject)""",
        [int(early[s].json()["generation_id"]) for s in stores]))
    assert summed(cenv, "lease_sets_refused") >= refused_before + finished_after_reset


def test_role_change_drops_exactly_its_holders_on_every_shard(cenv: Env, rc: RedisCluster) -> None:
    role = "support"
    users = range(1, USERS + 1)
    asyncio.run(check_all([cenv.a.url, cenv.b.url], users, PERMS))  # warm every user's entry
    keys = {u: f"permissions:user:{u}" for u in users}
    assert len({shard(rc, k) for k in keys.values()}) == 3
    assert all(rc.execute_command("PERM.GET", k) is not None for k in keys.values())
    holders = {int(r["user_id"]) for r in cenv.sql(
        "SELECT ur.user_id FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE r.name = $1", role)}
    assert len({shard(rc, keys[u]) for u in holders}) == 3 and len(holders) < USERS
    loads_before = cenv.computations("permissions")

    resp = httpx.put(f"{cenv.b.url}/roles/{role}/permissions",
                     json={"permissions": ["tickets:*", "stores:write"]}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["cache_entries_dropped"] == len(holders)  # the cluster-wide count
    for u in users:
        present = rc.execute_command("PERM.GET", keys[u]) is not None
        assert present == (u not in holders), f"user {u}: holder={u in holders} cached={present}"

    answers = asyncio.run(check_all([cenv.a.url, cenv.b.url], users, PERMS))
    now = grants(cenv)
    for u in users:
        assert answers[u]["allowed"] == {p: allows(now[u], p) for p in PERMS}, f"user {u}"
        assert answers[u]["source"] == ("db" if u in holders else "cache")
    assert cenv.computations("permissions") == loads_before + len(holders)
    assert any(answers[u]["allowed"]["stores:write"] for u in holders)

    resp = httpx.post(f"{cenv.a.url}/admin/permissions/invalidate", timeout=30)
    assert resp.status_code == 200 and resp.json()["cache_entries_dropped"] == USERS
    assert all(rc.execute_command("PERM.GET", k) is None for k in keys.values())


def test_prefix_invalidation_on_every_shard(cenv: Env, rc: RedisCluster) -> None:
    ids = range(1, 10)
    assert len({shard(rc, f"persona:lua:{i}") for i in ids}) == 3
    with httpx.Client(timeout=30) as http:
        def version(base: str, lang: str, pid: int) -> int:
            r = http.get(f"{base}/personas/{lang}/{pid}")
            assert r.status_code == 200, r.text
            return int(r.json()["version"])

        for lang in ("lua", "python"):
            for pid in ids:
                assert version(cenv.a.url, lang, pid) == version(cenv.b.url, lang, pid) == 1
        assert cenv.computations_like("persona", "lua:%") == cenv.computations_like("persona", "python:%") == len(ids)
        cenv.sql("UPDATE personas SET prompt = prompt || ' (v2)', version = version + 1 WHERE lang = 'lua'")
        r = http.post(f"{cenv.a.url}/personas/lua/invalidate")
        assert r.status_code == 200, r.text
        assert r.json() == {"prefix": "persona:lua:", "cache_entries_dropped": len(ids)}
        for pid in ids:
            for base in (cenv.b.url, cenv.a.url):
                assert version(base, "lua", pid) == 2
                assert version(base, "python", pid) == 1
    assert cenv.computations_like("persona", "lua:%") == 2 * len(ids)
    assert cenv.computations_like("persona", "python:%") == len(ids)


def test_voice_writes_drop_the_other_workers_l1_on_every_shard(cenv: Env, rc: RedisCluster) -> None:
    providers = list(PROVIDER_VOICES)
    assert len({shard(rc, f"voices:{p}") for p in providers}) == 3
    a, b = cenv.a.url, cenv.b.url
    with httpx.Client(timeout=30) as http:
        def l1(base: str) -> dict[str, Any]:
            stats: dict[str, Any] = http.get(f"{base}/debug/l1").json()
            return stats

        def names(base: str, provider: str) -> dict[int, str]:
            r = http.get(f"{base}/voices/{provider}")
            assert r.status_code == 200, r.text
            return {int(v["id"]): str(v["name"]) for v in r.json()["voices"]}

        def b_holds_all() -> bool:
            for p in providers:
                names(b, p)
            return bool(l1(b)["l1_active"]) and int(l1(b)["l1_entries"]) == len(providers)

        for p in providers:
            names(a, p)  # the API call, once per provider
        # an L2 read fills the L1 (a fill overlapping an invalidation push is discarded; the next read fills it)
        wait_until(b_holds_all, 10, "B's L1 holds every provider's catalogue")
        loads = {p: cenv.computations("voices-api", p) for p in providers}
        assert loads == dict.fromkeys(providers, 1)

        for p, voice_id in PROVIDER_VOICES.items():
            r = http.put(f"{a}/voices/{voice_id}", json={"name": f"{p}-renamed"})
            assert r.status_code == 200 and r.json()["cache_entries_dropped"] == 1, r.text
            # B's L1 drops exactly that provider's copy when the push from its shard arrives
            wait_until(lambda: int(l1(b)["l1_entries"]) == len(providers) - 1, 10, f"B's L1 drops voices:{p}")
            hits, misses = int(l1(b)["l1_hits"]), int(l1(b)["l1_misses"])
            for other in providers:
                if other != p:
                    names(b, other)
            assert int(l1(b)["l1_hits"]) == hits + len(providers) - 1  # the others: still in B's L1
            assert names(b, p)[voice_id] == f"{p}-renamed"
            assert int(l1(b)["l1_misses"]) == misses + 1
            assert cenv.computations("voices-api", p) == 2
            wait_until(b_holds_all, 10, f"B's L1 holds voices:{p} again")


def test_dashboard_combines_the_primaries(cenv: Env) -> None:
    with httpx.Client(timeout=30) as http:
        assert http.get(f"{cenv.a.url}/healthz").json()["ok"] is True
        d = http.get(f"{cenv.a.url}/api/dashboard").json()
    per_node = node_stats(cenv)
    assert d["nodes"] == 3 and d["server"].endswith("cluster of 3 primaries")
    assert sum(1 for s in per_node if int(s["entries"]) > 0) == 3
    for name in ("entries", "sets", "hits", "misses", "leases_granted", "perm_misses"):
        total = sum(int(s[name]) for s in per_node)
        assert d["stats"][name] == d["info"][f"tcache_{name}"] == total, name
    assert d["info"]["tcache_cluster_invalidation"] == "coordinated"
    gate = next(g for g in d["gates"] if g["name"] == "report")
    assert gate["checked"] == d["info"]["tcache_gate_report"]["checked"] > 0
    for n in nodes(cenv):  # the app set its gate on every primary
        with redis.Redis(port=n.port, decode_responses=True) as c:
            assert "report" in c.execute_command("TCACHE.GATE.LIST")
