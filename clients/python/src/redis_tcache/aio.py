"""The asyncio cache object :class:`AsyncTCache` (``redis.asyncio.Redis`` or its cluster form)."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from typing import Any, Callable, Optional, TypeVar, Union

from ._base import (
    COORDINATED_FIELD,
    UNREACHABLE,
    CacheBase,
    SchemaT,
    combine_stats,
    join_cursor,
    make_key_builder,
    perm_text,
    schema_text,
    split_cursor,
    wraps,
)
from .commands import FetchReply, TCacheModule
from .l1 import _MISSING, Tracker

__all__ = ["AsyncTCache"]

T = TypeVar("T")
_NOTHING = object()


class AsyncTCache(CacheBase):
    """The asyncio form of :class:`~redis_tcache.TCache` (same calls, awaited).

    Call ``await tc.start()`` once (or let the first call do it): it initializes a cluster
    client and starts the L1 tracking connections.
    """

    def __init__(self, client: Any, namespace: str = "", serializer: Any = None, **options: Any) -> None:
        super().__init__(client, namespace, serializer, **options)
        self.cmd = TCacheModule(client)
        self.perm = AsyncPerms(self)
        self.gates = AsyncGates(self)
        self._started = False
        self._start_lock = asyncio.Lock()

    async def start(self) -> AsyncTCache:
        async with self._start_lock:
            if self._started:
                return self
            if self.cluster:
                await self.client.initialize()
            if self.l1 is not None:
                nodes = self.node_addresses(self._primaries() if self.cluster else [])
                channel = await self._channel()
                self.tracker = Tracker(self.l1, nodes, self.namespace, channel)
                self.tracker.start()
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, self.tracker.wait_ready, self.l1_ready_timeout)
            self._started = True
            return self

    async def _ensure(self) -> None:
        if not self._started:
            await self.start()

    # ---- plumbing ----------------------------------------------------------------------
    async def _channel(self) -> Optional[str]:
        try:
            if self.cluster:
                rep = await self.client.config_get("tcache.invalidation-channel", target_nodes=self._primaries()[0])
            else:
                rep = await self.client.config_get("tcache.invalidation-channel")
        except Exception:  # noqa: BLE001 - an ACL may refuse CONFIG; the channel is optional
            return None
        v = (rep or {}).get("tcache.invalidation-channel") or (rep or {}).get(b"tcache.invalidation-channel")
        if isinstance(v, bytes):
            v = v.decode()
        return v or None

    def _primaries(self) -> list[Any]:
        return list(self.client.get_primaries())

    async def coordinated(self) -> bool:
        """Whether the module coordinates invalidations cluster-wide (read once, cached)."""
        if self._coordinated is None:
            if not self.cluster:
                self._coordinated = True
            else:
                info = await self.client.info("tcache", target_nodes=self._primaries()[0])
                if isinstance(info, Mapping) and info and all(isinstance(v, Mapping) for v in info.values()):
                    info = next(iter(info.values()))
                self._coordinated = str((info or {}).get(COORDINATED_FIELD, "")) == "coordinated"
        return self._coordinated

    async def _each_primary(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> list[Any]:
        return list(await asyncio.gather(*(fn(*args, target_nodes=n) for n in self._primaries())))

    async def _invalidate(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> int:
        await self._ensure()
        if not self.cluster:
            return int(await fn(*args))
        if await self.coordinated():
            return int(await fn(*args, target_nodes=self.pick(self._primaries())))
        return sum(int(x) for x in await self._each_primary(fn, *args))

    async def _run(self, redis_fn: Callable[[], Awaitable[T]], local_fn: Callable[[], T]) -> T:
        b = self.breaker
        if b is not None and b.open:
            if not b.should_probe():
                return local_fn()
            try:
                await self.client.ping()
            except UNREACHABLE as e:
                b.trip(e)
                return local_fn()
            b.recover()
        try:
            await self._ensure()
            return await redis_fn()
        except UNREACHABLE as e:
            if self.degrade(e):
                return local_fn()
            raise

    def _groups(self, keys: list[str]) -> list[list[str]]:
        if not self.cluster:
            return [keys] if keys else []
        by_slot: dict[int, list[str]] = {}
        for k in keys:
            by_slot.setdefault(self.client.keyslot(k), []).append(k)
        return list(by_slot.values())

    async def _l2_read(self, fk: str) -> tuple[Any, bool]:
        l1 = self.l1
        if l1 is not None and l1.active:
            fid = l1.begin_fill(fk)
            try:
                p = self.cmd.pipeline(transaction=False)
                p.get(fk)
                p.tags(fk)
                p.execute_command("PTTL", fk)
                raw, tags, pttl = await p.execute()
            except BaseException:
                l1.cancel_fill(fid)
                raise
            if raw is None:
                l1.cancel_fill(fid)
                return None, False
            value = self.codec.decode(raw)
            l1.end_fill(fid, value, len(raw), tags or (), (pttl / 1000.0) if pttl and pttl > 0 else None)
            return value, True
        raw = await self.cmd.get(fk)
        if raw is None:
            return None, False
        return self.codec.decode(raw), True

    # ---- cache entries -----------------------------------------------------------------
    async def get(self, key: Any, default: Any = None) -> Any:
        fk = self.k(key)
        l1 = self.l1
        if l1 is not None:
            v = l1.get(fk)
            if v is not _MISSING:
                return v

        async def redis_fn() -> Any:
            value, found = await self._l2_read(fk)
            if found:
                self.l2_hits += 1
                return value
            self.l2_misses += 1
            return default

        def local_fn() -> Any:
            assert self.breaker is not None
            self.breaker.degraded_reads += 1
            return self.breaker.local.get(fk, default)

        return await self._run(redis_fn, local_fn)

    async def set(
        self,
        key: Any,
        value: Any,
        ttl: Optional[int] = None,
        tags: Optional[Iterable[Any]] = None,
        swr: Optional[int] = None,
        gate: Optional[str] = None,
        nx: bool = False,
        xx: bool = False,
    ) -> bool:
        fk = self.k(key)
        ttl = int(ttl or self.default_ttl)
        ftags = self.tags_of(tags)
        data = self.codec.encode(value, gated=self.gated(fk, gate))
        if self.l1 is not None:
            self.l1.invalidate_keys([fk])

        async def redis_fn() -> bool:
            try:
                return bool(await self.cmd.set(fk, data, ttl, tags=ftags, swr=swr, gate=gate, nx=nx, xx=xx))
            finally:
                if self.l1 is not None:
                    self.l1.invalidate_keys([fk])

        def local_fn() -> bool:
            assert self.breaker is not None
            self.breaker.degraded_writes += 1
            self.breaker.local.set(fk, value, ttl, tuple(ftags))
            return True

        return await self._run(redis_fn, local_fn)

    async def mget(self, keys: Iterable[Any]) -> list[Any]:
        fks = [self.k(k) for k in keys]
        out: dict[str, Any] = {}
        todo: list[str] = []
        for fk in fks:
            v = self.l1.get(fk) if self.l1 is not None else _MISSING
            if v is _MISSING:
                todo.append(fk)
            else:
                out[fk] = v

        async def redis_fn() -> list[Any]:
            for group in self._groups(list(dict.fromkeys(todo))):
                for fk, raw in zip(group, await self.cmd.mget(group), strict=True):
                    if raw is None:
                        self.l2_misses += 1
                        out[fk] = None
                    else:
                        self.l2_hits += 1
                        out[fk] = self.codec.decode(raw)
            return [out.get(fk) for fk in fks]

        def local_fn() -> list[Any]:
            assert self.breaker is not None
            self.breaker.degraded_reads += 1
            return [out[fk] if fk in out else self.breaker.local.get(fk) for fk in fks]

        return await self._run(redis_fn, local_fn)

    async def delete(self, *keys: Any) -> int:
        fks = [self.k(k) for k in keys]

        async def redis_fn() -> int:
            try:
                return sum([int(await self.cmd.delete(*g)) for g in self._groups(fks)])
            finally:
                if self.l1 is not None:
                    self.l1.invalidate_keys(fks)

        def local_fn() -> int:
            assert self.breaker is not None
            self.breaker.degraded_writes += 1
            return self.breaker.local.delete(fks)

        return await self._run(redis_fn, local_fn)

    async def tags(self, key: Any) -> Optional[list[str]]:
        fk = self.k(key)

        async def redis_fn() -> Any:
            return await self.cmd.tags(fk)

        tags = await self._run(redis_fn, lambda: None)
        if tags is None:
            return None
        n = len(self.namespace)
        return [t[n:] if n and t.startswith(self.namespace) else t for t in tags]

    # ---- invalidation ------------------------------------------------------------------
    async def _local_inval(
        self, fn: Callable[..., Awaitable[Any]], args: list[Any], l1_drop: Callable[[], None], local: Callable[[], int]
    ) -> int:
        async def redis_fn() -> int:
            try:
                return await self._invalidate(fn, *args)
            finally:
                l1_drop()

        def local_fn() -> int:
            assert self.breaker is not None
            self.breaker.degraded_writes += 1
            return local()

        return await self._run(redis_fn, local_fn)

    async def invalidate_tags(self, *tags: Any) -> int:
        ftags = self.tags_of(tags)
        return await self._local_inval(
            self.cmd.invaltag,
            ftags,
            lambda: self.l1.invalidate_tags(ftags) if self.l1 is not None else None,
            lambda: self.breaker.local.invalidate_tags(ftags) if self.breaker else 0,
        )

    async def stale_tags(self, *tags: Any) -> int:
        ftags = self.tags_of(tags)
        return await self._local_inval(
            self.cmd.staletag,
            ftags,
            lambda: self.l1.invalidate_tags(ftags) if self.l1 is not None else None,
            lambda: self.breaker.local.invalidate_tags(ftags) if self.breaker else 0,
        )

    async def invalidate_prefix(self, prefix: str) -> int:
        fp = self.k(prefix)
        return await self._local_inval(
            self.cmd.invalprefix,
            [fp],
            lambda: self.l1.invalidate_prefix(fp) if self.l1 is not None else None,
            lambda: self.breaker.local.invalidate_prefix(fp) if self.breaker else 0,
        )

    # ---- per-tag reads -----------------------------------------------------------------
    async def tag_count(self, tag: Any) -> int:
        await self._ensure()
        ft = self.t(tag)
        if not self.cluster:
            return int(await self.cmd.tagcard(ft))
        return sum(int(x) for x in await self._each_primary(self.cmd.tagcard, ft))

    async def tag_scan(self, tag: Any, cursor: int = 0, count: Optional[int] = None) -> tuple[int, list[str]]:
        await self._ensure()
        ft = self.t(tag)
        if not self.cluster:
            nxt, keys = await self.cmd.tagscan(ft, cursor, count)
            return nxt, [self.unk(k) for k in keys]
        nodes = sorted(self._primaries(), key=lambda n: (n.host, int(n.port)))
        node_cursor, idx = split_cursor(cursor)
        if idx >= len(nodes):
            raise ValueError("invalid cursor")
        nxt, keys = await self.cmd.tagscan(ft, node_cursor, count, target_nodes=nodes[idx])
        if nxt == 0:
            nxt = join_cursor(0, idx + 1) if idx + 1 < len(nodes) else 0
        else:
            nxt = join_cursor(nxt, idx)
        return nxt, [self.unk(k) for k in keys]

    async def tag_keys(self, tag: Any, count: int = 100) -> AsyncIterator[str]:
        cursor = 0
        while True:
            cursor, keys = await self.tag_scan(tag, cursor, count)
            for k in keys:
                yield k
            if cursor == 0:
                return

    # ---- stampede-safe reads ----------------------------------------------------------
    async def get_or_compute(
        self,
        key: Any,
        compute: Callable[[], Union[Awaitable[Any], Any]],
        ttl: Optional[int] = None,
        tags: Optional[Iterable[Any]] = None,
        swr: Optional[int] = None,
        gate: Optional[str] = None,
        lease_ms: Optional[int] = None,
        wait_ms: Optional[int] = None,
    ) -> Any:
        """See :meth:`TCache.get_or_compute`; ``compute`` may be sync or async."""
        fk = self.k(key)
        ttl = int(ttl or self.default_ttl)
        ftags = self.tags_of(tags)
        lease = int(lease_ms or self.lease_ms)
        wait = self.round_wait(int(wait_ms or self.wait_ms or lease))
        l1 = self.l1
        if l1 is not None:
            v = l1.get(fk)
            if v is not _MISSING:
                return v

        async def run_compute() -> Any:
            v = compute()
            if inspect.isawaitable(v):
                v = await v
            self.computations += 1
            return v

        async def store(value: Any, token: Optional[str]) -> None:
            data = self.codec.encode(value, gated=self.gated(fk, gate))
            try:
                ok = await self.cmd.set(fk, data, ttl, tags=ftags, swr=swr, gate=gate, lease=token)
            finally:
                if l1 is not None:
                    l1.invalidate_keys([fk])
            if not ok:
                self.lease_sets_refused += 1

        async def redis_fn() -> Any:
            while True:
                fid = None
                if l1 is not None and l1.active:
                    fid = l1.begin_fill(fk)
                    try:
                        p = self.cmd.pipeline(transaction=False)
                        p.fetch(fk, lease, wait)
                        p.tags(fk)
                        p.execute_command("PTTL", fk)
                        rep, etags, pttl = await p.execute()
                    except BaseException:
                        l1.cancel_fill(fid)
                        raise
                else:
                    rep = await self.cmd.fetch(fk, lease, wait)
                assert isinstance(rep, FetchReply)
                if rep.kind == "HIT":
                    self.l2_hits += 1
                    value = self.codec.decode(rep.value)
                    if fid is not None and l1 is not None:
                        l1.end_fill(fid, value, len(rep.value), etags or (), (pttl / 1000.0) if pttl > 0 else None)
                    return value
                if fid is not None and l1 is not None:
                    l1.cancel_fill(fid)
                if rep.kind == "STALE" and rep.token is None:
                    self.l2_hits += 1
                    return self.codec.decode(rep.value)
                if rep.kind in ("LEASE", "STALE"):
                    self.l2_misses += 1
                    value = await run_compute()
                    await store(value, rep.token)
                    return value

        b = self.breaker
        if b is not None and b.open and not b.should_probe():
            return await self._local_compute(fk, run_compute, ttl, ftags)
        try:
            if b is not None and b.open:
                await self.client.ping()
                b.recover()
            await self._ensure()
            return await redis_fn()
        except UNREACHABLE as e:
            if self.degrade(e):
                return await self._local_compute(fk, run_compute, ttl, ftags)
            raise

    async def _local_compute(
        self, fk: str, run_compute: Callable[[], Awaitable[Any]], ttl: int, ftags: list[str]
    ) -> Any:
        assert self.breaker is not None
        b = self.breaker
        b.degraded_reads += 1
        v = b.local.get(fk, _NOTHING)
        if v is _NOTHING:
            v = await run_compute()
            b.degraded_writes += 1
            b.local.set(fk, v, ttl, tuple(ftags))
        return v

    def cached(
        self,
        ttl: Optional[int] = None,
        key: Optional[str] = None,
        tags: Optional[Iterable[str]] = None,
        swr: Optional[int] = None,
        gate: Optional[str] = None,
        lease_ms: Optional[int] = None,
        wait_ms: Optional[int] = None,
    ) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
        """Decorator for ``async def`` functions; see :meth:`TCache.cached`.
        ``.invalidate(...)`` on the wrapped function is a coroutine."""

        def deco(func: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
            if not inspect.iscoroutinefunction(func):
                raise TypeError("AsyncTCache.cached decorates async functions; use TCache for plain ones")
            build_key, build_tags = make_key_builder(func, key, tags)

            @wraps(func)
            async def wrapper(*args: Any, **kwargs: Any) -> T:
                return await self.get_or_compute(
                    build_key(*args, **kwargs),
                    lambda: func(*args, **kwargs),
                    ttl=ttl,
                    tags=build_tags(*args, **kwargs),
                    swr=swr,
                    gate=gate,
                    lease_ms=lease_ms,
                    wait_ms=wait_ms,
                )

            async def invalidate(*a: Any, **kw: Any) -> int:
                return await self.delete(build_key(*a, **kw))

            wrapper.key = build_key  # type: ignore[attr-defined]
            wrapper.invalidate = invalidate  # type: ignore[attr-defined]
            return wrapper

        return deco

    # ---- statistics, lifecycle ---------------------------------------------------------
    async def server_stats(self) -> dict[str, Any]:
        """``TCACHE.STATS`` over every shard (summed, ``hit_rate`` recomputed)."""
        await self._ensure()
        if not self.cluster:
            return combine_stats([await self.cmd.stats()])
        return combine_stats(await self._each_primary(self.cmd.stats))

    async def reset_stats(self) -> None:
        """``TCACHE.STATS RESET`` on every shard, and this client's counters."""
        await self._ensure()
        if not self.cluster:
            await self.cmd.stats(True)
        else:
            await self._each_primary(self.cmd.stats, True)
        self.reset_local_stats()

    async def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            if self.breaker is None or not self.breaker.open:
                out.update(await self.server_stats())
        except UNREACHABLE as e:
            self.degrade(e)
        out.update(self.local_stats())
        return out

    async def verify(self) -> bool:
        await self._ensure()
        if not self.cluster:
            return bool(await self.cmd.verify())
        return all(await self._each_primary(self.cmd.verify))

    async def aclose(self) -> None:
        if self.tracker is not None:
            t, self.tracker = self.tracker, None
            await asyncio.get_running_loop().run_in_executor(None, t.close)

    async def __aenter__(self) -> AsyncTCache:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class AsyncPerms:
    def __init__(self, tc: AsyncTCache) -> None:
        self.tc = tc

    async def set(self, key: Any, value: Union[Mapping[str, Any], str, bytes], ttl: Optional[int] = None) -> bool:
        await self.tc._ensure()
        return bool(await self.tc.cmd.perm_set(self.tc.k(key), perm_text(value), ttl))

    async def get(self, key: Any) -> Optional[dict[str, Any]]:
        await self.tc._ensure()
        raw = await self.tc.cmd.perm_get(self.tc.k(key))
        return None if raw is None else json.loads(raw)

    async def check(self, key: Any, *permissions: str) -> Union[None, bool, list[bool]]:
        await self.tc._ensure()
        return await self.tc.cmd.perm_check(self.tc.k(key), *permissions)

    async def inval_user(self, *keys: Any) -> int:
        await self.tc._ensure()
        fks = [self.tc.k(k) for k in keys]
        return sum([int(await self.tc.cmd.perm_invaluser(*g)) for g in self.tc._groups(fks)])

    async def inval_role(self, *roles: str) -> int:
        return await self.tc._invalidate(self.tc.cmd.perm_invalrole, *roles)

    async def inval_all(self) -> int:
        return await self.tc._invalidate(self.tc.cmd.perm_invalall)


