"""A busy worker's back-to-back statements keep one pool connection and give it back when they
stop (worker/busy_connection.py): never leaked, never reused after a failure."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from pg_scheduler.worker.busy_connection import BusyConnection
from tests.support import wait_for

PID = "SELECT pg_backend_pid() AS pid"


async def test_back_to_back_statements_share_a_connection_given_back_once_idle(dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=2)
    try:
        busy = BusyConnection(pool, idle_seconds=0.2)
        pids = {(await busy.fetch(PID, timeout=5))[0]["pid"] for _ in range(20)}
        assert len(pids) == 1
        assert pool.get_idle_size() == 1  # held between statements
        await wait_for(
            lambda: pool.get_idle_size() == 2,
            timeout=5,
            message="the held connection went back to the pool once idle",
        )
        # Taken again by the next statement.
        await busy.fetch(PID, timeout=5)
        assert pool.get_idle_size() == 1
        await busy.close()
        assert pool.get_idle_size() == 2
        # After close, statements go through the pool and hold nothing.
        await busy.fetch(PID, timeout=5)
        assert pool.get_idle_size() == 2
    finally:
        await asyncio.wait_for(pool.close(), 10)  # hangs if a connection was never given back


async def test_a_failed_or_cancelled_statement_closes_its_connection_and_the_next_gets_another(
    dsn: str,
) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        busy = BusyConnection(pool)
        first = (await busy.fetch(PID, timeout=5))[0]["pid"]
        with pytest.raises(asyncpg.DivisionByZeroError):
            await busy.fetch("SELECT 1 / 0", timeout=5)
        second = (await busy.fetch(PID, timeout=5))[0]["pid"]
        assert second != first

        # Cancelled mid-statement (a shutdown): the busy session is closed, not handed on.
        sleeper = asyncio.ensure_future(busy.fetch("SELECT pg_sleep(30)", timeout=60))

        async def sleeping() -> bool:
            return bool(
                await pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'"
                    " AND state = 'active'"
                )
            )

        await wait_for(sleeping, timeout=5, message="the statement reached the server")
        sleeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeper
        third = (await busy.fetch(PID, timeout=5))[0]["pid"]
        assert third not in (first, second)
        await busy.close()
    finally:
        await asyncio.wait_for(pool.close(), 10)
