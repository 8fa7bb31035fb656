"""The in-process L1 near cache and the tracking connections that keep it coherent.

Coherence rules (see the README, *Guarantees*):

* Each server node gets one dedicated tracking connection (a plain socket, RESP3, in a
  daemon thread; it does not depend on redis-py nor on an event loop, so the sync and the
  asyncio cache share it) with ``CLIENT TRACKING on BCAST PREFIX <namespace>``: the server
  sends an invalidation push for every key under the namespace that is deleted,
  overwritten, expired or invalidated (INVALTAG, the reclaimer...), whoever did it. When
  the module's invalidation channel is configured, the connection also subscribes to it,
  so tag/prefix/role invalidations that the server applies logically (and whose per-key
  pushes come later, from the reclaimer) drop the L1 entries at once.
* An L1 entry keeps the tags it was stored with; ``invalidate_tags`` (and the other local
  invalidations) drop the matching L1 entries *before* they return.
* A fill (an L2 read whose result goes into the L1) registers itself first; any
  invalidation that arrives or is made locally while a fill is in flight marks the fill
  dirty and the fill is discarded.
* While a tracking connection is not established, the L1 is bypassed; when it breaks,
  everything is dropped.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

log = logging.getLogger("redis_tcache.l1")

__all__ = ["L1Cache", "Tracker"]

_MISSING = object()


@dataclass
class _Entry:
    value: Any
    size: int
    tags: tuple[str, ...]
    expires: float
    fill_id: int = 0


@dataclass
class _Fill:
    key: str
    dirty: bool = False
    done: bool = field(default=False)


class L1Cache:
    """A bounded LRU (entries and bytes) with a tag index and in-flight fill tracking."""

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 64 * 1024 * 1024, max_ttl: float = 300.0) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_ttl = max_ttl
        self._lock = threading.Lock()
        self._data: OrderedDict[str, _Entry] = OrderedDict()
        self._by_tag: dict[str, set[str]] = {}
        self._bytes = 0
        self._fills: dict[int, _Fill] = {}
        self._fill_seq = 0
        self._ready = 0  # number of nodes whose tracking is up
        self._needed = 1
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.invalidations = 0
        self.flushes = 0
        self.fills_discarded = 0

    # ---- readiness ---------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self._ready >= self._needed

    def set_ready(self, ready: int, needed: int) -> None:
        with self._lock:
            self._ready, self._needed = ready, needed

    # ---- reads -------------------------------------------------------------------------
    def get(self, key: str) -> Any:
        """The cached value or ``_MISSING`` (counts a hit or a miss)."""
        if not self.active:
            return _MISSING
        with self._lock:
            e = self._data.get(key)
            if e is None or e.expires <= time.monotonic():
                if e is not None:
                    self._drop(key)
                self.misses += 1
                return _MISSING
            self._data.move_to_end(key)
            self.hits += 1
            return e.value

    def __len__(self) -> int:
        return len(self._data)

    @property
    def bytes(self) -> int:
        return self._bytes

    # ---- fills -------------------------------------------------------------------------
    def begin_fill(self, key: str) -> int:
        with self._lock:
            self._fill_seq += 1
            self._fills[self._fill_seq] = _Fill(key)
            return self._fill_seq

    def end_fill(self, fill_id: int, value: Any, size: int, tags: Iterable[str], ttl: Optional[float]) -> bool:
        """Store the fill unless an invalidation raced it. Returns whether it was stored."""
        with self._lock:
            f = self._fills.pop(fill_id, None)
            if f is None or f.dirty or not self.active:
                self.fills_discarded += 1
                return False
            if size > self.max_bytes:
                return False
            life = self.max_ttl if ttl is None or ttl <= 0 else min(self.max_ttl, ttl)
            old = self._data.get(f.key)
            if old is not None:
                if old.fill_id > fill_id:  # a fill that started later already stored
                    self.fills_discarded += 1
                    return False
                self._drop(f.key)
            e = _Entry(value, size, tuple(tags), time.monotonic() + life, fill_id)
            self._data[f.key] = e
            self._bytes += size
            for t in e.tags:
                self._by_tag.setdefault(t, set()).add(f.key)
            while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
                self._drop(next(iter(self._data)))
                self.evictions += 1
            return True

    def cancel_fill(self, fill_id: int) -> None:
        with self._lock:
            self._fills.pop(fill_id, None)

    # ---- invalidation ------------------------------------------------------------------
    def _drop(self, key: str) -> None:
        e = self._data.pop(key, None)
        if e is None:
            return
        self._bytes -= e.size
        for t in e.tags:
            s = self._by_tag.get(t)
            if s is not None:
                s.discard(key)
                if not s:
                    del self._by_tag[t]

    def _dirty(self, pred: Callable[[str], bool]) -> None:
        for f in self._fills.values():
            if not f.dirty and pred(f.key):
                f.dirty = True

    def invalidate_keys(self, keys: Iterable[str]) -> None:
        ks = set(keys)
        with self._lock:
            self.invalidations += 1
            for k in ks:
                self._drop(k)
            self._dirty(ks.__contains__)

    def invalidate_tags(self, tags: Iterable[str]) -> None:
        with self._lock:
            self.invalidations += 1
            for t in tags:
                for k in list(self._by_tag.get(t, ())):
                    self._drop(k)
            # a fill in flight does not know its tags yet: discard them all
            self._dirty(lambda _k: True)

    def invalidate_prefix(self, prefix: str) -> None:
        with self._lock:
            self.invalidations += 1
            for k in [k for k in self._data if k.startswith(prefix)]:
                self._drop(k)
            self._dirty(lambda k: k.startswith(prefix))

    def clear(self) -> None:
        with self._lock:
            self.flushes += 1
            self._data.clear()
            self._by_tag.clear()
            self._bytes = 0
            self._dirty(lambda _k: True)

    def stats(self) -> dict[str, int]:
        return {
            "l1_hits": self.hits,
            "l1_misses": self.misses,
            "l1_entries": len(self._data),
            "l1_bytes": self._bytes,
            "l1_evictions": self.evictions,
            "l1_invalidations": self.invalidations,
            "l1_flushes": self.flushes,
            "l1_fills_discarded": self.fills_discarded,
        }


# ---- a minimal RESP3 reader for the tracking connection ------------------------------


class _Resp3Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return line
            self._more()

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("tracking connection closed by the server")
        self.buf += chunk

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self._more()
        data = bytes(self.buf[:n])
        del self.buf[: n + 2]
        return data

    def read(self) -> Any:
        line = self._line()
        t, rest = line[:1], line[1:]
        if t in (b"+",):
            return rest.decode()
        if t == b"-" or t == b"!":
            if t == b"!":
                rest = self._exact(int(rest))
            return RuntimeError(rest.decode(errors="replace"))
        if t == b":":
            return int(rest)
        if t in (b"$", b"="):
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if t == b"_":
            return None
        if t in (b"#",):
            return rest == b"t"
        if t in (b",", b"("):
            return rest.decode()
        if t in (b"*", b"~", b">"):
            n = int(rest)
            items = [] if n < 0 else [self.read() for _ in range(n)]
            return ("push", items) if t == b">" else items
        if t == b"%" or t == b"|":
            n = int(rest)
            m = {}
            for _ in range(n):
                k = self.read()
                m[k if not isinstance(k, list) else tuple(k)] = self.read()
            if t == b"|":  # an attribute: the real reply follows
                return self.read()
            return m
        raise ConnectionError(f"unexpected RESP3 type {t!r}")


def _encode(*args: Any) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


@dataclass
class NodeAddress:
    host: str
    port: int
    username: Optional[str] = None
    password: Optional[str] = None


class Tracker:
    """One tracking connection per node, each in a daemon thread, feeding an :class:`L1Cache`."""

    def __init__(
        self,
        l1: L1Cache,
        nodes: list[NodeAddress],
        prefix: str,
        channel: Optional[str] = None,
        reconnect_delay: float = 0.5,
        connect_timeout: float = 5.0,
    ) -> None:
        self.l1 = l1
        self.nodes = nodes
        self.prefix = prefix
        self.channel = channel
        self.reconnect_delay = reconnect_delay
        self.connect_timeout = connect_timeout
        self._stop = threading.Event()
        self._socks: dict[int, socket.socket] = {}
        self._up: set[int] = set()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.breaks = 0
        self.pushes = 0
        self._pings: dict[bytes, threading.Event] = {}
        self._ids: dict[int, int] = {}
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"tcache-tracking-{n.host}:{n.port}", daemon=True)
            for i, n in enumerate(nodes)
        ]
        l1.set_ready(0, len(nodes))

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._up) < len(self.nodes):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def _shut_down_sockets(self) -> list[socket.socket]:
        """Shuts every tracking socket down (each reader thread then sees its end)."""
        with self._lock:
            socks = list(self._socks.values())
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return socks

    def close(self) -> None:
        self._stop.set()
        for s in self._shut_down_sockets():
            s.close()
        for t in self._threads:
            t.join(timeout=2)
        self.l1.set_ready(0, max(1, len(self.nodes)))
        self.l1.clear()

    def kill_connections(self) -> None:
        """Break every tracking connection (tests): the L1 is flushed, then they reconnect."""
        self._shut_down_sockets()

    def client_ids(self) -> list[int]:
        """Server-side ids of the tracking connections (``CLIENT ID``)."""
        return list(self._ids.values())

    def sync(self, timeout: float = 5.0) -> bool:
        """Wait until every push the server queued for the tracking connections before this
        call has been applied to the L1 (a ``PING`` round trip on each of them). False when
        a connection is down or the timeout passed."""
        import os

        with self._lock:
            if len(self._up) < len(self.nodes):
                return False
            waits = []
            for i, sock in self._socks.items():
                token = f"tcache-sync-{os.getpid()}-{i}-{time.monotonic_ns()}".encode()
                ev = threading.Event()
                self._pings[token] = ev
                waits.append((token, ev))
                try:
                    sock.sendall(_encode("PING", token))
                except OSError:
                    return False
        deadline = time.monotonic() + timeout
        ok = True
        for token, ev in waits:
            ok = ev.wait(max(0.0, deadline - time.monotonic())) and ok
            self._pings.pop(token, None)
        return ok

    def _set_up(self, i: int, up: bool) -> None:
        with self._changed:
            if up:
                self._up.add(i)
            else:
                self._up.discard(i)
            self.l1.set_ready(len(self._up), len(self.nodes))
            self._changed.notify_all()

    def _command(self, sock: socket.socket, reader: _Resp3Reader, *args: Any) -> Any:
        sock.sendall(_encode(*args))
        while True:
            r = reader.read()
            if isinstance(r, tuple):
                self._handle_push(r[1])
                continue
            if isinstance(r, RuntimeError):
                raise r
            return r

    def _handle_push(self, items: list[Any]) -> None:
        if not items:
            return
        kind = items[0].decode() if isinstance(items[0], bytes) else str(items[0])
        self.pushes += 1
        if kind == "invalidate":
            keys = items[1] if len(items) > 1 else None
            if keys is None:  # FLUSHALL / FLUSHDB
                self.l1.clear()
            else:
                self.l1.invalidate_keys(k.decode("utf-8", "surrogateescape") for k in keys)
        elif kind == "message" and len(items) >= 3:
            msg = items[2].decode("utf-8", "surrogateescape")
            what, _, name = msg.partition(":")
            if what == "tag":
                self.l1.invalidate_tags([name])
            elif what == "prefix":
                self.l1.invalidate_prefix(name)

    def _run(self, i: int) -> None:
        node = self.nodes[i]
        while not self._stop.is_set():
            sock: Optional[socket.socket] = None
            try:
                sock = socket.create_connection((node.host, node.port), timeout=self.connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self._lock:
                    self._socks[i] = sock
                reader = _Resp3Reader(sock)
                hello: list[Any] = ["HELLO", 3]
                if node.password is not None:
                    hello += ["AUTH", node.username or "default", node.password]
                self._command(sock, reader, *hello)
                self._command(sock, reader, "CLIENT", "SETNAME", "tcache-l1-tracking")
                self._ids[i] = int(self._command(sock, reader, "CLIENT", "ID"))
                track: list[Any] = ["CLIENT", "TRACKING", "on", "BCAST"]
                if self.prefix:
                    track += ["PREFIX", self.prefix]
                self._command(sock, reader, *track)
                if self.channel:
                    sock.sendall(_encode("SUBSCRIBE", self.channel))
                    while True:  # the subscribe confirmation is a push too
                        r = reader.read()
                        if isinstance(r, tuple) and r[1] and r[1][0] in (b"subscribe", "subscribe"):
                            break
                        if isinstance(r, tuple):
                            self._handle_push(r[1])
                sock.settimeout(None)
                self.l1.clear()  # fills that read before tracking was on are discarded
                self._set_up(i, True)
                log.info("tcache L1: tracking connection to %s:%s up", node.host, node.port)
                while True:
                    r = reader.read()
                    if isinstance(r, tuple):
                        self._handle_push(r[1])
                    elif isinstance(r, bytes) and r in self._pings:
                        self._pings[r].set()
            except (OSError, ConnectionError, RuntimeError, ValueError) as e:
                if not self._stop.is_set():
                    log.warning("tcache L1: tracking to %s:%s lost (%s): L1 flushed", node.host, node.port, e)
            finally:
                was_up = i in self._up
                self._set_up(i, False)
                self.l1.clear()
                if was_up:
                    self.breaks += 1
                with self._lock:
                    self._socks.pop(i, None)
                if sock is not None:
                    try:
                        sock.close()
                    except OSError:
                        pass
            self._stop.wait(self.reconnect_delay)
