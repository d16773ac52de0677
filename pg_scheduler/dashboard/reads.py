"""What the dashboard reads, each read in one read-only transaction under a statement timeout.

Every read runs on a pooled connection, inside ``BEGIN READ ONLY`` with ``statement_timeout``
set for that transaction only (``set_config(..., true)``): the pool may be the application's
own, whose sessions must keep their settings. A read that runs out of time raises asyncpg's
``QueryCanceledError``; the app turns it into a page that says so (never a 500).

The time spent in the database is added to the request's ``db_time`` (the ``Server-Timing``
header). Counts of the overview are cached for :data:`COUNTS_TTL_SECONDS`, shared by every
viewer, so that many open dashboards refreshing every two seconds cost the database one read.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from ..shared import queries
from ..shared.cluster import Membership, read_membership
from ..shared.diagnosis import STALE_HEARTBEAT_SECONDS_DEFAULT
from ..shared.models import JobState
from ..shared.periodic import PeriodicJobInfo, info_from_row, next_runs
from ..shared.queue_limits import QueueInfo, list_queue_rows, list_queues

T = TypeVar("T")

COUNT_CAP = 100_000
"""Pending and due jobs are counted up to this many; beyond, the page shows ``100,000+``."""

EXACT_BELOW = 200_000
"""Below this many rows in ``scheduled_jobs`` (the planner's estimate) every state is counted
exactly; above, the finished states are estimated from the planner's statistics."""

COUNTS_TTL_SECONDS = 3.0
"""How long the overview's counts are served from the cache."""

OVERVIEW_QUEUES_TIMEOUT = 0.25
"""Seconds the overview gives the count of each queue's jobs (the queues page gives it the
whole statement timeout)."""

SLOW_QUEUES_BACKOFF_SECONDS = 60.0
"""After counting the queues' jobs ran out of time, how long they are listed uncounted."""

PERIODIC_NEXT_RUNS = 5
"""Next window starts shown per periodic job."""

FINAL_STATES = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED)

db_time: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "pg_scheduler_dashboard_db_time", default=None
)
"""The request's database time in seconds (one mutable cell, set by the app per request)."""


@dataclass(frozen=True)
class StateCount:
    """How many jobs are in one state, and how the figure was obtained."""

    state: str
    count: int
    approximate: bool = False
    """Estimated from the planner's statistics (shown with ``≈``)."""
    capped: bool = False
    """At least ``count``: counting stopped at the cap (shown with ``+``)."""


@dataclass(frozen=True)
class MinuteBar:
    """One minute of the last hour: completed and failed jobs that finished in it."""

    minute: datetime
    completed: int
    failed: int


@dataclass(frozen=True)
class Counts:
    """The overview's cached part: job counts, the due backlog, the last hour, the queues."""

    read_at: datetime
    states: list[StateCount]
    due: int
    due_capped: bool
    oldest_due_seconds: float | None
    minutes: list[MinuteBar]
    queues: list[QueueInfo]
    queues_counted: bool = True
    """False when counting the queues' jobs ran out of time: ``queues`` are their rows, with
    zeros for counts."""

    @property
    def completed_last_hour(self) -> int:
        """Jobs completed in the last hour."""
        return sum(m.completed for m in self.minutes)

    @property
    def failed_last_hour(self) -> int:
        """Jobs failed in the last hour."""
        return sum(m.failed for m in self.minutes)


@dataclass(frozen=True)
class Overview:
    """Everything the overview shows."""

    counts: Counts
    membership: Membership
    stale_seconds: float


@dataclass(frozen=True)
class PeriodicRow:
    """One periodic job: its definition, state, next windows and last run."""

    info: PeriodicJobInfo
    next_runs: list[datetime]
    last_run: dict[str, Any] | None


