"""Parts shared by :class:`TCache` and :class:`AsyncTCache` (no I/O here)."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import random
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional, Union

from redis.exceptions import ClusterDownError, ClusterError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .degraded import CircuitBreaker, LocalCache
from .l1 import L1Cache, NodeAddress, Tracker
from .serializer import Codec, JsonSerializer, Serializer

log = logging.getLogger("redis_tcache")

#: Errors that mean "Redis is unreachable" (they trip degraded mode when enabled).
UNREACHABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    OSError,
)

SchemaT = Union[Mapping[str, Any], str, bytes, type]

COORDINATED_FIELD = "tcache_cluster_invalidation"


#: The read timeout redis-py 8 applies when none is configured (seen: a blocked reply
#: times out after 5 s on a client from ``from_url`` as on one built with no timeout).
DEFAULT_READ_TIMEOUT_MS = 5000


def is_cluster(client: Any) -> bool:
    return hasattr(client, "get_primaries") and hasattr(client, "nodes_manager")


def schema_text(schema: SchemaT) -> str:
    """A JSON Schema from a dict, a JSON string, or a Pydantic model class."""
    if isinstance(schema, type):
        fn = getattr(schema, "model_json_schema", None) or getattr(schema, "schema", None)
        if fn is None:
            raise TypeError(f"{schema.__name__} has no model_json_schema(): not a Pydantic model")
        return json.dumps(fn())
    if isinstance(schema, bytes):
        return schema.decode("utf-8")
    if isinstance(schema, str):
        json.loads(schema)  # a clear local error for text that is not JSON
        return schema
    return json.dumps(schema)


def perm_text(value: Union[Mapping[str, Any], str, bytes]) -> Union[str, bytes]:
    if isinstance(value, (str, bytes)):
        return value
    return json.dumps(value)


def combine_stats(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum per-node ``TCACHE.STATS`` replies; ``hit_rate`` recomputed, maxima kept as maxima."""
    out: dict[str, Any] = {}
    gates: dict[str, dict[str, Any]] = {}
    for rep in replies:
        for k, v in rep.items():
            if k == "hit_rate":
                continue
            if k == "gates" and isinstance(v, Mapping):
                for g, gs in v.items():
                    acc = gates.setdefault(g, {})
                    for gk, gv in gs.items():
                        if isinstance(gv, int) and not isinstance(gv, bool):
                            acc[gk] = acc.get(gk, 0) + gv
                        else:
                            acc[gk] = gv
                continue
            if isinstance(v, int) and not isinstance(v, bool):
                if k.endswith("_max_us") or k.endswith("_max"):
                    out[k] = max(out.get(k, 0), v)
                else:
                    out[k] = out.get(k, 0) + v
            else:
                out.setdefault(k, v)
    hits, misses = out.get("hits", 0), out.get("misses", 0)
    out["hit_rate"] = f"{(100.0 * hits / (hits + misses)) if hits + misses else 0.0:.2f}%"
    out["gates"] = gates
    return out


def split_cursor(cursor: int) -> tuple[int, int]:
    """Composite TAGSCAN cursor over several nodes: ``node_cursor << 8 | node_index``."""
    return cursor >> 8, cursor & 0xFF


def join_cursor(node_cursor: int, node_index: int) -> int:
    return (node_cursor << 8) | node_index


