"""Periodic jobs in the in-process Scheduler, proven against the real database.

What 0.2.3 got wrong and these tests pin down:

- windows are fixed slots from the epoch, not "last finish + every" (it drifted to 6+ s gaps
  for every=5 s with a 1-s body, and skipped windows);
- any number of replicas give exactly one run per window, with no gap (it ran twice in one
  window and not at all in others);
- the management API acts on the whole cluster through the database, and ``enable`` after
  ``disable`` resumes (it never did); status reports last and next run from the database;
- ``job_name=`` is stored; cron schedules honour their time zone; downtime is coalesced into one
  run that is not expired by misfire; a definition nobody can run never becomes rows; changing a
  schedule takes effect.

Periodic functions are defined inside each test; the autouse fixture of ``conftest.py`` removes
them from the registries afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from pg_scheduler import Scheduler, periodic
from pg_scheduler.shared.tasks import registry
from pg_scheduler.supervisor.maintenance.periodic_registrar import PeriodicRegistrar
from tests.rows import wait_for_status
from tests.support import FAST, wait_for

SECOND = timedelta(seconds=1)


# ----------------------------------------------------------------------------- helpers


async def db_now(pool: asyncpg.Pool) -> datetime:
    value: datetime = await pool.fetchval("SELECT now()")
    return value


async def window_rows(pool: asyncpg.Pool, dedup_key: str) -> list[asyncpg.Record]:
    """Every job row of one periodic job, oldest window first (manual triggers last)."""
    return list(
        await pool.fetch(
            "SELECT job_id, window_start, execution_time, status, started_at, finished_at,"
            "       attempt, error_message"
            "  FROM scheduled_jobs WHERE dedup_key = $1"
            " ORDER BY window_start NULLS LAST, job_id",
            dedup_key,
        )
    )


async def executed_windows(pool: asyncpg.Pool, dedup_key: str) -> list[asyncpg.Record]:
    """Rows of windows that a worker started (claimed and ran), by window."""
    return [
        r
        for r in await window_rows(pool, dedup_key)
        if r["window_start"] is not None and r["started_at"] is not None
    ]


async def periodic_row(pool: asyncpg.Pool, dedup_key: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT * FROM scheduler_periodic WHERE dedup_key = $1", dedup_key
    )
    return row


def epoch(moment: datetime) -> float:
    return moment.timestamp()


def assert_on_grid(moment: datetime, step_seconds: int) -> None:
    """``moment`` is a window of an interval trigger: a whole multiple of the step since the epoch."""
    assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0), moment
    assert moment.microsecond == 0, f"{moment} is not a whole second"
    assert int(epoch(moment)) % step_seconds == 0, f"{moment} is not on the {step_seconds}-s grid"


def assert_consecutive(windows: list[datetime], step: timedelta) -> None:
    """No window missing and none twice between the first and the last."""
    counts = Counter(windows)
    twice = {w: n for w, n in counts.items() if n > 1}
    assert not twice, f"windows recorded more than once: {twice}"
    ordered = sorted(windows)
    gaps = [(a, b) for a, b in zip(ordered, ordered[1:], strict=False) if b - a != step]
    assert not gaps, f"windows not {step} apart (missing or off-grid): {gaps}"


# ------------------------------------------------------------------ 1. fixed windows


async def test_windows_are_fixed_epoch_seconds_without_drift(pool: asyncpg.Pool) -> None:
    starts: list[float] = []

    @periodic(every=SECOND, dedup_key="fixed-windows")
    async def slow_tick() -> None:
        starts.append(time.time())
        await asyncio.sleep(0.6)  # the job's own work: 60 % of its window

    async with Scheduler(pool, **FAST):
        await wait_for(lambda: len(starts) >= 7, timeout=15, message="7 runs of a 1-s job")
    # shutdown() let the last run finish: every recorded start has a finished row.

    rows = await executed_windows(pool, "fixed-windows")
    assert [r["status"] for r in rows] == ["completed"] * len(rows)
    assert all(r["attempt"] == 1 for r in rows), "a window ran more than once"
    assert len(rows) == len(starts), (len(rows), len(starts))

    windows = [r["window_start"] for r in rows]
    for w in windows:
        assert_on_grid(w, 1)
    assert_consecutive(windows, SECOND)

    # Each run starts at its own window (within 0.5 s), not at "previous finish + 1 s": with a
    # 0.6-s body, drift would push run k to k * 1.6 s.
    for window, started in zip(sorted(windows), sorted(starts), strict=True):
        lag = started - epoch(window)
        assert 0 <= lag < 0.5, f"run of window {window} started {lag:.3f}s after it"
    gaps = [b - a for a, b in zip(sorted(starts), sorted(starts)[1:], strict=False)]
    assert max(gaps) < 1.5 and min(gaps) > 0.5, f"start gaps drift: {gaps}"

    # The database has one row per window, however many passes the registrar made.
    dupes = await pool.fetch(
        "SELECT window_start, count(*) FROM scheduled_jobs WHERE dedup_key = $1"
        " GROUP BY window_start HAVING count(*) > 1",
        "fixed-windows",
    )
    assert dupes == []


# --------------------------------------------------------- 2. replicas, one run per window


async def test_three_replicas_started_apart_run_each_window_exactly_once(
    pool: asyncpg.Pool, dsn: str
) -> None:
    starts: list[float] = []

    @periodic(every=SECOND, dedup_key="three-replicas")
    async def replicated_tick() -> None:
        starts.append(time.time())
        await asyncio.sleep(0.05)

    pools = [pool] + [await asyncpg.create_pool(dsn, min_size=1, max_size=5) for _ in range(2)]
    schedulers = [Scheduler(p, **FAST) for p in pools]
    leaders_seen: list[int] = []
    started: list[Scheduler] = []

    async def sample_leaders() -> None:
        while True:
            leaders_seen.append(sum(s.is_leader for s in started))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample_leaders())
    try:
        # Start the first replica 0.2 s before a window boundary, the second 0.3 s later (just
        # after the boundary), the third 0.7 s after that: the sleeps are the scenario (replicas
        # booting at different moments), not synchronisation.
        now = time.time()
        await asyncio.sleep((1.8 - now % 1.0) % 1.0 or 1.0)
        start_times = []
        for scheduler, delay in zip(schedulers, (0.0, 0.3, 0.7), strict=True):
            await asyncio.sleep(delay)
            start_times.append(time.time())
            await scheduler.start()
            started.append(scheduler)

        await wait_for(lambda: sum(s.is_leader for s in schedulers) == 1, message="a leader")
        first_run = await wait_for(lambda: starts and starts[0], timeout=5, message="first run")
        # Run ~5 s of windows with all three replicas up.
        await wait_for(
            lambda: starts[-1] - first_run >= 5.0 and len(starts) >= 6, timeout=15, message="5 s of runs"
        )
        assert sum(s.is_leader for s in schedulers) == 1, "exactly one replica leads"
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await asyncio.gather(*(s.shutdown() for s in started), return_exceptions=True)
        for p in pools[1:]:
            await p.close()

    assert max(leaders_seen) == 1, "two replicas led at the same time"
    rows = await executed_windows(pool, "three-replicas")
    windows = [r["window_start"] for r in rows]
    for w in windows:
        assert_on_grid(w, 1)
    assert_consecutive(windows, SECOND)
    assert [r["status"] for r in rows] == ["completed"] * len(rows)
    assert all(r["attempt"] == 1 for r in rows), "a window was claimed twice"
    # Executions, counted in the job body, match the rows one to one: nothing ran twice.
    assert len(starts) == len(rows) >= 6, (len(starts), len(rows), start_times)
    # The first window that ran is the first one after the first replica started: none skipped
    # while the others were booting.
    # (slack: the first replica creates the schema and wins the election before its first pass)
    assert epoch(windows[0]) - start_times[0] < 2.5, (windows[0], start_times)


# ------------------------------------------------------- 3. cluster-wide management


async def test_disable_and_enable_from_another_scheduler_object_act_on_the_cluster(
    pool: asyncpg.Pool, dsn: str
) -> None:
    starts: list[float] = []

    @periodic(every=SECOND, dedup_key="managed")
    async def managed_tick() -> None:
        starts.append(time.time())

    other_pool = await asyncpg.create_pool(dsn, min_size=1, max_size=3)
    producer = Scheduler(other_pool, **FAST)  # never started: a producer, like another process
    try:
        async with Scheduler(pool, **FAST) as scheduler:
            await wait_for(lambda: len(starts) >= 2, timeout=8, message="2 runs")

            assert await producer.disable_periodic_job("managed") is True
            disabled_at = await db_now(pool)
            row = await periodic_row(pool, "managed")
            assert row is not None and row["enabled"] is False
            later = [r for r in await window_rows(pool, "managed") if r["window_start"] > disabled_at]
            assert later, "the registrar had written future windows ahead of time"
            assert {r["status"] for r in later} == {"cancelled"}, later

            # Nothing may run while disabled: let ~3 windows pass (a sleep is the point here:
            # asserting that something does NOT happen), and make sure the registrar was busy.
            assert scheduler.periodic_registrar is not None
            passes = scheduler.periodic_registrar.passes
            await asyncio.sleep(3.0)
            assert scheduler.periodic_registrar.passes >= passes + 5
            # (a window just before the disable may start a moment after it)
            started_late = [s for s in starts if s > epoch(disabled_at) + 1.0]
            assert started_late == [], "a run started after the disable"
            ran_after = [
                r
                for r in await window_rows(pool, "managed")
                if r["window_start"] > disabled_at and r["started_at"] is not None
            ]
            assert ran_after == []

            assert await producer.enable_periodic_job("managed") is True
            enabled_at = await db_now(pool)
            before = len(starts)
            await wait_for(lambda: len(starts) >= before + 2, timeout=6, message="runs resumed after enable")

            async def two_resumed_runs_completed() -> tuple[list[Any], list[Any]] | None:
                # A run's body returns before its completion is written (the completer batches
                # it), so the newest run may still read as running: wait for two finished ones.
                rows = await window_rows(pool, "managed")
                resumed = [r for r in rows if r["window_start"] > enabled_at and r["started_at"] is not None]
                done = [r for r in resumed if r["status"] == "completed"]
                return (rows, resumed) if len(done) >= 2 else None

            rows, resumed = await wait_for(
                two_resumed_runs_completed, timeout=6, message="two resumed runs completed"
            )
            # Only the newest run may still be in flight; none was cancelled or failed.
            unfinished = [r for r in resumed if r["status"] != "completed"]
            assert len(unfinished) <= 1 and all(r["status"] == "running" for r in unfinished), resumed
            # Disabled windows stay cancelled: enabling does not replay them.
            gap = [r for r in rows if disabled_at < r["window_start"] <= enabled_at]
            assert all(r["started_at"] is None for r in gap), gap
            # Runs resume at the next window the registrar sees (its next pass, 0.2 s here, may
            # fall just after a boundary), although the disable had cancelled the windows written
            # ahead for the next 5 s.
            first = min(r["window_start"] for r in resumed)
            assert_on_grid(first, 1)
            assert first - enabled_at <= 2 * SECOND

            # The 0.1 README's plain call form (no await) reaches the database too.
            assert scheduler.disable_periodic_job("managed")
            await wait_for(
                lambda: _enabled(pool, "managed", False),
                timeout=5,
                message="plain disable_periodic_job() written",
            )
            before = len(starts)
            assert scheduler.enable_periodic_job("managed")
            plain_enabled_at = time.time()
            await wait_for(
                lambda: _enabled(pool, "managed", True),
                timeout=5,
                message="plain enable_periodic_job() written",
            )
            await wait_for(lambda: len(starts) > before, timeout=5, message="runs after plain enable")
            assert starts[before] - plain_enabled_at < 2.5, "runs resumed late after plain enable"
    finally:
        await other_pool.close()


async def _enabled(pool: asyncpg.Pool, dedup_key: str, expected: bool) -> bool:
    row = await periodic_row(pool, dedup_key)
    return row is not None and row["enabled"] is expected


async def test_trigger_runs_an_hourly_job_now_through_the_normal_path(pool: asyncpg.Pool, dsn: str) -> None:
    ran: list[float] = []

    @periodic(every=timedelta(hours=1), dedup_key="hourly")
    async def hourly() -> None:
        ran.append(time.time())

    other_pool = await asyncpg.create_pool(dsn, min_size=1, max_size=3)
    producer = Scheduler(other_pool, **FAST)
    try:
        async with Scheduler(pool, **FAST) as scheduler:
            await wait_for(lambda: scheduler.is_leader, message="leader")
            asked = time.time()
            job_id = await producer.trigger_periodic_job("hourly")
            assert isinstance(job_id, str) and job_id
            done = await wait_for_status(scheduler, job_id, "completed", timeout=5)
            assert ran and min(ran) - asked < 2.0, "the triggered run was not prompt"
            assert done.attempt == 1
            assert await producer.trigger_periodic_job("no-such-periodic-job") is None
    finally:
        await other_pool.close()

    rows = await window_rows(pool, "hourly")
    manual = [r for r in rows if r["window_start"] is None]
    assert [r["job_id"] for r in manual] == [job_id]
    # Exactly the triggered run, plus an hourly window only if the test straddled the hour.
    windowed_runs = sum(r["started_at"] is not None for r in rows if r["window_start"] is not None)
    assert len(ran) == 1 + windowed_runs


class PausedTransactions:
    """Leader transactions for a hand-run registrar pass that stay open (everything written,
    nothing committed) until ``release`` is set: the moment a concurrent disable or schedule
    change could miss the pass's windows."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.paused = asyncio.Event()
        self.release = asyncio.Event()

    @contextlib.asynccontextmanager
    async def transaction(self, statement_timeout_ms: int = 30_000) -> AsyncIterator[Any]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield conn
            self.paused.set()
            await self.release.wait()


