"""Periodic policies against the real database: misfire after a 24-hour outage (with a controlled
clock given to the registrar), overlap of a job longer than its period (real runs), DST through
the registrar, and schedules changed at run time from the CLI.

The DST arithmetic itself (every policy on the transition days of Lisbon and New York) is in
``test_triggers_dst.py``; here the registrar is shown to write exactly those windows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from prometheus_client import REGISTRY

from pg_scheduler import Scheduler, periodic
from pg_scheduler.shared import queries
from pg_scheduler.shared.errors import InvalidScheduleError
from pg_scheduler.shared.periodic import periodic_registry, publish
from pg_scheduler.shared.schema import ensure_schema
from pg_scheduler.supervisor.fence import Unfenced
from pg_scheduler.supervisor.maintenance.periodic_registrar import (
    MAX_CATCH_UP_WINDOWS,
    PeriodicRegistrar,
)
from tests.rows import Sql, update_job
from tests.support import FAST, run_cli, wait_for

HOUR = timedelta(hours=1)
NOW = datetime(2026, 6, 10, 12, 0, 30, tzinfo=UTC)
"""The controlled clock: the moment the cluster comes back after 24 hours with no leader."""
OUTAGE_START = datetime(2026, 6, 9, 12, 0, tzinfo=UTC)
"""The cursor left by the last leader: the first window it did not write."""


async def prepare(pool: asyncpg.Pool, key: str, cursor: datetime) -> PeriodicRegistrar:
    """Publish the test's definition, register a worker that can run it, put the cursor where
    the outage left it, and return a registrar to drive by hand."""
    async with pool.acquire() as conn:
        await ensure_schema(conn)
        definition = periodic_registry.get(key)
        assert definition is not None
        await publish(conn, [definition])
        await conn.execute(
            queries.WORKER_REGISTER, "test-worker", "scheduler", "test", 1, [definition.task_name], None, None
        )
        await conn.execute("UPDATE scheduler_periodic SET next_run_at = $2 WHERE dedup_key = $1", key, cursor)
    return PeriodicRegistrar(Unfenced(pool), interval_seconds=1, misfire_grace_time=300)


async def windows(pool: asyncpg.Pool, key: str) -> list[datetime]:
    rows = await pool.fetch(
        "SELECT window_start FROM scheduled_jobs WHERE dedup_key = $1 ORDER BY window_start", key
    )
    return [r["window_start"] for r in rows]


async def cursor_of(pool: asyncpg.Pool, key: str) -> datetime:
    value: datetime = await pool.fetchval(
        "SELECT next_run_at FROM scheduler_periodic WHERE dedup_key = $1", key
    )
    return value


def hourly(start: datetime, end: datetime) -> list[datetime]:
    out, t = [], start
    while t <= end:
        out.append(t)
        t += HOUR
    return out


# ------------------------------------------------------------------ misfire after a 24-hour outage


@pytest.mark.parametrize("schedule", [{"every": HOUR}, {"cron": "0 * * * *", "timezone": "Europe/Lisbon"}])
async def test_coalesce_writes_one_run_for_a_day_of_missed_windows(
    pool: asyncpg.Pool, schedule: dict[str, Any]
) -> None:
    @periodic(**schedule, dedup_key="m-coalesce")
    async def job() -> None: ...

    registrar = await prepare(pool, "m-coalesce", OUTAGE_START)
    await registrar.run_once(now=NOW)
    # 25 windows were missed (12:00 yesterday .. 12:00 today): one row, for the latest, due now.
    assert await windows(pool, "m-coalesce") == [NOW.replace(second=0)]
    row = await pool.fetchrow("SELECT * FROM scheduled_jobs WHERE dedup_key = 'm-coalesce'")
    assert row["execution_time"] > NOW  # due on the real clock, now: never expired for lateness
    assert await cursor_of(pool, "m-coalesce") == NOW.replace(second=0) + HOUR


@pytest.mark.parametrize("schedule", [{"every": HOUR}, {"cron": "0 * * * *", "timezone": "Europe/Lisbon"}])
async def test_skip_writes_none_of_the_missed_windows_and_resumes_on_time(
    pool: asyncpg.Pool, schedule: dict[str, Any]
) -> None:
    @periodic(**schedule, dedup_key="m-skip", misfire="skip")
    async def job() -> None: ...

    registrar = await prepare(pool, "m-skip", OUTAGE_START)
    await registrar.run_once(now=NOW)
    assert await windows(pool, "m-skip") == []
    assert await cursor_of(pool, "m-skip") == datetime(2026, 6, 10, 13, 0, tzinfo=UTC)
    # Back to normal: the next window is written ahead and runs as usual.
    await registrar.run_once(now=datetime(2026, 6, 10, 12, 59, 57, tzinfo=UTC))
    assert await windows(pool, "m-skip") == [datetime(2026, 6, 10, 13, 0, tzinfo=UTC)]


@pytest.mark.parametrize("schedule", [{"every": HOUR}, {"cron": "0 * * * *", "timezone": "Europe/Lisbon"}])
async def test_all_writes_each_missed_window_due_now(pool: asyncpg.Pool, schedule: dict[str, Any]) -> None:
    @periodic(**schedule, dedup_key="m-all", misfire="all")
    async def job() -> None: ...

    registrar = await prepare(pool, "m-all", OUTAGE_START)
    before = await pool.fetchval("SELECT now()")
    await registrar.run_once(now=NOW)
    assert await windows(pool, "m-all") == hourly(OUTAGE_START, NOW.replace(second=0))  # 25
    due = await pool.fetch("SELECT execution_time FROM scheduled_jobs WHERE dedup_key = 'm-all'")
    assert all(r["execution_time"] >= before for r in due), "missed windows are due now"
    assert await cursor_of(pool, "m-all") == NOW.replace(second=0) + HOUR


async def test_all_reaches_back_only_as_far_as_catch_up(pool: asyncpg.Pool) -> None:
    @periodic(every=HOUR, dedup_key="m-all-6h", misfire="all", catch_up=timedelta(hours=6))
    async def job() -> None: ...

    registrar = await prepare(pool, "m-all-6h", OUTAGE_START)
    await registrar.run_once(now=NOW)
    assert await windows(pool, "m-all-6h") == hourly(
        datetime(2026, 6, 10, 7, 0, tzinfo=UTC), datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
    )


async def test_all_keeps_the_newest_windows_up_to_the_cap(pool: asyncpg.Pool) -> None:
    @periodic(every=timedelta(seconds=1), dedup_key="m-all-cap", misfire="all")
    async def job() -> None: ...

    registrar = await prepare(pool, "m-all-cap", OUTAGE_START)  # 86,430 missed windows
    await registrar.run_once(now=NOW)
    written = await windows(pool, "m-all-cap")
    missed = [w for w in written if w < NOW - timedelta(seconds=1)]
    assert len(missed) == MAX_CATCH_UP_WINDOWS
    assert missed[-1] == NOW - timedelta(seconds=2)  # the newest ones are kept
    assert written[-1] <= NOW + timedelta(seconds=5)  # then the lookahead, as usual


@pytest.mark.parametrize("misfire", ["coalesce", "all"])
async def test_per_second_cron_after_a_month_down_writes_the_newest_windows(
    pool: asyncpg.Pool, misfire: str
) -> None:
    # A cron trigger cannot step backwards; walking 2.6 million seconds from the cursor held the
    # leader's transaction for about 45 s. The search works back from now instead.
    @periodic(cron="* * * * * *", dedup_key=f"m-month-{misfire}", misfire=misfire)
    async def job() -> None: ...

    key = f"m-month-{misfire}"
    registrar = await prepare(pool, key, NOW - timedelta(days=30))
    await registrar.run_once(now=NOW)
    written = await windows(pool, key)
    missed = [w for w in written if w < NOW - timedelta(seconds=1)]
    if misfire == "coalesce":
        assert written[0] == NOW.replace(microsecond=0) and missed == []
    else:
        assert len(missed) == MAX_CATCH_UP_WINDOWS and missed[-1] == NOW - timedelta(seconds=2)


async def test_a_window_written_late_by_a_new_leader_is_not_missed(pool: asyncpg.Pool) -> None:
    # A leader elected just after 12:00:00 writes that window at 12:00:00.4: it runs, even
    # under misfire="skip", because it is late by less than a pass, not missed.
    @periodic(every=HOUR, dedup_key="m-late", misfire="skip")
    async def job() -> None: ...

    noon = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
    registrar = await prepare(pool, "m-late", noon)
    await registrar.run_once(now=noon + timedelta(milliseconds=400))
    assert await windows(pool, "m-late") == [noon]


# ------------------------------------------------------------------ windows written ahead, then an outage

SIX = timedelta(seconds=6)
T0 = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
"""A window start of the 6-second schedule below."""
NEXT = T0 + 4 * SIX
"""The first window after the outage of ``outage_after_a_window_was_written_ahead``."""
NEXT_MS = int(NEXT.timestamp() * 1000)


def missed_count(key: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "pg_scheduler_periodic_missed_windows_total", {"job": key, "outcome": outcome}
        )
        or 0.0
    )


async def claimable_ids(pool: asyncpg.Pool, task: str) -> list[str]:
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            due = await conn.fetchval(queries.JOB_GET_NEXT_DUE, [task])
            rows = await conn.fetch(queries.job_claim_sql(100), [task], 100, "test-worker", 30.0, 1.0)
        finally:
            await tx.rollback()
    assert (due is None) == (rows == []), "the worker's timer and its claim disagree"
    return sorted(r["job_id"] for r in rows)


async def pass_writing_ahead(registrar: PeriodicRegistrar, pool: asyncpg.Pool, now: datetime) -> None:
    """A pass at ``now``, whose windows are due at their own start, as rows written ahead are:
    the server's clock is months past these June windows, so it would write them due now."""
    await registrar.run_once(now=now)
    await pool.execute(
        "UPDATE scheduled_jobs SET execution_time = window_start "
        "WHERE window_start > $1 AND status = 'pending'",
        now,
    )