@dataclass
class _Cache:
    value: Counts | None = None
    expires: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Reader:
    """The dashboard's reads on ``pool``, each under ``statement_timeout`` seconds."""

    def __init__(self, pool: Callable[[], Awaitable[asyncpg.Pool]], statement_timeout: float) -> None:
        self._pool = pool
        self.statement_timeout = statement_timeout
        self._counts = _Cache()
        self._queues_slow: dict[float, float] = {}
        """Timeouts a queue count ran out of, and until when counts under them are skipped."""

    @contextlib.asynccontextmanager
    async def transaction(self, timeout: float | None = None) -> AsyncIterator[asyncpg.Connection]:
        """A read-only transaction (one snapshot) with the statement timeout (or ``timeout``
        seconds) set in it."""
        started = time.perf_counter()
        ms = int((timeout if timeout is not None else self.statement_timeout) * 1000)
        try:
            pool = await self._pool()
            async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                await conn.execute(queries.DB_SET_STATEMENT_TIMEOUT, str(max(ms, 1)))
                await conn.execute(queries.DB_SET_CUSTOM_PLANS)
                yield conn
        finally:
            add_db_time(time.perf_counter() - started)

    async def overview(self, *, stale_seconds: float = STALE_HEARTBEAT_SECONDS_DEFAULT) -> Overview:
        """Counts (from the cache when fresh), the leader and the live processes (always fresh:
        two small tables)."""
        counts = await self.counts()
        async with self.transaction() as conn:
            membership = await read_membership(conn, stale_seconds=stale_seconds)
        return Overview(counts=counts, membership=membership, stale_seconds=stale_seconds)

    async def counts(self) -> Counts:
        """The overview's counts, read at most once per :data:`COUNTS_TTL_SECONDS` whatever the
        number of viewers (concurrent requests wait for the one read)."""
        cache = self._counts
        if cache.value is not None and time.monotonic() < cache.expires:
            return cache.value
        async with cache.lock:
            if cache.value is not None and time.monotonic() < cache.expires:
                return cache.value
            async with self.transaction() as conn:
                value = await _read_counts(conn)
            # One section of many here: a quarter second at most.
            queues, counted = await self.queues(timeout=min(self.statement_timeout, OVERVIEW_QUEUES_TIMEOUT))
            value = replace(value, queues=queues, queues_counted=counted)
            cache.value, cache.expires = value, time.monotonic() + COUNTS_TTL_SECONDS
            return value

    async def job_row(self, job_id: str) -> dict[str, Any] | None:
        """Every column of one job, ``task_data`` and ``result`` decoded; None if no such job."""
        async with self.transaction() as conn:
            row = await conn.fetchrow(queries.JOB_GET, job_id)
        if row is None:
            return None
        data = dict(row)
        for key in ("task_data", "result"):
            if isinstance(data.get(key), str):
                data[key] = json.loads(data[key])
        return data

    async def periodic(self, now: datetime) -> list[PeriodicRow]:
        """Every periodic job with its next :data:`PERIODIC_NEXT_RUNS` windows (as the API's
        ``get_periodic_next_runs`` computes them: the schedule in force with its DST policies)
        and its last run."""
        async with self.transaction() as conn:
            rows = await conn.fetch(queries.PERIODIC_LIST_WITH_LAST_RUN)
            found = []
            for row in rows:
                info = info_from_row(row)
                last = json.loads(row["last_run"]) if row["last_run"] else None
                upcoming = next_runs(info, PERIODIC_NEXT_RUNS, now) if info.enabled else []
                found.append(PeriodicRow(info=info, next_runs=upcoming, last_run=last))
        return found

    async def queues(self, timeout: float | None = None) -> tuple[list[QueueInfo], bool]:
        """Every queue with a row or unfinished jobs, with their jobs counted (the API's
        ``get_queues``), and True. Counting reads every unfinished job: when it runs out of
        time (``timeout`` seconds, default the statement timeout) on a very large backlog, the
        queues with a row instead, uncounted, and False, so that the page still shows them and
        can pause them; and for :data:`SLOW_QUEUES_BACKOFF_SECONDS` after that, uncounted at
        once (such a backlog does not vanish in seconds, and every refresh would pay the whole
        timeout again)."""
        seconds = timeout if timeout is not None else self.statement_timeout
        # Skipped only after a count ran out of a time at least as long as this one's.
        skip = any(
            limit >= seconds and until > time.monotonic() for limit, until in self._queues_slow.items()
        )
        if not skip:
            try:
                async with self.transaction(seconds) as conn:
                    return await list_queues(conn), True
            except asyncpg.QueryCanceledError:
                self._queues_slow[seconds] = time.monotonic() + SLOW_QUEUES_BACKOFF_SECONDS
        async with self.transaction() as conn:
            return await list_queue_rows(conn), False

    async def now(self) -> datetime:
        """The database clock."""
        async with self.transaction() as conn:
            value: datetime = await conn.fetchval(queries.DB_GET_NOW)
            return value