def template_args(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    sig = inspect.signature(func)
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


class CacheBase:
    """Configuration, key names, L1, degraded mode and counters."""

    def __init__(
        self,
        client: Any,
        namespace: str = "",
        serializer: Optional[Serializer] = None,
        *,
        default_ttl: int = 300,
        compress_threshold: Optional[int] = None,
        lease_ms: int = 30_000,
        wait_ms: Optional[int] = None,
        l1: bool = False,
        l1_max_entries: int = 10_000,
        l1_max_bytes: int = 64 * 1024 * 1024,
        l1_max_ttl: float = 300.0,
        l1_ready_timeout: float = 5.0,
        degraded: bool = False,
        degraded_max_entries: int = 1000,
        degraded_ttl: float = 30.0,
        probe_interval: float = 1.0,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.codec = Codec(serializer or JsonSerializer(), compress_threshold)
        self.default_ttl = default_ttl
        self.lease_ms = lease_ms
        self.wait_ms = wait_ms
        self.cluster = is_cluster(client)
        self.l1: Optional[L1Cache] = (
            L1Cache(max_entries=l1_max_entries, max_bytes=l1_max_bytes, max_ttl=l1_max_ttl) if l1 else None
        )
        self.l1_ready_timeout = l1_ready_timeout
        self.tracker: Optional[Tracker] = None
        self.breaker: Optional[CircuitBreaker] = (
            CircuitBreaker(LocalCache(degraded_max_entries, degraded_ttl), probe_interval) if degraded else None
        )
        self._coordinated: Optional[bool] = None
        self._uncompressed_prefixes: set[str] = set()
        self.l2_hits = 0
        self.l2_misses = 0
        self.computations = 0
        self.lease_sets_refused = 0
        kw = self._conn_kwargs()
        if compress_threshold is not None and kw.get("decode_responses"):
            raise ValueError("compression needs a client with decode_responses=False")

    # ---- names -------------------------------------------------------------------------
    def k(self, key: Any) -> str:
        return self.namespace + (key if isinstance(key, str) else str(key))

    def t(self, tag: Any) -> str:
        return self.namespace + (tag if isinstance(tag, str) else str(tag))

    def tags_of(self, tags: Optional[Iterable[Any]]) -> list[str]:
        return [self.t(x) for x in tags] if tags else []

    def unk(self, key: Union[str, bytes]) -> str:
        s = key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key
        return s[len(self.namespace) :] if self.namespace and s.startswith(self.namespace) else s

    def gated(self, full_key: str, gate: Optional[str]) -> bool:
        return gate is not None or any(full_key.startswith(p) for p in self._uncompressed_prefixes)

    # ---- connection facts --------------------------------------------------------------
    def _conn_kwargs(self) -> dict[str, Any]:
        if self.cluster:
            nm = getattr(self.client, "nodes_manager", None)
            kw = getattr(nm, "connection_kwargs", None)
            if kw is None:
                kw = getattr(self.client, "connection_kwargs", {})
            return dict(kw or {})
        pool = getattr(self.client, "connection_pool", None)
        return dict(getattr(pool, "connection_kwargs", {}) or {})

    def round_wait(self, wait_ms: int) -> int:
        """The server-side ``WAIT`` of one ``FETCH``: ``wait_ms``, cut to a second under the
        connection's read timeout so that redis-py does not give up on a blocked reply
        (``get_or_compute`` asks again after a ``WAIT``). redis-py 8 reads with a 5 s
        timeout when none is configured, ``from_url`` included."""
        timeout = self._conn_kwargs().get("socket_timeout")
        limit_ms = int(float(timeout) * 1000) if timeout else DEFAULT_READ_TIMEOUT_MS
        return max(1, min(wait_ms, max(100, limit_ms - 1000)))

    def node_addresses(self, nodes: list[Any]) -> list[NodeAddress]:
        kw = self._conn_kwargs()
        user, pw = kw.get("username"), kw.get("password")
        if self.cluster:
            return [NodeAddress(n.host, int(n.port), user, pw) for n in nodes]
        if "path" in kw:
            raise ValueError("the L1 needs a TCP connection (host/port), not a unix socket")
        return [NodeAddress(kw.get("host", "localhost"), int(kw.get("port", 6379)), user, pw)]

    def start_tracker(self, nodes: list[NodeAddress], channel: Optional[str]) -> None:
        assert self.l1 is not None
        prefix = self.namespace
        self.tracker = Tracker(self.l1, nodes, prefix, channel)
        self.tracker.start()
        if not self.tracker.wait_ready(self.l1_ready_timeout):
            log.warning("tcache L1: tracking not ready after %.1fs; L1 bypassed until it is", self.l1_ready_timeout)

    def l1_sync(self, timeout: float = 5.0) -> bool:
        """Block until the invalidation pushes the server queued before this call have been
        applied to the L1 (e.g. to read your own writes from other clients through the L1).
        True without an L1; False when tracking is down or the timeout passed."""
        if self.l1 is None:
            return True
        return self.tracker is not None and self.tracker.sync(timeout)

    def local_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "l2_hits": self.l2_hits,
            "l2_misses": self.l2_misses,
            "computations": self.computations,
            "client_lease_sets_refused": self.lease_sets_refused,
        }
        if self.l1 is not None:
            out.update(self.l1.stats())
            out["l1_active"] = self.l1.active
            if self.tracker is not None:
                out["l1_tracking_breaks"] = self.tracker.breaks
        if self.breaker is not None:
            out.update(self.breaker.stats())
        return out

    def reset_local_stats(self) -> None:
        self.l2_hits = self.l2_misses = self.computations = self.lease_sets_refused = 0
        if self.l1 is not None:
            l1 = self.l1
            l1.hits = l1.misses = l1.evictions = l1.invalidations = l1.flushes = l1.fills_discarded = 0
        if self.breaker is not None:
            b = self.breaker
            b.trips = b.recoveries = b.degraded_reads = b.degraded_writes = 0

    # ---- degraded mode -----------------------------------------------------------------
    def degrade(self, err: BaseException) -> bool:
        """Trip the breaker on an unreachable-Redis error; False when degraded mode is off."""
        if self.breaker is None or not isinstance(err, UNREACHABLE):
            return False
        self.breaker.trip(err)
        if self.l1 is not None:
            self.l1.clear()
        return True

    def pick(self, nodes: list[Any]) -> Any:
        return random.choice(nodes)


def make_key_builder(
    func: Callable[..., Any], key: Optional[str], tags: Optional[Iterable[str]]
) -> tuple[Callable[..., str], Callable[..., list[str]]]:
    tag_templates = list(tags or [])

    def build_key(*args: Any, **kwargs: Any) -> str:
        a = template_args(func, args, kwargs)
        if key is None:
            return f"{func.__module__}.{func.__qualname__}:" + json.dumps(a, sort_keys=True, default=str)
        return key.format(**a)

    def build_tags(*args: Any, **kwargs: Any) -> list[str]:
        a = template_args(func, args, kwargs)
        return [t.format(**a) for t in tag_templates]

    return build_key, build_tags


def wraps(func: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return functools.wraps(func)