async def race_a_registrar_pass(
    pool: asyncpg.Pool, dedup_key: str, task_name: str, change: Callable[[], Awaitable[Any]]
) -> None:
    """Run ``change`` while a registrar pass that wrote windows of ``dedup_key`` is uncommitted."""
    # A live worker that can run the task, so the pass writes the job's windows.
    await pool.execute(
        "INSERT INTO scheduler_workers (worker_id, kind, host, pid, tasks)"
        " VALUES ('race-worker', 'scheduler', 'localhost', 1, $1)",
        [task_name],
    )
    tx = PausedTransactions(pool)
    registrar = PeriodicRegistrar(tx, interval_seconds=0.2, misfire_grace_time=None)
    pass_task = asyncio.create_task(registrar.run_once())
    await asyncio.wait_for(tx.paused.wait(), timeout=5)
    change_task = asyncio.create_task(change())
    try:
        # The change waits for the pass's row lock: it must not have decided anything yet.
        await wait_for(
            lambda: pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ),
            timeout=5,
            message="the change waiting for the registrar pass",
        )
    finally:
        tx.release.set()
    result = await pass_task
    assert result.inserted.get(dedup_key), "the pass wrote no window to race with"
    await asyncio.wait_for(change_task, timeout=5)


async def test_disable_racing_a_registrar_pass_leaves_no_window_to_run(
    pool: asyncpg.Pool,
) -> None:
    @periodic(every=SECOND, dedup_key="raced-disable")
    async def raced() -> None:
        pass

    producer = Scheduler(pool, **FAST)
    await producer.initialize_db()

    async def disable() -> None:
        assert await producer.disable_periodic_job("raced-disable") is True

    await race_a_registrar_pass(pool, "raced-disable", registry.name_of(raced) or "", disable)
    rows = await window_rows(pool, "raced-disable")
    assert rows, "the pass's windows were committed"
    # Before the fix, the disable's snapshot could not see the pass's rows: they stayed pending
    # and ran although the job was disabled.
    assert {r["status"] for r in rows} == {"cancelled"}, rows