async def outage_after_a_window_was_written_ahead(
    pool: asyncpg.Pool, misfire: str
) -> tuple[str, str, PeriodicRegistrar]:
    """The issue's scenario on a controlled clock: a pass 2 s into window T0 writes T0+6 ahead;
    the only replica dies; nothing runs through T0+6, T0+12 and T0+18; the new leader's first
    pass comes at T0+20.5. Returns the key, the task and the registrar, after that pass."""
    key = f"ahead-{misfire}"

    @periodic(every=SIX, dedup_key=key, misfire=misfire)
    async def job() -> None: ...

    definition = periodic_registry.get(key)
    assert definition is not None
    registrar = await prepare(pool, key, T0 + SIX)
    await pass_writing_ahead(registrar, pool, T0 + timedelta(seconds=2))
    assert await windows(pool, key) == [T0 + SIX]
    # Before any leader has passed again, no worker may claim the stale window: it waits for the
    # policy (the claim runs on the real clock, long after these June windows).
    assert await claimable_ids(pool, definition.task_name) == []
    await registrar.run_once(now=T0 + timedelta(seconds=20.5))
    return key, definition.task_name, registrar


async def test_skip_cancels_a_window_written_ahead_before_the_outage(pool: asyncpg.Pool) -> None:
    before = missed_count("ahead-skip", "skipped")
    key, task, _ = await outage_after_a_window_was_written_ahead(pool, "skip")
    rows = await pool.fetch(
        "SELECT window_start, status, error_message FROM scheduled_jobs "
        "WHERE dedup_key = $1 AND window_start < $2 ORDER BY window_start",
        key,
        NEXT,
    )
    assert [(r["window_start"], r["status"]) for r in rows] == [(T0 + SIX, "cancelled")]
    assert rows[0]["error_message"] == "skipped (misfire=skip): the window passed while no leader ran"
    assert [i for i in await claimable_ids(pool, task) if i < f"periodic:{key}:{NEXT_MS}"] == []
    assert missed_count(key, "skipped") - before == 3  # T0+6 (written), T0+12, T0+18
    # The next run is on its window.
    assert (
        await pool.fetchval(
            "SELECT min(window_start) FROM scheduled_jobs WHERE dedup_key = $1 AND status = 'pending'", key
        )
        == NEXT
    )


