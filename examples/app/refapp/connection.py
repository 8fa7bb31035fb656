"""The Redis side of a worker: one server or a cluster, and the per-node figures combined.

With ``TCACHE_APP_CLUSTER=1`` the client is a ``redis.asyncio.cluster.RedisCluster`` (the
URL names any one node); otherwise a ``redis.asyncio.Redis``. Everything the services do
goes through ``AsyncTCache``, which routes keys by slot, sends each invalidation once (the
module applies it on every primary), fans out ``TCACHE.STATS`` and runs the L1's tracking
connections on every primary. What is left here is ``INFO`` for the dashboard: per node on
a cluster, so it is read on every primary and combined the way the client combines
``TCACHE.STATS`` (sums, maxima kept as maxima, the hit rate recomputed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from refapp.config import Settings

RedisClient = aioredis.Redis | RedisCluster

# Connections per server (per node on a cluster): every reader waiting in FETCH ... WAIT holds one.
MAX_CONNECTIONS = 400


def connect(settings: Settings) -> RedisClient:
    if settings.cluster:
        return RedisCluster.from_url(settings.redis_url, max_connections=MAX_CONNECTIONS)
    return aioredis.Redis.from_url(settings.redis_url, max_connections=MAX_CONNECTIONS)


def _node_reply(reply: Any) -> dict[str, Any]:
    """One node's INFO as a flat dict (redis-py may wrap it in ``{node name: reply}``)."""
    if isinstance(reply, Mapping) and reply and all(isinstance(v, Mapping) for v in reply.values()):
        reply = next(iter(reply.values()))
    return {str(k): v for k, v in (reply or {}).items()}


async def info_per_node(client: RedisClient, section: str) -> list[dict[str, Any]]:
    """``INFO section`` of the server, or of every primary of the cluster (in slot order)."""
    if isinstance(client, RedisCluster):
        await client.initialize()
        replies = await asyncio.gather(*(client.info(section, target_nodes=n) for n in client.get_primaries()))
        return [_node_reply(r) for r in replies]
    return [_node_reply(await client.info(section))]


def _add(acc: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        acc.setdefault(key, value)  # text (e.g. cluster_invalidation): the same on every node
    elif key.endswith(("_max", "_max_us")):
        acc[key] = max(acc.get(key, 0), value)
    else:
        acc[key] = acc.get(key, 0) + value


def combine_info(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-node ``INFO tcache`` figures as one: summed, ``*_max*`` as maxima, per-gate fields
    (``tcache_gate_<name>: {checked, rejected}``) summed, ``tcache_hit_rate`` recomputed."""
    out: dict[str, Any] = {}
    for rep in replies:
        for k, v in rep.items():
            if isinstance(v, Mapping):
                sub = out.setdefault(k, {})
                for sk, sv in v.items():
                    _add(sub, str(sk), sv)
            elif k != "tcache_hit_rate":
                _add(out, k, v)
    hits, misses = out.get("tcache_hits", 0), out.get("tcache_misses", 0)
    out["tcache_hit_rate"] = f"{(100.0 * hits / (hits + misses)) if hits + misses else 0.0:.2f}%"
    return out


async def server_name(client: RedisClient) -> str:
    """``redis 7.0.15``, ``valkey 9.0.1``; on a cluster ``..., cluster of 3 primaries``."""
    infos = await info_per_node(client, "server")
    info = infos[0]
    name = f"{info.get('server_name', 'redis')} {info.get('valkey_version') or info.get('redis_version')}"
    return f"{name}, cluster of {len(infos)} primaries" if isinstance(client, RedisCluster) else name
