"""Settings, from the environment (the harness, `make demo` and the tests set them)."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class Settings:
    dsn: str
    redis_url: str
    # TCACHE_APP_CLUSTER=1: redis_url is one node of a Redis Cluster / Valkey Cluster (the
    # client finds the others), served by redis.asyncio.cluster.RedisCluster.
    cluster: bool
    gen_delay: float  # seconds one AI report generation takes
    voice_delay: float  # seconds one call to the external voice API takes
    persona_delay: float  # seconds rendering one persona takes
    report_ttl: int
    report_swr: int
    perm_ttl: int
    lease_ms: int
    # How long a reader blocks in FETCH ... WAIT before asking again. Kept under redis-py's
    # default socket timeout (5 s in redis-py 8), and short because a waiter is not woken
    # when the lease holder's write is refused after a reset: it waits out its timeout.
    wait_ms: int

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            dsn=os.environ.get("TCACHE_APP_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
            redis_url=os.environ.get("TCACHE_APP_REDIS", "redis://127.0.0.1:6390/0"),
            cluster=os.environ.get("TCACHE_APP_CLUSTER", "").lower() in ("1", "true", "yes"),
            gen_delay=_float("TCACHE_APP_GEN_DELAY", 3.0),
            voice_delay=_float("TCACHE_APP_VOICE_DELAY", 0.3),
            persona_delay=_float("TCACHE_APP_PERSONA_DELAY", 0.05),
            report_ttl=int(_float("TCACHE_APP_REPORT_TTL", 900)),
            report_swr=int(_float("TCACHE_APP_REPORT_SWR", 60)),
            perm_ttl=int(_float("TCACHE_APP_PERM_TTL", 300)),
            lease_ms=int(_float("TCACHE_APP_LEASE_MS", 60_000)),
            wait_ms=int(_float("TCACHE_APP_WAIT_MS", 2_000)),
        )