async def test_coalesce_runs_one_window_for_the_outage_and_cancels_the_one_written_ahead(
    pool: asyncpg.Pool,
) -> None:
    before = (missed_count("ahead-coalesce", "coalesced"), missed_count("ahead-coalesce", "run"))
    key, task, _ = await outage_after_a_window_was_written_ahead(pool, "coalesce")
    rows = await pool.fetch(
        "SELECT job_id, window_start, status FROM scheduled_jobs "
        "WHERE dedup_key = $1 AND window_start < $2 ORDER BY window_start",
        key,
        NEXT,
    )
    assert [(r["window_start"], r["status"]) for r in rows] == [
        (T0 + SIX, "cancelled"),
        (T0 + 3 * SIX, "pending"),
    ]
    assert [i for i in await claimable_ids(pool, task) if i < f"periodic:{key}:{NEXT_MS}"] == [
        rows[1]["job_id"]
    ]
    assert (missed_count(key, "coalesced") - before[0], missed_count(key, "run") - before[1]) == (2, 1)


async def test_all_runs_each_missed_window_including_the_one_written_ahead(pool: asyncpg.Pool) -> None:
    key, task, _ = await outage_after_a_window_was_written_ahead(pool, "all")
    rows = await pool.fetch(
        "SELECT job_id, window_start, status FROM scheduled_jobs "
        "WHERE dedup_key = $1 AND window_start < $2 ORDER BY window_start",
        key,
        NEXT,
    )
    assert [(r["window_start"], r["status"]) for r in rows] == [
        (T0 + SIX, "pending"),
        (T0 + 2 * SIX, "pending"),
        (T0 + 3 * SIX, "pending"),
    ]
    assert [i for i in await claimable_ids(pool, task) if i < f"periodic:{key}:{NEXT_MS}"] == [
        r["job_id"] for r in rows
    ]