# --------------------------------------------------------------- 4. status from the DB


async def test_status_reports_enabled_last_and_next_run_from_the_database(
    pool: asyncpg.Pool,
) -> None:
    ran: list[float] = []

    @periodic(every=timedelta(seconds=3), dedup_key="reported", job_name="nightly-report")
    async def reported() -> None:
        ran.append(time.time())

    async with Scheduler(pool, **FAST) as scheduler:
        await wait_for(lambda: len(ran) >= 2, timeout=12, message="2 runs")

        async def finished_status() -> dict[str, Any] | None:
            status = await scheduler.get_periodic_job_status("reported")
            return status if status and status["last_status"] == "completed" else None

        status = await wait_for(finished_status, timeout=3, message="status after a completed run")
        now = await db_now(pool)
        assert status["enabled"] is True
        assert status["job_name"] == "nightly-report"
        assert status["interval"] == 3.0
        last_run = status["last_run"]
        assert isinstance(last_run, datetime) and last_run.tzinfo is not None
        assert now - timedelta(seconds=4) < last_run <= now
        next_run = status["next_run"]
        assert isinstance(next_run, datetime) and next_run.tzinfo is not None
        assert now < next_run <= now + timedelta(seconds=3)
        assert_on_grid(next_run.astimezone(UTC), 3)

        # The 0.1 README's plain form: a dict-like answer without await.
        plain = scheduler.get_periodic_job_status("reported")
        assert plain["enabled"] is True
        assert plain["job_name"] == "nightly-report"
        assert scheduler.get_periodic_job_status("nobody") is not None  # an object, but falsy
        assert not scheduler.get_periodic_job_status("nobody")
        assert await scheduler.get_periodic_job_status("nobody") is None

        assert "reported" in scheduler.get_periodic_jobs()
        jobs = await scheduler.get_periodic_jobs()
        assert "reported" in jobs
        assert jobs["reported"].job_name == "nightly-report"

    row = await periodic_row(pool, "reported")
    assert row is not None and row["job_name"] == "nightly-report"  # 0.2.3 ignored job_name=


