"""PostgreSQL side: schema, deterministic seed data and the queries of the four services."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import asyncpg

SCHEMA = Path(__file__).with_name("schema.sql")

# Seed sizes (deterministic: the same data on every run).
STORES = 50
SALES_DAYS = 90
USERS = 300
PERSONA_LANGS = ("lua", "python", "rust")
PERSONAS_PER_LANG = 20
PROVIDERS = ("acme", "polly", "vocalis")
VOICES_PER_PROVIDER = 30

ROLES: dict[str, list[str]] = {
    "viewer": ["reports:read", "voices:read", "personas:read"],
    "editor": ["reports:read", "reports:write", "personas:read", "personas:write"],
    "analyst": ["reports:read", "reports:export", "stores:read"],
    "support": ["users:read", "tickets:*"],
    "billing": ["invoices:*", "stores:read"],
    "voice-admin": ["voices:*"],
    "auditor": ["reports:read", "users:read", "audit:read"],
    "admin": ["users:*", "roles:*", "reports:*", "stores:*"],
}
PERMISSIONS: list[str] = sorted(
    {p for perms in ROLES.values() for p in perms}
    | {"reports:delete", "audit:write", "voices:write", "personas:delete"}
)


async def create_and_seed(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(SCHEMA.read_text())
            await seed(conn)
    finally:
        await conn.close()


async def seed(conn: asyncpg.Connection) -> None:
    rnd = random.Random(1414)
    regions = ["north", "south", "east", "west"]
    await conn.executemany(
        "INSERT INTO stores (id, name, region) VALUES ($1, $2, $3)",
        [(i, f"Store {i:03d}", regions[i % 4]) for i in range(1, STORES + 1)],
    )
    sales = []
    for sid in range(1, STORES + 1):
        base = rnd.uniform(800, 5000)
        risk = rnd.random()
        for day in range(SALES_DAYS):
            sales.append((sid, day, round(base * rnd.uniform(0.7, 1.3), 2),
                          rnd.randint(0, int(1 + 10 * risk)), int(rnd.random() < risk * 0.2)))
    await conn.copy_records_to_table("store_sales", records=sales,
                                     columns=["store_id", "day", "amount", "refunds", "incidents"])

    perm_ids = {p: i for i, p in enumerate(PERMISSIONS, 1)}
    await conn.executemany("INSERT INTO permissions (id, name) VALUES ($1, $2)",
                           [(i, p) for p, i in perm_ids.items()])
    role_ids = {r: i for i, r in enumerate(ROLES, 1)}
    await conn.executemany("INSERT INTO roles (id, name) VALUES ($1, $2)", [(i, r) for r, i in role_ids.items()])
    await conn.executemany(
        "INSERT INTO role_permissions (role_id, permission_id) VALUES ($1, $2)",
        [(role_ids[r], perm_ids[p]) for r, perms in ROLES.items() for p in perms],
    )
    await conn.executemany("INSERT INTO users (id, name) VALUES ($1, $2)",
                           [(u, f"user{u:04d}") for u in range(1, USERS + 1)])
    names = list(ROLES)
    user_roles = []
    for u in range(1, USERS + 1):
        for r in rnd.sample(names[:-1], rnd.randint(1, 3)):
            user_roles.append((u, role_ids[r]))
        if u % 50 == 0:
            user_roles.append((u, role_ids["admin"]))
    await conn.executemany("INSERT INTO user_roles (user_id, role_id) VALUES ($1, $2)", user_roles)

    adjectives = ["calm", "witty", "formal", "curious", "terse", "warm"]
    await conn.executemany(
        "INSERT INTO personas (lang, id, name, prompt) VALUES ($1, $2, $3, $4)",
        [(lang, i, f"{rnd.choice(adjectives)}-{lang}-{i}",
          f"You are a {rnd.choice(adjectives)} {lang} tutor #{i}. Explain with short examples.")
         for lang in PERSONA_LANGS for i in range(1, PERSONAS_PER_LANG + 1)],
    )
    langs = ["en-US", "en-GB", "fr-FR", "de-DE", "es-ES", "ja-JP"]
    voices = []
    vid = 1
    for prov in PROVIDERS:
        for k in range(VOICES_PER_PROVIDER):
            voices.append((vid, prov, f"{prov}-{k:02d}", rnd.choice(langs), rnd.choice(["female", "male", "neutral"])))
            vid += 1
    await conn.executemany("INSERT INTO voices (id, provider, name, language, gender) VALUES ($1, $2, $3, $4, $5)",
                           voices)


# --- computations log --------------------------------------------------------------

async def computation_start(pool: asyncpg.Pool, kind: str, subject: str) -> int:
    cid: int = await pool.fetchval("INSERT INTO computations (kind, subject) VALUES ($1, $2) RETURNING id",
                                   kind, subject)
    return cid


async def computation_end(pool: asyncpg.Pool, cid: int, outcome: str) -> None:
    await pool.execute("UPDATE computations SET finished_at = clock_timestamp(), outcome = $2 WHERE id = $1",
                       cid, outcome)


async def event(pool: asyncpg.Pool, kind: str, subject: str, detail: str = "") -> None:
    await pool.execute("INSERT INTO app_events (kind, subject, detail) VALUES ($1, $2, $3)", kind, subject, detail)


# --- reports -------------------------------------------------------------------------

async def store_inputs(pool: asyncpg.Pool, store_id: int) -> tuple[asyncpg.Record | None, int]:
    """The aggregates a report is generated from, and the store's current report epoch."""
    row = await pool.fetchrow(
        """SELECT s.id, s.name, s.region, s.report_epoch,
                  sum(x.amount)::float8 AS revenue, avg(x.amount)::float8 AS daily,
                  sum(x.refunds) AS refunds, sum(x.incidents) AS incidents, count(x.*) AS days
           FROM stores s LEFT JOIN store_sales x ON x.store_id = s.id
           WHERE s.id = $1 GROUP BY s.id""",
        store_id,
    )
    return row, (int(row["report_epoch"]) if row else 0)