async def test_coalesce_keeps_the_newest_written_window_when_the_outage_ended_before_the_cursor(
    pool: asyncpg.Pool,
) -> None:
    # Back at T0+10.5: the windows written ahead (T0+6) were all that was missed, and the cursor
    # (T0+12) is still ahead, so the one run is T0+6 itself, due now.
    @periodic(every=SIX, dedup_key="ahead-short", misfire="coalesce")
    async def job() -> None: ...

    registrar = await prepare(pool, "ahead-short", T0 + SIX)
    await pass_writing_ahead(registrar, pool, T0 + timedelta(seconds=2))
    await registrar.run_once(now=T0 + timedelta(seconds=10.5))
    rows = await pool.fetch(
        "SELECT window_start, status, execution_time > window_start AS redated "
        "FROM scheduled_jobs WHERE dedup_key = $1 AND window_start < $2 "
        "ORDER BY window_start",
        "ahead-short",
        T0 + 2 * SIX,
    )
    assert [tuple(r) for r in rows] == [(T0 + SIX, "pending", True)]


async def test_coalesce_runs_no_missed_window_when_a_window_only_late_is_left_to_run(
    pool: asyncpg.Pool,
) -> None:
    # Every 2 s, with rows written 5 s ahead: the pass at T0+0.5 writes T0+2 and T0+4, and the
    # next pass comes at T0+4.5. T0+2 was missed, but T0+4 is only late and runs: it is the one
    # run for the gap, so T0+2 is coalesced into it rather than run as well.
    @periodic(every=timedelta(seconds=2), dedup_key="ahead-just-late", misfire="coalesce")
    async def job() -> None: ...

    two = timedelta(seconds=2)
    registrar = await prepare(pool, "ahead-just-late", T0 + two)
    await pass_writing_ahead(registrar, pool, T0 + timedelta(seconds=0.5))
    assert await windows(pool, "ahead-just-late") == [T0 + two, T0 + 2 * two]
    await registrar.run_once(now=T0 + timedelta(seconds=4.5))
    rows = await pool.fetch(
        "SELECT window_start, status, error_message FROM scheduled_jobs "
        "WHERE dedup_key = $1 AND window_start <= $2 ORDER BY window_start",
        "ahead-just-late",
        T0 + 2 * two,
    )
    assert [(r["window_start"], r["status"]) for r in rows] == [
        (T0 + two, "cancelled"),
        (T0 + 2 * two, "pending"),
    ]
    assert rows[0]["error_message"].startswith("coalesced (misfire=coalesce)")


