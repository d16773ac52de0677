"""pg-scheduler 0.2.3 from PyPI (the original this repository replaces), in its own virtualenv:
it has the same import name, ``pg_scheduler``, as this repository's package.

A worker process is one started ``Scheduler(pool, max_concurrent_jobs=C)``. 0.2.3 runs only
functions that its process put into ``task_map`` (it has no registry), so the worker puts the
job functions there by name, as its own tests do. Its import calls ``logging.basicConfig(INFO)``,
which would log every job; the root logger goes back to WARNING like every other system here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import asyncpg
import recorder
from driver_cli import Counted, Driver, StatementCounter, main

from pg_scheduler import JobSpec, Scheduler

logging.getLogger().setLevel(logging.WARNING)


async def noop(key: int, enqueued_at: float) -> None:
    recorder.record(key, enqueued_at)


async def sleep(key: int, enqueued_at: float, seconds: float) -> None:
    await recorder.sleep(key, enqueued_at, seconds)


def _scheduler(pool: asyncpg.Pool, concurrency: int = 25) -> Scheduler:
    scheduler = Scheduler(pool, max_concurrent_jobs=concurrency)
    scheduler.task_map.update({"noop": noop, "sleep": sleep})
    return scheduler


class SeedProducer(Counted):
    def __init__(self, pool: asyncpg.Pool, counter: StatementCounter) -> None:
        self.pool = pool
        self.counter = counter
        self.scheduler = _scheduler(pool)

    def prepare_bulk(self, keys: Sequence[int], sleep_s: float | None) -> Callable[[], Awaitable[None]]:
        now = datetime.now(UTC)
        if sleep_s is None:
            specs = [JobSpec(func=noop, execution_time=now, args=(k, 0.0)) for k in keys]
        else:
            specs = [JobSpec(func=sleep, execution_time=now, args=(k, 0.0, sleep_s)) for k in keys]

        async def call() -> None:
            await self.scheduler.schedule_bulk(specs)

        return call

    async def one(self, key: int, enqueued_at: float) -> None:
        await self.scheduler.schedule(noop, execution_time=datetime.now(UTC), args=(key, enqueued_at))

    async def close(self) -> None:
        await self.pool.close()


async def setup(dsn: str) -> None:
    # Before any worker starts: 0.2.3's initialize_db() is not safe to run concurrently.
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await _scheduler(pool).initialize_db()
    finally:
        await pool.close()


async def producer(dsn: str) -> SeedProducer:
    counter = StatementCounter()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, init=counter.attach)
    return SeedProducer(pool, counter)


async def worker(dsn: str, concurrency: int, stop: asyncio.Event, mode: str) -> None:
    pool = await asyncpg.create_pool(dsn)  # its README's pool (10 connections)
    scheduler = _scheduler(pool, concurrency)
    # 0.2.3 takes SIGTERM/SIGINT over in __init__; give them back to the harness's stop.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await scheduler.start()
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(scheduler.shutdown(), 10)
        await pool.close()


DRIVER = Driver(setup=setup, producer=producer, worker=worker)

if __name__ == "__main__":
    main(DRIVER)
