"""procrastinate 3.x: a worker process is ``App.run_worker_async(concurrency=C)``; the batch
API is ``Task.batch_defer_async``. Connections: psycopg 3 (C implementation) through the pool
procrastinate creates, sized so that C concurrent jobs never wait for a connection, up to
``POOL_CAP`` (at 500 slots, C + 2 per process would pass the server's max_connections)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import recorder
from driver_cli import Driver, main
from procrastinate import App, PsycopgConnector

POOL_CAP = 100


def make_app(dsn: str, pool_size: int, min_size: int = 1) -> App:
    connector = PsycopgConnector(conninfo=dsn, min_size=min_size, max_size=pool_size)
    app = App(connector=connector)

    @app.task(name="noop")
    async def noop(key: int, enqueued_at: float) -> None:
        recorder.record(key, enqueued_at)

    @app.task(name="sleep")
    async def sleep(key: int, enqueued_at: float, seconds: float) -> None:
        await recorder.sleep(key, enqueued_at, seconds)

    return app


class ProcrastinateProducer:
    def __init__(self, app: App) -> None:
        self.app = app

    def prepare_bulk(self, keys: Sequence[int], sleep: float | None) -> Callable[[], Awaitable[None]]:
        if sleep is None:
            task = self.app.tasks["noop"]
            kwargs = [{"key": k, "enqueued_at": 0.0} for k in keys]
        else:
            task = self.app.tasks["sleep"]
            kwargs = [{"key": k, "enqueued_at": 0.0, "seconds": sleep} for k in keys]

        async def call() -> None:
            await task.batch_defer_async(*kwargs)

        return call

    async def one(self, key: int, enqueued_at: float) -> None:
        await self.app.tasks["noop"].defer_async(key=key, enqueued_at=enqueued_at)

    def statements(self) -> int | None:
        return None  # psycopg has no query logger

    def resets(self) -> int | None:
        return None

    async def close(self) -> None:
        await self.app.close_async()


async def setup(dsn: str) -> None:
    app = make_app(dsn, 2)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def producer(dsn: str) -> ProcrastinateProducer:
    app = make_app(dsn, 4)
    await app.open_async()
    return ProcrastinateProducer(app)


async def producers(dsn: str, n: int) -> list[ProcrastinateProducer]:
    """The producers of ``n`` concurrent tasks of one application: one App on one pool of ``n``
    connections."""
    app = make_app(dsn, n, min_size=n)  # opened up front, as the other systems' pools
    await app.open_async()
    return [ProcrastinateProducer(app)] * n


async def worker(dsn: str, concurrency: int, stop: asyncio.Event, mode: str) -> None:
    # Room for C jobs plus the listener and the worker's own bookkeeping.
    app = make_app(dsn, min(concurrency + 2, POOL_CAP))
    async with app.open_async():
        run = asyncio.create_task(
            app.run_worker_async(concurrency=concurrency, install_signal_handlers=False)
        )
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if run.done():
            run.result()  # the worker ended on its own: raise why
            return
        run.cancel()  # procrastinate treats cancellation as a graceful stop
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(run, 10)


DRIVER = Driver(setup=setup, producer=producer, worker=worker, producers=producers)

if __name__ == "__main__":
    main(DRIVER)
