"""The reference application: FastAPI + PostgreSQL (asyncpg) + tcache (redis_tcache).

Four services that used to glue caching together by hand:

- AI reports: slow generation behind one lease (``get_or_compute``), a race between
  PostgreSQL and tcache, a reset that no reader outlives, a quality gate;
- permissions: ``PERM.CHECK`` first, the four-table JOIN on nil, role/user/all invalidation;
- personas: decorator caching and prefix invalidation (``persona:lua:``);
- voices: an external API behind a tagged cache with an L1 near cache in every worker.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from redis_tcache import AsyncTCache, GateRejected, RawSerializer

from refapp import db
from refapp.config import Settings
from refapp.connection import RedisClient, combine_info, connect, info_per_node, server_name
from refapp.reports import Fault, Report, generate, report_key, report_tags

STATIC = Path(__file__).with_name("static")
REPORT_GATE = "report"


class Services:
    """What one worker process holds: the PostgreSQL pool, the Redis client (one server or a
    cluster: ``TCACHE_APP_CLUSTER``) and the cache."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, redis: RedisClient) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        # Reports are JSON text, cached byte for byte as PostgreSQL keeps them.
        self.reports = AsyncTCache(redis, serializer=RawSerializer())
        # Everything else: Python values as JSON (the client's default serializer).
        self.tc = AsyncTCache(redis)
        # The voices catalogue is read on every page: an L1 copy in each worker, kept
        # coherent by CLIENT TRACKING and the module's invalidation channel (on a cluster:
        # one tracking connection per primary, each subscribed to the channel).
        self.voices_tc = AsyncTCache(redis, l1=True)
        self.store_ids: set[int] = set()
        self.server = ""


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = Settings.from_env()
    pool = await asyncpg.create_pool(settings.dsn, min_size=2, max_size=20)
    redis = connect(settings)
    svc = Services(settings, pool, redis)
    await svc.voices_tc.start()  # the L1's tracking connection(s); on a cluster, finds the nodes
    # The report rule lives in the server: every TCACHE.SET of report:* is checked.
    await svc.tc.gates.set(REPORT_GATE, Report, prefix="report:")
    svc.store_ids = {int(r["id"]) for r in await pool.fetch("SELECT id FROM stores")}
    svc.server = await server_name(redis)
    app.state.services = svc
    app.state.persona_cached = make_persona_reader(svc)
    try:
        yield
    finally:
        await svc.voices_tc.aclose()
        await redis.aclose()
        await pool.close()


app = FastAPI(title="tcache reference application", lifespan=lifespan)
app.mount("/static", StaticFiles(directory=STATIC), name="static")


@app.get("/healthz")
async def healthz(request: Request) -> dict[str, Any]:
    svc = services(request)
    await svc.redis.ping()
    await svc.pool.fetchval("SELECT 1")
    return {"ok": True, "pid": os.getpid()}


@app.get("/", include_in_schema=False)
async def dashboard() -> FileResponse:
    return FileResponse(STATIC / "dashboard.html")


# --- AI reports -------------------------------------------------------------------------

async def report_from_cache(svc: Services, store_id: int) -> str:
    """The report through tcache: one generation per miss, however many readers (a lease).

    On a miss the lease holder takes the report from PostgreSQL if one is stored for the
    current epoch, else generates it (slow) and stores it in PostgreSQL; the client then
    writes it to tcache with the lease, which the server refuses if a reset (tag
    invalidation) happened meanwhile, so an old report is never written back."""
    s = svc.settings

    if store_id not in svc.store_ids:  # never take a lease for a report that cannot exist
        raise HTTPException(404, f"no store {store_id}")

    async def compute() -> str:
        stored = await db.read_report(svc.pool, store_id)
        if stored is not None:
            return stored
        gen = await generate(svc.pool, store_id, s.gen_delay)
        if gen is None:
            raise HTTPException(404, f"no store {store_id}")
        await svc.tc.gates.check(REPORT_GATE, gen.body)  # GateRejected before anything is written
        await db.save_report_if_current(svc.pool, store_id, gen.body, gen.generation_id, gen.epoch)
        return gen.body

    value: str | bytes = await svc.reports.get_or_compute(
        report_key(store_id), compute, s.report_ttl, tags=report_tags(store_id),
        lease_ms=s.lease_ms, wait_ms=s.wait_ms)
    return value.decode() if isinstance(value, bytes) else value