class InTerm:
    """Transactions as a leader of the term ``epoch`` makes them (the epoch set as the fence sets
    it), without the lock: a registrar driven by hand in that term."""

    def __init__(self, pool: asyncpg.Pool, epoch: int) -> None:
        self.pool, self.epoch = pool, epoch

    @asynccontextmanager
    async def transaction(self, statement_timeout_ms: int = 30_000) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT set_config('pg_scheduler.epoch', $1, true)", str(self.epoch))
            yield conn


@pytest.mark.parametrize(
    ("second_term", "status"),
    [
        # The same leader passed late: it never stopped, and the window only ran late.
        (1, "pending"),
        # Leadership changed hands in the gap: the window passed while no leader ran.
        (2, "cancelled"),
    ],
)
async def test_only_passes_apart_by_two_terms_end_a_leaderless_gap(
    pool: asyncpg.Pool, second_term: int, status: str
) -> None:
    @periodic(every=SIX, dedup_key="ahead-term", misfire="skip")
    async def job() -> None: ...

    definition = periodic_registry.get("ahead-term")
    assert definition is not None
    await prepare(pool, "ahead-term", T0 + SIX)
    first = PeriodicRegistrar(InTerm(pool, 1), interval_seconds=1, misfire_grace_time=300)
    await pass_writing_ahead(first, pool, T0 + timedelta(seconds=2))
    second = PeriodicRegistrar(InTerm(pool, second_term), interval_seconds=1, misfire_grace_time=300)
    await second.run_once(now=T0 + timedelta(seconds=20.5))
    row = await pool.fetchrow(
        "SELECT job_id, status FROM scheduled_jobs WHERE dedup_key = $1 AND window_start = $2",
        "ahead-term",
        T0 + SIX,
    )
    assert row["status"] == status
    # A window the leader in office left late runs once its pass has come.
    claimable = await claimable_ids(pool, definition.task_name)
    assert (row["job_id"] in claimable) is (status == "pending")


@pytest.mark.parametrize("overlap", ["skip", "queue"])
async def test_a_window_held_back_by_overlap_in_a_leaderless_gap_follows_the_misfire_policy(
    pool: asyncpg.Pool, overlap: str
) -> None:
    # The run of T0 was running when the only replica died (its row still says so); T0+6 was
    # written ahead and waited behind it. It passed while no leader ran: misfire="skip" cancels
    # it, whatever the overlap policy would have done once the run ended.
    key = f"ahead-overlap-{overlap}"

    @periodic(every=SIX, dedup_key=key, misfire="skip", overlap=overlap)
    async def job() -> None: ...

    registrar = await prepare(pool, key, T0)
    await pass_writing_ahead(registrar, pool, T0 + timedelta(milliseconds=500))
    first = await pool.fetchval(
        "SELECT job_id FROM scheduled_jobs WHERE dedup_key = $1 AND window_start = $2", key, T0
    )
    await update_job(
        pool,
        first,
        status="running",
        attempt=1,
        worker_id="gone",
        started_at=Sql("now()"),
        lease_until=Sql("now() + interval '1 hour'"),
    )
    await pass_writing_ahead(registrar, pool, T0 + timedelta(seconds=1.5))
    await registrar.run_once(now=T0 + timedelta(seconds=20.5))
    row = await pool.fetchrow(
        "SELECT status, error_message FROM scheduled_jobs WHERE dedup_key = $1 AND window_start = $2",
        key,
        T0 + SIX,
    )
    assert tuple(row) == ("cancelled", "skipped (misfire=skip): the window passed while no leader ran")


async def test_a_window_written_ahead_and_late_under_a_live_leader_is_not_missed(
    pool: asyncpg.Pool,
) -> None:
    # The leader passes every second; the workers are busy, so T0+6 is still pending at T0+8.
    # No leaderless gap covers it: under misfire="skip" it still runs, late.
    @periodic(every=SIX, dedup_key="ahead-busy", misfire="skip")
    async def job() -> None: ...

    definition = periodic_registry.get("ahead-busy")
    assert definition is not None
    registrar = await prepare(pool, "ahead-busy", T0 + SIX)
    for second in range(2, 9):
        await pass_writing_ahead(registrar, pool, T0 + timedelta(seconds=second))
    rows = await pool.fetch(
        "SELECT job_id, window_start, status FROM scheduled_jobs WHERE dedup_key = $1 ORDER BY window_start",
        "ahead-busy",
    )
    assert [(r["window_start"], r["status"]) for r in rows] == [
        (T0 + SIX, "pending"),
        (T0 + 2 * SIX, "pending"),
    ]
    assert await claimable_ids(pool, definition.task_name) == [rows[0]["job_id"]]


