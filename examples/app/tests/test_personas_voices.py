"""Personas: decorator caching and prefix invalidation. Voices: a write invalidates by tag
and the other worker's L1 near cache drops its copy."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Env, wait_until


def persona(http: httpx.Client, base: str, lang: str, pid: int) -> dict[str, Any]:
    r = http.get(f"{base}/personas/{lang}/{pid}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_prefix_invalidation_drops_one_language_only(env: Env, http: httpx.Client) -> None:
    ids = range(1, 6)
    for lang in ("lua", "python"):
        for pid in ids:
            persona(http, env.a.url, lang, pid)
            persona(http, env.b.url, lang, pid)  # served from the cache
    lua_loads = env.computations_like("persona", "lua:%")
    py_loads = env.computations_like("persona", "python:%")
    assert lua_loads == py_loads == len(ids)
    # a bulk change of every lua persona, straight in the database
    env.sql("UPDATE personas SET prompt = prompt || ' (v2 style guide)', version = version + 1 WHERE lang = 'lua'")
    assert persona(http, env.a.url, "lua", 1)["version"] == 1  # still the cached copy
    r = http.post(f"{env.b.url}/personas/lua/invalidate")
    assert r.status_code == 200, r.text
    assert r.json() == {"prefix": "persona:lua:", "cache_entries_dropped": len(ids)}
    for pid in ids:
        for base in (env.a.url, env.b.url):
            assert persona(http, base, "lua", pid)["version"] == 2
            assert persona(http, base, "python", pid)["version"] == 1
    assert env.computations_like("persona", "lua:%") == 2 * len(ids)
    assert env.computations_like("persona", "python:%") == len(ids)
    assert env.redis().execute_command("TCACHE.GET", "persona:python:1") is not None


def test_decorator_invalidate_one_persona(env: Env, http: httpx.Client) -> None:
    before = persona(http, env.a.url, "rust", 3)
    r = http.put(f"{env.a.url}/personas/rust/3", json={"prompt": "You are a patient borrow-checker."})
    assert r.status_code == 200, r.text
    after = persona(http, env.b.url, "rust", 3)
    assert after["version"] == before["version"] + 1
    assert after["prompt"] == "You are a patient borrow-checker."
    assert http.get(f"{env.a.url}/personas/rust/999").status_code == 404


def l1(http: httpx.Client, base: str) -> dict[str, Any]:
    r = http.get(f"{base}/debug/l1")
    assert r.status_code == 200, r.text
    stats: dict[str, Any] = r.json()
    return stats


def test_voice_write_invalidates_by_tag_and_the_other_workers_l1(env: Env, http: httpx.Client) -> None:
    a, b = env.a.url, env.b.url
    va = http.get(f"{a}/voices/acme").json()  # the API call; the L1 fills from the next read
    vb = http.get(f"{b}/voices/acme").json()
    assert va["pid"] != vb["pid"]  # two processes
    assert va["voices"] == vb["voices"]
    # an L2 read fills the L1 (a fill that overlaps an invalidation push is discarded and
    # the next read fills it: the writer's own SET sends one, asynchronously)
    wait_until(lambda: http.get(f"{a}/voices/acme").status_code == 200 and l1(http, a)["l1_entries"] == 1,
               10, "A's L1 holds voices:acme")
    wait_until(lambda: http.get(f"{b}/voices/polly").status_code == 200 and http.get(f"{b}/voices/acme")
               .status_code == 200 and l1(http, b)["l1_entries"] == 2, 10, "B's L1 holds voices:acme and polly")
    sb = l1(http, b)
    assert sb["l1_active"]
    loads = env.computations("voices-api", "acme")
    # a second read in B is served by its L1: no Redis read, no API call
    assert http.get(f"{b}/voices/acme").json()["voices"] == vb["voices"]
    assert l1(http, b)["l1_hits"] == sb["l1_hits"] + 1
    assert env.computations("voices-api", "acme") == loads

    voice_id = va["voices"][0]["id"]
    r = http.put(f"{a}/voices/{voice_id}", json={"name": "acme-renamed"})
    assert r.status_code == 200 and r.json()["provider"] == "acme"
    assert r.json()["cache_entries_dropped"] == 1
    assert l1(http, a)["l1_entries"] == 0  # the writer's own L1: dropped before the answer
    # the other worker's L1 drops its copy as soon as the server's message arrives
    wait_until(lambda: l1(http, b)["l1_entries"] == 1, 10, "worker B's L1 drops voices:acme")
    before = l1(http, b)
    names = {v["id"]: v["name"] for v in http.get(f"{b}/voices/acme").json()["voices"]}
    assert names[voice_id] == "acme-renamed"
    after = l1(http, b)
    assert after["l1_misses"] == before["l1_misses"] + 1  # acme was not in B's L1 any more
    http.get(f"{b}/voices/polly")  # another tag: still in B's L1
    assert l1(http, b)["l1_hits"] == after["l1_hits"] + 1
    names = {v["id"]: v["name"] for v in http.get(f"{a}/voices/acme").json()["voices"]}
    assert names[voice_id] == "acme-renamed"
    assert env.computations("voices-api", "acme") == loads + 1