# ------------------------------------------------------------------- 5. cron, time zones


async def test_cron_in_a_time_zone_fires_on_whole_minutes_and_follows_dst(
    pool: asyncpg.Pool,
) -> None:
    @periodic(cron="*/1 * * * *", timezone="Europe/Lisbon", dedup_key="lisbon-minutely")
    async def minutely() -> None:
        pass

    @periodic(cron="0 9 * * *", timezone="America/New_York", dedup_key="ny-nine")
    async def nine_in_new_york() -> None:
        pass

    producer = Scheduler(pool, **FAST)
    plain = producer.get_periodic_next_runs("lisbon-minutely", count=5)
    awaited = await producer.get_periodic_next_runs("lisbon-minutely", count=5)
    now = await db_now(pool)
    for runs in (list(plain), awaited):
        assert len(runs) == 5
        for r in runs:
            assert r.utcoffset() == timedelta(0) and r.second == 0 and r.microsecond == 0, r
        assert all(b - a == timedelta(minutes=1) for a, b in zip(runs, runs[1:], strict=False))
        assert now - timedelta(seconds=5) < runs[0] <= now + timedelta(minutes=1)

    # 09:00 in New York is 14:00 UTC in winter (EST) and 13:00 UTC in summer (EDT).
    winter = await producer.get_periodic_next_runs(
        "ny-nine", count=2, after=datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
    )
    assert winter == [datetime(2025, 1, 15, 14, 0, tzinfo=UTC), datetime(2025, 1, 16, 14, 0, tzinfo=UTC)]
    summer = producer.get_periodic_next_runs(
        "ny-nine", count=2, after=datetime(2025, 7, 15, 12, 0, tzinfo=UTC)
    )
    assert list(summer) == [
        datetime(2025, 7, 15, 13, 0, tzinfo=UTC),
        datetime(2025, 7, 16, 13, 0, tzinfo=UTC),
    ]
    row = await periodic_row(pool, "ny-nine")
    assert row is not None and row["cron"] == "0 9 * * *" and row["timezone"] == "America/New_York"


