"""``SyncScheduler``, the blocking producer, against a real PostgreSQL.

The tests are plain (sync) functions, as the code that uses it is: the jobs run in a Scheduler
started on an event loop of its own in another thread (``running_worker``), as they would in a
pod.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from pg_scheduler import (
    InvalidJobError,
    JobAlreadyExistsError,
    JobNotFoundError,
    JobState,
    Scheduler,
    SchedulerStateError,
    SyncScheduler,
    job,
)
from tests.conftest import run_isolated
from tests.support import FAST

THREAD_NAME = "pg-scheduler-sync"


@job
def square(x: int) -> int:
    return x * x


def now() -> datetime:
    return datetime.now(UTC)


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


@contextmanager
def running_worker(dsn: str) -> Iterator[None]:
    """A started Scheduler (a worker) on its own loop in a thread, until the block ends."""
    started = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        state["loop"] = asyncio.get_running_loop()
        state["stop"] = stop = asyncio.Event()
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=5)
        try:
            async with Scheduler(pool, **FAST):
                started.set()
                await stop.wait()
        finally:
            started.set()
            await pool.close()

    errors: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=main, name="test-worker")
    thread.start()
    try:
        assert started.wait(30), "the worker did not start"
        assert not errors, errors
        yield
    finally:
        if "loop" in state:
            state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(30)
        assert not thread.is_alive(), "the worker did not stop"
    assert not errors, errors


def test_threads_scheduling_at_once_each_get_their_job_and_its_result(dsn: str) -> None:
    threads, per_thread = 8, 5
    barrier = threading.Barrier(threads)
    ids: dict[int, str] = {}
    failures: list[BaseException] = []
    ids_lock = threading.Lock()

    with running_worker(dsn), SyncScheduler(dsn, max_size=3) as scheduler:

        def produce(n: int) -> None:
            try:
                barrier.wait(10)
                for i in range(per_thread):
                    x = n * per_thread + i
                    job_id = scheduler.schedule(square, execution_time=now(), args=(x,))
                    with ids_lock:
                        ids[x] = job_id
            except BaseException as exc:
                failures.append(exc)

        workers = [threading.Thread(target=produce, args=(n,)) for n in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(60)
        assert not failures, failures
        assert len(ids) == threads * per_thread and len(set(ids.values())) == threads * per_thread

        for x, job_id in ids.items():
            done = scheduler.wait_for(job_id, timeout=30)
            assert done.status is JobState.COMPLETED, done
            assert done.result == x * x
            assert done.job_name == f"{__name__}:square"


def test_wait_for_times_out_while_no_worker_runs_then_returns_the_finished_job(dsn: str) -> None:
    with SyncScheduler(dsn) as scheduler:
        job_id = scheduler.schedule(square, execution_time=now(), args=(7,))
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            scheduler.wait_for(job_id, timeout=0.3)
        assert time.monotonic() - started < 5
        pending = scheduler.get_job(job_id)
        assert pending is not None and pending.status is JobState.PENDING

        with running_worker(dsn):
            done = scheduler.wait_for(job_id, timeout=30)
        assert done.status is JobState.COMPLETED and done.result == 49
        stored = scheduler.get_job(job_id)
        assert stored is not None and stored.result == 49


CASES: dict[str, tuple[Callable[[Any], Any], type[BaseException]]] = {
    "naive datetime": (
        lambda s: s.schedule(square, execution_time=datetime.now(), args=(1,)),
        InvalidJobError,
    ),
    "id taken": (
        lambda s: s.schedule(square, execution_time=now(), args=(1,), job_id="taken"),
        JobAlreadyExistsError,
    ),
    "unknown job awaited": (lambda s: s.wait_for("no-such-job", timeout=5), JobNotFoundError),
    "not JSON": (lambda s: s.schedule(square, execution_time=now(), args=(object(),)), TypeError),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_error_is_the_one_the_async_api_raises(dsn: str, case: str) -> None:
    call, expected = CASES[case]

    async def async_error() -> type[BaseException]:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            async_scheduler = Scheduler(pool)
            await async_scheduler.schedule(square, execution_time=now(), args=(1,), job_id="taken")
            with pytest.raises(expected) as raised:
                await call(async_scheduler)  # the same call returns a coroutine here
            return type(raised.value)
        finally:
            await pool.close()

    async_type = run_isolated(async_error())
    with SyncScheduler(dsn) as scheduler:
        with pytest.raises(expected) as raised:
            call(scheduler)
    assert type(raised.value) is async_type


def test_get_job_of_an_unknown_id_is_none(dsn: str) -> None:
    with SyncScheduler(dsn) as scheduler:
        assert scheduler.get_job("no-such-job") is None


def test_close_is_idempotent_stops_the_thread_and_later_calls_raise(dsn: str) -> None:
    before = len(loop_threads())
    scheduler = SyncScheduler(dsn)
    assert len(loop_threads()) == before + 1
    scheduler.schedule(square, execution_time=now(), args=(2,))
    scheduler.close()
    scheduler.close()
    assert scheduler.closed and len(loop_threads()) == before
    with pytest.raises(SchedulerStateError, match="closed"):
        scheduler.schedule(square, execution_time=now(), args=(3,))
    with pytest.raises(SchedulerStateError, match="closed"):
        scheduler.get_job("anything")
    with scheduler:  # leaving the block again closes nothing twice
        pass


def test_close_stops_a_call_that_would_wait_forever(dsn: str) -> None:
    scheduler = SyncScheduler(dsn, close_timeout=0.5)
    job_id = scheduler.schedule(square, execution_time=now(), args=(4,))  # no worker runs it
    outcome: list[BaseException] = []
    waiting = threading.Thread(target=lambda: _capture(outcome, lambda: scheduler.wait_for(job_id)))
    waiting.start()
    # The wait holds its connection once the job is marked awaited.
    deadline = time.monotonic() + 10
    while run_isolated(_awaited(dsn, job_id)) is not True:
        assert time.monotonic() < deadline, "wait_for never started waiting"
        time.sleep(0.05)
    started = time.monotonic()
    scheduler.close()
    waiting.join(10)
    assert not waiting.is_alive()
    assert time.monotonic() - started < 8
    assert len(outcome) == 1 and isinstance(outcome[0], SchedulerStateError), outcome


def test_a_database_that_cannot_be_reached_raises_and_leaves_no_thread(dsn: str) -> None:
    before = len(loop_threads())
    unreachable = "postgresql://postgres@127.0.0.1:1/postgres"
    with pytest.raises(OSError):
        SyncScheduler(unreachable, connect_timeout=10)
    assert len(loop_threads()) == before


def _capture(into: list[BaseException], call: Callable[[], Any]) -> None:
    try:
        call()
    except BaseException as exc:
        into.append(exc)


async def _awaited(dsn: str, job_id: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval("SELECT awaited FROM scheduled_jobs WHERE job_id = $1", job_id))
    finally:
        await conn.close()