class AsyncGates:
    def __init__(self, tc: AsyncTCache) -> None:
        self.tc = tc

    def _one(self) -> dict[str, Any]:
        return {"target_nodes": self.tc._primaries()[0]} if self.tc.cluster else {}

    async def set(self, name: str, schema: SchemaT, prefix: Optional[str] = None) -> bool:
        await self.tc._ensure()
        text = schema_text(schema)
        fp = self.tc.k(prefix) if prefix is not None else None
        if fp is not None:
            self.tc._uncompressed_prefixes.add(fp)
        if self.tc.cluster:
            return all(await self.tc._each_primary(self.tc.cmd.gate_set, name, text, fp))
        return bool(await self.tc.cmd.gate_set(name, text, fp))

    async def get(self, name: str) -> Optional[dict[str, Any]]:
        await self.tc._ensure()
        raw = await self.tc.cmd.gate_get(name, **self._one())
        return None if raw is None else json.loads(raw)

    async def delete(self, name: str) -> bool:
        await self.tc._ensure()
        if self.tc.cluster:
            return any(int(x) for x in await self.tc._each_primary(self.tc.cmd.gate_del, name))
        return bool(int(await self.tc.cmd.gate_del(name)))

    async def list(self) -> list[str]:
        await self.tc._ensure()
        return list(await self.tc.cmd.gate_list(**self._one()))

    async def check(self, name: str, value: Any) -> bool:
        await self.tc._ensure()
        data = value if isinstance(value, (str, bytes)) else self.tc.codec.serializer.dumps(value)
        return bool(await self.tc.cmd.gate_check(name, data, **self._one()))
