"""The command line every driver speaks, so the harness treats all systems alike.

A driver runs inside its system's own virtualenv and imports only that system (and asyncpg),
``recorder`` and this module. Commands (the result is one JSON line on stdout):

    setup DSN                                create the system's schema
    worker DSN --concurrency C               run one worker process until SIGTERM
    enqueue DSN --first-key K --n N [--sleep S]
                                             the system's batch API, timed: {"seconds", "done_at"}
    trickle DSN --first-key K --rate R --duration D
                                             one job at a time at R/s, each carrying its enqueue time
    steady DSN --first-key K --rate R --duration D --producers P
                                             the single-job API at R/s in all, from P concurrent
                                             tasks of one application (``Driver.producers``)
    schedule-one DSN --calls M               per-call latency of the single-job API, and the
                                             statements it sends when the driver can count them
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

WARMUP_CALLS = 20


class Producer(Protocol):
    def prepare_bulk(self, keys: Sequence[int], sleep: float | None) -> Callable[[], Awaitable[None]]:
        """Build what a caller of the batch API would hold (untimed); the result does the call."""
        ...

    async def one(self, key: int, enqueued_at: float) -> None: ...

    def statements(self) -> int | None:
        """Statements sent so far, when the driver can count them (asyncpg's query logger)."""
        ...

    def resets(self) -> int | None:
        """How many of those were the asyncpg pool's reset on release."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Driver:
    setup: Callable[[str], Awaitable[None]]
    producer: Callable[[str], Awaitable[Producer]]
    worker: Callable[[str, int, asyncio.Event, str], Awaitable[None]] | None = None
    producers: Callable[[str, int], Awaitable[list[Producer]]] | None = None
    """The producers of P concurrent tasks of one application: what its request handlers would
    share (pg-scheduler: one Scheduler on one pool; pgqueuer: one Queries on a pool driver;
    procrastinate: one App); by default each task has its own (``producer``)."""


async def producers_of(driver: Driver, dsn: str, n: int) -> list[Producer]:
    """The producers of ``n`` concurrent tasks of one application (``Driver.producers``)."""
    if driver.producers is not None:
        return await driver.producers(dsn, n)
    return [await driver.producer(dsn) for _ in range(n)]


async def close_producers(made: Sequence[Producer]) -> None:
    """Close what producers_of made, each producer once (tasks may share one)."""
    for producer in {id(p): p for p in made}.values():
        await producer.close()


def main(driver: Driver) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("setup", "worker", "enqueue", "trickle", "steady", "schedule-one"):
        p = sub.add_parser(name)
        p.add_argument("dsn")
        p.add_argument("--concurrency", type=int, default=20)
        p.add_argument("--mode", default="")
        p.add_argument("--first-key", type=int, default=0)
        p.add_argument("--n", type=int, default=0)
        p.add_argument("--sleep", type=float, default=None)
        p.add_argument("--rate", type=float, default=20.0)
        p.add_argument("--duration", type=float, default=10.0)
        p.add_argument("--calls", type=int, default=200)
        p.add_argument("--producers", type=int, default=4)
    args = parser.parse_args()
    result = asyncio.run(_run(driver, args))
    print(json.dumps(result), flush=True)


async def _run(driver: Driver, args: argparse.Namespace) -> dict[str, object]:
    if args.command == "setup":
        await driver.setup(args.dsn)
        return {"ok": True}
    if args.command == "worker":
        if driver.worker is None:
            raise SystemExit("this driver has no worker: the system runs its own command")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await driver.worker(args.dsn, args.concurrency, stop, args.mode)
        return {"ok": True}
    if args.command == "steady":
        return await _steady(driver, args.dsn, args.first_key, args.rate, args.duration, args.producers)
    producer = await driver.producer(args.dsn)
    try:
        if args.command == "enqueue":
            call = producer.prepare_bulk(range(args.first_key, args.first_key + args.n), args.sleep)
            started = time.perf_counter()
            await call()
            seconds = time.perf_counter() - started
            return {"seconds": seconds, "done_at": time.time()}
        if args.command == "trickle":
            return await _trickle(producer, args.first_key, args.rate, args.duration)
        if args.command == "schedule-one":
            return await _schedule_one(producer, args.first_key, args.calls)
    finally:
        await producer.close()
    raise SystemExit(f"unknown command {args.command}")


async def _trickle(producer: Producer, first_key: int, rate: float, duration: float) -> dict[str, object]:
    """Enqueue on a fixed timetable (not "sleep after each call"), so a slow call does not
    lower the offered load; the job gets the wall-clock time just before its enqueue call."""
    count = int(rate * duration)
    begin = time.monotonic()
    late = 0.0
    for i in range(count):
        due = begin + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late = max(late, -delay)
        await producer.one(first_key + i, time.time())
    return {"count": count, "max_late_seconds": late}


async def _steady(
    driver: Driver, dsn: str, first_key: int, rate: float, duration: float, producers: int
) -> dict[str, object]:
    """Steady load: ``rate`` jobs/s in all from ``producers`` concurrent tasks of one application,
    one job per call (``Driver.producers``: a producer per task, or one they share). Job i is due
    at ``i / rate`` on a shared timetable, and task j sends the jobs i = j, j + P, j + 2P, ...: a
    slow call delays its own task only, and the achieved rate says whether the producers kept
    up."""
    made = await producers_of(driver, dsn, producers)
    count = int(rate * duration)
    late = [0.0] * producers
    behind = [0] * producers  # calls started more than 10 ms after their due time
    calls: list[float] = []

    async def run(j: int, producer: Producer) -> None:
        for i in range(j, count, producers):
            delay = begin + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late[j] = max(late[j], -delay)
                behind[j] += delay < -0.01
            started = time.perf_counter()
            await producer.one(first_key + i, time.time())
            calls.append(time.perf_counter() - started)

    try:
        begin = time.monotonic()
        await asyncio.gather(*(run(j, p) for j, p in enumerate(made)))
        seconds = time.monotonic() - begin
    finally:
        await close_producers(made)
    return {
        "count": count,
        "seconds": seconds,
        "rate": count / seconds,
        "max_late_seconds": max(late),
        "late_calls": sum(behind),
        "call_p50_ms": statistics.median(calls) * 1000 if calls else None,
        "call_p99_ms": sorted(calls)[int(len(calls) * 0.99)] * 1000 if calls else None,
    }


async def _schedule_one(producer: Producer, first_key: int, calls: int) -> dict[str, object]:
    for i in range(WARMUP_CALLS):  # connections opened, statements prepared, schema checked
        await producer.one(first_key + i, time.time())
    before, resets_before = producer.statements(), producer.resets()
    times = []
    for i in range(WARMUP_CALLS, WARMUP_CALLS + calls):
        started = time.perf_counter()
        await producer.one(first_key + i, time.time())
        times.append(time.perf_counter() - started)
    after, resets_after = producer.statements(), producer.resets()
    per_call = None if before is None or after is None else (after - before) / calls
    resets = None if resets_before is None or resets_after is None else (resets_after - resets_before) / calls
    return {
        "calls": calls + WARMUP_CALLS,
        "p50_ms": statistics.median(times) * 1000,
        "mean_ms": statistics.fmean(times) * 1000,
        "statements_per_call": per_call,
        "pool_resets_per_call": resets,
    }


class Counted:
    """The counting half of a Producer for drivers on asyncpg: they set ``self.counter``."""

    counter: StatementCounter

    def statements(self) -> int | None:
        return self.counter.count

    def resets(self) -> int | None:
        return self.counter.resets


class StatementCounter:
    """asyncpg's query logger: one call per statement a connection sends. ``resets`` counts the
    statement asyncpg's pool sends when a connection goes back to it (a round trip as well)."""

    def __init__(self) -> None:
        self.count = 0
        self.resets = 0

    def __call__(self, record: object) -> None:
        self.count += 1
        if str(getattr(record, "query", "")).startswith("SELECT pg_advisory_unlock_all()"):
            self.resets += 1

    async def attach(self, conn: object) -> None:
        conn.add_query_logger(self)  # type: ignore[attr-defined]
