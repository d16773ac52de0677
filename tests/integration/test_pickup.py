"""Pickup on time, not on a poll: a future job starts on its timer, a job scheduled elsewhere
wakes an idle worker, and a freed slot takes the next job at once (0.2.3 only polled)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from pg_scheduler import Scheduler, job
from pg_scheduler.worker.heartbeat import RECONNECT_AFTER_SECONDS
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


async def test_the_heartbeat_session_listens_and_comes_back_when_the_server_ends_it(
    pool: asyncpg.Pool,
) -> None:
    # One dedicated session per worker: the heartbeat's, which also LISTENs. Ended by the
    # server, it is opened again at once (not at the next beat), and wakes the worker again.
    started = asyncio.Event()

    @job
    async def after_reconnect() -> None:
        started.set()

    # The worker's own sessions (an in-process Scheduler's leader session has the same id).
    sessions = """SELECT pid, application_name FROM pg_stat_activity
                   WHERE application_name IN ('pg_scheduler:heartbeat:' || $1,
                                              'pg_scheduler:listen:' || $1)"""
    async with Scheduler(
        pool, **{**NO_POLLING, "heartbeat_seconds": 5.0, "lease_seconds": 30.0}
    ) as scheduler:
        worker = scheduler.worker
        assert worker is not None
        await wait_for(lambda: worker.listening, message="listening")
        [(pid, name)] = [tuple(r) for r in await pool.fetch(sessions, worker.worker_id)]
        assert name.startswith("pg_scheduler:heartbeat:")
        # A session ended sooner after it opened waits for the beat (no reconnect loop).
        await wait_for(
            lambda: _older_than(pool, pid, RECONNECT_AFTER_SECONDS), timeout=5, message="a settled session"
        )
        await pool.execute("SELECT pg_terminate_backend($1)", pid)
        t0 = time.monotonic()
        await wait_for(
            lambda: _new_session(pool, sessions, worker.worker_id, pid), timeout=4, message="a new session"
        )
        await wait_for(lambda: worker.listening, timeout=4, message="listening again")
        took = time.monotonic() - t0
        print(f"\nheartbeat session back and listening {took:.3f}s after the server ended it (beat 5 s)")
        assert took < 2.5, took
        t1 = time.monotonic()
        await Scheduler(pool).schedule(after_reconnect, execution_time=datetime.now(UTC))
        await asyncio.wait_for(started.wait(), 10)
        assert time.monotonic() - t1 < 1.0


async def test_a_session_the_server_ends_at_once_is_opened_again_at_the_next_beat_not_in_a_loop(
    pool: asyncpg.Pool,
) -> None:
    # A server that ends every new session (a failover, a pooler refusing) must not be asked
    # again in a loop: a session ended within RECONNECT_AFTER_SECONDS waits for the next beat.
    sessions = """SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_scheduler:heartbeat:' || $1"""
    beat = 2.0
    async with Scheduler(
        pool, **{**NO_POLLING, "heartbeat_seconds": beat, "lease_seconds": 30.0}
    ) as scheduler:
        worker = scheduler.worker
        assert worker is not None
        await wait_for(lambda: worker.listening, message="listening")
        pid = await pool.fetchval(sessions, worker.worker_id)
        opened = await pool.fetchval(
            "SELECT extract(epoch FROM now() - backend_start) FROM pg_stat_activity WHERE pid = $1", pid
        )
        assert float(opened) < RECONNECT_AFTER_SECONDS, "the session is too old for this test"
        await pool.execute("SELECT pg_terminate_backend($1)", pid)
        t0 = time.monotonic()
        await wait_for(
            lambda: _new_session(pool, sessions, worker.worker_id, pid), timeout=10, message="a new one"
        )
        took = time.monotonic() - t0
        print(f"\nended {float(opened):.2f}s after it opened: opened again {took:.2f}s later (beat {beat} s)")
        assert took > beat - RECONNECT_AFTER_SECONDS - 0.2, took


async def _older_than(pool: asyncpg.Pool, pid: int, seconds: float) -> bool:
    age = await pool.fetchval(
        "SELECT extract(epoch FROM now() - backend_start) FROM pg_stat_activity WHERE pid = $1", pid
    )
    return age is not None and float(age) >= seconds


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
