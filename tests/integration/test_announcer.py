"""Wake-ups of the jobs ``schedule()`` writes (pg_scheduler/announcer.py, migration 14): a job
scheduled alone notifies in its own commit; concurrent calls on one Scheduler share their
NOTIFYs, and every job is still announced by a NOTIFY committed after it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from pg_scheduler import Scheduler, job, pool_reset
from pg_scheduler.announcer import Announcer
from pg_scheduler.shared import queries

JOBS = "pg_scheduler_jobs"
WRITTEN = "test_written"
"""A test insert notifies this channel in its own transaction, before its insert: PostgreSQL
delivers the notifications of committed transactions in commit order, so a listener of both
channels sees each insert's commit and the wake-ups that follow it, in order."""
FLUSHED = "test_flushed"


@job(name="announced")
async def announced(n: int) -> None: ...


class Listener:
    """A session listening on JOBS and WRITTEN: what it received, in order."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.received: list[tuple[str, str]] = []
        self._flushed = asyncio.Event()

    def _on(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        if channel == FLUSHED:
            self._flushed.set()
        else:
            self.received.append((channel, payload))

    async def start(self) -> None:
        for channel in (JOBS, WRITTEN, FLUSHED):
            await self.conn.add_listener(channel, self._on)

    async def flush(self, pool: asyncpg.Pool) -> list[tuple[str, str]]:
        """Everything committed before this call, received: a NOTIFY committed now arrives after
        all of it."""
        self._flushed.clear()
        await pool.execute(f"NOTIFY {FLUSHED}")
        await asyncio.wait_for(self._flushed.wait(), 10)
        return list(self.received)


@pytest.fixture
async def listener(dsn: str, pool: asyncpg.Pool) -> AsyncIterator[Listener]:
    await Scheduler(pool).initialize_db()
    conn = await asyncpg.connect(dsn)
    try:
        made = Listener(conn)
        await made.start()
        yield made
    finally:
        await conn.close()


def _job(n: int) -> list[object]:
    """JOB_INSERT's arguments for job ``n``."""
    return [f"job-{n}", "announced", datetime.now(UTC), '{"args": [], "kwargs": {}}', 5, 0, None, None]


async def _insert(pool: asyncpg.Pool, sql: str, n: int) -> None:
    await pool.execute(sql, *_job(n), "default", None)


def _sql(later: bool) -> str:
    return queries.JOB_INSERT_LATER if later else queries.JOB_INSERT


async def test_only_an_insert_that_says_later_skips_the_wake_up(
    pool: asyncpg.Pool, listener: Listener
) -> None:
    await _insert(pool, queries.JOB_INSERT_LATER, 1)
    await _insert(pool, queries.JOB_UPSERT_LATER, 2)
    assert await listener.flush(pool) == []
    await _insert(pool, queries.JOB_INSERT, 3)
    await _insert(pool, queries.JOB_UPSERT, 4)
    # What other programs send (pg-scheduler 0.2.3, raw SQL) notifies as before.
    await pool.execute("INSERT INTO scheduled_jobs (job_name, execution_time) VALUES ('announced', now())")
    assert await listener.flush(pool) == [(JOBS, "")] * 3
    # 'later' lasts as long as the insert's transaction: the next one notifies.
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute(queries.JOB_INSERT_LATER, *_job(5), "default", None)
        await conn.execute(queries.JOB_INSERT, *_job(6), "default", None)
    assert await listener.flush(pool) == [(JOBS, "")] * 4
    assert await pool.fetchval("SELECT count(*) FROM scheduled_jobs") == 7


async def test_a_job_scheduled_alone_is_announced_by_its_own_insert(dsn: str, listener: Listener) -> None:
    sent: list[str] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: sent.append(record.query))

    counted = await asyncpg.create_pool(dsn, min_size=1, max_size=1, init=log_queries, reset=pool_reset)
    try:
        scheduler = Scheduler(counted)
        await scheduler.schedule(announced, execution_time=datetime.now(UTC), args=(0,))  # schema checked
        await listener.flush(counted)
        listener.received.clear()
        sent.clear()
        await scheduler.schedule(announced, execution_time=datetime.now(UTC), args=(1,))
        assert sent == [queries.JOB_INSERT]  # one round trip, no announcement after it
        assert await listener.flush(counted) == [(JOBS, "")]
    finally:
        await counted.close()


