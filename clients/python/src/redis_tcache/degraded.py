"""Degraded mode: a bounded local cache used while Redis is unreachable, and the breaker."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Optional

log = logging.getLogger("redis_tcache.degraded")

__all__ = ["CircuitBreaker", "LocalCache"]


class LocalCache:
    """LRU with per-entry expiry and tags; thread-safe."""

    def __init__(self, max_entries: int = 1000, max_ttl: float = 30.0) -> None:
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self._lock = threading.Lock()
        self._data: OrderedDict[str, tuple[Any, float, tuple[str, ...]]] = OrderedDict()

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return default
            if item[1] <= time.monotonic():
                del self._data[key]
                return default
            self._data.move_to_end(key)
            return item[0]

    def set(self, key: str, value: Any, ttl: float, tags: tuple[str, ...] = ()) -> None:
        life = min(float(ttl), self.max_ttl)
        with self._lock:
            self._data[key] = (value, time.monotonic() + life, tags)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def delete(self, keys: list[str]) -> int:
        with self._lock:
            return sum(1 for k in keys if self._data.pop(k, None) is not None)

    def invalidate_tags(self, tags: list[str]) -> int:
        ts = set(tags)
        with self._lock:
            victims = [k for k, (_, _, et) in self._data.items() if ts.intersection(et)]
            for k in victims:
                del self._data[k]
            return len(victims)

    def invalidate_prefix(self, prefix: str) -> int:
        with self._lock:
            victims = [k for k in self._data if k.startswith(prefix)]
            for k in victims:
                del self._data[k]
            return len(victims)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class CircuitBreaker:
    """Closed (Redis used) until a connection error; then open (local cache used) and
    Redis is probed at most every ``probe_interval`` seconds; a successful probe closes it
    and drops the local entries (they may have missed invalidations)."""

    def __init__(self, local: LocalCache, probe_interval: float = 1.0) -> None:
        self.local = local
        self.probe_interval = probe_interval
        self._lock = threading.Lock()
        self.open = False
        self._next_probe = 0.0
        self.trips = 0
        self.recoveries = 0
        self.degraded_reads = 0
        self.degraded_writes = 0

    def trip(self, err: BaseException) -> None:
        with self._lock:
            if not self.open:
                self.open = True
                self.trips += 1
                log.warning("tcache: Redis unreachable (%s): degraded mode, local cache in use", err)
            self._next_probe = time.monotonic() + self.probe_interval

    def should_probe(self) -> bool:
        """True when the breaker is open and a probe is due (claims the probe)."""
        with self._lock:
            if not self.open or time.monotonic() < self._next_probe:
                return False
            self._next_probe = time.monotonic() + self.probe_interval
            return True

    def recover(self) -> None:
        with self._lock:
            if self.open:
                self.open = False
                self.recoveries += 1
                self.local.clear()
                log.warning("tcache: Redis reachable again: degraded mode off, local entries dropped")

    def stats(self) -> dict[str, Any]:
        return {
            "degraded": self.open,
            "degraded_trips": self.trips,
            "degraded_recoveries": self.recoveries,
            "degraded_reads": self.degraded_reads,
            "degraded_writes": self.degraded_writes,
            "degraded_entries": len(self.local),
        }


def probe_due(breaker: Optional[CircuitBreaker]) -> bool:
    return breaker is not None and breaker.should_probe()
