"""Pickup on time, not on a poll: a future job starts on its timer, a job scheduled elsewhere
wakes an idle worker, and a freed slot takes the next job at once (0.2.3 only polled)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from pg_scheduler import Scheduler, job
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
        await wait_for(
            lambda: scheduler.worker is not None and scheduler.worker.listening, message="listening"
        )
        producer = Scheduler(pool)  # never started: another process, as far as the worker knows
        t0 = time.monotonic()
        await producer.schedule(notified, execution_time=datetime.now(UTC))
        await asyncio.wait_for(started.wait(), 10)
        assert time.monotonic() - t0 < 1.0


async def test_the_listen_session_comes_back_when_the_server_ends_it(pool: asyncpg.Pool) -> None:
    started = asyncio.Event()

    @job
    async def after_reconnect() -> None:
        started.set()

    sessions = "SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_scheduler:listen:' || $1"
    async with Scheduler(pool, **NO_POLLING) as scheduler:
        worker = scheduler.worker
        assert worker is not None
        await wait_for(lambda: worker.listening, message="listening")
        pid = await pool.fetchval(sessions, worker.worker_id)
        await pool.execute("SELECT pg_terminate_backend($1)", pid)
        t0 = time.monotonic()
        await wait_for(
            lambda: _new_session(pool, sessions, worker.worker_id, pid), timeout=5, message="a new one"
        )
        await wait_for(lambda: worker.listening, timeout=5, message="listening again")
        print(f"\nLISTEN session back {time.monotonic() - t0:.3f}s after the server ended it")
        t1 = time.monotonic()
        await Scheduler(pool).schedule(after_reconnect, execution_time=datetime.now(UTC))
        await asyncio.wait_for(started.wait(), 10)
        assert time.monotonic() - t1 < 1.0


async def _new_session(pool: asyncpg.Pool, sessions: str, worker_id: str, old_pid: int) -> bool:
    rows = await pool.fetch(sessions, worker_id)
    return len(rows) == 1 and rows[0][0] != old_pid


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
