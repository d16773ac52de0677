"""Tasks for real-process tests. Every execution writes rows to ``test_events`` so that the test
can check the whole history across processes (who ran what, when, how often)."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta

import asyncpg

from pg_scheduler import current_job, job, periodic

_pool: asyncpg.Pool | None = None
# Jobs start together: without the lock each of a worker's first jobs would open a pool of its
# own, and 25 slots x 6 workers of leaked pools exhaust the test server's connections.
_pool_lock = asyncio.Lock()

EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS test_events (
    id       bigserial PRIMARY KEY,
    kind     text NOT NULL,
    tag      text,
    pid      int NOT NULL,
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


async def _db() -> asyncpg.Pool:
    global _pool
    async with _pool_lock:
        if _pool is None:
            _pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=1, max_size=4)
    return _pool


async def record(kind: str, tag: str | None = None) -> None:
    pool = await _db()
    await pool.execute("INSERT INTO test_events (kind, tag, pid) VALUES ($1, $2, $3)", kind, tag, os.getpid())


@job(name="apps.send_invoice")
async def send_invoice(number: int) -> None:
    await record("send_invoice", str(number))


@job(name="apps.event_loop")
async def event_loop(tag: str) -> None:
    """Records the top-level module of the running loop's class: uvloop or asyncio."""
    await record(type(asyncio.get_running_loop()).__module__.split(".")[0], tag)


@job(name="apps.slow")
async def slow(tag: str, seconds: float) -> None:
    await record("start", tag)
    await asyncio.sleep(seconds)
    await record("end", tag)


@job(name="apps.blocking")
async def blocking(tag: str, seconds: float) -> None:
    await record("start", tag)
    time.sleep(seconds)  # noqa: ASYNC251 - blocks the event loop on purpose
    await record("end", tag)


@job(name="apps.crash")
async def crash(tag: str) -> None:
    await record("start", tag)
    os._exit(1)


if os.environ.get("APP_PERIODIC") == "1":

    @periodic(every=timedelta(seconds=1), dedup_key="apps.tick")
    async def tick() -> None:
        await record("tick")


if os.environ.get("APP_PERIODIC") == "outage":
    # One job per misfire policy on the same 6-second windows; each run records its job id,
    # which names its window.

    @periodic(every=timedelta(seconds=6), dedup_key="outage.skip", misfire="skip")
    async def outage_skip() -> None:
        await record("outage", current_job().job_id)

    @periodic(every=timedelta(seconds=6), dedup_key="outage.coalesce", misfire="coalesce")
    async def outage_coalesce() -> None:
        await record("outage", current_job().job_id)

    @periodic(every=timedelta(seconds=6), dedup_key="outage.all", misfire="all")
    async def outage_all() -> None:
        await record("outage", current_job().job_id)
