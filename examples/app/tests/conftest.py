"""One stack per test session: a throwaway PostgreSQL (seeded), a tcache server, and two
app processes (A and B) on top, so that behaviours across workers are observable.
tests/test_cluster.py starts a second one, on a 3-primary cluster (``running_env``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis

from refapp import harness

GEN_DELAY = 1.0  # seconds of simulated AI generation in the tests


@dataclass
class Env:
    stack: harness.Stack
    a: harness.App
    b: harness.App

    @property
    def dsn(self) -> str:
        return self.stack.pg.dsn

    def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.dsn)
            try:
                rows: list[asyncpg.Record] = await conn.fetch(query, *args)
                return rows
            finally:
                await conn.close()

        return asyncio.run(run())

    def sqlval(self, query: str, *args: Any) -> Any:
        rows = self.sql(query, *args)
        return rows[0][0] if rows else None

    def computations(self, kind: str, subject: str | None = None) -> int:
        if subject is None:
            return int(self.sqlval("SELECT count(*) FROM computations WHERE kind = $1", kind))
        return int(self.sqlval("SELECT count(*) FROM computations WHERE kind = $1 AND subject = $2", kind, subject))

    def computations_like(self, kind: str, pattern: str) -> int:
        return int(self.sqlval("SELECT count(*) FROM computations WHERE kind = $1 AND subject LIKE $2",
                               kind, pattern))

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.stack.srv.port, decode_responses=True)


@contextlib.contextmanager
def running_env(logs: Path, cluster: bool = False) -> Iterator[Env]:
    """The stack (tcache: one server, or a 3-primary cluster) and apps A and B on it."""
    stack = harness.start_stack(os.environ.get("TCACHE_SERVER"), cluster=cluster)
    try:
        app_env = harness.app_env(stack.pg, stack.srv, TCACHE_APP_GEN_DELAY=str(GEN_DELAY),
                                  TCACHE_APP_VOICE_DELAY="0.2", TCACHE_APP_PERSONA_DELAY="0.01")
        a = harness.start_app(app_env, log_dir=logs)
        stack.apps.append(a)
        b = harness.start_app(app_env, log_dir=logs)
        stack.apps.append(b)
        yield Env(stack=stack, a=a, b=b)
    finally:
        stack.close()
        for log in logs.glob("*.log"):  # on failure, pytest shows what the apps said
            text = log.read_text(errors="replace")
            if "Traceback" in text:
                print(f"--- {log.name}\n{text[-4000:]}")


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with running_env(Path(tmp_path_factory.mktemp("app-logs"))) as e:
        yield e


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=120) as c:
        yield c


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout} s")
        time.sleep(0.02)