async def test_six_field_cron_with_seconds_runs_every_second(pool: asyncpg.Pool) -> None:
    starts: list[float] = []

    @periodic(cron="* * * * * *", timezone="Europe/Lisbon", dedup_key="cron-seconds")
    async def every_second() -> None:
        starts.append(time.time())

    async with Scheduler(pool, **FAST) as scheduler:
        runs = await scheduler.get_periodic_next_runs("cron-seconds", count=4)
        assert all(b - a == SECOND for a, b in zip(runs, runs[1:], strict=False))
        await wait_for(lambda: len(starts) >= 3, timeout=8, message="3 runs")

    windows = [r["window_start"] for r in await executed_windows(pool, "cron-seconds")]
    assert len(windows) >= 3
    for w in windows:
        assert_on_grid(w, 1)
    assert_consecutive(windows, SECOND)


# ------------------------------------------------------------ 6. coalescing after downtime


async def test_missed_windows_are_coalesced_into_one_run_due_now(pool: asyncpg.Pool) -> None:
    starts: list[float] = []

    @periodic(every=SECOND, dedup_key="downtime")
    async def after_downtime() -> None:
        starts.append(time.time())

    await Scheduler(pool, **FAST).initialize_db()  # publishes the definition; nothing runs
    # The cluster was down for 10 windows: the cursor is 10 windows in the past.
    await pool.execute(
        "UPDATE scheduler_periodic SET next_run_at = date_trunc('second', now()) - interval '10 s'"
        " WHERE dedup_key = $1",
        "downtime",
    )
    cursor = (await periodic_row(pool, "downtime"))["next_run_at"]  # type: ignore[index]

    started_at = await db_now(pool)
    # misfire_grace_time=0: a catch-up row due at its old window (10 s late) would be expired.
    async with Scheduler(pool, misfire_grace_time=0, **FAST):
        await wait_for(lambda: len(starts) >= 4, timeout=10, message="catch-up and 3 windows")

    rows = await window_rows(pool, "downtime")
    assert all(r["window_start"] >= cursor for r in rows)
    missed = [r for r in rows if r["window_start"] < started_at - SECOND]
    assert missed == [], f"missed windows got rows of their own: {missed}"
    executed = [r for r in rows if r["started_at"] is not None]
    assert [r["status"] for r in executed] == ["completed"] * len(executed), executed
    assert len(starts) == len(executed)

    catch_up, *normal = executed
    # One run for the 10 missed windows, due when the scheduler came back, not at the old window.
    assert catch_up["execution_time"] >= started_at
    assert catch_up["execution_time"] - started_at < timedelta(seconds=3)
    assert catch_up["window_start"] <= catch_up["execution_time"]
    assert all(r["execution_time"] == r["window_start"] for r in normal), normal
    assert_consecutive([r["window_start"] for r in executed], SECOND)
    assert len(normal) >= 3