# ------------------------------------------------------------------ DST through the registrar


@pytest.mark.parametrize(
    ("gap", "expected_local"),
    [
        ("shift", ["2026-03-07 02:30 EST", "2026-03-08 03:30 EDT", "2026-03-09 02:30 EDT"]),
        ("skip", ["2026-03-07 02:30 EST", "2026-03-09 02:30 EDT"]),
    ],
)
async def test_registrar_writes_the_dst_gap_as_the_policy_says(
    pool: asyncpg.Pool, gap: str, expected_local: list[str]
) -> None:
    ny = ZoneInfo("America/New_York")

    @periodic(
        cron="30 2 * * *", timezone="America/New_York", dedup_key="dst-gap", misfire="all", on_dst_gap=gap
    )
    async def job() -> None: ...

    registrar = await prepare(pool, "dst-gap", datetime(2026, 3, 7, 0, 0, tzinfo=ny))
    await registrar.run_once(now=datetime(2026, 3, 9, 12, 0, tzinfo=ny))
    got = [w.astimezone(ny).strftime("%Y-%m-%d %H:%M %Z") for w in await windows(pool, "dst-gap")]
    assert got == expected_local


@pytest.mark.parametrize(
    ("fold", "expected_utc"),
    [
        ("first", ["05:30"]),
        ("both", ["05:30", "06:30"]),
    ],
)
async def test_registrar_writes_the_dst_fold_as_the_policy_says(
    pool: asyncpg.Pool, fold: str, expected_utc: list[str]
) -> None:
    ny = ZoneInfo("America/New_York")

    @periodic(
        cron="30 1 * * *", timezone="America/New_York", dedup_key="dst-fold", misfire="all", on_dst_fold=fold
    )
    async def job() -> None: ...

    registrar = await prepare(pool, "dst-fold", datetime(2026, 11, 1, 0, 0, tzinfo=ny))
    await registrar.run_once(now=datetime(2026, 11, 1, 12, 0, tzinfo=ny))
    got = [w.astimezone(UTC).strftime("%H:%M") for w in await windows(pool, "dst-fold")]
    assert got == expected_utc  # 01:30 EDT = 05:30 UTC, 01:30 EST = 06:30 UTC


# ------------------------------------------------------------------ overlap: a job longer than its period


async def run_overlapping(
    pool: asyncpg.Pool, overlap: str, **knobs: Any
) -> tuple[list[tuple[float, float]], list[asyncpg.Record]]:
    """Run a 1-second periodic job whose body takes 2.5 s, for about 7 s; return the
    (start, end) of every run (monotonic clock) and the job's rows."""
    runs: list[tuple[float, float]] = []
    key = f"overlap-{overlap}"

    @periodic(every=timedelta(seconds=1), dedup_key=key, overlap=overlap)
    async def long_job() -> None:
        start = time.monotonic()
        await asyncio.sleep(2.5)
        runs.append((start, time.monotonic()))

    async with Scheduler(pool, **{**FAST, **knobs}):
        await wait_for(lambda: len(runs) >= 3, timeout=20, message="three finished runs")
    rows = await pool.fetch(
        "SELECT window_start, status, started_at, finished_at, error_message FROM scheduled_jobs"
        " WHERE dedup_key = $1 ORDER BY window_start",
        key,
    )
    return sorted(runs), list(rows)


def overlapping(runs: list[tuple[float, float]]) -> int:
    return sum(1 for (_, end), (start, _) in zip(runs, runs[1:], strict=False) if start < end)


async def test_overlap_allow_lets_runs_overlap(pool: asyncpg.Pool) -> None:
    runs, rows = await run_overlapping(pool, "allow")
    assert overlapping(runs) >= 2
    assert not any(r["error_message"] and "skipped" in r["error_message"] for r in rows)


