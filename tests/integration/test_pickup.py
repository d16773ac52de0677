"""Defects of pg-scheduler 0.2.3 not covered elsewhere, each shown
fixed. The other files cover the rest: see docs/guarantees.md."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from pg_scheduler import ConflictResolution, Scheduler, deterministic_job_id, job, periodic
from tests.rows import Sql, insert_job, wait_for_status
from tests.support import FAST, wait_for

NO_POLLING = {**FAST, "poll_interval_seconds": 60.0}
"""A poll interval far longer than any wait below: what happens in time came from a timer or a
notification, not from polling (0.2.3 only polled, up to 2.2 s late)."""


async def test_a_future_job_starts_on_its_timer_not_on_a_poll(pool: asyncpg.Pool) -> None:
    started: list[float] = []

    @job
    async def on_time() -> None:
        started.append(time.time())

    async with Scheduler(pool, **NO_POLLING) as scheduler:
        due = datetime.now(UTC) + timedelta(seconds=1)
        await scheduler.schedule(on_time, execution_time=due)
        await wait_for(lambda: started, timeout=10, message="started")
        late = started[0] - due.timestamp()
        assert -0.01 <= late < 1.0, f"started {late:.3f}s after its due time"


async def test_a_job_from_another_process_wakes_an_idle_worker(pool: asyncpg.Pool) -> None:
    started = asyncio.Event()

    @job
    async def notified() -> None:
        started.set()

    async with Scheduler(pool, **NO_POLLING) as scheduler:
        await wait_for(lambda: scheduler.worker is not None and scheduler.worker.listening,
                       message="listening")
        producer = Scheduler(pool)  # never started: another process, as far as the worker knows
        t0 = time.monotonic()
        await producer.schedule(notified, execution_time=datetime.now(UTC))
        await asyncio.wait_for(started.wait(), 10)
        assert time.monotonic() - t0 < 1.0


async def test_one_slot_runs_jobs_back_to_back(pool: asyncpg.Pool) -> None:
    # 0.2.3 re-polled once a second while its only slot was busy: about 1 job/s whatever the
    # job length. A freed slot wakes the worker at once.
    done: list[int] = []

    @job
    async def short(i: int) -> None:
        done.append(i)

    async with Scheduler(pool, max_concurrent_jobs=1, **NO_POLLING) as scheduler:
        now = datetime.now(UTC)
        for i in range(20):
            await scheduler.schedule(short, execution_time=now, args=(i,))
        t0 = time.monotonic()
        await wait_for(lambda: len(done) == 20, timeout=15, message="20 jobs")
        assert time.monotonic() - t0 < 5.0


async def test_a_rescued_job_is_run_again_not_expired(pool: asyncpg.Pool) -> None:
    # 0.2.3 judged a recovered job's misfire against its original due time and expired it.
    ran = asyncio.Event()

    @job
    async def recovered() -> None:
        ran.set()

    async with Scheduler(pool, **FAST) as scheduler:
        await wait_for(lambda: scheduler.is_leader, message="leader")
        await insert_job(pool, "crashed", job_name=scheduler.registry.name_of(recovered),
                         execution_time=Sql("now() - interval '1 hour'"), status="running",
                         worker_id="dead", attempt=1, started_at=None,
                         lease_until=Sql("now() - interval '1 minute'"), max_retries=1,
                         misfire_grace_time=5)
        await asyncio.wait_for(ran.wait(), 10)
        row = await wait_for_status(pool, "crashed", "completed")
        assert row["attempt"] == 2 and row["retry_count"] == 1


async def test_a_failing_periodic_run_does_not_stop_the_next_windows(pool: asyncpg.Pool) -> None:
    # 0.2.3 rescheduled from the run's own wrapper, so a run that never finished normally could
    # end the chain. Windows come from the leader, whatever the previous run did.
    runs: list[float] = []

    @periodic(every=timedelta(seconds=1))
    async def flaky() -> None:
        runs.append(time.monotonic())
        raise RuntimeError("boom")

    async with Scheduler(pool, **FAST):
        await wait_for(lambda: len(runs) >= 3, timeout=10, message="three runs")
    failed = await pool.fetchval(
        "SELECT count(*) FROM scheduled_jobs WHERE dedup_key IS NOT NULL AND status = 'failed'"
    )
    assert failed >= 2


async def test_deterministic_job_ids_dedup_the_same_call(pool: asyncpg.Pool) -> None:
    # The 0.1 README promised "deterministic job ids based on function signature and
    # parameters": the same call gets the same id, so IGNORE schedules it once.
    @job
    async def report(day: str, *, region: str) -> None: ...

    a = deterministic_job_id(report, ("2026-11-28",), {"region": "eu"})
    assert a == deterministic_job_id(report, ["2026-11-28"], {"region": "eu"})
    assert a != deterministic_job_id(report, ("2026-11-29",), {"region": "eu"})
    scheduler = Scheduler(pool)
    when = datetime.now(UTC) + timedelta(hours=1)
    ids = [
        await scheduler.schedule(report, execution_time=when, args=("2026-11-28",),
                                 kwargs={"region": "eu"}, job_id=a,
                                 conflict_resolution=ConflictResolution.IGNORE)
        for _ in range(3)
    ]
    assert ids == [a, a, a]
    assert await pool.fetchval("SELECT count(*) FROM scheduled_jobs") == 1
