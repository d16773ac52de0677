"""Plain (``def``) functions as tasks, job results, and ``Scheduler.wait_for``.

A plain function runs in a thread of its worker, with the same lease, heartbeat, fencing,
retries and ``current_job()`` as a coroutine; what it (or a coroutine) returns is stored as the
job's ``result``; ``wait_for`` is woken by the notification of the job's end.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from pg_scheduler import JobNotFoundError, Scheduler, current_job, job
from tests.rows import job_row
from tests.support import FAST, wait_for


def scheduler(pool: asyncpg.Pool, **overrides: Any) -> Scheduler:
    return Scheduler(pool, **{**FAST, **overrides})


def now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- results


async def test_a_return_value_is_stored_as_the_jobs_result(pool: asyncpg.Pool) -> None:
    @job
    async def add(a: int, b: int) -> dict[str, Any]:
        return {"sum": a + b, "items": [a, b], "note": "<ok>"}

    @job
    def multiply(a: int, b: int) -> int:
        return a * b

    @job
    async def nothing() -> None:
        return None

    async with scheduler(pool) as s:
        added = await s.wait_for(await s.schedule(add, execution_time=now(), args=(2, 3)), timeout=10)
        multiplied_id = await s.schedule(multiply, execution_time=now(), args=(4, 5))
        multiplied = await s.wait_for(multiplied_id, timeout=10)
        none = await s.wait_for(await s.schedule(nothing, execution_time=now()), timeout=10)

    assert added.status == "completed" and added.result == {"sum": 5, "items": [2, 3], "note": "<ok>"}
    assert multiplied.status == "completed" and multiplied.result == 20
    assert none.status == "completed" and none.result is None
    stored = await s.get_job(added.job_id)
    assert stored is not None and stored.result == added.result


async def test_a_result_that_is_not_json_or_too_big_fails_the_attempt_not_the_worker(
    pool: asyncpg.Pool,
) -> None:
    @job
    async def returns_an_object() -> object:
        return object()

    @job
    def returns_nan() -> float:
        return float("nan")

    @job
    async def returns_too_much() -> str:
        return "x" * 2000

    @job
    async def fine() -> str:
        return "still working"

    async with scheduler(pool, result_max_bytes=1000, retry_delay_seconds=0.05) as s:
        bad_id = await s.schedule(returns_an_object, execution_time=now(), max_retries=1)
        bad = await s.wait_for(bad_id, timeout=10)
        nan = await s.wait_for(await s.schedule(returns_nan, execution_time=now()), timeout=10)
        big = await s.wait_for(await s.schedule(returns_too_much, execution_time=now()), timeout=10)
        after = await s.wait_for(await s.schedule(fine, execution_time=now()), timeout=10)

    assert bad.status == "failed" and bad.attempt == 2  # a failed attempt, retried like any other
    assert bad.error_message is not None and "not JSON" in bad.error_message and "object" in bad.error_message
    assert nan.status == "failed" and nan.error_message is not None and "not JSON" in nan.error_message
    assert big.status == "failed" and big.error_message is not None
    assert "2002 bytes" in big.error_message and "result_max_bytes (1000)" in big.error_message
    assert bad.result is None and big.result is None
    assert after.status == "completed" and after.result == "still working"


async def test_replacing_a_job_clears_its_result(pool: asyncpg.Pool) -> None:
    @job
    async def answer() -> int:
        return 42

    async with scheduler(pool) as s:
        done = await s.wait_for(await s.schedule(answer, execution_time=now(), job_id="r1"), timeout=10)
        assert done.result == 42
        later = datetime(2099, 1, 1, tzinfo=UTC)
        await s.schedule(answer, execution_time=later, job_id="r1", conflict_resolution="replace")
    row = await job_row(pool, "r1")
    assert row["status"] == "pending" and row["result"] is None


# --------------------------------------------------------------------------- wait_for


async def test_wait_for_returns_within_100_ms_of_the_completion(pool: asyncpg.Pool) -> None:
    ended: dict[str, float] = {}
    release = asyncio.Event()

    @job
    async def slow(key: str) -> str:
        await release.wait()
        ended[key] = time.monotonic()
        return key

    lags = []
    async with scheduler(pool) as s:
        for i in range(10):
            release.clear()
            key = f"w{i}"
            job_id = await s.schedule(slow, execution_time=now(), args=(key,))
            waiter = asyncio.create_task(s.wait_for(job_id, timeout=10))
            await wait_for(
                lambda job_id=job_id: pool.fetchval(
                    "SELECT awaited FROM scheduled_jobs WHERE job_id = $1", job_id
                ),
                message="the waiter to listen",
            )
            release.set()
            finished = await waiter
            lags.append(time.monotonic() - ended[key])
            assert finished.status == "completed" and finished.result == key
    # From the function's return to wait_for's: the completion's commit and one notification.
    p50, worst = statistics.median(lags) * 1000, max(lags) * 1000
    print(f"wait_for lag after completion: p50 {p50:.1f} ms, max {worst:.1f} ms")
    assert max(lags) < 0.1, lags


async def test_wait_for_waits_through_retries_and_raises_on_timeout_or_unknown_id(pool: asyncpg.Pool) -> None:
    runs: list[int] = []

    @job
    async def flaky() -> int:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("not yet")
        return len(runs)

    @job
    async def forever() -> None:
        await asyncio.Event().wait()

    async with scheduler(pool, retry_delay_seconds=0.1, retry_jitter=False) as s:
        done = await s.wait_for(await s.schedule(flaky, execution_time=now(), max_retries=5), timeout=10)
        assert done.status == "completed" and done.result == 3 and done.attempt == 3

        stuck = await s.schedule(forever, execution_time=now())
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await s.wait_for(stuck, timeout=0.3)
        assert 0.3 <= time.monotonic() - started < 2.0
        with pytest.raises(JobNotFoundError):
            await s.wait_for("no-such-job", timeout=1)
        await s.cancel_job(stuck)
        cancelled = await s.wait_for(stuck, timeout=5)
        assert cancelled.status == "cancelled"


async def test_wait_for_a_finished_job_returns_at_once(pool: asyncpg.Pool) -> None:
    @job
    async def quick() -> str:
        return "done"

    async with scheduler(pool) as s:
        job_id = await s.schedule(quick, execution_time=now())
        await s.wait_for(job_id, timeout=10)
        started = time.monotonic()
        again = await s.wait_for(job_id, timeout=10)
    assert again.result == "done" and time.monotonic() - started < 1.0


# --------------------------------------------------------------------------- plain functions


async def test_a_sleeping_plain_function_keeps_its_lease_for_three_lease_periods(
    pool: asyncpg.Pool,
) -> None:
    seen: list[Any] = []

    @job
    def sleepy() -> str:
        context = current_job()
        seen.append((context.job_id if context else None, threading.current_thread().name))
        time.sleep(3.3)
        return "rested"

    # FAST has a 1-s lease renewed every 1/3 s, and a rescuer that takes back ended leases.
    async with scheduler(pool, lease_seconds=1.0) as s:
        job_id = await s.schedule(sleepy, execution_time=now())
        done = await s.wait_for(job_id, timeout=15)
    assert done.status == "completed" and done.result == "rested"
    assert done.attempt == 1  # never rescued, never run twice
    assert len(seen) == 1 and seen[0][0] == job_id
    assert seen[0][1] != threading.main_thread().name


async def test_a_raising_plain_function_retries_with_backoff(pool: asyncpg.Pool) -> None:
    starts: list[float] = []

    @job
    def flaky() -> int:
        starts.append(time.monotonic())
        if len(starts) <= 2:
            raise ValueError(f"failure {len(starts)}")
        return len(starts)

    async with scheduler(pool, retry_delay_seconds=0.3, retry_jitter=False) as s:
        done = await s.wait_for(await s.schedule(flaky, execution_time=now(), max_retries=3), timeout=15)
    assert done.status == "completed" and done.result == 3 and done.retry_count == 2
    assert starts[1] - starts[0] >= 0.3 - 0.005
    assert starts[2] - starts[1] >= 0.6 - 0.005


async def test_a_cancelled_plain_function_runs_on_but_its_outcome_is_refused(pool: asyncpg.Pool) -> None:
    running = threading.Event()
    finish = threading.Event()
    returned = threading.Event()

    @job
    def blocking() -> str:
        running.set()
        finish.wait(10)
        returned.set()
        return "late"

    async with scheduler(pool) as s:
        job_id = await s.schedule(blocking, execution_time=now())
        assert await asyncio.to_thread(running.wait, 10)
        assert await s.cancel_job(job_id)
        finish.set()
        assert await asyncio.to_thread(returned.wait, 10)
        await asyncio.sleep(0.3)  # what the thread returned would have been written by now
        row = await job_row(pool, job_id)
    assert row["status"] == "cancelled" and row["result"] is None


async def test_a_timed_out_plain_function_fails_once_it_returns_and_holds_its_slot_till_then(
    pool: asyncpg.Pool,
) -> None:
    finish = threading.Event()
    order: list[str] = []

    @job
    def overrun() -> None:
        order.append("overrun started")
        finish.wait(10)
        order.append("overrun returned")

    @job
    async def next_one() -> None:
        order.append("next started")

    async with scheduler(pool, max_concurrent_jobs=1) as s:
        first = await s.schedule(overrun, execution_time=now(), timeout_seconds=0.3)
        second = await s.schedule(next_one, execution_time=now())
        await wait_for(lambda: order == ["overrun started"], message="the plain function to start")
        await asyncio.sleep(0.8)  # well past its 0.3-s timeout: nothing may have moved
        assert order == ["overrun started"]  # the only slot is still the function's
        assert (await job_row(pool, first))["status"] == "running"  # no retry beside it
        finish.set()
        failed = await s.wait_for(first, timeout=10)
        await s.wait_for(second, timeout=10)
    assert failed.status == "failed" and failed.error_message is not None
    assert "timed out" in failed.error_message
    assert order == ["overrun started", "overrun returned", "next started"]


async def test_shutdown_waits_for_a_running_plain_function_and_writes_its_outcome(
    pool: asyncpg.Pool,
) -> None:
    running = threading.Event()
    finish = threading.Event()

    @job
    def long_task() -> str:
        running.set()
        finish.wait(10)
        return "finished anyway"

    s = scheduler(pool, shutdown_timeout_seconds=0.2)
    await s.start()
    job_id = await s.schedule(long_task, execution_time=now())
    assert await asyncio.to_thread(running.wait, 10)
    stopping = asyncio.create_task(s.shutdown())
    await asyncio.sleep(0.6)  # past the shutdown timeout: a coroutine would be handed back now
    assert not stopping.done()
    assert (await job_row(pool, job_id))["status"] == "running"  # not handed back to run twice
    finish.set()
    await asyncio.wait_for(stopping, 15)
    row = await job_row(pool, job_id)
    assert row["status"] == "completed" and row["attempt"] == 1
    assert json.loads(row["result"]) == "finished anyway"


async def test_waiters_never_starve_the_pool_the_jobs_complete_through(dsn: str) -> None:
    release = asyncio.Event()

    @job
    async def gated(i: int) -> int:
        await release.wait()
        return i

    small = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        async with scheduler(small) as s:
            ids = [await s.schedule(gated, execution_time=now(), args=(i,)) for i in range(4)]
            waiters = [asyncio.create_task(s.wait_for(job_id, timeout=20)) for job_id in ids]
            await wait_for(
                lambda: small.fetchval("SELECT count(*) FROM scheduled_jobs WHERE awaited"),
                message="the waiters",
            )
            release.set()
            done = await asyncio.gather(*waiters)
    finally:
        await small.close()
    assert [j.result for j in done] == [0, 1, 2, 3]


async def test_results_postgresql_cannot_store_fail_the_attempt_with_the_reason(pool: asyncpg.Pool) -> None:
    @job
    async def nul() -> str:
        return "a\x00b"

    @job
    def deep() -> list[Any]:
        value: list[Any] = []
        for _ in range(5000):
            value = [value]
        return value

    @job
    async def fine() -> int:
        return 1

    async with scheduler(pool) as s:
        nul_job = await s.wait_for(await s.schedule(nul, execution_time=now()), timeout=10)
        deep_job = await s.wait_for(await s.schedule(deep, execution_time=now()), timeout=10)
        after = await s.wait_for(await s.schedule(fine, execution_time=now()), timeout=10)
    assert nul_job.status == "failed" and "NUL" in (nul_job.error_message or "")
    assert deep_job.status == "failed" and "not JSON" in (deep_job.error_message or "")
    assert after.status == "completed" and after.result == 1
    with pytest.raises(ValueError, match="timeout"):
        await s.wait_for(after.job_id, timeout=float("nan"))


async def test_four_slots_never_run_more_than_four_jobs_sync_and_async_together(pool: asyncpg.Pool) -> None:
    lock = threading.Lock()
    running = 0
    peak = 0

    def enter() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)

    def leave() -> None:
        nonlocal running
        with lock:
            running -= 1

    @job
    def sync_work() -> None:
        enter()
        time.sleep(0.1)
        leave()

    @job
    async def async_work() -> None:
        enter()
        await asyncio.sleep(0.1)
        leave()

    async with scheduler(pool, max_concurrent_jobs=4) as s:
        ids = []
        for i in range(16):
            ids.append(await s.schedule(sync_work if i % 2 else async_work, execution_time=now()))
        done = [await s.wait_for(job_id, timeout=20) for job_id in ids]
    assert all(j.status == "completed" for j in done)
    assert peak == 4, peak