async def test_overlap_skip_never_overlaps_and_skips_the_windows_that_came_meanwhile(
    pool: asyncpg.Pool,
) -> None:
    runs, rows = await run_overlapping(pool, "skip")
    assert overlapping(runs) == 0
    skipped = [r for r in rows if r["status"] == "cancelled"]
    assert len(skipped) >= 2
    assert all("skipped (overlap=skip)" in r["error_message"] for r in skipped)
    ran = [r for r in rows if r["started_at"] is not None]
    # Every run after the first (which waits for the first election) started at its own window,
    # none late behind another.
    for r in ran[1:]:
        assert r["started_at"] - r["window_start"] < timedelta(seconds=0.5), r
    # Nothing waits behind a run: a skipped window never runs later.
    assert all(r["started_at"] is None for r in skipped)


async def test_overlap_queue_runs_one_waiting_window_right_after_and_skips_the_rest(
    pool: asyncpg.Pool,
) -> None:
    # A misfire grace shorter than the wait: the queued window waited on purpose, so it runs
    # rather than expires for being late.
    runs, rows = await run_overlapping(pool, "queue", misfire_grace_time=1)
    assert overlapping(runs) == 0
    assert not [r for r in rows if r["status"] == "expired"]
    # The queued window starts as soon as the run before it ends.
    gaps = [start - end for (_, end), (start, _) in zip(runs, runs[1:], strict=False)]
    assert min(gaps) < 0.5, gaps
    queued = [
        r
        for r in rows
        if r["started_at"] is not None and r["started_at"] - r["window_start"] > timedelta(seconds=1)
    ]
    assert queued, "a window that came during a run waited and ran after it"
    skipped = [r for r in rows if r["status"] == "cancelled"]
    assert skipped and all("skipped (overlap=queue)" in r["error_message"] for r in skipped)


async def test_a_manual_trigger_of_a_skip_job_waits_for_the_running_run(pool: asyncpg.Pool) -> None:
    runs: list[tuple[float, float]] = []

    @periodic(every=timedelta(hours=1), dedup_key="overlap-trigger", overlap="skip")
    async def long_job() -> None:
        start = time.monotonic()
        await asyncio.sleep(1.5)
        runs.append((start, time.monotonic()))

    async with Scheduler(pool, **FAST) as scheduler:
        first = await scheduler.trigger_periodic_job("overlap-trigger")

        async def running() -> bool:
            return (
                await pool.fetchval("SELECT status FROM scheduled_jobs WHERE job_id = $1", first) == "running"
            )

        await wait_for(running, message="first manual run running")
        await scheduler.trigger_periodic_job("overlap-trigger")
        await wait_for(lambda: len(runs) == 2, timeout=10, message="both manual runs")
    assert overlapping(sorted(runs)) == 0


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": HOUR, "misfire": "later"}, "misfire must be one of"),
        ({"every": HOUR, "overlap": "never"}, "overlap must be one of"),
        ({"every": HOUR, "catch_up": timedelta(hours=1)}, 'applies to misfire="all"'),
        ({"every": HOUR, "misfire": "all", "catch_up": timedelta(0)}, "positive timedelta"),
        ({"every": HOUR, "on_dst_gap": "skip"}, "apply to cron= schedules"),
        ({"cron": "0 2 * * *", "on_dst_gap": "later"}, "on_dst_gap"),
        ({"cron": "0 2 * * *", "on_dst_fold": "twice"}, "on_dst_fold"),
    ],
)
def test_bad_policies_are_refused_at_decoration(kwargs: dict[str, Any], message: str) -> None:
    async def fine() -> None: ...

    with pytest.raises(InvalidScheduleError, match=message):
        periodic(**kwargs)(fine)


# ------------------------------------------------------------------ schedule changed from the CLI


