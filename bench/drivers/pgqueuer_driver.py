"""pgqueuer 1.x: a worker process is ``PgQueuer.run(batch_size=10, max_concurrent_tasks=C)`` on
one asyncpg connection (its README's setup); the batch API is ``Queries.enqueue`` with lists.
Payloads are ``b"key enqueued_at [seconds]"``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import recorder
from driver_cli import Counted, Driver, StatementCounter, main
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver, AsyncpgPoolDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries

BATCH_SIZE = 10  # pgqueuer's default


def _parse(job: Job) -> list[float]:
    return [float(x) for x in (job.payload or b"").split()]


class PgqueuerProducer(Counted):
    def __init__(self, conn: asyncpg.Connection | asyncpg.Pool, counter: StatementCounter) -> None:
        self.conn = conn
        self.counter = counter
        driver = AsyncpgPoolDriver(conn) if isinstance(conn, asyncpg.Pool) else AsyncpgDriver(conn)
        self.queries = Queries(driver)

    def prepare_bulk(self, keys: Sequence[int], sleep: float | None) -> Callable[[], Awaitable[None]]:
        n = len(keys)
        if sleep is None:
            names, payloads = ["noop"] * n, [f"{k} 0".encode() for k in keys]
        else:
            names, payloads = ["sleep"] * n, [f"{k} 0 {sleep}".encode() for k in keys]
        priorities = [0] * n

        async def call() -> None:
            await self.queries.enqueue(names, payloads, priorities)  # type: ignore[arg-type]

        return call

    async def one(self, key: int, enqueued_at: float) -> None:
        await self.queries.enqueue("noop", f"{key} {enqueued_at!r}".encode())

    async def close(self) -> None:
        await self.conn.close()


async def setup(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()


async def producer(dsn: str) -> PgqueuerProducer:
    counter = StatementCounter()
    conn = await asyncpg.connect(dsn)
    await counter.attach(conn)
    return PgqueuerProducer(conn, counter)


async def producers(dsn: str, n: int) -> list[PgqueuerProducer]:
    """The producers of ``n`` concurrent tasks of one application: one ``Queries`` on one pool
    of ``n`` connections (pgqueuer's AsyncpgPoolDriver)."""
    counter = StatementCounter()
    # No reset round trip at each release, as pg-scheduler's pool (pg_scheduler.pool_reset):
    # enqueue keeps no session state either.
    pool = await asyncpg.create_pool(dsn, min_size=n, max_size=n, init=counter.attach, reset=_no_reset)
    return [PgqueuerProducer(pool, counter)] * n


async def _no_reset(conn: asyncpg.Connection) -> None:
    """asyncpg's pool reset, skipped."""


async def worker(dsn: str, concurrency: int, stop: asyncio.Event, mode: str) -> None:
    conn = await asyncpg.connect(dsn)
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        key, enqueued_at = _parse(job)
        recorder.record(int(key), enqueued_at)

    @pgq.entrypoint("sleep")
    async def sleep(job: Job) -> None:
        key, enqueued_at, seconds = _parse(job)
        await recorder.sleep(int(key), enqueued_at, seconds)

    # max_concurrent_tasks must be at least twice the batch size.
    run = asyncio.create_task(
        pgq.run(batch_size=BATCH_SIZE, max_concurrent_tasks=max(concurrency, 2 * BATCH_SIZE))
    )
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
        pgq.shutdown.set()  # pgqueuer's own graceful stop: finish what it holds
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(run, 10)
    finally:
        stopped.cancel()
        await conn.close()


DRIVER = Driver(setup=setup, producer=producer, worker=worker, producers=producers)

if __name__ == "__main__":
    main(DRIVER)
