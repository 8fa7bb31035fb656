"""AI report service: the race, one generation under load, reset, the quality gate."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import httpx
import pytest
import redis
from redis_tcache import GateRejected

from tests.conftest import Env, wait_until

HEAVY = os.environ.get("TCACHE_APP_SKIP_HEAVY") != "1"


def stat(env: Env, name: str) -> int:
    """One counter of TCACHE.STATS (a map, or in RESP2 a flat name/value array)."""
    reply = env.redis().execute_command("TCACHE.STATS")
    if isinstance(reply, list):
        reply = dict(zip(reply[0::2], reply[1::2], strict=True))
    return int(reply[name])


def read(http: httpx.Client, base: str, store: int, **params: str) -> dict[str, Any]:
    r = http.get(f"{base}/reports/{store}", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def many_reads(urls: list[str], store: int, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=120, limits=limits) as c:
        return await asyncio.gather(*(c.get(f"{urls[i % len(urls)]}/reports/{store}") for i in range(n)))


def test_race_reads_both_and_names_the_winner(env: Env, http: httpx.Client) -> None:
    first = read(http, env.a.url, 1)
    assert first["store_id"] == 1 and first["risk_score"] > 0
    before = int(env.sqlval("SELECT count(*) FROM race_log"))
    r = http.get(f"{env.b.url}/reports/1/race")
    assert r.status_code == 200, r.text
    race = r.json()
    assert race["db"]["found"] and race["cache"]["found"]
    assert race["db"]["seconds"] > 0 and race["cache"]["seconds"] > 0
    faster = "cache" if race["cache"]["seconds"] <= race["db"]["seconds"] else "db"
    assert race["winner"] == faster
    assert race["shown"].startswith("cache ") and " vs DB " in race["shown"]
    assert int(env.sqlval("SELECT count(*) FROM race_log")) == before + 1
    # a store whose report exists nowhere: both miss, nobody wins
    env.sql("DELETE FROM reports WHERE store_id = 49")
    race = http.get(f"{env.a.url}/reports/49/race").json()
    assert race["winner"] == "none" and not race["db"]["found"] and not race["cache"]["found"]


@pytest.mark.skipif(not HEAVY, reason="heavy case: run once (TCACHE_APP_SKIP_HEAVY=1)")
def test_200_concurrent_requests_start_one_generation(env: Env) -> None:
    store = 3
    assert env.computations("report", str(store)) == 0
    responses = asyncio.run(many_reads([env.a.url, env.b.url], store, 200))
    assert [r.status_code for r in responses] == [200] * 200
    generations = {r.json()["generation_id"] for r in responses}
    assert len(generations) == 1
    assert env.computations("report", str(store)) == 1
    stored = env.sqlval("SELECT generation_id FROM reports WHERE store_id = $1", store)
    assert stored == generations.pop()


def test_reset_during_generation_never_writes_old_report_back(env: Env, http: httpx.Client) -> None:
    store = 5
    old_epoch = int(env.sqlval("SELECT report_epoch FROM stores WHERE id = $1", store))
    refused_before = stat(env, "lease_sets_refused")

    async def scenario() -> tuple[httpx.Response, list[httpx.Response], dict[str, Any]]:
        async with httpx.AsyncClient(timeout=120) as c:
            first = asyncio.ensure_future(c.get(f"{env.a.url}/reports/{store}"))
            # the generation is running (its computation is logged as 'running')
            await asyncio.to_thread(wait_until, lambda: env.sqlval(
                "SELECT count(*) FROM computations WHERE kind='report' AND subject=$1 AND outcome='running'",
                str(store)) == 1, 30, "generation started")
            reset = await c.post(f"{env.b.url}/reports/{store}/reset")
            assert reset.status_code == 200, reset.text
            # readers arriving after the reset answered, on both workers, while the old
            # generation is still running
            after = await asyncio.gather(*(c.get(f"{(env.a.url, env.b.url)[i % 2]}/reports/{store}")
                                           for i in range(20)))
            return await first, after, reset.json()

    first, after, _ = asyncio.run(scenario())
    assert first.status_code == 200
    old = first.json()
    assert old["epoch"] == old_epoch  # computed before the reset: fine for that early reader
    new_epoch = int(env.sqlval("SELECT report_epoch FROM stores WHERE id = $1", store))
    assert new_epoch == old_epoch + 1
    for r in after:
        assert r.status_code == 200, r.text
        assert r.json()["generation_id"] != old["generation_id"], "a reader after the reset got the old report"
        assert r.json()["epoch"] == new_epoch
    # the old generation wrote nothing back, in PostgreSQL or in tcache
    stored = env.sql("SELECT generation_id, epoch FROM reports WHERE store_id = $1", store)
    assert len(stored) == 1 and stored[0]["generation_id"] != old["generation_id"]
    cached = env.redis().execute_command("TCACHE.GET", f"report:{store}")
    assert cached is not None and json.loads(cached)["generation_id"] == stored[0]["generation_id"]
    assert env.computations("report", str(store)) == 2
    # when the old generation finished after the reset (the usual case: it takes 1 s), its
    # lease write reached the server and was refused there
    finished_after_reset = env.sqlval(
        """SELECT c.finished_at > e.at FROM computations c, app_events e
           WHERE c.id = $1 AND e.kind = 'reset' AND e.subject = $2""", old["generation_id"], f"store:{store}")
    if finished_after_reset:
        assert stat(env, "lease_sets_refused") >= refused_before + 1


def test_after_reset_no_reader_in_any_worker_sees_the_old_report(env: Env, http: httpx.Client) -> None:
    store = 7
    old = read(http, env.a.url, store)
    for base in (env.a.url, env.b.url):  # both workers serve it from the cache now
        assert read(http, base, store)["generation_id"] == old["generation_id"]
    before = env.computations("report", str(store))
    r = http.post(f"{env.a.url}/reports/{store}/reset")
    assert r.status_code == 200 and r.json()["cache_entries_dropped"] == 1
    assert env.sqlval("SELECT count(*) FROM reports WHERE store_id = $1", store) == 0
    responses = asyncio.run(many_reads([env.b.url, env.a.url], store, 40))
    ids = {resp.json()["generation_id"] for resp in responses}
    assert old["generation_id"] not in ids
    assert len(ids) == 1
    assert env.computations("report", str(store)) == before + 1
    events = env.sql("SELECT kind, subject FROM app_events WHERE kind = 'reset' AND subject = $1", f"store:{store}")
    assert len(events) == 1


@pytest.mark.parametrize(("fault", "pointer"), [("zero_risk", "/risk_score"), ("broken_json", "/")])
def test_quality_gate_refuses_before_anything_is_written(env: Env, http: httpx.Client, fault: str,
                                                         pointer: str) -> None:
    store = 9
    good = read(http, env.a.url, store)
    r = http.post(f"{env.b.url}/reports/{store}/regenerate", json={"fault": fault})
    assert r.status_code == 422, r.text
    detail = r.json()
    assert detail["gate"] == "report" and detail["pointer"] == pointer
    assert "report" in detail["detail"] and detail["reason"]
    # the generation ran (and is logged), but nothing was written: the good report stays
    assert env.sqlval("SELECT generation_id FROM reports WHERE store_id = $1", store) == good["generation_id"]
    assert read(http, env.a.url, store)["generation_id"] == good["generation_id"]
    assert read(http, env.a.url, store, source="db")["generation_id"] == good["generation_id"]


def test_gate_lives_in_the_server(env: Env) -> None:
    """The app binds the gate to the prefix report:, so even a raw write is checked."""
    r = env.redis()
    good = r.execute_command("TCACHE.GET", "report:9") or r.execute_command("TCACHE.GET", "report:1")
    assert good is not None
    bad = json.loads(good)
    bad["risk_score"] = 0
    with pytest.raises(GateRejected) as e:
        r.execute_command("TCACHE.SET", "report:48", json.dumps(bad), 60)
    assert e.value.gate == "report"
    with pytest.raises(redis.ResponseError):
        r.execute_command("TCACHE.SET", "report:48", "{not json", 60)
    assert r.execute_command("TCACHE.GET", "report:48") is None


def test_regenerate_replaces_the_report(env: Env, http: httpx.Client) -> None:
    store = 11
    first = read(http, env.a.url, store)
    r = http.post(f"{env.a.url}/reports/{store}/regenerate", json={})
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["generation_id"] != first["generation_id"]
    for base in (env.a.url, env.b.url):
        assert read(http, base, store)["generation_id"] == new["generation_id"]
