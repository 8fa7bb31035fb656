"""tcache commands for redis-py, in the shape redis-py gives its own module commands.

``TCacheCommands`` is a mixin whose methods only build the command and call
``self.execute_command``: it works unchanged on ``redis.Redis``, ``redis.asyncio.Redis``,
``redis.cluster.RedisCluster``, ``redis.asyncio.cluster.RedisCluster`` and their
pipelines. The reply callbacks below accept both RESP2 and RESP3 replies, decoded
(``decode_responses=True``) or not; :func:`register_callbacks` installs them on a client.

Use it through :class:`TCacheModule`::

    tc = redis_tcache.TCacheModule(redis.Redis())
    tc.set("k", b"v", 60, tags=["t"])
    with tc.pipeline() as p:
        p.get("k")
        p.tagcard("t")
        p.execute()
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from . import exceptions as _exceptions  # noqa: F401  (installs the GATE and UNCONFIRMED error classes)

__all__ = [
    "CALLBACKS",
    "KEYLESS_COMMANDS",
    "FetchReply",
    "TCacheCommands",
    "TCacheModule",
    "TCachePipeline",
    "register_callbacks",
]

EncodableT = Union[bytes, str, int, float]


def _s(x: Any) -> Any:
    """bytes -> str (utf-8), anything else unchanged."""
    if isinstance(x, (bytes, bytearray)):
        return bytes(x).decode("utf-8", "replace")
    return x


def _ok(resp: Any, **_: Any) -> bool:
    """``OK`` -> True, nil -> False (NX/XX not met, lease lost)."""
    if resp is None:
        return False
    if resp is True:
        return True
    return _s(resp) == "OK"


def _int(resp: Any, **_: Any) -> int:
    return int(resp)


def _optional_str_list(resp: Any, **_: Any) -> Optional[list[str]]:
    if resp is None:
        return None
    return [_s(x) for x in resp]


def _str_list(resp: Any, **_: Any) -> list[str]:
    return [_s(x) for x in (resp or [])]


def _optional_str(resp: Any, **_: Any) -> Optional[str]:
    return None if resp is None else _s(resp)


def _tagscan(resp: Any, **_: Any) -> tuple[int, list[Any]]:
    cursor, keys = resp
    return int(_s(cursor)), list(keys)


def _to_map(x: Any) -> Any:
    """A RESP3 map or a RESP2 flat name/value array, recursively, as a dict of str."""
    if isinstance(x, Mapping):
        return {_s(k): _to_map(v) for k, v in x.items()}
    if isinstance(x, list):
        if len(x) % 2 == 0 and all(isinstance(k, (bytes, str)) for k in x[0::2]):
            return {_s(x[i]): _to_map(x[i + 1]) for i in range(0, len(x), 2)}
        return [_to_map(v) for v in x]
    return _s(x)


def _stats(resp: Any, **_: Any) -> Any:
    if isinstance(resp, (bytes, str)) or resp is True:  # STATS RESET: OK
        return _ok(resp)
    m = _to_map(resp)
    if isinstance(m, list):  # an empty RESP2 array
        m = {}
    if "gates" in m and isinstance(m["gates"], list):
        m["gates"] = {}
    return m


@dataclass(frozen=True)
class FetchReply:
    """A ``TCACHE.FETCH`` reply.

    ``kind`` is ``"HIT"``, ``"LEASE"``, ``"WAIT"`` or ``"STALE"``; ``value`` is set for HIT
    and STALE; ``token`` for LEASE and for the one STALE caller that must refresh.
    """

    kind: str
    value: Any = None
    token: Optional[str] = None


def _fetch(resp: Any, **_: Any) -> FetchReply:
    kind = _s(resp[0])
    if kind == "HIT":
        return FetchReply(kind, resp[1])
    if kind == "LEASE":
        return FetchReply(kind, None, _s(resp[1]))
    if kind == "STALE":
        return FetchReply(kind, resp[1], _s(resp[2]) if len(resp) > 2 else None)
    return FetchReply(kind)


def _perm_check(resp: Any, **_: Any) -> Union[None, bool, list[bool]]:
    if resp is None:
        return None
    if isinstance(resp, list):
        return [bool(int(x)) for x in resp]
    return bool(int(resp))


def _raw(resp: Any, **_: Any) -> Any:
    return resp


CALLBACKS: dict[str, Callable[..., Any]] = {
    "TCACHE.SET": _ok,
    "TCACHE.GET": _raw,
    "TCACHE.MGET": _raw,
    "TCACHE.DEL": _int,
    "TCACHE.TAGS": _optional_str_list,
    "TCACHE.INVALTAG": _int,
    "TCACHE.STALETAG": _int,
    "TCACHE.INVALPREFIX": _int,
    "TCACHE.TAGCARD": _int,
    "TCACHE.TAGSCAN": _tagscan,
    "TCACHE.VERIFY": _ok,
    "TCACHE.STATS": _stats,
    "TCACHE.FETCH": _fetch,
    "TCACHE.GATE.SET": _ok,
    "TCACHE.GATE.GET": _optional_str,
    "TCACHE.GATE.DEL": _int,
    "TCACHE.GATE.LIST": _str_list,
    "TCACHE.GATE.CHECK": _ok,
    "PERM.SET": _ok,
    "PERM.GET": _optional_str,
    "PERM.CHECK": _perm_check,
    "PERM.INVALUSER": _int,
    "PERM.INVALROLE": _int,
    "PERM.INVALALL": _int,
}

#: Commands that name no key (a cluster client must be told where to send them).
KEYLESS_COMMANDS = frozenset(
    {
        "TCACHE.INVALTAG",
        "TCACHE.STALETAG",
        "TCACHE.INVALPREFIX",
        "TCACHE.TAGCARD",
        "TCACHE.TAGSCAN",
        "TCACHE.VERIFY",
        "TCACHE.STATS",
        "TCACHE.GATE.SET",
        "TCACHE.GATE.GET",
        "TCACHE.GATE.DEL",
        "TCACHE.GATE.LIST",
        "TCACHE.GATE.CHECK",
        "PERM.INVALROLE",
        "PERM.INVALALL",
    }
)


def register_callbacks(client: Any) -> None:
    """Install the tcache reply callbacks on a redis-py client of any kind."""
    setter = getattr(client, "set_response_callback", None)
    for name, cb in CALLBACKS.items():
        if setter is not None:
            setter(name, cb)
        else:  # a pipeline object
            client.response_callbacks[name] = cb


def _tags_args(tags: Optional[Iterable[EncodableT]]) -> list[EncodableT]:
    tl = list(tags) if tags is not None else []
    return ["TAGS", *tl] if tl else []


class TCacheCommands:
    """Every tcache command. ``self.execute_command`` does the I/O (sync or async)."""

    execute_command: Callable[..., Any]

    # ---- cache entries -------------------------------------------------------------
    def set(
        self,
        key: EncodableT,
        value: EncodableT,
        ttl: int,
        *,
        tags: Optional[Iterable[EncodableT]] = None,
        nx: bool = False,
        xx: bool = False,
        gate: Optional[str] = None,
        lease: Optional[str] = None,
        swr: Optional[int] = None,
        **kw: Any,
    ) -> Any:
        """``TCACHE.SET``: True, or False when NX/XX was not met or the lease lost."""
        args: list[EncodableT] = ["TCACHE.SET", key, value, int(ttl)]
        if nx:
            args.append("NX")
        if xx:
            args.append("XX")
        if gate is not None:
            args += ["GATE", gate]
        if lease is not None:
            args += ["LEASE", lease]
        if swr is not None:
            args += ["SWR", int(swr)]
        args += _tags_args(tags)
        return self.execute_command(*args, **kw)

    def get(self, key: EncodableT, **kw: Any) -> Any:
        """``TCACHE.GET``: the value or None."""
        return self.execute_command("TCACHE.GET", key, keys=[key], **kw)

    def mget(self, keys: Iterable[EncodableT], **kw: Any) -> Any:
        """``TCACHE.MGET`` (all keys in one slot on a cluster)."""
        kl = list(keys)
        return self.execute_command("TCACHE.MGET", *kl, keys=kl, **kw)

    def delete(self, *keys: EncodableT, **kw: Any) -> Any:
        """``TCACHE.DEL``: number of entries deleted."""
        return self.execute_command("TCACHE.DEL", *keys, keys=list(keys), **kw)

    def tags(self, key: EncodableT, **kw: Any) -> Any:
        """``TCACHE.TAGS``: the tags of an entry, or None."""
        return self.execute_command("TCACHE.TAGS", key, keys=[key], **kw)

    def fetch(self, key: EncodableT, lease_ms: int, wait_ms: Optional[int] = None, **kw: Any) -> Any:
        """``TCACHE.FETCH``: a :class:`FetchReply`."""
        args: list[EncodableT] = ["TCACHE.FETCH", key, int(lease_ms)]
        if wait_ms is not None:
            args += ["WAIT", int(wait_ms)]
        return self.execute_command(*args, keys=[key], **kw)

    # ---- invalidation ---------------------------------------------------------------
    def invaltag(self, *tags: EncodableT, **kw: Any) -> Any:
        """``TCACHE.INVALTAG``: entries removed (on a cluster: on every primary, the cluster-wide count)."""
        return self.execute_command("TCACHE.INVALTAG", *tags, **kw)

    def staletag(self, *tags: EncodableT, **kw: Any) -> Any:
        """``TCACHE.STALETAG``: entries marked stale (on a cluster: on every primary, the cluster-wide count)."""
        return self.execute_command("TCACHE.STALETAG", *tags, **kw)

    def invalprefix(self, prefix: EncodableT, **kw: Any) -> Any:
        """``TCACHE.INVALPREFIX``: entries removed (on a cluster: on every primary, the cluster-wide count)."""
        return self.execute_command("TCACHE.INVALPREFIX", prefix, **kw)

    def tagcard(self, tag: EncodableT, **kw: Any) -> Any:
        """``TCACHE.TAGCARD``: live entries carrying the tag (this node)."""
        return self.execute_command("TCACHE.TAGCARD", tag, **kw)

    def tagscan(self, tag: EncodableT, cursor: int = 0, count: Optional[int] = None, **kw: Any) -> Any:
        """``TCACHE.TAGSCAN``: ``(next_cursor, [key, ...])`` (this node)."""
        args: list[EncodableT] = ["TCACHE.TAGSCAN", tag, int(cursor)]
        if count is not None:
            args += ["COUNT", int(count)]
        return self.execute_command(*args, **kw)

    def verify(self, **kw: Any) -> Any:
        """``TCACHE.VERIFY``: True (an inconsistency raises ``ResponseError``)."""
        return self.execute_command("TCACHE.VERIFY", **kw)

    def stats(self, reset: bool = False, **kw: Any) -> Any:
        """``TCACHE.STATS``: a dict (RESP2 and RESP3 alike); with ``reset``: True."""
        args: list[EncodableT] = ["TCACHE.STATS"]
        if reset:
            args.append("RESET")
        return self.execute_command(*args, **kw)

    # ---- gates ----------------------------------------------------------------------
    def gate_set(self, name: str, schema: EncodableT, prefix: Optional[EncodableT] = None, **kw: Any) -> Any:
        args: list[EncodableT] = ["TCACHE.GATE.SET", name, schema]
        if prefix is not None:
            args += ["PREFIX", prefix]
        return self.execute_command(*args, **kw)

    def gate_get(self, name: str, **kw: Any) -> Any:
        return self.execute_command("TCACHE.GATE.GET", name, **kw)

    def gate_del(self, name: str, **kw: Any) -> Any:
        return self.execute_command("TCACHE.GATE.DEL", name, **kw)

    def gate_list(self, **kw: Any) -> Any:
        return self.execute_command("TCACHE.GATE.LIST", **kw)

    def gate_check(self, name: str, value: EncodableT, **kw: Any) -> Any:
        """True, or raises :class:`~redis_tcache.GateRejected`."""
        return self.execute_command("TCACHE.GATE.CHECK", name, value, **kw)

    # ---- permissions ----------------------------------------------------------------
    def perm_set(self, key: EncodableT, value: EncodableT, ttl: Optional[int] = None, **kw: Any) -> Any:
        args: list[EncodableT] = ["PERM.SET", key, value]
        if ttl is not None:
            args.append(int(ttl))
        return self.execute_command(*args, keys=[key], **kw)

    def perm_get(self, key: EncodableT, **kw: Any) -> Any:
        return self.execute_command("PERM.GET", key, keys=[key], **kw)

    def perm_check(self, key: EncodableT, *permissions: EncodableT, **kw: Any) -> Any:
        """True/False for one permission, a list for several, None when not cached."""
        return self.execute_command("PERM.CHECK", key, *permissions, keys=[key], **kw)

    def perm_invaluser(self, *keys: EncodableT, **kw: Any) -> Any:
        return self.execute_command("PERM.INVALUSER", *keys, keys=list(keys), **kw)

    def perm_invalrole(self, *roles: EncodableT, **kw: Any) -> Any:
        """``PERM.INVALROLE``: entries removed (on a cluster: on every primary, the cluster-wide count)."""
        return self.execute_command("PERM.INVALROLE", *roles, **kw)

    def perm_invalall(self, **kw: Any) -> Any:
        """``PERM.INVALALL``: entries removed (on a cluster: on every primary, the cluster-wide count)."""
        return self.execute_command("PERM.INVALALL", **kw)


class TCacheModule(TCacheCommands):
    """The tcache commands bound to a redis-py client (``redis.Redis``, its asyncio form,
    ``RedisCluster`` or its asyncio form). Installs the reply callbacks on the client.

    On a cluster, keyless commands need ``target_nodes=`` (e.g.
    ``RedisCluster.PRIMARIES`` or one node); :class:`~redis_tcache.TCache` does that for you.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        register_callbacks(client)
        self.execute_command = self._execute

    def _execute(self, *args: Any, **kw: Any) -> Any:
        kw.pop("keys", None)
        name = str(args[0]).upper()
        if name.count(".") > 1 and _is_cluster(self.client):
            return self._execute_on_nodes(name, args, kw)
        return self.client.execute_command(*args, **kw)

    def _execute_on_nodes(self, name: str, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        """redis-py's cluster clients (8.x) refuse command names with two dots
        (``TCACHE.GATE.SET``: "Wrong command or module name"); such commands go straight to
        the node(s) named by ``target_nodes`` (default: a random primary)."""
        c = self.client
        target = kw.pop("target_nodes", None)
        if target is None or target in ("random", "default-node"):
            nodes = [c.get_random_node() if target == "random" else c.get_default_node()]
        elif target == "primaries":
            nodes = list(c.get_primaries())
        elif target in ("all", "replicas"):
            nodes = list(c.get_nodes()) if target == "all" else list(c.get_replicas())
        elif isinstance(target, (list, tuple)):
            nodes = list(target)
        else:
            nodes = [target]
        cb = CALLBACKS.get(name)
        is_async = not hasattr(c, "get_redis_connection")

        def finish(node: Any, res: Any) -> Any:
            node_cbs = getattr(node, "response_callbacks", None) or {}
            if cb is not None and name not in node_cbs:
                return cb(res)
            return res

        if is_async:

            async def run() -> Any:
                out = [finish(n, await n.execute_command(*args, **kw)) for n in nodes]
                return out[0] if len(out) == 1 else {n.name: r for n, r in zip(nodes, out, strict=True)}

            return run()
        results = []
        for n in nodes:
            conn = c.get_redis_connection(n)
            results.append(finish(conn, conn.execute_command(*args, **kw)))
        return results[0] if len(results) == 1 else {n.name: r for n, r in zip(nodes, results, strict=True)}

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> TCachePipeline:
        """A pipeline with the tcache commands (``transaction`` is ignored on a cluster).

        In cluster mode the module refuses invalidations inside ``MULTI``; a cluster pipeline
        has no ``MULTI``, so there an invalidation is one coordinated call."""
        if _is_cluster(self.client):
            pipe = self.client.pipeline()
        else:
            pipe = self.client.pipeline(transaction=transaction, shard_hint=shard_hint)
        register_callbacks(pipe)
        return TCachePipeline(pipe)


class TCachePipeline(TCacheCommands):
    """A redis-py pipeline with the tcache commands; ``execute()`` runs it."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self._cluster = type(pipe).__name__ == "ClusterPipeline"
        self.execute_command = self._execute

    def _execute(self, *args: Any, **kw: Any) -> Any:
        kw.pop("keys", None)
        self.pipe.execute_command(*args, **kw)
        return self

    def execute(self, raise_on_error: bool = True) -> Any:
        return self.pipe.execute(raise_on_error=raise_on_error)

    def __enter__(self) -> TCachePipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.pipe.reset()

    async def __aenter__(self) -> TCachePipeline:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        r = self.pipe.reset()
        if hasattr(r, "__await__"):
            await r


def _is_cluster(client: Any) -> bool:
    return type(client).__name__ == "RedisCluster" or hasattr(client, "get_primaries")
