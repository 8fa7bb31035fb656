"""Permission service: PERM.CHECK first, the JOIN on nil, role/user/all invalidation."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from refapp.db import USERS
from tests.conftest import Env

PERMS = ["reports:export", "stores:write", "users:read"]


def grants(env: Env) -> dict[int, set[str]]:
    """Every user's permissions, as PostgreSQL says now."""
    out: dict[int, set[str]] = {u: set() for u in range(1, USERS + 1)}
    for r in env.sql("""SELECT ur.user_id, p.name FROM user_roles ur
                        JOIN role_permissions rp ON rp.role_id = ur.role_id
                        JOIN permissions p ON p.id = rp.permission_id"""):
        out[int(r["user_id"])].add(r["name"])
    return out


def allows(granted: set[str], perm: str) -> bool:
    """The matching rule of PERM.CHECK: exact, or a stored `prefix:*`."""
    return any(g == perm or (g.endswith(":*") and perm.startswith(g[:-1])) for g in granted)


def expected(env: Env, user: int, perm: str) -> bool:
    return allows(grants(env)[user], perm)


async def check_all(base: list[str], users: range, perms: list[str]) -> dict[int, dict[str, Any]]:
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(timeout=60, limits=limits) as c:
        sem = asyncio.Semaphore(32)

        async def one(u: int) -> tuple[int, dict[str, Any]]:
            async with sem:
                r = await c.get(f"{base[u % len(base)]}/users/{u}/can", params=[("perm", p) for p in perms])
                assert r.status_code == 200, r.text
                body: dict[str, Any] = r.json()
                return u, body

        return dict(await asyncio.gather(*(one(u) for u in users)))


def test_check_loads_from_postgres_on_nil_then_serves_from_cache(env: Env, http: httpx.Client) -> None:
    before = env.computations("permissions", "10")
    r1 = http.get(f"{env.a.url}/users/10/can", params={"perm": "reports:read"}).json()
    r2 = http.get(f"{env.b.url}/users/10/can", params={"perm": "reports:read"}).json()
    assert r1["source"] == "db" and r2["source"] == "cache"
    assert r1["allowed"] == r2["allowed"] == {"reports:read": expected(env, 10, "reports:read")}
    assert env.computations("permissions", "10") == before + 1
    assert env.redis().execute_command("PERM.GET", "permissions:user:10") is not None
    assert http.get(f"{env.a.url}/users/99999/can", params={"perm": "x"}).status_code == 404


def test_role_change_fixes_every_holder_and_keeps_the_others(env: Env) -> None:
    role = "analyst"
    users = range(1, USERS + 1)
    asyncio.run(check_all([env.a.url, env.b.url], users, PERMS))  # warm every user's entry
    holders = {int(r["user_id"]) for r in env.sql(
        "SELECT ur.user_id FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE r.name = $1", role)}
    assert 0 < len(holders) < USERS
    r = env.redis()
    assert all(r.execute_command("PERM.GET", f"permissions:user:{u}") is not None for u in users)
    loads_before = env.computations("permissions")

    resp = httpx.put(f"{env.b.url}/roles/{role}/permissions",
                     json={"permissions": ["stores:write", "stores:read"]}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["cache_entries_dropped"] == len(holders)
    # exactly the holders' entries are gone
    for u in users:
        present = r.execute_command("PERM.GET", f"permissions:user:{u}") is not None
        assert present == (u not in holders), f"user {u}: holder={u in holders} cached={present}"

    answers = asyncio.run(check_all([env.a.url, env.b.url], users, PERMS))
    now = grants(env)
    for u in users:
        want = {p: allows(now[u], p) for p in PERMS}
        assert answers[u]["allowed"] == want, f"user {u}"
        assert answers[u]["source"] == ("db" if u in holders else "cache")
    assert env.computations("permissions") == loads_before + len(holders)
    # the change really changed answers for some holders
    assert any(answers[u]["allowed"]["stores:write"] for u in holders)


def test_user_change_and_admin_drop_all(env: Env, http: httpx.Client) -> None:
    for u in (20, 21, 22):
        http.get(f"{env.a.url}/users/{u}/can", params={"perm": "audit:read"})
    r = env.redis()
    resp = http.put(f"{env.a.url}/users/20/roles", json={"roles": ["auditor"]})
    assert resp.status_code == 200 and resp.json()["cache_entries_dropped"] == 1
    assert r.execute_command("PERM.GET", "permissions:user:20") is None
    assert r.execute_command("PERM.GET", "permissions:user:21") is not None
    body = http.get(f"{env.b.url}/users/20/can", params={"perm": "audit:read"}).json()
    assert body == {"user_id": 20, "source": "db", "allowed": {"audit:read": True}}
    resp = http.post(f"{env.b.url}/admin/permissions/invalidate")
    assert resp.status_code == 200 and resp.json()["cache_entries_dropped"] >= 3
    assert all(r.execute_command("PERM.GET", f"permissions:user:{u}") is None for u in (20, 21, 22))
