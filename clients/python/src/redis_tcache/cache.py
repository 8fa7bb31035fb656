"""The synchronous cache object :class:`TCache`."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable, Optional, TypeVar, Union

from redis.exceptions import ResponseError

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
from .commands import CALLBACKS, FetchReply, TCacheModule
from .l1 import _MISSING

__all__ = ["TCache"]

T = TypeVar("T")
_NOTHING = object()


def _pool_takes_no_args() -> bool:
    from redis.connection import ConnectionPool

    params = inspect.signature(ConnectionPool.get_connection).parameters
    first = [p for n, p in params.items() if n != "self"][:1]
    return not first or first[0].default is not inspect.Parameter.empty or first[0].kind == first[0].VAR_POSITIONAL


_POOL_NO_ARGS = _pool_takes_no_args()


class TCache(CacheBase):
    """A tagged application cache on a ``redis.Redis`` or ``redis.cluster.RedisCluster``.

    ``namespace`` prefixes every key and tag. See the package README for every option.
    """

    def __init__(self, client: Any, namespace: str = "", serializer: Any = None, **options: Any) -> None:
        super().__init__(client, namespace, serializer, **options)
        self.cmd = TCacheModule(client)
        self.perm = Perms(self)
        self.gates = Gates(self)
        if self.l1 is not None:
            nodes = self.client.get_primaries() if self.cluster else []
            self.start_tracker(self.node_addresses(nodes), self._channel())

    # ---- plumbing ----------------------------------------------------------------------
    def _channel(self) -> Optional[str]:
        try:
            if self.cluster:
                rep = self.client.config_get("tcache.invalidation-channel", target_nodes=self.client.get_primaries()[0])
            else:
                rep = self.client.config_get("tcache.invalidation-channel")
        except Exception:  # noqa: BLE001 - an ACL may refuse CONFIG; the channel is optional
            return None
        v = (rep or {}).get("tcache.invalidation-channel") or (rep or {}).get(b"tcache.invalidation-channel")
        if isinstance(v, bytes):
            v = v.decode()
        return v or None

    def _primaries(self) -> list[Any]:
        return list(self.client.get_primaries())

    def coordinated(self) -> bool:
        """Whether the module coordinates invalidations cluster-wide (read once, cached)."""
        if self._coordinated is None:
            if not self.cluster:
                self._coordinated = True
            else:
                info = self.client.info("tcache", target_nodes=self._primaries()[0])
                if isinstance(info, Mapping) and info and all(isinstance(v, Mapping) for v in info.values()):
                    info = next(iter(info.values()))  # {node: info}
                self._coordinated = str((info or {}).get(COORDINATED_FIELD, "")) == "coordinated"
        return self._coordinated

    def _each_primary(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        return [fn(*args, target_nodes=n) for n in self._primaries()]

    def _invalidate(self, fn: Callable[..., Any], *args: Any) -> int:
        if not self.cluster:
            return int(fn(*args))
        if self.coordinated():
            return int(fn(*args, target_nodes=self.pick(self._primaries())))
        return sum(int(x) for x in self._each_primary(fn, *args))

    def _run(self, redis_fn: Callable[[], T], local_fn: Callable[[], T]) -> T:
        b = self.breaker
        if b is not None and b.open:
            if not b.should_probe():
                return local_fn()
            try:
                self.client.ping()
            except UNREACHABLE as e:
                b.trip(e)
                return local_fn()
            b.recover()
        try:
            return redis_fn()
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

    def _fill_round_trip(self, first: tuple[Any, ...], fk: str) -> tuple[Any, Any, Any]:
        """``first``, ``TCACHE.TAGS fk`` and ``PTTL fk`` in one round trip, raw replies.

        On a plain ``redis.Redis`` this writes the three commands on one pooled connection
        (redis-py's Pipeline object costs more than the round trip itself); elsewhere it is
        a non-transactional pipeline."""
        if self.cluster:
            p = self.client.pipeline(transaction=False)
            p.execute_command(*first)
            p.execute_command("TCACHE.TAGS", fk)
            p.execute_command("PTTL", fk)
            a, b, c = p.execute()
            return a, b, c
        pool = self.client.connection_pool
        conn = pool.get_connection() if _POOL_NO_ARGS else pool.get_connection("TCACHE.GET")
        try:
            conn.send_packed_command(conn.pack_commands([first, ("TCACHE.TAGS", fk), ("PTTL", fk)]))
            out = []
            err: Optional[BaseException] = None
            for _ in range(3):
                try:
                    out.append(conn.read_response())
                except ResponseError as e:  # keep the connection in step, raise afterwards
                    err = err or e
                    out.append(None)
            if err is not None:
                raise err
        except BaseException as e:
            if not isinstance(e, ResponseError):
                conn.disconnect()
            raise
        finally:
            pool.release(conn)
        a, b, c = out
        return a, b, c

    def _l2_read(self, fk: str) -> tuple[Any, bool]:
        """GET through L2, filling the L1 when it is on. Returns (value, found)."""
        l1 = self.l1
        if l1 is not None and l1.active:
            fid = l1.begin_fill(fk)
            try:
                raw, tags, pttl = self._fill_round_trip(("TCACHE.GET", fk), fk)
                tags = CALLBACKS["TCACHE.TAGS"](tags)
            except BaseException:
                l1.cancel_fill(fid)
                raise
            if raw is None:
                l1.cancel_fill(fid)
                return None, False
            value = self.codec.decode(raw)
            l1.end_fill(fid, value, len(raw), tags or (), (pttl / 1000.0) if pttl and pttl > 0 else None)
            return value, True
        raw = self.cmd.get(fk)
        if raw is None:
            return None, False
        return self.codec.decode(raw), True

    # ---- cache entries -----------------------------------------------------------------
    def get(self, key: Any, default: Any = None) -> Any:
        """The value, or ``default`` when missing (or stale)."""
        fk = self.k(key)
        l1 = self.l1
        if l1 is not None:
            v = l1.get(fk)
            if v is not _MISSING:
                return v

        def redis_fn() -> Any:
            value, found = self._l2_read(fk)
            if found:
                self.l2_hits += 1
                return value
            self.l2_misses += 1
            return default

        def local_fn() -> Any:
            assert self.breaker is not None
            self.breaker.degraded_reads += 1
            return self.breaker.local.get(fk, default)

        return self._run(redis_fn, local_fn)

    def set(
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
        """Store ``value`` for ``ttl`` seconds with ``tags``; False when NX/XX was not met.
        Raises :class:`~redis_tcache.GateRejected` when a gate refuses the value."""
        fk = self.k(key)
        ttl = int(ttl or self.default_ttl)
        ftags = self.tags_of(tags)
        data = self.codec.encode(value, gated=self.gated(fk, gate))
        if self.l1 is not None:
            self.l1.invalidate_keys([fk])

        def redis_fn() -> bool:
            try:
                return bool(self.cmd.set(fk, data, ttl, tags=ftags, swr=swr, gate=gate, nx=nx, xx=xx))
            finally:
                if self.l1 is not None:
                    self.l1.invalidate_keys([fk])

        def local_fn() -> bool:
            assert self.breaker is not None
            self.breaker.degraded_writes += 1
            self.breaker.local.set(fk, value, ttl, tuple(ftags))
            return True

        return self._run(redis_fn, local_fn)

    def mget(self, keys: Iterable[Any]) -> list[Any]:
        """Values of several keys (None where missing), in order."""
        fks = [self.k(k) for k in keys]
        out: dict[str, Any] = {}
        todo: list[str] = []
        for fk in fks:
            v = self.l1.get(fk) if self.l1 is not None else _MISSING
            if v is _MISSING:
                todo.append(fk)
            else:
                out[fk] = v

        def redis_fn() -> list[Any]:
            for group in self._groups(list(dict.fromkeys(todo))):
                for fk, raw in zip(group, self.cmd.mget(group), strict=True):
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

        return self._run(redis_fn, local_fn)

    def delete(self, *keys: Any) -> int:
        """Delete entries; returns how many existed."""
        fks = [self.k(k) for k in keys]

        def redis_fn() -> int:
            try:
                return sum(int(self.cmd.delete(*g)) for g in self._groups(fks))
            finally:
                if self.l1 is not None:
                    self.l1.invalidate_keys(fks)

        def local_fn() -> int:
            assert self.breaker is not None
            self.breaker.degraded_writes += 1
            return self.breaker.local.delete(fks)

        return self._run(redis_fn, local_fn)

    def tags(self, key: Any) -> Optional[list[str]]:
        """The entry's tags (namespace removed), or None when missing."""
        fk = self.k(key)
        tags = self._run(lambda: self.cmd.tags(fk), lambda: None)
        if tags is None:
            return None
        n = len(self.namespace)
        return [t[n:] if n and t.startswith(self.namespace) else t for t in tags]

    # ---- invalidation ------------------------------------------------------------------
    def invalidate_tags(self, *tags: Any) -> int:
        """Delete every entry carrying any of the tags (all shards). Returns entries removed.
        Once this returns, no read in this process returns an entry it removed."""
        ftags = self.tags_of(tags)

        def redis_fn() -> int:
            try:
                return self._invalidate(self.cmd.invaltag, *ftags)
            finally:
                if self.l1 is not None:
                    self.l1.invalidate_tags(ftags)

        def local_fn() -> int:
            assert self.breaker is not None
            self.breaker.degraded_writes += 1
            return self.breaker.local.invalidate_tags(ftags)

        return self._run(redis_fn, local_fn)

    def stale_tags(self, *tags: Any) -> int:
        """Mark entries carrying the tags stale (served by ``get_or_compute`` while one
        caller refreshes; a miss for ``get``). Returns entries marked."""
        ftags = self.tags_of(tags)

        def redis_fn() -> int:
            try:
                return self._invalidate(self.cmd.staletag, *ftags)
            finally:
                if self.l1 is not None:
                    self.l1.invalidate_tags(ftags)

        def local_fn() -> int:
            assert self.breaker is not None
            return self.breaker.local.invalidate_tags(ftags)

        return self._run(redis_fn, local_fn)

    def invalidate_prefix(self, prefix: str) -> int:
        """Delete every entry whose key (after the namespace) starts with ``prefix``."""
        fp = self.k(prefix)

        def redis_fn() -> int:
            try:
                return self._invalidate(self.cmd.invalprefix, fp)
            finally:
                if self.l1 is not None:
                    self.l1.invalidate_prefix(fp)

        def local_fn() -> int:
            assert self.breaker is not None
            return self.breaker.local.invalidate_prefix(fp)

        return self._run(redis_fn, local_fn)

    # ---- per-tag reads -----------------------------------------------------------------
    def tag_count(self, tag: Any) -> int:
        """Live entries carrying the tag, over every shard."""
        ft = self.t(tag)
        if not self.cluster:
            return int(self.cmd.tagcard(ft))
        return sum(int(x) for x in self._each_primary(self.cmd.tagcard, ft))

    def tag_scan(self, tag: Any, cursor: int = 0, count: Optional[int] = None) -> tuple[int, list[str]]:
        """One TAGSCAN step over every shard: ``(next_cursor, keys)``; done at cursor 0."""
        ft = self.t(tag)
        if not self.cluster:
            nxt, keys = self.cmd.tagscan(ft, cursor, count)
            return nxt, [self.unk(k) for k in keys]
        nodes = sorted(self._primaries(), key=lambda n: (n.host, int(n.port)))
        node_cursor, idx = split_cursor(cursor)
        if idx >= len(nodes):
            raise ValueError("invalid cursor")
        nxt, keys = self.cmd.tagscan(ft, node_cursor, count, target_nodes=nodes[idx])
        if nxt == 0:
            nxt = join_cursor(0, idx + 1) if idx + 1 < len(nodes) else 0
        else:
            nxt = join_cursor(nxt, idx)
        return nxt, [self.unk(k) for k in keys]

    def tag_keys(self, tag: Any, count: int = 100) -> Iterator[str]:
        """Every key of a tag (a full TAGSCAN iteration)."""
        cursor = 0
        while True:
            cursor, keys = self.tag_scan(tag, cursor, count)
            yield from keys
            if cursor == 0:
                return

    # ---- stampede-safe reads ----------------------------------------------------------
    def get_or_compute(
        self,
        key: Any,
        compute: Callable[[], Any],
        ttl: Optional[int] = None,
        tags: Optional[Iterable[Any]] = None,
        swr: Optional[int] = None,
        gate: Optional[str] = None,
        lease_ms: Optional[int] = None,
        wait_ms: Optional[int] = None,
    ) -> Any:
        """The cached value, or ``compute()`` stored under a lease: N concurrent callers in
        any number of processes compute once; the others wait inside the server. A value
        computed from data read before an invalidation of one of ``tags`` is not stored."""
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

        def store(value: Any, token: Optional[str]) -> None:
            data = self.codec.encode(value, gated=self.gated(fk, gate))
            try:
                ok = self.cmd.set(fk, data, ttl, tags=ftags, swr=swr, gate=gate, lease=token)
            finally:
                if l1 is not None:
                    l1.invalidate_keys([fk])
            if not ok:
                self.lease_sets_refused += 1

        def redis_fn() -> Any:
            while True:
                fid = None
                if l1 is not None and l1.active:
                    fid = l1.begin_fill(fk)
                    try:
                        rep, etags, pttl = self._fill_round_trip(("TCACHE.FETCH", fk, lease, "WAIT", wait), fk)
                        rep = CALLBACKS["TCACHE.FETCH"](rep)
                        etags = CALLBACKS["TCACHE.TAGS"](etags)
                    except BaseException:
                        l1.cancel_fill(fid)
                        raise
                else:
                    rep = self.cmd.fetch(fk, lease, wait)
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
                    value = compute()
                    self.computations += 1
                    store(value, rep.token)
                    return value
                # WAIT: the wait timed out while another caller computes: ask again

        def local_fn() -> Any:
            assert self.breaker is not None
            b = self.breaker
            b.degraded_reads += 1
            v = b.local.get(fk, _NOTHING)
            if v is _NOTHING:
                v = compute()
                self.computations += 1
                b.degraded_writes += 1
                b.local.set(fk, v, ttl, tuple(ftags))
            return v

        return self._run(redis_fn, local_fn)

    def cached(
        self,
        ttl: Optional[int] = None,
        key: Optional[str] = None,
        tags: Optional[Iterable[str]] = None,
        swr: Optional[int] = None,
        gate: Optional[str] = None,
        lease_ms: Optional[int] = None,
        wait_ms: Optional[int] = None,
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@tc.cached(ttl=900, key="report:{store_id}", tags=["store:{store_id}"])``.

        ``key``/``tags`` are ``str.format`` templates over the function's arguments. The
        wrapped function gains ``.key(*args, **kwargs)`` and ``.invalidate(*args, **kwargs)``.
        """

        def deco(func: Callable[..., T]) -> Callable[..., T]:
            if inspect.iscoroutinefunction(func):
                raise TypeError("TCache.cached decorates plain functions; use AsyncTCache for async ones")
            build_key, build_tags = make_key_builder(func, key, tags)

            @wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> T:
                return self.get_or_compute(
                    build_key(*args, **kwargs),
                    lambda: func(*args, **kwargs),
                    ttl=ttl,
                    tags=build_tags(*args, **kwargs),
                    swr=swr,
                    gate=gate,
                    lease_ms=lease_ms,
                    wait_ms=wait_ms,
                )

            wrapper.key = build_key  # type: ignore[attr-defined]
            wrapper.invalidate = lambda *a, **kw: self.delete(build_key(*a, **kw))  # type: ignore[attr-defined]
            return wrapper

        return deco

    # ---- statistics, lifecycle ---------------------------------------------------------
    def server_stats(self) -> dict[str, Any]:
        """``TCACHE.STATS`` over every shard (summed, ``hit_rate`` recomputed)."""
        if not self.cluster:
            return combine_stats([self.cmd.stats()])
        return combine_stats(self._each_primary(self.cmd.stats))

    def reset_stats(self) -> None:
        """``TCACHE.STATS RESET`` on every shard, and this client's counters."""
        if not self.cluster:
            self.cmd.stats(True)
        else:
            self._each_primary(self.cmd.stats, True)
        self.reset_local_stats()

    def stats(self) -> dict[str, Any]:
        """Server figures (when reachable) plus this client's L1/L2/degraded counters."""
        out: dict[str, Any] = {}
        try:
            if self.breaker is None or not self.breaker.open:
                out.update(self.server_stats())
        except UNREACHABLE as e:
            self.degrade(e)
        out.update(self.local_stats())
        return out

    def verify(self) -> bool:
        if not self.cluster:
            return bool(self.cmd.verify())
        return all(self._each_primary(self.cmd.verify))

    def close(self) -> None:
        """Stop the L1 tracking connections (the redis-py client is the caller's)."""
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None

    def __enter__(self) -> TCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Perms:
    """The permission cache (``PERM.*``), keys under the cache's namespace."""

    def __init__(self, tc: TCache) -> None:
        self.tc = tc

    def set(self, key: Any, value: Union[Mapping[str, Any], str, bytes], ttl: Optional[int] = None) -> bool:
        return bool(self.tc.cmd.perm_set(self.tc.k(key), perm_text(value), ttl))

    def get(self, key: Any) -> Optional[dict[str, Any]]:
        import json

        raw = self.tc.cmd.perm_get(self.tc.k(key))
        return None if raw is None else json.loads(raw)

    def check(self, key: Any, *permissions: str) -> Union[None, bool, list[bool]]:
        """True/False (one permission), a list (several), None when not cached."""
        return self.tc.cmd.perm_check(self.tc.k(key), *permissions)

    def inval_user(self, *keys: Any) -> int:
        fks = [self.tc.k(k) for k in keys]
        return sum(int(self.tc.cmd.perm_invaluser(*g)) for g in self.tc._groups(fks))

    def inval_role(self, *roles: str) -> int:
        return self.tc._invalidate(self.tc.cmd.perm_invalrole, *roles)

    def inval_all(self) -> int:
        return self.tc._invalidate(self.tc.cmd.perm_invalall)


class Gates:
    """Quality gates (``TCACHE.GATE.*``); set and deleted on every primary of a cluster."""

    def __init__(self, tc: TCache) -> None:
        self.tc = tc

    def set(self, name: str, schema: SchemaT, prefix: Optional[str] = None) -> bool:
        """Define a gate from a dict, a JSON string or a Pydantic model class. ``prefix`` is
        relative to the namespace; values under it are never compressed."""
        text = schema_text(schema)
        fp = self.tc.k(prefix) if prefix is not None else None
        if fp is not None:
            self.tc._uncompressed_prefixes.add(fp)
        if self.tc.cluster:
            return all(self.tc._each_primary(self.tc.cmd.gate_set, name, text, fp))
        return bool(self.tc.cmd.gate_set(name, text, fp))

    def get(self, name: str) -> Optional[dict[str, Any]]:
        import json

        kw = {"target_nodes": self.tc._primaries()[0]} if self.tc.cluster else {}
        raw = self.tc.cmd.gate_get(name, **kw)
        return None if raw is None else json.loads(raw)

    def delete(self, name: str) -> bool:
        if self.tc.cluster:
            return any(int(x) for x in self.tc._each_primary(self.tc.cmd.gate_del, name))
        return bool(int(self.tc.cmd.gate_del(name)))

    def list(self) -> list[str]:
        kw = {"target_nodes": self.tc._primaries()[0]} if self.tc.cluster else {}
        return list(self.tc.cmd.gate_list(**kw))

    def check(self, name: str, value: Any) -> bool:
        """True, or raises :class:`~redis_tcache.GateRejected` (a dry run)."""
        data = value if isinstance(value, (str, bytes)) else self.tc.codec.serializer.dumps(value)
        kw = {"target_nodes": self.tc._primaries()[0]} if self.tc.cluster else {}
        return bool(self.tc.cmd.gate_check(name, data, **kw))