def gate_error(e: GateRejected) -> JSONResponse:
    return JSONResponse(status_code=422, content={
        "detail": f"refused by quality gate '{e.gate}': {e.pointer}: {e.reason}",
        "gate": e.gate, "pointer": e.pointer, "reason": e.reason})


@app.get("/reports/{store_id}")
async def get_report(request: Request, store_id: int, source: str = Query("cache", pattern="^(cache|db)$")) -> Response:
    svc = services(request)
    if source == "db":
        body = await db.read_report(svc.pool, store_id)
        if body is None:
            raise HTTPException(404, f"no report stored for store {store_id}")
    else:
        try:
            body = await report_from_cache(svc, store_id)
        except GateRejected as e:
            return gate_error(e)
    return Response(body, media_type="application/json", headers={"X-Report-Source": source})


@app.get("/reports/{store_id}/race")
async def race(request: Request, store_id: int) -> dict[str, Any]:
    """Read the same report from PostgreSQL and from tcache concurrently; time both."""
    svc = services(request)

    async def timed(coro: Any) -> tuple[float, Any]:
        t0 = time.perf_counter()
        value = await coro
        return time.perf_counter() - t0, value

    (db_s, db_body), (cache_s, cache_body) = await asyncio.gather(
        timed(db.read_report(svc.pool, store_id)), timed(svc.reports.get(report_key(store_id))))
    db_found, cache_found = db_body is not None, cache_body is not None
    if db_found and cache_found:
        winner = "cache" if cache_s <= db_s else "db"
    else:
        winner = "cache" if cache_found else "db" if db_found else "none"
    await svc.pool.execute(
        "INSERT INTO race_log (store_id, db_s, cache_s, db_found, cache_found, winner) VALUES ($1,$2,$3,$4,$5,$6)",
        store_id, db_s, cache_s, db_found, cache_found, winner)
    return {"store_id": store_id, "db": {"seconds": db_s, "found": db_found},
            "cache": {"seconds": cache_s, "found": cache_found}, "winner": winner,
            "shown": f"cache {cache_s:.4f} s vs DB {db_s:.4f} s"}


@app.post("/reports/{store_id}/reset")
async def reset(request: Request, store_id: int) -> dict[str, Any]:
    """Delete the report in PostgreSQL, then in tcache: when this answers, nobody reads it.

    PostgreSQL first (the epoch moves, so a generation in flight cannot store its report
    any more), then the store's tag: the entry goes and any lease on it stops holding."""
    svc = services(request)
    if not await db.reset_report(svc.pool, store_id):
        raise HTTPException(404, f"no store {store_id}")
    dropped = await svc.reports.invalidate_tags(f"store:{store_id}")
    await db.event(svc.pool, "reset", f"store:{store_id}", f"{dropped} cache entries dropped")
    return {"store_id": store_id, "cache_entries_dropped": dropped}


@app.post("/reports/{store_id}/regenerate")
async def regenerate(request: Request, store_id: int,
                     fault: Fault | None = Body(None, embed=True)) -> Response:
    """Generate a new report now. The gate checks it before PostgreSQL or tcache see it:
    422 naming the rule, and the previous good report stays."""
    svc = services(request)
    gen = await generate(svc.pool, store_id, svc.settings.gen_delay, fault)
    if gen is None:
        raise HTTPException(404, f"no store {store_id}")
    try:
        await svc.tc.gates.check(REPORT_GATE, gen.body)
    except GateRejected as e:
        await db.event(svc.pool, "gate-rejected", f"store:{store_id}", f"{e.pointer}: {e.reason}")
        return gate_error(e)
    if not await db.save_report_if_current(svc.pool, store_id, gen.body, gen.generation_id, gen.epoch):
        raise HTTPException(409, "the report was reset during the generation; nothing stored")
    # Write-invalidate: the next reader loads it from PostgreSQL under a lease, which a
    # concurrent reset would break; a direct SET here could race that reset.
    await svc.reports.invalidate_tags(f"store:{store_id}")
    await db.event(svc.pool, "regenerated", f"store:{store_id}", f"generation {gen.generation_id}")
    return Response(gen.body, media_type="application/json")


# --- permissions ------------------------------------------------------------------------

def perm_key(user_id: int) -> str:
    return f"permissions:user:{user_id}"


