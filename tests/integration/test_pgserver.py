"""The test plumbing itself: per-test databases and the TestPostgres server.

If these fail, every scheduler test would fail for reasons that have nothing
to do with the scheduler, so they come first and say what broke.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

import asyncpg
import pytest

from pg_scheduler.shared.errors import EmbeddedPostgresError
from tests.pgserver import TestPostgres

# Databases seen by test_fresh_database_per_test, in the order they ran.
_seen_databases: list[str] = []


@pytest.mark.parametrize("run", [1, 2])
async def test_fresh_database_per_test(run: int, dsn: str, pg_server_dsn: str) -> None:
    """Each run gets a new, empty database; the previous run's is gone (DROP worked)."""
    conn = await asyncpg.connect(dsn)
    try:
        name = await conn.fetchval("SELECT current_database()")
        tables = await conn.fetch(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        )
        # The table the other run created must not be visible here.
        assert tables == []
        await conn.execute("CREATE TABLE leftover (id int)")
    finally:
        await conn.close()

    assert name.startswith("test_")
    assert name not in _seen_databases
    admin = await asyncpg.connect(pg_server_dsn)
    try:
        still_there = await admin.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = ANY($1::text[])", _seen_databases
        )
    finally:
        await admin.close()
    assert still_there == 0
    _seen_databases.append(name)


async def test_pool_talks_tcp(pool: asyncpg.Pool, dsn: str) -> None:
    """The pool fixture works and connects over TCP (inet_server_addr() is NULL on a socket)."""
    row = await pool.fetchrow("SELECT inet_server_addr() AS addr, inet_server_port() AS port")
    assert row is not None
    assert row["addr"] is not None
    assert row["port"] is not None
    if urlsplit(dsn).hostname == "127.0.0.1":  # the embedded backend; docker/url may differ
        assert str(row["addr"]) == "127.0.0.1"


async def test_restart_keeps_data_and_port() -> None:
    """A separate server, so restarting it does not disturb the session's one."""
    with TestPostgres() as pg:
        port = pg.port
        conn = await asyncpg.connect(pg.dsn())
        try:
            addr = await conn.fetchval("SELECT host(inet_server_addr())")
            await conn.execute("CREATE TABLE kept (v text)")
            await conn.execute("INSERT INTO kept VALUES ($1)", "before restart")
        finally:
            await conn.close()
        assert addr == "127.0.0.1"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass

        old_pid = pg.pid
        await asyncio.to_thread(pg.restart)
        assert pg.port == port
        assert pg.pid != old_pid

        conn = await asyncpg.connect(pg.dsn())
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "before restart"
        finally:
            await conn.close()


@pytest.mark.slow
async def test_kill_then_start_recovers_committed_data() -> None:
    """kill() is a real crash: open connections break, and start() recovers."""
    with TestPostgres() as pg:
        conn = await asyncpg.connect(pg.dsn())
        await conn.execute("CREATE TABLE survived (v int)")
        async with conn.transaction():
            # The server runs with synchronous_commit=off; make this commit durable.
            await conn.execute("SET LOCAL synchronous_commit = on")
            await conn.execute("INSERT INTO survived VALUES ($1)", 42)

        await asyncio.to_thread(pg.kill)
        assert pg.pid is None
        with pytest.raises((asyncpg.PostgresError, OSError, asyncpg.InterfaceError)):
            await conn.fetchval("SELECT 1")
        conn.terminate()

        await asyncio.to_thread(pg.start)
        conn = await asyncpg.connect(pg.dsn())
        try:
            assert await conn.fetchval("SELECT v FROM survived") == 42
        finally:
            await conn.close()
        assert "database system was interrupted" in pg.logfile.read_text()


def test_start_failure_reports_log_tail() -> None:
    """A taken port makes start() fail with the server's own words, and close() cleans up."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        pg = TestPostgres(port=blocker.getsockname()[1])
        try:
            with pytest.raises(EmbeddedPostgresError, match="Address already in use"):
                pg.start()
        finally:
            pg.close()
    assert not pg.base.exists()