@pytest.mark.parametrize("slow_later", [False, True], ids=["same-pace", "deferred-commit-late"])
async def test_concurrent_inserts_share_wake_ups_and_none_is_left_unannounced(
    pool: asyncpg.Pool, listener: Listener, slow_later: bool
) -> None:
    announcer = Announcer(pool)
    tasks, calls, bursts = 10, 20, 5

    async def write(n: int, later: bool) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_notify($1, $2)", WRITTEN, str(n))
            if later and slow_later:  # commits at random, often after the call in flight ended
                await conn.execute("SELECT pg_sleep($1)", random.random() * 0.005)
            await conn.execute(_sql(later), *_job(n), "default", None)

    async def caller(first: int) -> None:
        for n in range(first, first + calls):
            await announcer.write(lambda later, n=n: write(n, later))

    for burst in range(bursts):
        listener.received.clear()
        await asyncio.gather(*(caller((burst * tasks + t) * calls) for t in range(tasks)))
        await announcer.flush()  # the wake-up still owed, if any, is sent by now
        received = await listener.flush(pool)
        written = [i for i, (channel, _) in enumerate(received) if channel == WRITTEN]
        woken = [i for i, (channel, _) in enumerate(received) if channel == JOBS]
        assert len(written) == tasks * calls
        # Every insert's commit is followed by a wake-up, the last one included.
        assert woken and woken[-1] > written[-1], received[-5:]
        if not slow_later:  # the calls in flight together shared their wake-ups
            assert len(woken) < len(written) * 3 / 4, (burst, len(woken), len(written))
    assert await pool.fetchval("SELECT count(*) FROM scheduled_jobs") == bursts * tasks * calls


async def test_a_call_that_fails_still_sends_the_wake_up_it_was_left(
    pool: asyncpg.Pool, listener: Listener
) -> None:
    announcer = Announcer(pool)
    first_done = asyncio.Event()
    release_first = asyncio.Event()

    async def slow_write(later: bool) -> None:
        await pool.execute(
            queries.JOB_INSERT_LATER if later else queries.JOB_INSERT, *_job(1), "default", None
        )
        first_done.set()
        await release_first.wait()
        raise RuntimeError("the first call fails after its insert")

    first = asyncio.create_task(announcer.write(slow_write))
    await first_done.wait()
    # While the first call is in flight, the second leaves its wake-up to it.
    await announcer.write(
        lambda later: _insert(pool, queries.JOB_INSERT_LATER if later else queries.JOB_INSERT, 2)
    )
    await listener.flush(pool)
    listener.received.clear()
    release_first.set()
    with pytest.raises(RuntimeError):
        await first
    # Once the failing call is out of the way, what the second call was owed is sent.
    await announcer.flush()
    assert await listener.flush(pool) == [(JOBS, "")]


async def test_a_call_cancelled_after_its_insert_committed_is_still_announced(
    pool: asyncpg.Pool, listener: Listener
) -> None:
    announcer = Announcer(pool)
    first_inserted, second_inserted = asyncio.Event(), asyncio.Event()
    release_first = asyncio.Event()

    async def first_write(later: bool) -> None:
        await _insert(pool, _sql(later), 1)
        first_inserted.set()
        await release_first.wait()

    async def second_write(later: bool) -> None:
        assert later  # the first call's NOTIFY is in flight
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_notify($1, $2)", WRITTEN, "2")
            await conn.execute(_sql(later), *_job(2), "default", None)
        second_inserted.set()
        await asyncio.Event().wait()  # as a caller whose reply never comes: its timeout cancels it

    first = asyncio.create_task(announcer.write(first_write))
    await first_inserted.wait()
    second = asyncio.create_task(announcer.write(second_write))
    await second_inserted.wait()
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    release_first.set()
    await first
    await announcer.flush()
    received = await listener.flush(pool)
    # The first insert's own wake-up, the second insert's commit, then a wake-up after it.
    assert received == [(JOBS, ""), (WRITTEN, "2"), (JOBS, "")]


class HeldAfterNotify:
    """The announcer's pool in the next test: its NOTIFY runs on the real pool and commits, then
    the call returns only once ``release`` is set, so the sender stays in flight meanwhile."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.sent = asyncio.Event()
        self.release = asyncio.Event()

    async def execute(self, query: str, *args: object, timeout: float | None = None) -> str:
        result: str = await self.pool.execute(query, *args, timeout=timeout)
        self.sent.set()
        await self.release.wait()
        return result


async def test_an_insert_that_commits_while_the_owed_wake_up_is_sent_gets_another(
    pool: asyncpg.Pool, listener: Listener
) -> None:
    held = HeldAfterNotify(pool)
    announcer = Announcer(held)  # type: ignore[arg-type]
    first_inserted, release_first = asyncio.Event(), asyncio.Event()

    async def first_write(later: bool) -> None:
        await _insert(pool, _sql(later), 1)
        first_inserted.set()
        await release_first.wait()

    async def written(n: int, later: bool) -> None:
        assert later  # something of the announcer is in flight
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_notify($1, $2)", WRITTEN, str(n))
            await conn.execute(_sql(later), *_job(n), "default", None)

    first = asyncio.create_task(announcer.write(first_write))
    await first_inserted.wait()
    await announcer.write(lambda later: written(2, later))  # owed, to be sent once the first ends
    release_first.set()
    await first
    await held.sent.wait()  # the sender's NOTIFY for job 2 has committed; the sender is in flight
    await announcer.write(lambda later: written(3, later))  # committed after that NOTIFY
    held.release.set()
    await announcer.flush()
    received = await listener.flush(pool)
    assert received == [(JOBS, ""), (WRITTEN, "2"), (JOBS, ""), (WRITTEN, "3"), (JOBS, "")]
