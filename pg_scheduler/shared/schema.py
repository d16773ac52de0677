"""Numbered migrations, applied once under an advisory lock.

Any process may call :func:`migrate` at start: the transaction-scoped lock serialises concurrent
starts (0.2.3's bare CREATE TABLE raced), and each migration is recorded in
``scheduler_migrations`` so it never runs twice.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from . import queries
from .locks import MIGRATION_LOCK

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One migration file: its number, its name and its SQL."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The migrations shipped in the package, in version order."""
    found = []
    for entry in resources.files("pg_scheduler.shared.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def latest_version() -> int:
    """The version of the newest shipped migration: the schema this code needs."""
    return migrations()[-1].version


async def current_version(conn: asyncpg.Connection) -> int:
    """The schema version, 0 for a database we never migrated."""
    try:
        return int(await conn.fetchval(queries.MIGRATION_GET_CURRENT))
    except asyncpg.UndefinedTableError:
        return 0


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply the missing migrations; returns the versions applied (empty when up to date)."""
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute(queries.MIGRATION_TAKE_LOCK, *MIGRATION_LOCK)
        await conn.execute(queries.MIGRATION_CREATE_TABLE)
        done = {r["version"] for r in await conn.fetch(queries.MIGRATION_LIST_APPLIED)}
        for migration in migrations():
            if migration.version in done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(queries.MIGRATION_RECORD, migration.version, migration.name)
            applied_now.append(migration.version)
    if applied_now:
        log.info("schema: applied migrations %s", applied_now)
    return applied_now


async def ensure_schema(conn: asyncpg.Connection) -> None:
    """Migrate if the database is behind; a cheap read when it is not."""
    if await current_version(conn) >= latest_version():
        return
    await migrate(conn)
