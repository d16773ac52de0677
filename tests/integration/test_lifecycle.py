"""Start and shutdown under trouble: a claim in flight, a database gone, a job that ignores
cancellation, a start that fails and is retried."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from pg_scheduler import Scheduler, job, periodic
from pg_scheduler.shared.service import cancel_and_wait
from pg_scheduler.worker import worker as worker_module
from tests.pgserver import TestPostgres
from tests.support import FAST, wait_for


@pytest.fixture
def own_server() -> Iterator[TestPostgres]:
    """A server of this test's own, which it may stop and start."""
    with TestPostgres() as pg:
        yield pg


@pytest.fixture
async def own_pool(own_server: TestPostgres) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(own_server.dsn(), min_size=1, max_size=5)
    yield pool
    pool.terminate()


async def _schedule_due(scheduler: Scheduler, task: Any, count: int) -> None:
    """``count`` jobs of ``task``, due now, with arguments 0, 1, ..."""
    now = datetime.now(UTC)
    for i in range(count):
        await scheduler.schedule(task, execution_time=now, args=(i,))


async def test_shutdown_in_the_middle_of_a_claim_strands_no_job(pool: asyncpg.Pool) -> None:
    # The server committed the claim, the reply is still on its way, and shutdown() comes:
    # the claimed jobs must run or be handed back, never left 'running' with nobody on them.
    in_claim = asyncio.Event()

    @job
    async def quick(i: int) -> None: ...

    scheduler = Scheduler(pool, **FAST)
    await scheduler.start()
    assert scheduler.worker is not None
    claimer = scheduler.worker._claimer
    real_claim = claimer.claim

    async def slow_reply(*args: Any, **kwargs: Any) -> Any:
        rows = await real_claim(*args, **kwargs)
        if rows:
            in_claim.set()
            await asyncio.sleep(0.5)  # the reply's round trip, stretched
        return rows

    claimer.claim = slow_reply  # type: ignore[method-assign]
    await _schedule_due(scheduler, quick, 5)
    await asyncio.wait_for(in_claim.wait(), 10)
    await scheduler.shutdown()
    states = await pool.fetch("SELECT status, worker_id FROM scheduled_jobs")
    assert len(states) == 5
    assert all(r["status"] in ("completed", "pending") for r in states), states
    assert not [r for r in states if r["status"] == "pending" and r["worker_id"]]


