"""Throwaway servers for the demo, the tests and the load generator.

Everything listens on 127.0.0.1 on a free port, lives in its own temporary
directory and is stopped (and the directory removed) by ``Stack.close``.

PostgreSQL: Debian's binaries refuse to run as root, so when this process is
root, ``initdb`` and ``postgres`` run as the unprivileged user ``nobody``
(``subprocess.Popen(user=..., group=...)``), with a data directory owned by it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
APP_DIR = Path(__file__).resolve().parents[1]
PG_BIN = Path(os.environ.get("TCACHE_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = os.environ.get("TCACHE_PG_OS_USER", "nobody")


def module_path() -> str:
    """The module .so: env TCACHE_MODULE (the Makefile exports it) or target/release."""
    path = os.environ.get("TCACHE_MODULE") or str(REPO_ROOT / "target" / "release" / "libtcache.so")
    if not os.path.exists(path):
        raise RuntimeError(f"module not found at {path}: run `make build`")
    return path


def server_path() -> str:
    """The server binary: env TCACHE_SERVER, else /usr/bin/redis-server."""
    return os.environ.get("TCACHE_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` s or when ``proc`` died."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout} s")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Signal a process we started, wait for it, kill it if it does not go."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


@dataclass
class Postgres:
    port: int
    dir: Path
    proc: subprocess.Popen[bytes]

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def close(self) -> None:
        stop(self.proc, signal.SIGINT)  # SIGINT: fast shutdown
        shutil.rmtree(self.dir, ignore_errors=True)


def _as_pg_user() -> tuple[int | None, int | None, list[int] | None]:
    """(uid, gid, extra groups) to run PostgreSQL with: ``nobody`` when we are root."""
    if os.geteuid() != 0:
        return None, None, None
    pw = pwd.getpwnam(PG_USER)
    return pw.pw_uid, pw.pw_gid, []


def start_postgres(timeout: float = 60.0) -> Postgres:
    """initdb in a fresh temp dir and start postgres on a free loopback port (trust auth)."""
    base = Path(tempfile.mkdtemp(prefix="tcache-app-pg-"))
    uid, gid, groups = _as_pg_user()
    if uid is not None and gid is not None:
        os.chown(base, uid, gid)
    data = base / "data"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(base)}
    log = open(base / "initdb.log", "wb")  # noqa: SIM115 (closed below)
    try:
        subprocess.run(
            [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--no-sync"],
            check=True, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=base, timeout=timeout,
            user=uid, group=gid, extra_groups=groups,
        )
    except subprocess.CalledProcessError as e:
        log.close()
        text = (base / "initdb.log").read_text(errors="replace")
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {text}") from e
    log.close()
    port = free_port()
    plog = open(base / "postgres.log", "wb")  # noqa: SIM115 (owned by the process)
    proc = subprocess.Popen(
        [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port), "-k", str(base),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
         "-c", "full_page_writes=off", "-c", "max_connections=200", "-c", "shared_buffers=64MB"],
        stdout=plog, stderr=subprocess.STDOUT, env=env, cwd=base, start_new_session=True,
        user=uid, group=gid, extra_groups=groups,
    )
    pg = Postgres(port=port, dir=base, proc=proc)
    try:
        wait_for(lambda: _pg_ready(port), timeout, "postgres", proc)
    except Exception as e:
        pg.close()
        raise RuntimeError(f"{e}\n{(base / 'postgres.log').read_text(errors='replace')[-2000:]}") from e
    return pg


def _pg_ready(port: int) -> bool:
    r = subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return r.returncode == 0


@dataclass
class TcacheServer:
    port: int
    dir: Path
    proc: subprocess.Popen[bytes]
    binary: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def _spawn_tcache(binary: str, port: int, base: Path, extra: list[str], timeout: float) -> TcacheServer:
    log = open(base / "server.log", "wb")  # noqa: SIM115 (owned by the process)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(base), "--maxclients", "2000", *extra,
         "--loadmodule", module_path(), "invalidation-channel", "tcache:inval"],
        stdout=log, stderr=subprocess.STDOUT, cwd=base, start_new_session=True,
    )
    srv = TcacheServer(port=port, dir=base, proc=proc, binary=binary)
    try:
        wait_for(lambda: port_open(port), timeout, binary, proc)
    except Exception as e:
        srv.close()
        raise RuntimeError(f"{e}\n{(base / 'server.log').read_text(errors='replace')[-2000:]}") from e
    return srv


def start_tcache(binary: str | None = None, timeout: float = 20.0) -> TcacheServer:
    """redis-server (or valkey-server) with the module, no persistence, on a free port."""
    base = Path(tempfile.mkdtemp(prefix="tcache-app-srv-"))
    return _spawn_tcache(binary or server_path(), free_port(), base, [], timeout)


@dataclass
class TcacheCluster:
    """A Redis Cluster / Valkey Cluster of primaries only, the 16384 slots split evenly, every
    node with the module; ``url`` names the first node (a cluster client finds the others)."""

    nodes: list[TcacheServer]
    binary: str
    dir: Path  # node<i>/ under it, one per node

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        for n in self.nodes:
            n.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def free_cluster_port() -> int:
    """A free loopback port whose cluster-bus port (port + 10000) is free too."""
    rnd = random.Random()
    for _ in range(200):
        port = rnd.randint(20000, 55535)
        ok = True
        for p in (port, port + 10000):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no free port pair for a cluster node")


def start_tcache_cluster(binary: str | None = None, primaries: int = 3, timeout: float = 30.0) -> TcacheCluster:
    """``primaries`` servers in cluster mode on free loopback ports, each in its own directory
    (under one temp dir), slots assigned, joined; returns once every node sees the cluster ok."""
    import redis

    binary = binary or server_path()
    base = Path(tempfile.mkdtemp(prefix="tcache-app-cluster-"))
    cluster = TcacheCluster(nodes=[], binary=binary, dir=base)
    extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"]
    try:
        for i in range(primaries):
            node_dir = base / f"node{i}"
            node_dir.mkdir()
            cluster.nodes.append(_spawn_tcache(binary, free_cluster_port(), node_dir, extra, timeout))
        per = 16384 // primaries
        for i, n in enumerate(cluster.nodes):
            last = 16383 if i == primaries - 1 else (i + 1) * per - 1
            with redis.Redis(port=n.port) as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
        with redis.Redis(port=cluster.port) as c:
            for n in cluster.nodes[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", n.port)

        def ready() -> bool:
            for n in cluster.nodes:
                with redis.Redis(port=n.port, decode_responses=True) as c:
                    info = str(c.execute_command("CLUSTER", "INFO"))
                if "cluster_state:ok" not in info or f"cluster_known_nodes:{primaries}" not in info:
                    return False
            return True

        wait_for(ready, timeout, f"cluster of {primaries} {os.path.basename(binary)}")
    except BaseException:
        cluster.close()
        raise
    return cluster


@dataclass
class App:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        stop(self.proc, signal.SIGTERM, timeout=15)


def app_env(pg: Postgres, srv: TcacheServer | TcacheCluster, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"TCACHE_APP_DSN": pg.dsn, "TCACHE_APP_REDIS": srv.url,
                "TCACHE_APP_CLUSTER": "1" if isinstance(srv, TcacheCluster) else ""})
    env.update(extra)
    return env


def start_app(env: dict[str, str], workers: int = 1, timeout: float = 60.0, log_dir: Path | None = None,
              quiet: bool = True) -> App:
    """uvicorn serving refapp.main:app on a free loopback port, ``workers`` processes."""
    import urllib.request

    port = free_port()
    log_dir = log_dir or Path(tempfile.gettempdir())
    log = log_dir / f"tcache-app-{port}.log"
    out = open(log, "wb") if quiet else None  # noqa: SIM115 (owned by the process)
    cmd = [sys.executable, "-m", "uvicorn", "refapp.main:app", "--app-dir", str(APP_DIR),
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None, env=env,
                            cwd=APP_DIR, start_new_session=True)
    app = App(port=port, proc=proc, log=log)

    def ready() -> bool:
        # With several workers, keep asking until every worker answered once.
        try:
            with urllib.request.urlopen(f"{app.url}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_for(ready, timeout, "app", proc)
    except Exception as e:
        app.close()
        text = log.read_text(errors="replace")[-3000:] if out else ""
        raise RuntimeError(f"{e}\n{text}") from e
    return app


@dataclass
class Stack:
    """PostgreSQL + tcache (a server or a cluster), seeded; apps are started on top by the caller."""

    pg: Postgres
    srv: TcacheServer | TcacheCluster
    apps: list[App] = field(default_factory=list)

    def close(self) -> None:
        for app in self.apps:
            app.close()
        self.srv.close()
        self.pg.close()


def start_stack(binary: str | None = None, cluster: bool = False) -> Stack:
    """With ``cluster``, tcache is a 3-primary cluster (``start_tcache_cluster``)."""
    import asyncio

    from refapp import db

    pg = start_postgres()
    try:
        srv: TcacheServer | TcacheCluster = start_tcache_cluster(binary) if cluster else start_tcache(binary)
    except Exception:
        pg.close()
        raise
    stack = Stack(pg=pg, srv=srv)
    try:
        asyncio.run(db.create_and_seed(pg.dsn))
    except Exception:
        stack.close()
        raise
    return stack


@contextlib.contextmanager
def running_stack(binary: str | None = None, cluster: bool = False) -> Iterator[Stack]:
    stack = start_stack(binary, cluster)
    try:
        yield stack
    finally:
        stack.close()
