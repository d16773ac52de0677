"""pg-scheduler (this repository): the producer side, and the in-process worker.

The system ``ours`` runs its workers as real pods, started by the harness as ``pg-scheduler run
ours_app.py``. The system ``ours-inproc`` runs ``worker --mode inproc`` here: an application
that embeds a started ``Scheduler(pool, max_concurrent_jobs=C)`` on the default asyncio event
loop, the harness's jobs registered (``ours_app``), until SIGTERM."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import asyncpg
import ours_app
from driver_cli import Counted, Driver, StatementCounter, main

from pg_scheduler import JobSpec, Scheduler, pool_reset


class OursProducer(Counted):
    def __init__(self, pool: asyncpg.Pool, counter: StatementCounter) -> None:
        self.pool = pool
        self.counter = counter
        self.scheduler = Scheduler(db_pool=pool)  # never started: a producer

    def prepare_bulk(self, keys: Sequence[int], sleep: float | None) -> Callable[[], Awaitable[None]]:
        now = datetime.now(UTC)
        if sleep is None:
            specs = [JobSpec(func=ours_app.noop, execution_time=now, args=(k, 0.0)) for k in keys]
        else:
            specs = [JobSpec(func=ours_app.sleep, execution_time=now, args=(k, 0.0, sleep)) for k in keys]

        async def call() -> None:
            await self.scheduler.schedule_bulk(specs)

        return call

    async def one(self, key: int, enqueued_at: float) -> None:
        await self.scheduler.schedule(
            ours_app.noop, execution_time=datetime.now(UTC), args=(key, enqueued_at)
        )

    async def close(self) -> None:
        await self.pool.close()


async def setup(dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await Scheduler(db_pool=pool).initialize_db()
    finally:
        await pool.close()


async def producer(dsn: str) -> OursProducer:
    counter = StatementCounter()
    # A pool only the Scheduler uses: pg_scheduler.pool_reset skips asyncpg's reset round trip
    # at every release (the Scheduler keeps no session state), as the README recommends.
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, init=counter.attach, reset=pool_reset)
    made = OursProducer(pool, counter)
    await made.scheduler.initialize_db()  # its one-time schema check stays out of the timings
    return made


async def producers(dsn: str, n: int) -> list[OursProducer]:
    """The producers of ``n`` concurrent tasks of one application: one Scheduler on one pool of
    ``n`` connections, as an application's request handlers share its pool (and the Scheduler
    shares their wake-ups: pg_scheduler/announcer.py)."""
    counter = StatementCounter()
    pool = await asyncpg.create_pool(dsn, min_size=n, max_size=n, init=counter.attach, reset=pool_reset)
    made = OursProducer(pool, counter)
    await made.scheduler.initialize_db()
    return [made] * n


async def worker(dsn: str, concurrency: int, stop: asyncio.Event, mode: str) -> None:
    """An application with an in-process Scheduler: its pool sized as a pod's worker sizes its
    own (one connection per slot plus one, at most 20), signals left to the application."""
    if mode != "inproc":
        raise SystemExit("ours_driver.py runs an in-process worker only (--mode inproc)")
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=max(2, min(concurrency + 1, 20)), reset=pool_reset
    )
    scheduler = Scheduler(pool, max_concurrent_jobs=concurrency)
    try:
        await scheduler.start()
        await stop.wait()
    finally:
        await scheduler.shutdown(timeout=10)
        await pool.close()


DRIVER = Driver(setup=setup, producer=producer, worker=worker, producers=producers)

if __name__ == "__main__":
    main(DRIVER)