async def test_shutdown_during_a_refill_claim_starts_nothing_after_it_returns(
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A completion's statement also claims for the slot it frees (worker._complete_and_refill).
    # Shutdown arriving while that reply is on its way, with a shutdown timeout shorter than
    # the reply, must still deal with the job the reply claims before it returns: a job
    # launched afterwards would run in a process that is exiting, with no heartbeat. The
    # shutdown's grace for runs whose outcome is being written is cut short too, so that only
    # the wait for the refill itself can cover the reply.
    monkeypatch.setattr(worker_module, "CANCEL_GRACE_SECONDS", 0.1)
    in_refill = asyncio.Event()
    started: list[float] = []

    @job
    async def quick(i: int) -> None:
        started.append(time.monotonic())

    scheduler = Scheduler(pool, **{**FAST, "max_concurrent_jobs": 1, "shutdown_timeout_seconds": 0.1})
    await scheduler.start()
    assert scheduler.worker is not None
    claimer = scheduler.worker._claimer
    real_refill = claimer.complete_and_claim

    async def slow_reply(*args: Any, **kwargs: Any) -> Any:
        done, jobs = await real_refill(*args, **kwargs)
        if jobs and not in_refill.is_set():
            in_refill.set()
            await asyncio.sleep(0.5)  # the reply's round trip, stretched past the timeout
        return done, jobs

    claimer.complete_and_claim = slow_reply  # type: ignore[method-assign]
    await _schedule_due(scheduler, quick, 4)
    await asyncio.wait_for(in_refill.wait(), 10)
    await scheduler.shutdown()
    returned = time.monotonic()
    # A window in which something must NOT happen (a late launch), hence a plain sleep.
    await asyncio.sleep(1.0)
    assert not [t for t in started if t > returned]
    rows = await pool.fetch("SELECT status, worker_id FROM scheduled_jobs")
    assert len(rows) == 4
    assert all(r["status"] in ("completed", "pending") for r in rows), rows
    assert not [r for r in rows if r["status"] == "pending" and r["worker_id"]]


async def test_shutdown_with_the_database_gone_still_closes(
    own_server: TestPostgres, own_pool: asyncpg.Pool
) -> None:
    started = asyncio.Event()

    @job
    async def forever() -> None:
        started.set()
        await asyncio.sleep(60)

    scheduler = Scheduler(own_pool, **{**FAST, "shutdown_timeout_seconds": 0.2})
    await scheduler.start()
    await scheduler.schedule(forever, execution_time=datetime.now(UTC))
    await asyncio.wait_for(started.wait(), 10)
    worker = scheduler.worker
    assert worker is not None
    own_server.stop(mode="immediate")
    t0 = time.monotonic()
    await asyncio.wait_for(scheduler.shutdown(), 30)  # no exception, and it returns
    await asyncio.wait_for(scheduler.wait_closed(), 1)
    assert time.monotonic() - t0 < 25
    assert not worker.listening
    assert worker._heartbeat._thread is None


async def test_start_can_be_retried_once_the_database_is_back(
    own_server: TestPostgres, own_pool: asyncpg.Pool
) -> None:
    scheduler = Scheduler(own_pool, **FAST)
    own_server.stop()
    with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
        await scheduler.start()
    assert scheduler.worker is None and scheduler.elector is None  # nothing half-started
    own_server.start()
    own_pool.terminate()
    pool = await asyncpg.create_pool(own_server.dsn(), min_size=1, max_size=5)
    try:
        scheduler = Scheduler(pool, **FAST)
        await scheduler.start()
        await wait_for(lambda: scheduler.is_leader, message="leader")
        await scheduler.shutdown()
    finally:
        await pool.close()


async def test_start_after_a_failed_start_on_the_same_object(
    own_server: TestPostgres,
) -> None:
    pool = await asyncpg.create_pool(own_server.dsn(), min_size=0, max_size=5)
    try:
        scheduler = Scheduler(pool, **FAST)
        own_server.stop()
        with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
            await scheduler.start()
        own_server.start()
        await scheduler.start()  # the same object, once the database is up
        await wait_for(lambda: scheduler.is_leader, message="leader")
        await scheduler.shutdown()
    finally:
        pool.terminate()


async def test_periodic_defined_after_the_first_database_call_still_runs(
    pool: asyncpg.Pool,
) -> None:
    scheduler = Scheduler(pool, **FAST)
    await scheduler.schedule("nobody.runs.this", execution_time=datetime.now(UTC) + timedelta(hours=1))
    runs: list[float] = []

    @periodic(every=timedelta(seconds=1))
    async def late_module() -> None:
        runs.append(time.monotonic())

    await scheduler.start()
    try:
        await wait_for(lambda: runs, timeout=10, message="a run of the late definition")
    finally:
        await scheduler.shutdown()


async def test_shutdown_does_not_wait_forever_for_a_job_that_ignores_cancellation(
    pool: asyncpg.Pool,
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    @job
    async def stubborn() -> None:
        started.set()
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)

    scheduler = Scheduler(
        pool, **{**FAST, "shutdown_timeout_seconds": 0.2, "lease_seconds": 30, "heartbeat_seconds": 5}
    )
    await scheduler.start()
    job_id = await scheduler.schedule(stubborn, execution_time=datetime.now(UTC))
    await asyncio.wait_for(started.wait(), 10)
    t0 = time.monotonic()
    await asyncio.wait_for(scheduler.shutdown(), 20)
    assert time.monotonic() - t0 < 10
    row = await pool.fetchrow("SELECT status, worker_id FROM scheduled_jobs WHERE job_id = $1", job_id)
    assert (row["status"], row["worker_id"]) == ("pending", None)  # handed back regardless
    release.set()


async def test_cancel_and_wait_does_not_swallow_the_callers_cancellation() -> None:
    async def child() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # slow cleanup: the caller's timeout fires meanwhile
            raise

    async def parent() -> None:
        task = asyncio.create_task(child())
        await asyncio.sleep(0)
        await cancel_and_wait(task)
        await asyncio.sleep(5)  # never reached: the timeout below must cancel us first

    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await parent()
    assert time.monotonic() - t0 < 1
