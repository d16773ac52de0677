"""Raw SQL on asyncpg: the floor under every queue built on ``FOR UPDATE SKIP LOCKED``.

Three worker modes, each process with C slots:

- ``one``: C loops, each claims 1 job, runs it, marks it done (two statements per job);
- ``batch``: 2 loops, each claims 100 jobs in one statement, runs them concurrently, marks the
  100 done in one statement (the ceiling of the issue's targets: 200 jobs in flight, not C);
- ``slots``: 1 loop that claims C jobs (the process's slots), runs them concurrently, marks the C
  done in one statement: the batched ceiling at the slots every queue in the drain has.

No leases, heartbeats, retries or fencing: it is the ceiling, not a peer. Idle loops wake on
LISTEN/NOTIFY (a statement trigger, as in pg-scheduler), with a 1-second poll as fallback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import recorder
from driver_cli import Counted, Driver, StatementCounter, main
from raw_sql import CLAIM, DONE_MANY, DONE_ONE, TABLE

CHANNEL = "raw_jobs"
BATCH = 100
BATCH_LOOPS = 2
POLL_SECONDS = 1.0

SCHEMA = (
    TABLE
    + """
CREATE FUNCTION raw_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('raw_jobs', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER raw_jobs_notify AFTER INSERT ON raw_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION raw_jobs_notify();
"""
)
INSERT_ONE = "INSERT INTO raw_jobs (key, enqueued_at) VALUES ($1, $2)"
INSERT_MANY = "INSERT INTO raw_jobs (key, enqueued_at) SELECT * FROM unnest($1::int[], $2::float8[])"


class Wakeup:
    """Wakes every idle loop on a notification; a generation number closes the gap between an
    empty claim and the wait (a notification in between is not lost)."""

    def __init__(self) -> None:
        self.generation = 0
        self._event = asyncio.Event()

    def notify(self, *_: object) -> None:
        self.generation += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seen: int) -> None:
        if self.generation != seen:
            return
        try:
            await asyncio.wait_for(self._event.wait(), POLL_SECONDS)
        except TimeoutError:
            pass


async def _loop_one(pool: asyncpg.Pool, wake: Wakeup, stop: asyncio.Event) -> None:
    async with pool.acquire() as conn:
        while not stop.is_set():
            seen = wake.generation
            rows = await conn.fetch(CLAIM, 1)
            if not rows:
                await wake.wait(seen)
                continue
            row = rows[0]
            await recorder.noop(row["key"], row["enqueued_at"])
            await conn.execute(DONE_ONE, row["id"])


async def _loop_batch(pool: asyncpg.Pool, wake: Wakeup, stop: asyncio.Event, batch: int = BATCH) -> None:
    async with pool.acquire() as conn:
        while not stop.is_set():
            seen = wake.generation
            rows = await conn.fetch(CLAIM, batch)
            if not rows:
                await wake.wait(seen)
                continue
            await asyncio.gather(*(recorder.noop(r["key"], r["enqueued_at"]) for r in rows))
            await conn.execute(DONE_MANY, [r["id"] for r in rows])


async def run_worker(dsn: str, concurrency: int, stop: asyncio.Event, mode: str) -> None:
    loops = {"one": concurrency, "batch": BATCH_LOOPS, "slots": 1}[mode]
    pool = await asyncpg.create_pool(dsn, min_size=loops, max_size=loops)
    listener = await asyncpg.connect(dsn)
    wake = Wakeup()
    await listener.add_listener(CHANNEL, wake.notify)
    if mode == "one":
        tasks = [asyncio.create_task(_loop_one(pool, wake, stop)) for _ in range(loops)]
    else:
        batch = concurrency if mode == "slots" else BATCH
        tasks = [asyncio.create_task(_loop_batch(pool, wake, stop, batch)) for _ in range(loops)]
    try:
        await stop.wait()
        wake.notify()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    finally:
        for t in tasks:
            t.cancel()
        await listener.close()
        await pool.close()


class RawProducer(Counted):
    def __init__(self, conn: asyncpg.Connection, counter: StatementCounter) -> None:
        self.conn = conn
        self.counter = counter

    def prepare_bulk(self, keys: Sequence[int], sleep: float | None) -> Callable[[], Awaitable[None]]:
        if sleep is not None:
            raise SystemExit("the raw SQL driver has no sleeping job")
        key_list = list(keys)
        stamps = [0.0] * len(key_list)

        async def call() -> None:
            await self.conn.execute(INSERT_MANY, key_list, stamps)

        return call

    async def one(self, key: int, enqueued_at: float) -> None:
        await self.conn.execute(INSERT_ONE, key, enqueued_at)

    async def close(self) -> None:
        await self.conn.close()


async def setup(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA)
    finally:
        await conn.close()


async def producer(dsn: str) -> RawProducer:
    counter = StatementCounter()
    conn = await asyncpg.connect(dsn)
    await counter.attach(conn)
    return RawProducer(conn, counter)


DRIVER = Driver(setup=setup, producer=producer, worker=run_worker)

if __name__ == "__main__":
    main(DRIVER)