async def save_report_if_current(pool: asyncpg.Pool, store_id: int, body: str, generation_id: int,
                                 epoch: int) -> bool:
    """Write the report unless a reset happened since the generation began (epoch moved).

    The store row is locked first, as the reset does, so the two are serialized."""
    async with pool.acquire() as conn, conn.transaction():
        current = await conn.fetchval("SELECT report_epoch FROM stores WHERE id = $1 FOR UPDATE", store_id)
        if current != epoch:
            return False
        await conn.execute(
            """INSERT INTO reports (store_id, body, generation_id, epoch) VALUES ($1, $2, $3, $4)
               ON CONFLICT (store_id) DO UPDATE
               SET body = EXCLUDED.body, generation_id = EXCLUDED.generation_id,
                   epoch = EXCLUDED.epoch, created_at = now()""",
            store_id, body, generation_id, epoch,
        )
        return True


async def reset_report(pool: asyncpg.Pool, store_id: int) -> bool:
    """Delete the stored report and move the epoch, in one transaction. False: no such store."""
    async with pool.acquire() as conn, conn.transaction():
        epoch = await conn.fetchval(
            "UPDATE stores SET report_epoch = report_epoch + 1 WHERE id = $1 RETURNING report_epoch", store_id)
        if epoch is None:
            return False
        await conn.execute("DELETE FROM reports WHERE store_id = $1", store_id)
        return True


async def read_report(pool: asyncpg.Pool, store_id: int) -> str | None:
    """The report straight from PostgreSQL (joined with its store, as the report page shows both)."""
    body: str | None = await pool.fetchval(
        "SELECT r.body FROM reports r JOIN stores s ON s.id = r.store_id WHERE r.store_id = $1", store_id)
    return body


# --- permissions -------------------------------------------------------------------

async def user_permissions(pool: asyncpg.Pool, user_id: int) -> dict[str, Any] | None:
    """Roles and permissions of a user: the JOIN the permission cache saves."""
    exists = await pool.fetchval("SELECT 1 FROM users WHERE id = $1", user_id)
    if not exists:
        return None
    rows = await pool.fetch(
        """SELECT r.name AS role, p.name AS permission
           FROM users u
           JOIN user_roles ur ON ur.user_id = u.id
           JOIN roles r ON r.id = ur.role_id
           LEFT JOIN role_permissions rp ON rp.role_id = r.id
           LEFT JOIN permissions p ON p.id = rp.permission_id
           WHERE u.id = $1""",
        user_id,
    )
    roles = sorted({r["role"] for r in rows})
    perms = sorted({r["permission"] for r in rows if r["permission"] is not None})
    return {"user_id": user_id, "roles": roles, "permissions": perms}


async def set_role_permissions(pool: asyncpg.Pool, role: str, permissions: list[str]) -> bool:
    async with pool.acquire() as conn, conn.transaction():
        rid = await conn.fetchval("SELECT id FROM roles WHERE name = $1", role)
        if rid is None:
            return False
        for p in permissions:
            await conn.execute(
                "INSERT INTO permissions (id, name) SELECT coalesce(max(id), 0) + 1, $1 FROM permissions "
                "ON CONFLICT (name) DO NOTHING", p)
        await conn.execute("DELETE FROM role_permissions WHERE role_id = $1", rid)
        await conn.execute(
            "INSERT INTO role_permissions (role_id, permission_id) SELECT $1, id FROM permissions WHERE name = ANY($2)",
            rid, permissions)
        return True


async def set_user_roles(pool: asyncpg.Pool, user_id: int, roles: list[str]) -> bool:
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT 1 FROM users WHERE id = $1", user_id):
            return False
        await conn.execute("DELETE FROM user_roles WHERE user_id = $1", user_id)
        await conn.execute(
            "INSERT INTO user_roles (user_id, role_id) SELECT $1, id FROM roles WHERE name = ANY($2)",
            user_id, roles)
        return True


async def users_with_role(pool: asyncpg.Pool, role: str) -> list[int]:
    rows = await pool.fetch(
        "SELECT ur.user_id FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE r.name = $1 ORDER BY 1", role)
    return [int(r["user_id"]) for r in rows]


# --- personas and voices ---------------------------------------------------------------

async def persona(pool: asyncpg.Pool, lang: str, pid: int) -> dict[str, Any] | None:
    row = await pool.fetchrow("SELECT lang, id, name, prompt, version FROM personas WHERE lang = $1 AND id = $2",
                              lang, pid)
    return dict(row) if row else None


async def update_persona(pool: asyncpg.Pool, lang: str, pid: int, prompt: str) -> int | None:
    version: int | None = await pool.fetchval(
        "UPDATE personas SET prompt = $3, version = version + 1 WHERE lang = $1 AND id = $2 RETURNING version",
        lang, pid, prompt)
    return version


async def voices(pool: asyncpg.Pool, provider: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT id, provider, name, language, gender, version FROM voices WHERE provider = $1 ORDER BY id", provider)
    return [dict(r) for r in rows]


async def update_voice(pool: asyncpg.Pool, vid: int, name: str) -> str | None:
    provider: str | None = await pool.fetchval(
        "UPDATE voices SET name = $2, version = version + 1 WHERE id = $1 RETURNING provider", vid, name)
    return provider