@app.get("/users/{user_id}/can")
async def can(request: Request, user_id: int, perm: list[str] = Query(...)) -> dict[str, Any]:
    """PERM.CHECK in tcache; on nil (not cached) the JOIN in PostgreSQL, then PERM.SET."""
    svc = services(request)
    key = perm_key(user_id)
    cached = await svc.tc.perm.check(key, *perm)
    if cached is not None:
        answers = [bool(x) for x in (cached if isinstance(cached, list) else [cached])]
        return {"user_id": user_id, "source": "cache", "allowed": dict(zip(perm, answers, strict=True))}
    cid = await db.computation_start(svc.pool, "permissions", str(user_id))
    loaded = await db.user_permissions(svc.pool, user_id)
    await db.computation_end(svc.pool, cid, "done" if loaded else "no-such-user")
    if loaded is None:
        raise HTTPException(404, f"no user {user_id}")
    await svc.tc.perm.set(key, loaded, svc.settings.perm_ttl)
    cached = await svc.tc.perm.check(key, *perm)
    answers = [bool(x) for x in (cached if isinstance(cached, list) else [cached])]
    return {"user_id": user_id, "source": "db", "allowed": dict(zip(perm, answers, strict=True))}


@app.put("/roles/{role}/permissions")
async def put_role_permissions(request: Request, role: str,
                               permissions: list[str] = Body(..., embed=True)) -> dict[str, Any]:
    svc = services(request)
    if not await db.set_role_permissions(svc.pool, role, permissions):
        raise HTTPException(404, f"no role {role}")
    dropped = await svc.tc.perm.inval_role(role)
    await db.event(svc.pool, "role-changed", role, f"{dropped} users' permissions dropped")
    return {"role": role, "permissions": permissions, "cache_entries_dropped": dropped}


@app.put("/users/{user_id}/roles")
async def put_user_roles(request: Request, user_id: int, roles: list[str] = Body(..., embed=True)) -> dict[str, Any]:
    svc = services(request)
    if not await db.set_user_roles(svc.pool, user_id, roles):
        raise HTTPException(404, f"no user {user_id}")
    dropped = await svc.tc.perm.inval_user(perm_key(user_id))
    await db.event(svc.pool, "user-changed", str(user_id), f"roles {','.join(roles)}")
    return {"user_id": user_id, "roles": roles, "cache_entries_dropped": dropped}


@app.post("/admin/permissions/invalidate")
async def invalidate_all_permissions(request: Request) -> dict[str, Any]:
    svc = services(request)
    dropped = await svc.tc.perm.inval_all()
    await db.event(svc.pool, "permissions-flushed", "*", f"{dropped} entries dropped")
    return {"cache_entries_dropped": dropped}


# --- personas ---------------------------------------------------------------------------

def make_persona_reader(svc: Services) -> Any:
    @svc.tc.cached(ttl=3600, key="persona:{lang}:{persona_id}", tags=["personas", "personas:{lang}"])
    async def persona(lang: str, persona_id: int) -> dict[str, Any] | None:
        cid = await db.computation_start(svc.pool, "persona", f"{lang}:{persona_id}")
        row = await db.persona(svc.pool, lang, persona_id)
        await asyncio.sleep(svc.settings.persona_delay)  # rendering the persona's content
        await db.computation_end(svc.pool, cid, "done" if row else "missing")
        if row is None:
            return None
        return {**row, "rendered": f"[{row['name']} v{row['version']}] {row['prompt']}"}

    return persona


@app.get("/personas/{lang}/{persona_id}")
async def get_persona(request: Request, lang: str, persona_id: int) -> dict[str, Any]:
    value: dict[str, Any] | None = await request.app.state.persona_cached(lang=lang, persona_id=persona_id)
    if value is None:
        raise HTTPException(404, f"no persona {lang}/{persona_id}")
    return value


@app.put("/personas/{lang}/{persona_id}")
async def put_persona(request: Request, lang: str, persona_id: int,
                      prompt: str = Body(..., embed=True)) -> dict[str, Any]:
    svc = services(request)
    version = await db.update_persona(svc.pool, lang, persona_id, prompt)
    if version is None:
        raise HTTPException(404, f"no persona {lang}/{persona_id}")
    await request.app.state.persona_cached.invalidate(lang=lang, persona_id=persona_id)
    return {"lang": lang, "id": persona_id, "version": version}


