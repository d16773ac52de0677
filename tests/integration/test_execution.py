"""How jobs run in the in-process ``Scheduler``: retries, timeouts, misfire, cancellation,
priority and concurrency, heterogeneous replicas, graceful shutdown, exclusive periodic runs and
leases that survive a blocked event loop.

Every test runs real schedulers against the real database (``pool`` is a fresh database per test)
and proves one guarantee, most of them ones pg-scheduler 0.2.3 broke (docs/migrating-from-0.2.md
lists what behaves differently).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from pg_scheduler import (
    Job,
    JobContext,
    JobPriority,
    Scheduler,
    SchedulerStateError,
    current_job,
    job,
    periodic,
)
from pg_scheduler.shared import db
from pg_scheduler.shared.db import create_pool_waiting
from pg_scheduler.shared.locks import EXCLUSIVE_JOB_LOCK_CLASS, exclusive_job_lock
from tests.rows import job_row, wait_for_status
from tests.support import FAST, wait_for

FINAL = {"completed", "failed", "cancelled", "expired"}

CLOCK_EPSILON = 0.005
"""Due times are judged on the database clock, gaps are measured on ``time.monotonic()``: allow
for the two clocks disagreeing by a few milliseconds, no more."""


def scheduler(pool: asyncpg.Pool, **overrides: Any) -> Scheduler:
    return Scheduler(pool, **{**FAST, **overrides})


def now() -> datetime:
    return datetime.now(UTC)


async def finished(s: Scheduler, job_id: str, timeout: float = 10.0) -> Job:
    """Wait until the job reaches a final state, and return it."""
    result: Job = await wait_for_status(s, job_id, FINAL, timeout)
    return result


async def worker_row(pool: asyncpg.Pool, worker_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM scheduler_workers WHERE worker_id = $1", worker_id)


# --------------------------------------------------------------------------- 1. retries


async def test_retries_wait_the_configured_delay_doubling_each_time(pool: asyncpg.Pool) -> None:
    starts: list[float] = []

    @job
    async def flaky() -> None:
        starts.append(time.monotonic())
        if len(starts) <= 2:
            raise RuntimeError(f"transient failure #{len(starts)}")

    async with scheduler(
        pool, retry_delay_seconds=0.3, retry_jitter=False, retry_max_delay_seconds=60.0
    ) as s:
        job_id = await s.schedule(flaky, execution_time=now(), max_retries=3)
        j = await finished(s, job_id)

    assert j.status == "completed"
    assert j.retry_count == 2
    assert j.attempt == 3
    assert len(starts) == 3
    first_gap, second_gap = starts[1] - starts[0], starts[2] - starts[1]
    # 0.3 s, then 0.3 * 2: never sooner (0.2.3 waited a fixed 60 s, then 120 s).
    assert 0.3 - CLOCK_EPSILON <= first_gap < 3.0, first_gap
    assert 0.6 - CLOCK_EPSILON <= second_gap < 3.0, second_gap


async def test_exhausted_retries_end_failed_with_the_error_after_max_retries_plus_one_attempts(
    pool: asyncpg.Pool,
) -> None:
    attempts: list[float] = []

    @job
    async def always_fails() -> None:
        attempts.append(time.monotonic())
        raise ValueError("the disk is on fire")

    async with scheduler(pool, retry_delay_seconds=0.1, retry_jitter=False) as s:
        job_id = await s.schedule(always_fails, execution_time=now(), max_retries=2)
        j = await finished(s, job_id)

    assert j.status == "failed"
    assert len(attempts) == 3
    assert j.attempt == 3
    assert j.retry_count == 2
    assert j.error_message is not None
    assert "ValueError" in j.error_message
    assert "the disk is on fire" in j.error_message
    assert j.finished_at is not None


async def _measure_retry_delays(
    pool: asyncpg.Pool, s: Scheduler, jobs: int, failures: int
) -> dict[str, list[float]]:
    """Run ``jobs`` jobs that fail ``failures`` times each; return each job's retry delays.

    A delay is measured on the database clock, from just before the task raised to the due time
    the failure wrote for the next attempt: that isolates the backoff from pickup latency (the
    measured value exceeds the real delay only by the failure write's own latency).
    """
    failed_at: dict[str, list[datetime]] = {}
    due_at: dict[str, list[datetime]] = {}

    @job
    async def fails_then_succeeds(key: str) -> None:
        due_at.setdefault(key, []).append(
            await pool.fetchval("SELECT execution_time FROM scheduled_jobs WHERE job_id = $1", key)
        )
        if len(due_at[key]) <= failures:
            failed_at.setdefault(key, []).append(await pool.fetchval("SELECT clock_timestamp()"))
            raise RuntimeError("fails on purpose")

    keys = [f"retry-delay-{i}" for i in range(jobs)]
    for key in keys:
        await s.schedule(
            fails_then_succeeds, execution_time=now(), args=(key,), job_id=key, max_retries=failures
        )
    for key in keys:
        j = await finished(s, key, timeout=15)
        assert j.status == "completed" and j.retry_count == failures, j
    return {
        key: [(due_at[key][k + 1] - failed_at[key][k]).total_seconds() for k in range(failures)]
        for key in keys
    }


async def test_retry_jitter_keeps_each_delay_between_half_and_all_of_it(
    pool: asyncpg.Pool,
) -> None:
    base = 0.4
    async with scheduler(pool, retry_delay_seconds=base, retry_jitter=True) as s:
        delays = await _measure_retry_delays(pool, s, jobs=8, failures=1)

    samples = [d[0] for d in delays.values()]
    for delay in samples:
        assert base / 2 - CLOCK_EPSILON <= delay <= base + 0.25, samples
    # Jitter really spreads them: without it every measured delay is >= base. With it, all 8
    # landing in the top 10 % of [base/2, base] has odds of about 1 in 4**8.
    assert min(samples) < 0.9 * base, samples


async def test_retry_max_delay_caps_the_doubling(pool: asyncpg.Pool) -> None:
    async with scheduler(pool, retry_delay_seconds=0.1, retry_max_delay_seconds=0.2, retry_jitter=False) as s:
        delays = await _measure_retry_delays(pool, s, jobs=1, failures=4)

    (measured,) = delays.values()
    # Uncapped: 0.1, 0.2, 0.4, 0.8. Capped at 0.2: 0.1, 0.2, 0.2, 0.2.
    for got, expected in zip(measured, [0.1, 0.2, 0.2, 0.2], strict=True):
        assert expected - CLOCK_EPSILON <= got < expected + 0.15, measured


# --------------------------------------------------------------------------- 2. timeout


async def test_timeout_cancels_the_job_and_fails_it_long_before_it_would_end(
    pool: asyncpg.Pool,
) -> None:
    started: list[float] = []
    interrupted: list[float] = []

    @job
    async def sleeps_five_seconds() -> None:
        started.append(time.monotonic())
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            interrupted.append(time.monotonic())
            raise

    async with scheduler(pool, retry_delay_seconds=0.1, retry_jitter=False) as s:
        t0 = time.monotonic()
        job_id = await s.schedule(
            sleeps_five_seconds, execution_time=now(), timeout_seconds=0.5, max_retries=1
        )
        j = await finished(s, job_id, timeout=5)
        elapsed = time.monotonic() - t0

    # Both attempts were cut at 0.5 s; a timeout is a failure like any other (it is retried).
    assert j.status == "failed"
    assert j.attempt == 2 and j.retry_count == 1
    assert j.error_message is not None and "timed out" in j.error_message
    assert elapsed < 3.0, elapsed
    assert len(started) == 2 and len(interrupted) == 2
    for begin, end in zip(started, interrupted, strict=True):
        assert 0.5 - CLOCK_EPSILON <= end - begin < 1.5


# --------------------------------------------------------------------------- 3. misfire


@pytest.mark.parametrize("grace", [0, 1])
async def test_small_misfire_grace_never_expires_jobs_on_a_healthy_scheduler(
    pool: asyncpg.Pool, grace: int
) -> None:
    ran: list[int] = []

    @job
    async def on_time(i: int) -> None:
        ran.append(i)

    async with scheduler(pool) as s:
        base = now()
        ids = [
            await s.schedule(
                on_time,
                execution_time=base + timedelta(seconds=0.2 * (i + 1)),
                args=(i,),
                misfire_grace_time=grace,
            )
            for i in range(10)
        ]
        jobs = [await finished(s, job_id, timeout=10) for job_id in ids]

    # 0.2.3 judged misfire at poll time: grace=0 expired 10 of 10, grace=1 expired 6 of 10.
    assert [j.status for j in jobs] == ["completed"] * 10, [(j.status, j.error_message) for j in jobs]
    assert sorted(ran) == list(range(10))


async def test_misfire_expires_a_job_later_than_its_grace_and_none_never_expires(
    pool: asyncpg.Pool,
) -> None:
    ran: list[str] = []

    @job
    async def late(label: str) -> None:
        ran.append(label)

    async with scheduler(pool) as s:
        expired_id = await s.schedule(
            late, execution_time=now() - timedelta(seconds=10), args=("grace-5",), misfire_grace_time=5
        )
        never_id = await s.schedule(
            late, execution_time=now() - timedelta(hours=1), args=("grace-none",), misfire_grace_time=None
        )
        expired = await finished(s, expired_id)
        never = await finished(s, never_id)

    assert expired.status == "expired"
    assert expired.error_message is not None and "misfired" in expired.error_message
    assert expired.attempt == 0 and expired.started_at is None
    assert never.status == "completed" and never.attempt == 1
    assert ran == ["grace-none"]


# --------------------------------------------------------------------------- 4. cancel


async def _cancel_running_job(pool: asyncpg.Pool, *, from_producer: bool) -> None:
    started = asyncio.Event()
    interrupted: list[float] = []
    completed_body: list[bool] = []
    outcomes: list[str] = []

    @job
    async def long_running() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            interrupted.append(time.monotonic())
            raise
        completed_body.append(True)

    # From a producer: a long lease and heartbeat, so that the lease renewal (which would also
    # notice the cancellation) does not fire within the test's window; a stop within 1 s then
    # proves the NOTIFY on pg_scheduler_cancel. Locally: FAST timings, so that several lease
    # renewals pass over the cancelled row below.
    options: dict[str, Any] = {"lease_seconds": 30.0, "heartbeat_seconds": 10.0} if from_producer else {}
    async with scheduler(
        pool, on_outcome=lambda _job, outcome: outcomes.append(str(outcome)), **options
    ) as s:
        worker = s.worker
        assert worker is not None
        job_id = await s.schedule(long_running, execution_time=now())
        await wait_for(started.is_set, timeout=5, message="job started")
        if from_producer:
            # The notice is heard only once the worker's LISTEN session is up (no public hook).
            await wait_for(lambda: worker.listening, timeout=5, message="LISTEN")
        canceller = scheduler(pool, **options) if from_producer else s

        t0 = time.monotonic()
        assert await canceller.cancel_job(job_id) is True
        await wait_for(lambda: interrupted, timeout=2, message="coroutine cancelled")
        assert interrupted[0] - t0 < 1.0
        await wait_for(lambda: job_id not in worker.running_job_ids, timeout=2)
        after_cancel = await job_row(pool, job_id)
        # Let a poll interval (and, locally, three lease renewals) go by: nothing may rewrite
        # the cancelled row (a window in which something must NOT happen, hence a plain sleep).
        await asyncio.sleep(FAST["poll_interval_seconds"] + 0.3)
        later = await job_row(pool, job_id)
        assert await canceller.cancel_job(job_id) is False  # already final

    assert after_cancel["status"] == "cancelled"
    assert dict(later) == dict(after_cancel)
    assert later["attempt"] == 1
    assert completed_body == []
    assert outcomes == ["cancelled"]


async def test_cancel_job_stops_the_running_coroutine(pool: asyncpg.Pool) -> None:
    await _cancel_running_job(pool, from_producer=False)


async def test_cancel_from_another_scheduler_object_stops_the_running_coroutine(
    pool: asyncpg.Pool,
) -> None:
    await _cancel_running_job(pool, from_producer=True)


# --------------------------------------------------------------------------- 5. priority


async def test_priority_orders_jobs_due_at_the_same_instant(pool: asyncpg.Pool) -> None:
    order: list[str] = []

    @job
    async def record(label: str) -> None:
        order.append(label)

    s = scheduler(pool, max_concurrent_jobs=1)
    due = now() - timedelta(seconds=1)
    # Inserted lowest priority first, so insertion order cannot explain the result.
    for label, priority in [
        ("low", JobPriority.LOW),
        ("normal", JobPriority.NORMAL),
        ("high", JobPriority.HIGH),
        ("critical", JobPriority.CRITICAL),
    ]:
        await s.schedule(record, execution_time=due, args=(label,), priority=priority)
    async with s:
        await wait_for(lambda: len(order) == 4, timeout=10, message="all four ran")

    assert order == ["critical", "high", "normal", "low"]


async def test_max_concurrent_jobs_bounds_running_jobs_in_process_and_in_the_table(
    pool: asyncpg.Pool,
) -> None:
    gate = asyncio.Event()
    active = 0
    peak = 0
    done: list[int] = []

    @job
    async def gated(i: int) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            await gate.wait()
            await asyncio.sleep(0.15)
        finally:
            active -= 1
        done.append(i)

    db_peak = 0
    sampling = True

    async def sample_running_rows() -> None:
        nonlocal db_peak
        while sampling:
            n = await pool.fetchval("SELECT count(*) FROM scheduled_jobs WHERE status = 'running'")
            db_peak = max(db_peak, n)
            await asyncio.sleep(0.02)

    async with scheduler(pool, max_concurrent_jobs=3) as s:
        sampler = asyncio.create_task(sample_running_rows())
        try:
            ids = [await s.schedule(gated, execution_time=now(), args=(i,)) for i in range(12)]
            await wait_for(lambda: active == 3, timeout=5, message="three jobs running")
            # Hold the gate closed for a moment: no fourth job may start (a window in which
            # something must NOT happen, hence a plain sleep).
            await asyncio.sleep(0.5)
            assert active == 3
            counts = {
                r["status"]: r["n"]
                for r in await pool.fetch("SELECT status, count(*) AS n FROM scheduled_jobs GROUP BY status")
            }
            assert counts == {"running": 3, "pending": 9}, counts
            gate.set()
            jobs = [await finished(s, job_id, timeout=15) for job_id in ids]
        finally:
            sampling = False
            await sampler

    assert [j.status for j in jobs] == ["completed"] * 12
    assert sorted(done) == list(range(12))
    assert peak == 3
    assert db_peak == 3


# --------------------------------------------------------------------------- 6. replicas


async def test_replica_without_the_task_leaves_it_alone_until_it_registers_it(
    pool: asyncpg.Pool,
) -> None:
    ran_a: list[int] = []
    ran_b: list[int] = []
    t_b_name = "test_execution.replica.t_b"

    @job
    async def t_a(i: int) -> None:
        ran_a.append(i)

    async def t_b(i: int) -> None:  # deliberately not registered (yet)
        ran_b.append(i)

    async with scheduler(pool) as a:
        assert a.worker is not None
        producer = scheduler(pool)  # never started: a pure producer
        b_ids = [await producer.schedule(t_b_name, execution_time=now(), args=(i,)) for i in range(3)]
        a_ids = [await producer.schedule(t_a, execution_time=now(), args=(i,)) for i in range(3)]
        for job_id in a_ids:
            assert (await finished(a, job_id)).status == "completed"
        # A poll interval passes with the t_b rows due: they must stay untouched (a window in
        # which something must NOT happen, hence a plain sleep).
        await asyncio.sleep(FAST["poll_interval_seconds"] + 0.3)
        for job_id in b_ids:
            r = await job_row(pool, job_id)
            assert (r["status"], r["attempt"], r["worker_id"], r["started_at"]) == (
                "pending",
                0,
                None,
                None,
            ), dict(r)
        assert ran_b == []
        w = await worker_row(pool, a.worker_id)
        assert w is not None and t_b_name not in w["tasks"]

        # Registered at runtime: picked up without a restart (within a poll interval).
        assert a.register(t_b, name=t_b_name) == t_b_name
        b_jobs = [await finished(a, job_id, timeout=FAST["poll_interval_seconds"] + 4) for job_id in b_ids]
        # The registry row follows, so `status` and the periodic registrar see it too.
        await wait_for(
            lambda: _worker_has_task(pool, a.worker_id, t_b_name),
            timeout=5,
            message="worker row lists the new task",
        )

    assert [j.status for j in b_jobs] == ["completed"] * 3
    assert [j.attempt for j in b_jobs] == [1, 1, 1]
    assert sorted(ran_b) == [0, 1, 2]
    assert sorted(ran_a) == [0, 1, 2]


async def _worker_has_task(pool: asyncpg.Pool, worker_id: str, task: str) -> bool:
    w = await worker_row(pool, worker_id)
    return w is not None and task in w["tasks"]


# --------------------------------------------------------------------------- 7. shutdown


async def test_shutdown_lets_a_short_running_job_finish(pool: asyncpg.Pool) -> None:
    started = asyncio.Event()
    finished_body: list[bool] = []

    @job
    async def short() -> None:
        started.set()
        await asyncio.sleep(0.5)
        finished_body.append(True)

    s = scheduler(pool)  # shutdown_timeout_seconds = 5
    await s.start()
    try:
        job_id = await s.schedule(short, execution_time=now())
        await wait_for(started.is_set, timeout=5, message="job started")
    finally:
        t0 = time.monotonic()
        await s.shutdown()
        elapsed = time.monotonic() - t0

    r = await job_row(pool, job_id)
    assert r["status"] == "completed"
    assert finished_body == [True]
    assert elapsed < 3.0, elapsed
    assert await worker_row(pool, s.worker_id) is None


async def test_shutdown_hands_back_a_long_job_that_another_scheduler_then_runs_at_once(
    pool: asyncpg.Pool,
) -> None:
    started = asyncio.Event()
    slow = True
    runs: list[str] = []

    @job
    async def long_then_short() -> None:
        runs.append("slow" if slow else "fast")
        if slow:
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                runs.append("cancelled")
                raise

    # A 10 s lease: if the row were left 'running', nobody could take it for 10 s.
    first = scheduler(pool, shutdown_timeout_seconds=0.5, lease_seconds=10.0, heartbeat_seconds=0.4)
    await first.start()
    try:
        job_id = await first.schedule(long_then_short, execution_time=now(), max_retries=3)
        await wait_for(started.is_set, timeout=5, message="job started")
    finally:
        t0 = time.monotonic()
        await first.shutdown()
        elapsed = time.monotonic() - t0

    assert 0.5 - CLOCK_EPSILON <= elapsed < 3.0, elapsed  # waited the grace, then gave up
    assert runs == ["slow", "cancelled"]
    handed_back = await job_row(pool, job_id)
    assert handed_back["status"] == "pending"
    assert handed_back["worker_id"] is None
    assert handed_back["lease_until"] is None
    assert handed_back["retry_count"] == 0  # no retry consumed by a shutdown
    assert handed_back["attempt"] == 1
    assert await worker_row(pool, first.worker_id) is None

    slow = False
    second = scheduler(pool)
    t1 = time.monotonic()
    async with second:
        j = await finished(second, job_id, timeout=5)
        picked_up = time.monotonic() - t1
    assert j.status == "completed"
    assert picked_up < 2.0, picked_up
    assert j.attempt == 2 and j.retry_count == 0
    assert j.worker_id == second.worker_id
    assert runs == ["slow", "cancelled", "fast"]


# --------------------------------------------------------------------------- 8. exclusive lock


async def _exclusive_locks(pool: asyncpg.Pool, key: tuple[int, int]) -> tuple[int, int]:
    """(granted advisory locks of our exclusive class, of which on this very key) in this db."""
    counts = await pool.fetchrow(
        """
        SELECT count(*) AS class_locks,
               count(*) FILTER (WHERE objid = $2::int4::oid AND objsubid = 2) AS key_locks
          FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND classid = $1::int8::oid
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
        """,
        key[0],
        key[1],
    )
    assert counts is not None
    return int(counts["class_locks"]), int(counts["key_locks"])


async def test_advisory_lock_makes_periodic_runs_exclusive(pool: asyncpg.Pool, dsn: str) -> None:
    dedup_key = "test-execution-exclusive"
    key = exclusive_job_lock(dedup_key)
    assert key[0] == EXCLUSIVE_JOB_LOCK_CLASS == 0x5053_4303
    gate = asyncio.Event()
    active = 0
    peak = 0
    spans: list[tuple[float, float]] = []

    # Hourly: the schedule itself does not fire during the test. (Should an hour boundary fall
    # inside the test, its run is one more exclusive run; the assertions below allow it.)
    @periodic(every=timedelta(hours=1), use_advisory_lock=True, dedup_key=dedup_key)
    async def exclusive_report() -> None:
        nonlocal active, peak
        begin = time.monotonic()
        active += 1
        peak = max(peak, active)
        try:
            await gate.wait()
        finally:
            active -= 1
            spans.append((begin, time.monotonic()))

    async with scheduler(pool) as s:
        first_id = await s.trigger_periodic_job(dedup_key)
        assert first_id is not None
        await wait_for(lambda: active == 1, timeout=5, message="first run started")

        # During the run: one granted lock of our class, on this key, held by the run's session.
        assert await _exclusive_locks(pool, key) == (1, 1)
        other = await asyncpg.connect(dsn)
        try:
            assert await other.fetchval("SELECT pg_try_advisory_lock($1, $2)", *key) is False
        finally:
            await other.close()

        second_id = await s.trigger_periodic_job(dedup_key)
        assert second_id is not None and second_id != first_id

        async def second_deferred() -> bool:
            r = await job_row(pool, second_id)
            return bool(r["status"] == "pending" and r["error_message"] == "exclusive lock busy")

        await wait_for(second_deferred, timeout=5, message="second trigger deferred")
        assert active == 1 and len(spans) == 0  # no second execution started
        assert await _exclusive_locks(pool, key) == (1, 1)

        gate.set()
        first = await finished(s, first_id, timeout=10)
        second = await finished(s, second_id, timeout=10)
        await wait_for(lambda: _no_exclusive_locks(pool, key), timeout=5, message="lock released")

    assert first.status == "completed" and second.status == "completed"
    assert peak == 1
    ordered = sorted(spans)
    assert len(ordered) >= 2
    for (_, end), (begin, _) in zip(ordered, ordered[1:], strict=False):
        assert begin >= end, ordered  # runs never overlapped: the deferred one ran after


async def _no_exclusive_locks(pool: asyncpg.Pool, key: tuple[int, int]) -> bool:
    return bool(await _exclusive_locks(pool, key) == (0, 0))


# --------------------------------------------------------------------------- 9. blocked loop


class SchedulerThread:
    """A second replica with an event loop (and pool) of its own, in a thread.

    A task that blocks *its* loop then leaves the test's loop running, and with it the leader's
    orphan rescuer: exactly the situation in which 0.2.3 let a second worker take the job.
    """

    def __init__(self, dsn: str, **options: Any) -> None:
        self._dsn = dsn
        self._options = options
        self._thread = threading.Thread(target=self._main, name="second-replica", daemon=True)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.worker_id: str | None = None

    async def start(self) -> None:
        self._thread.start()
        await asyncio.to_thread(self._ready.wait, 15)
        if self.error is not None:
            raise self.error
        assert self.worker_id is not None, "second replica did not start"

    async def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self._thread.join, 20)
        assert not self._thread.is_alive(), "second replica did not stop"
        if self.error is not None:
            raise self.error

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported to the test by start()/stop()
            self.error = exc
            self._ready.set()

    async def _run(self) -> None:
        pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=5)
        try:
            s = Scheduler(pool, **self._options)
            await s.start()
            try:
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                self.worker_id = s.worker_id
                self._ready.set()
                await self._stop.wait()
            finally:
                await s.shutdown()
        finally:
            await pool.close()


async def test_job_blocking_its_event_loop_keeps_its_lease_and_runs_once(
    pool: asyncpg.Pool, dsn: str
) -> None:
    lease = 1.0
    spans_lock = threading.Lock()
    options = {**FAST, "lease_seconds": lease, "heartbeat_seconds": 0.25}
    spans: list[tuple[str, float, float | None]] = []
    hold_started = asyncio.Event()
    hold_gate = asyncio.Event()

    @job
    async def blocks_its_loop() -> None:
        with spans_lock:
            spans.append((threading.current_thread().name, time.monotonic(), None))
            index = len(spans) - 1
        time.sleep(lease * 2)  # noqa: ASYNC251 - blocks this replica's event loop: no await, no loop heartbeat
        with spans_lock:
            name, begin, _ = spans[index]
            spans[index] = (name, begin, time.monotonic())

    @job
    async def hold() -> None:
        hold_started.set()
        await hold_gate.wait()

    # Replica A (this loop) leads, so its orphan rescuer (every 0.3 s) keeps running while B's
    # loop is blocked. Its single slot is taken by `hold` so that B claims the blocking job;
    # the slot is freed while the job runs, so that had the lease lapsed, A would have taken
    # the job over and run it a second time, alongside.
    a = Scheduler(pool, **{**options, "max_concurrent_jobs": 1})
    b = SchedulerThread(dsn, **options)
    await a.start()
    try:
        await wait_for(lambda: a.is_leader, timeout=10, message="A leads")
        hold_id = await a.schedule(hold, execution_time=now())
        await wait_for(hold_started.is_set, timeout=5, message="A's slot taken")
        await b.start()

        job_id = await a.schedule(blocks_its_loop, execution_time=now(), max_retries=3)
        await wait_for(lambda: spans, timeout=5, message="blocking job started")
        running = await job_row(pool, job_id)
        assert running["status"] == "running" and running["worker_id"] == b.worker_id
        hold_gate.set()
        await finished(a, hold_id)

        # While B's loop is stuck in time.sleep, its heartbeat thread renews the lease.
        first_lease = running["lease_until"]

        async def renewed_while_blocked() -> bool:
            r = await job_row(pool, job_id)
            with spans_lock:
                still_blocked = spans[0][2] is None
            assert still_blocked, "the block ended before any renewal was seen"
            return bool(r["status"] == "running" and r["lease_until"] > first_lease)

        await wait_for(
            renewed_while_blocked, timeout=lease, interval=0.05, message="lease renewed during the block"
        )

        j = await finished(a, job_id, timeout=10)
    finally:
        await b.stop()
        await a.shutdown()

    assert j.status == "completed"
    assert j.attempt == 1 and j.retry_count == 0
    assert j.worker_id == b.worker_id
    with spans_lock:
        assert len(spans) == 1, spans
        name, begin, end = spans[0]
    assert name == "second-replica"
    assert end is not None and end - begin >= lease * 2 - CLOCK_EPSILON


# --------------------------------------------------------------------------- job context


async def test_current_job_tells_a_body_which_run_it_is(pool: asyncpg.Pool) -> None:
    seen: list[JobContext] = []

    @job
    async def introspective() -> None:
        seen.append(current_job())
        if len(seen) == 1:
            raise RuntimeError("fail the first attempt")

    async with scheduler(pool, retry_delay_seconds=0.05, retry_jitter=False) as s:
        job_id = await s.schedule(introspective, execution_time=now(), max_retries=1)
        j = await finished(s, job_id)

    assert j.status == "completed"
    assert [(c.job_id, c.attempt, c.retry_count, c.max_retries) for c in seen] == [
        (job_id, 1, 0, 1),
        (job_id, 2, 1, 1),
    ]
    assert seen[0].worker_id and seen[0].worker_id == seen[1].worker_id  # one worker in this Scheduler
    assert seen[0].dedup_key is None and seen[0].job_name.endswith("introspective")
    with pytest.raises(SchedulerStateError, match="outside of a running job"):
        current_job()


# --------------------------------------------------------------------------- pooled sessions


async def test_our_pools_skip_the_reset_round_trip_but_never_reuse_an_open_transaction(dsn: str) -> None:
    """Pods' pools release a connection without asyncpg's reset query (a round trip per use,
    as costly as the claim it follows), except one left inside a transaction."""
    pool = await create_pool_waiting(dsn, max_size=1, stop=asyncio.Event(), who="test")
    assert pool is not None
    try:
        sent: list[str] = []
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda record: sent.append(record.query))
        assert await pool.fetchval("SELECT 1") == 1
        assert sent == ["SELECT 1"]

        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("SELECT pg_advisory_xact_lock(42)")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                )
                == 0
            )
    finally:
        await pool.close()


async def test_our_pools_close_the_connections_a_burst_left_unused(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle pod keeps one pooled connection per process, not what its last burst opened."""
    monkeypatch.setattr(db, "POOL_IDLE_SECONDS", 0.5)
    pool = await create_pool_waiting(dsn, max_size=4, stop=asyncio.Event(), who="test")
    assert pool is not None
    try:
        async with pool.acquire() as a, pool.acquire() as b, pool.acquire() as c:
            pids = {await conn.fetchval("SELECT pg_backend_pid()") for conn in (a, b, c)}
        assert len(pids) == 3

        async def open_of_ours() -> int:
            return int(await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)", pids))

        # The pool's own probe keeps one of them in use; the other two go after 0.5 s idle.
        assert await wait_for(lambda: _at_most(open_of_ours, 1), timeout=5, message="idle ones closed")
    finally:
        await pool.close()


async def _at_most(count: Callable[[], Awaitable[int]], most: int) -> bool:
    return await count() <= most