def add_db_time(seconds: float) -> None:
    """Count ``seconds`` of database time against the current request (if any)."""
    cell = db_time.get()
    if cell is not None:
        cell[0] += seconds


async def timed(awaitable: Awaitable[T]) -> T:
    """``awaitable`` (a call of the Scheduler's API), its time counted as database time."""
    started = time.perf_counter()
    try:
        return await awaitable
    finally:
        add_db_time(time.perf_counter() - started)


async def _read_counts(conn: asyncpg.Connection) -> Counts:
    read_at: datetime = await conn.fetchval(queries.DB_GET_NOW)
    states = await _state_counts(conn)
    due = await conn.fetchrow(queries.JOB_COUNT_DUE, COUNT_CAP)
    start: datetime = await conn.fetchval(queries.DB_GET_CHART_START)
    per_minute = {r["minute"]: r for r in await conn.fetch(queries.JOB_COUNT_FINISHED_BY_MINUTE)}
    minutes = []
    for i in range(60):
        minute = start + timedelta(minutes=i)
        r = per_minute.get(minute)
        minutes.append(MinuteBar(minute, r["completed"] if r else 0, r["failed"] if r else 0))
    return Counts(
        read_at=read_at,
        states=states,
        due=min(due["due"], COUNT_CAP),
        due_capped=due["due"] >= COUNT_CAP,
        oldest_due_seconds=due["oldest_due_seconds"],
        minutes=minutes,
        queues=[],
    )


async def _state_counts(conn: asyncpg.Connection) -> list[StateCount]:
    """Jobs per state. A small table (by the planner's estimate) is counted exactly in one
    scan. In a large one, pending and running jobs are counted up to the cap (their partial
    indexes; running jobs are a small set that should never reach it), and the finished
    states, which hold most rows, are estimated: the table's row estimate times each state's
    frequency from the last ANALYZE; a state without a frequency (no statistics yet, or too
    rare to be among the most common values) is counted up to the cap through the finished
    index."""
    stats = await conn.fetchrow(queries.JOB_COUNT_ESTIMATED_BY_STATUS)
    total = stats["total"] if stats is not None else -1.0
    if 0 <= total < EXACT_BELOW:
        exact = {r["status"]: r["n"] for r in await conn.fetch(queries.JOB_COUNT_BY_STATUS)}
        return [StateCount(state.value, exact.get(state.value, 0)) for state in JobState]
    found = [await _capped(conn, JobState.PENDING), await _capped(conn, JobState.RUNNING)]
    freqs: dict[str, float] = {}
    if stats is not None and stats["states"] is not None:
        freqs = dict(zip(stats["states"], stats["freqs"], strict=False))
    for state in FINAL_STATES:
        if state.value in freqs:
            estimate = round(total * freqs[state.value])
            found.append(StateCount(state.value, estimate, approximate=True))
        else:
            # No frequency: no statistics yet, or a state too rare to be among the most common
            # values (an estimate would say 0). Rare, so cheap to count, up to the cap.
            found.append(await _capped(conn, state))
    return found


async def _capped(conn: asyncpg.Connection, state: JobState) -> StateCount:
    n: int = await conn.fetchval(queries.JOB_COUNT_CAPPED, state.value, COUNT_CAP + 1)
    return StateCount(state.value, min(n, COUNT_CAP), capped=n > COUNT_CAP)