@app.post("/personas/{lang}/invalidate")
async def invalidate_personas(request: Request, lang: str) -> dict[str, Any]:
    """Pattern invalidation: every cached persona of a language (``persona:lua:*``)."""
    svc = services(request)
    dropped = await svc.tc.invalidate_prefix(f"persona:{lang}:")
    await db.event(svc.pool, "personas-invalidated", f"persona:{lang}:*", f"{dropped} entries dropped")
    return {"prefix": f"persona:{lang}:", "cache_entries_dropped": dropped}


# --- voices -----------------------------------------------------------------------------

def voices_key(provider: str) -> str:
    return f"voices:{provider}"


@app.get("/voices/{provider}")
async def get_voices(request: Request, provider: str) -> dict[str, Any]:
    """The voice catalogue of a provider (an external API: slow), tagged, with an L1 copy."""
    svc = services(request)

    async def fetch_from_api() -> list[dict[str, Any]]:
        cid = await db.computation_start(svc.pool, "voices-api", provider)
        await asyncio.sleep(svc.settings.voice_delay)
        rows = await db.voices(svc.pool, provider)
        await db.computation_end(svc.pool, cid, "done")
        return rows

    voices: list[dict[str, Any]] = await svc.voices_tc.get_or_compute(
        voices_key(provider), fetch_from_api, 3600, tags=["voices", f"provider:{provider}"])
    if not voices:
        raise HTTPException(404, f"no voices for provider {provider}")
    return {"provider": provider, "pid": os.getpid(), "voices": voices}


@app.put("/voices/{voice_id}")
async def put_voice(request: Request, voice_id: int, name: str = Body(..., embed=True)) -> dict[str, Any]:
    svc = services(request)
    provider = await db.update_voice(svc.pool, voice_id, name)
    if provider is None:
        raise HTTPException(404, f"no voice {voice_id}")
    dropped = await svc.voices_tc.invalidate_tags(f"provider:{provider}")
    await db.event(svc.pool, "voice-changed", str(voice_id), f"provider {provider}, {dropped} entries dropped")
    return {"voice_id": voice_id, "provider": provider, "cache_entries_dropped": dropped}


@app.get("/debug/l1")
async def debug_l1(request: Request) -> dict[str, Any]:
    """This worker's L1 counters (entries, hits, misses, invalidations), so a test can watch
    it drop a copy."""
    svc = services(request)
    stats = svc.voices_tc.local_stats()
    return {"pid": os.getpid(), **{k: v for k, v in stats.items() if k.startswith("l1_")}}


# --- dashboard data ------------------------------------------------------------------------

def _num(v: Any) -> Any:
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            try:
                return float(v)
            except ValueError:
                return v
    return v


@app.get("/api/dashboard")
async def dashboard_data(request: Request) -> dict[str, Any]:
    """TCACHE.STATS, INFO tcache, the race log, the events and the computation counts.

    On a cluster both are per node: the client sums TCACHE.STATS over the primaries, and
    INFO tcache is read on each primary and combined the same way (``nodes``: how many)."""
    svc = services(request)
    stats_raw = await svc.tc.server_stats()
    gates_raw = stats_raw.pop("gates", None) if isinstance(stats_raw, dict) else None
    stats = {str(k): _num(v) for k, v in stats_raw.items()}
    gates = []
    if isinstance(gates_raw, dict):
        for name, g in gates_raw.items():
            gd = {str(k): _num(v) for k, v in (g.items() if isinstance(g, dict) else [])}
            gates.append({"name": str(name), **gd})
    per_node = await info_per_node(svc.redis, "tcache")
    info = {k: _num(v) for k, v in combine_info(per_node).items()}
    races = await svc.pool.fetch(
        "SELECT * FROM (SELECT id, store_id, db_s, cache_s, db_found, cache_found, winner, "
        "extract(epoch FROM at)::float8 AS at FROM race_log ORDER BY id DESC LIMIT 120) t ORDER BY id")
    events = await svc.pool.fetch(
        "SELECT id, kind, subject, detail, extract(epoch FROM at)::float8 AS at "
        "FROM app_events ORDER BY id DESC LIMIT 20")
    comps = await svc.pool.fetch("SELECT kind, count(*) AS n FROM computations GROUP BY kind")
    return {"server": svc.server, "nodes": len(per_node), "stats": stats, "gates": gates, "info": info,
            "races": [dict(r) for r in races], "events": [dict(e) for e in events],
            "computations": {r["kind"]: r["n"] for r in comps}}
