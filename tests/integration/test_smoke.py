from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from pg_scheduler import Scheduler, job
from tests.rows import wait_for_status
from tests.support import FAST, wait_for

ran: list[int] = []


async def test_schedule_runs_and_completes(pool: asyncpg.Pool) -> None:
    @job
    async def add(x: int) -> None:
        ran.append(x)

    async with Scheduler(pool, **FAST) as scheduler:
        job_id = await scheduler.schedule(add, execution_time=datetime.now(UTC), args=(7,))
        await wait_for(lambda: 7 in ran, message="job ran")
        j = await wait_for_status(scheduler, job_id, "completed")
        assert j.attempt == 1
        await wait_for(lambda: scheduler.is_leader, message="leader")


async def test_future_job(pool: asyncpg.Pool) -> None:
    @job
    async def later() -> None:
        ran.append(99)

    async with Scheduler(pool, **FAST) as scheduler:
        await scheduler.schedule(later, execution_time=datetime.now(UTC) + timedelta(seconds=0.5))
        await wait_for(lambda: 99 in ran, timeout=5)


async def test_schedule_inside_a_transaction_on_an_empty_database(pool: asyncpg.Pool) -> None:
    # The schema is created on first use even when the first use is inside the caller's
    # transaction, and even when the caller holds the pool's only connection.
    small = await asyncpg.create_pool(*pool._connect_args, min_size=1, max_size=1, **pool._connect_kwargs)
    try:
        scheduler = Scheduler(small)
        async with small.acquire() as conn, conn.transaction():
            job_id = await scheduler.schedule("some.task", execution_time=datetime.now(UTC), connection=conn)
        assert await pool.fetchval("SELECT status FROM scheduled_jobs WHERE job_id = $1", job_id) == "pending"
    finally:
        await small.close()
