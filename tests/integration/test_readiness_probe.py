"""The pod's readiness probe asks the database when ``/readyz`` is asked, at most once a second.

An idle pod that nobody probes sends no statement for its readiness; one probed every 5 s (the
chart's period) sends one every 5 s; requests that come together share one statement; no request
waits longer than the probe's deadline, and neither a request that goes away nor a stop leaves a
request without its answer. The outage seen from outside (unready within
``DATABASE_STALE_SECONDS`` of the database going away, ready again when it is back) is
tests/processes/test_metrics.py's, with a real pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from pg_scheduler import Scheduler
from pg_scheduler.shared import queries
from pg_scheduler.supervisor.endpoints import PROBE_FRESH_SECONDS, PROBE_TIMEOUT_SECONDS, DatabaseProbe


async def test_readiness_probe_asks_only_when_asked_and_at_most_once_a_second(dsn: str) -> None:
    probes: list[float] = []

    def logged(record: Any) -> None:
        if record.query == queries.WORKER_COUNT_LIVE:
            probes.append(time.monotonic())

    async def attach(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(logged)

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, init=attach)
    try:
        await Scheduler(pool).initialize_db()
        await pool.execute(queries.WORKER_REGISTER, "w-1", "worker", "host", 1, [], "sup-1", None, timeout=5)
        probe = DatabaseProbe(pool, supervisor_id="sup-1", stale_seconds=15)
        assert not probe.reachable()  # nothing asked yet: nothing known

        # Five requests at once: one statement, and each request sees its answer.
        await asyncio.gather(*(probe.refresh() for _ in range(5)))
        assert len(probes) == 1
        assert probe.reachable() and probe.workers_registered == 1

        # Asked again within PROBE_FRESH_SECONDS: the answer is fresh enough, no statement.
        await probe.refresh()
        assert len(probes) == 1

        # Nobody asks: nothing is sent, however long.
        await asyncio.sleep(PROBE_FRESH_SECONDS + 0.2)
        assert len(probes) == 1

        # Asked once the answer is older than PROBE_FRESH_SECONDS: one new statement.
        await probe.refresh()
        assert len(probes) == 2
        assert probes[1] - probes[0] >= PROBE_FRESH_SECONDS

        # Stopped: no statement after, even when asked.
        await probe.stop()
        await asyncio.sleep(PROBE_FRESH_SECONDS + 0.1)
        await probe.refresh()
        assert len(probes) == 2
    finally:
        await pool.close()


@pytest.fixture
async def one_connection(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool of one connection on a set-up database: holding it holds every probe back."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        await Scheduler(pool).initialize_db()
        yield pool
    finally:
        await pool.close()


async def test_a_probe_that_cannot_get_a_connection_answers_unready_within_its_deadline(
    one_connection: asyncpg.Pool,
) -> None:
    async with one_connection.acquire():  # the pool's one connection busy: no probe can run
        probe = DatabaseProbe(one_connection, supervisor_id="sup-1", stale_seconds=15)
        began = time.monotonic()
        await probe.refresh()
        waited = time.monotonic() - began
        assert PROBE_TIMEOUT_SECONDS - 0.1 <= waited < PROBE_TIMEOUT_SECONDS + 1.0
        assert not probe.reachable()
    await probe.stop()


async def test_a_request_that_goes_away_leaves_the_probe_to_the_others(one_connection: asyncpg.Pool) -> None:
    probe = DatabaseProbe(one_connection, supervisor_id="sup-1", stale_seconds=15)
    async with one_connection.acquire():  # hold the probe back until both requests wait for it
        gone = asyncio.create_task(probe.refresh())
        staying = asyncio.create_task(probe.refresh())
        await asyncio.sleep(0.1)
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
    await asyncio.wait_for(staying, PROBE_TIMEOUT_SECONDS + 1.0)
    assert probe.reachable()
    await probe.stop()


async def test_stop_during_a_probe_ends_it_and_its_requests_without_an_error(
    one_connection: asyncpg.Pool,
) -> None:
    probe = DatabaseProbe(one_connection, supervisor_id="sup-1", stale_seconds=15)
    async with one_connection.acquire():
        waiting = asyncio.create_task(probe.refresh())
        await asyncio.sleep(0.1)
        began = time.monotonic()
        await probe.stop()
        await asyncio.wait_for(waiting, 1.0)  # returns, does not raise CancelledError
        assert time.monotonic() - began < 1.0
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "pg_scheduler:database_probe"]


async def test_during_an_outage_requests_still_probe_at_most_once_a_second() -> None:
    attempts: list[float] = []

    async def refused(*_args: Any, **_kwargs: Any) -> asyncpg.Connection:
        attempts.append(time.monotonic())
        raise ConnectionRefusedError("the database is down")

    pool = asyncpg.create_pool("postgresql://nobody@127.0.0.1:1/none", min_size=0, connect=refused)
    await pool  # min_size=0: nothing is connected yet
    try:
        probe = DatabaseProbe(pool, supervisor_id="sup-1", stale_seconds=15)
        for _ in range(5):  # a client asking every 0.1 s
            await probe.refresh()
            assert not probe.reachable()
            await asyncio.sleep(0.1)
        assert len(attempts) == 1
        await asyncio.sleep(PROBE_FRESH_SECONDS)
        await probe.refresh()
        assert len(attempts) == 2
        await probe.stop()
    finally:
        pool.terminate()