# ----------------------------------------------------------- 7. a task nobody can run


async def test_definition_whose_task_nobody_registered_never_becomes_rows(
    pool: asyncpg.Pool,
) -> None:
    ran: list[float] = []

    @periodic(every=SECOND, dedup_key="runnable")
    async def runnable() -> None:
        ran.append(time.time())

    async with Scheduler(pool, **FAST) as scheduler:
        await pool.execute(
            "INSERT INTO scheduler_periodic (dedup_key, task_name, job_name, every_seconds)"
            " VALUES ('ghost', 'nowhere.module:ghost_task', 'ghost', 1)"
        )
        await wait_for(lambda: scheduler.is_leader, message="leader")
        registrar = scheduler.periodic_registrar
        assert registrar is not None
        await registrar.wait_for_passes(registrar.passes + 10, timeout=10)
        # The same passes did write the runnable job's windows: the registrar was working.
        await wait_for(lambda: len(ran) >= 1, timeout=5, message="the runnable job ran")

    assert await window_rows(pool, "ghost") == []
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM scheduled_jobs WHERE job_name = 'nowhere.module:ghost_task'"
        )
        == 0
    )
    ghost = await periodic_row(pool, "ghost")
    assert ghost is not None and ghost["next_run_at"] is None  # its cursor was never moved
    assert await window_rows(pool, "runnable") != []