async def test_schedule_set_from_the_cli_survives_republishing_until_reset(
    dsn: str, pool: asyncpg.Pool
) -> None:
    @periodic(every=HOUR, dedup_key="cli-set")
    async def report() -> None: ...

    producer = Scheduler(pool)
    await producer.initialize_db()  # publishes the code's definition (every hour)

    result = run_cli("periodic", "set", "cli-set", "--every", "15m", env={"DATABASE_URL": dsn})
    assert result.returncode == 0, result.stderr
    assert "every 0:15:00 (set from the CLI)" in result.stdout
    row = await pool.fetchrow("SELECT * FROM scheduler_periodic WHERE dedup_key = 'cli-set'")
    assert row["every_seconds"] == 900 and row["code_every_seconds"] == 3600
    assert row["overridden_at"] is not None

    # A process restarts and publishes the code's definition again: the CLI's schedule stays.
    async with pool.acquire() as conn:
        await publish(conn, [periodic_registry.all()["cli-set"]])
    assert (
        await pool.fetchval("SELECT every_seconds FROM scheduler_periodic WHERE dedup_key = 'cli-set'") == 900
    )
    nxt = run_cli("periodic", "next", "cli-set", "--count", "3", env={"DATABASE_URL": dsn})
    times = [datetime.fromisoformat(line) for line in nxt.stdout.split()]
    assert [b - a for a, b in zip(times, times[1:], strict=False)] == [timedelta(minutes=15)] * 2

    result = run_cli(
        "periodic",
        "set",
        "cli-set",
        "--cron",
        "*/5 9-17 * * 1-5",
        "--timezone",
        "Europe/Lisbon",
        env={"DATABASE_URL": dsn},
    )
    assert result.returncode == 0, result.stderr
    row = await pool.fetchrow("SELECT * FROM scheduler_periodic WHERE dedup_key = 'cli-set'")
    assert (row["every_seconds"], row["cron"], row["timezone"]) == (None, "*/5 9-17 * * 1-5", "Europe/Lisbon")

    result = run_cli("periodic", "set", "cli-set", "--reset", env={"DATABASE_URL": dsn})
    assert result.returncode == 0, result.stderr
    row = await pool.fetchrow("SELECT * FROM scheduler_periodic WHERE dedup_key = 'cli-set'")
    assert (row["every_seconds"], row["cron"], row["overridden_at"]) == (3600, None, None)


async def test_schedule_change_cancels_windows_written_under_the_old_one(
    dsn: str, pool: asyncpg.Pool
) -> None:
    @periodic(every=timedelta(seconds=2), dedup_key="cli-drop")
    async def tick() -> None: ...

    registrar = await prepare(pool, "cli-drop", datetime.now(UTC) - timedelta(seconds=1))
    await registrar.run_once()
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM scheduled_jobs WHERE dedup_key = 'cli-drop' AND status = 'pending'"
        )
        >= 1
    )
    assert await Scheduler(pool).set_periodic_schedule("cli-drop", every=HOUR)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM scheduled_jobs WHERE dedup_key = 'cli-drop' AND status = 'pending'"
        )
        == 0
    )
    assert await cursor_of(pool, "cli-drop") is None  # the new schedule starts at its next window


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--every", "soon"], "--every:"),
        (["--cron", "61 * * * *"], "invalid cron expression"),
        (["--cron", "0 9 * * *", "--timezone", "Mars/Olympus"], "unknown time zone"),
        (["--every", "0.5s"], "at least 1 second"),
        (["--every", "5m", "--cron", "0 9 * * *"], "exactly one of"),
        ([], "exactly one of"),
    ],
)
async def test_bad_schedule_changes_are_one_line_and_change_nothing(
    dsn: str, pool: asyncpg.Pool, args: list[str], message: str
) -> None:
    @periodic(every=HOUR, dedup_key="cli-bad")
    async def job() -> None: ...

    await Scheduler(pool).initialize_db()
    result = run_cli("periodic", "set", "cli-bad", *args, env={"DATABASE_URL": dsn})
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    row = await pool.fetchrow("SELECT * FROM scheduler_periodic WHERE dedup_key = 'cli-bad'")
    assert (row["every_seconds"], row["overridden_at"]) == (3600, None)


async def test_unknown_key_is_one_line(dsn: str, pool: asyncpg.Pool) -> None:
    await Scheduler(pool).initialize_db()
    result = run_cli("periodic", "set", "nope", "--every", "5m", env={"DATABASE_URL": dsn})
    assert result.returncode == 1 and "no periodic job 'nope'" in result.stderr