# -------------------------------------------------------- 8. changing a schedule


async def test_changed_schedule_replaces_the_stored_one_and_its_windows(
    pool: asyncpg.Pool,
) -> None:
    starts: list[float] = []

    def deploy(every: timedelta) -> None:
        """The same source, deployed with another interval (like editing the decorator)."""

        @periodic(every=every, dedup_key="rescheduled")
        async def rescheduled() -> None:
            starts.append(time.time())

    deploy(SECOND)
    async with Scheduler(pool, **FAST):
        await wait_for(lambda: len(starts) >= 2, timeout=8, message="2 runs every second")
    row = await periodic_row(pool, "rescheduled")
    assert row is not None and row["every_seconds"] == 1.0 and row["next_run_at"] is not None

    deploy(2 * SECOND)
    await Scheduler(pool, **FAST).initialize_db()  # publishing the new definition
    changed_at = await db_now(pool)
    row = await periodic_row(pool, "rescheduled")
    assert row is not None and row["every_seconds"] == 2.0
    assert row["next_run_at"] is None, "the cursor of the old schedule was kept"
    # Windows the old schedule had written ahead are dropped, not run off the new grid.
    ahead = [r for r in await window_rows(pool, "rescheduled") if r["window_start"] > changed_at]
    assert ahead and {r["status"] for r in ahead} == {"cancelled"}, ahead

    before = len(starts)
    redeployed_at = time.time()
    async with Scheduler(pool, **FAST):
        await wait_for(lambda: len(starts) >= before + 3, timeout=12, message="3 runs every 2 s")

    new = [r for r in await executed_windows(pool, "rescheduled") if r["window_start"] > changed_at]
    assert len(new) >= 3
    windows = [r["window_start"] for r in new]
    for w in windows:
        assert_on_grid(w, 2)
    assert_consecutive(windows, 2 * SECOND)
    # The first window of the new schedule runs (at most one 2-s step after start-up), although
    # it had been written, then cancelled, by the old schedule.
    assert epoch(windows[0]) - redeployed_at < 3.5, (windows[0], redeployed_at)


async def test_schedule_change_racing_a_registrar_pass_cancels_the_old_windows(
    pool: asyncpg.Pool,
) -> None:
    def deploy(every: timedelta) -> str:
        @periodic(every=every, dedup_key="raced-change")
        async def raced_change() -> None:
            pass

        return registry.name_of(raced_change) or ""

    task_name = deploy(SECOND)
    await Scheduler(pool, **FAST).initialize_db()

    async def redeploy() -> None:
        deploy(2 * SECOND)
        await Scheduler(pool, **FAST).initialize_db()

    await race_a_registrar_pass(pool, "raced-change", task_name, redeploy)
    row = await periodic_row(pool, "raced-change")
    assert row is not None and row["every_seconds"] == 2.0 and row["next_run_at"] is None
    rows = await window_rows(pool, "raced-change")
    assert rows and {r["status"] for r in rows} == {"cancelled"}, rows
    assert {r["error_message"] for r in rows} == {"periodic schedule changed"}


# ------------------------------------------------- 9. a failing run keeps the chain


async def test_a_failing_periodic_run_does_not_stop_the_next_windows(pool: asyncpg.Pool) -> None:
    # 0.2.3 rescheduled from the run's own wrapper, so a run that never finished normally could
    # end the chain. Windows come from the leader, whatever the previous run did.
    runs: list[float] = []

    @periodic(every=timedelta(seconds=1))
    async def flaky() -> None:
        runs.append(time.monotonic())
        raise RuntimeError("boom")

    async with Scheduler(pool, **FAST):
        await wait_for(lambda: len(runs) >= 3, timeout=10, message="three runs")
    failed = await pool.fetchval(
        "SELECT count(*) FROM scheduled_jobs WHERE dedup_key IS NOT NULL AND status = 'failed'"
    )
    assert failed >= 2
