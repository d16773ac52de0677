"""An idle scheduler with 200,000 future jobs makes no sequential scan and no write.

0.2.3 ran a misfire-expiry UPDATE inside every poll: with 200,000 future rows it was a
sequential scan of 33.7 ms and a write transaction per worker every ≤2 s.
Ours, while nothing is due, only asks "when is the next job of my tasks due?" (one index probe per
task name) and sleeps until then. Proven three ways on a table of 200,000 pending rows due an hour
or more ahead (several priorities; most rows name a registered task, some a task nobody runs):

1. counters: ``pg_stat_user_tables`` for ``scheduled_jobs`` shows no sequential scan and no
   inserted, updated or deleted tuple while a scheduler that looks every 0.2 s idles for 5 s,
   although its index scans do go up (it was looking); a control phase shows that a scanning query
   and an update made through the same sessions *are* seen by the same measurement;
2. plans: the queries of the idle loop have no ``Seq Scan`` on ``scheduled_jobs``, with custom
   and with generic plans (asyncpg prepares statements, and PostgreSQL may switch to a generic
   plan after five runs), and the next-due probe runs in well under a few milliseconds;
3. a job due now is still picked up and completed within 2 s on that table.

How statistics reach ``pg_stat_user_tables`` (checked on PostgreSQL 18): a backend publishes its
counters at the end of a transaction, at most once a second; counters held back by that limit are
published when the session is next active a second later, or after 10 s (PGSTAT_IDLE_INTERVAL)
if it stays idle. So before each snapshot every session of the scheduler's pool runs
``pg_stat_force_next_flush()``, which publishes its counters before the call returns, and the
reading session calls ``pg_stat_clear_snapshot()``. The scheduler's dedicated sessions (leader
lock, heartbeat, listener) cannot be reached that way; they never touch ``scheduled_jobs`` while
no job runs, and being active every ≤0.4 s they publish within about a second anyway.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from pg_scheduler import Scheduler, job
from pg_scheduler.shared import queries
from pg_scheduler.worker import plans
from pg_scheduler.worker.claimer import Claimer
from tests.rows import wait_for_status
from tests.support import FAST, wait_for

ROWS = 200_000
REGISTERED = ["idle.alpha", "idle.beta", "idle.gamma"]
UNREGISTERED = ["idle.retired_task", "idle.other_service_task"]
IDLE_WINDOW_SECONDS = 5.0
LOOK_OFTEN = {**FAST, "poll_interval_seconds": 0.2}

TABLE_STATS = """
SELECT seq_scan, coalesce(idx_scan, 0) AS idx_scan, n_tup_ins, n_tup_upd, n_tup_del,
       n_tup_hot_upd
  FROM pg_stat_user_tables WHERE relname = 'scheduled_jobs'
"""
# A query that must read every row: the control that proves a sequential scan is seen.
DELIBERATE_SCAN = "SELECT count(*) FROM scheduled_jobs WHERE task_data::text LIKE '%kwargs%'"


@dataclass(frozen=True)
class TableStats:
    seq_scan: int
    idx_scan: int
    n_tup_ins: int
    n_tup_upd: int
    n_tup_del: int
    n_tup_hot_upd: int

    def __sub__(self, other: TableStats) -> TableStats:
        return TableStats(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def writes(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name.startswith("n_tup")}


async def load_future_jobs(pool: asyncpg.Pool, *, analyze: bool = True) -> None:
    """200,000 pending rows due from 1 h ahead, one per second, in one statement; then ANALYZE,
    unless told not to."""
    await pool.execute(
        """
        INSERT INTO scheduled_jobs
            (job_id, job_name, execution_time, task_data, priority, misfire_grace_time)
        SELECT 'future-' || i,
               ($1::text[])[1 + i % cardinality($1::text[])],
               now() + interval '1 hour' + i * interval '1 second',
               jsonb_build_object('args', jsonb_build_array(i), 'kwargs', '{}'::jsonb),
               (ARRAY[1, 3, 5, 8])[1 + i % 4],
               CASE WHEN i % 2 = 0 THEN 300 END
          FROM generate_series(1, $2::int) AS i
        """,
        REGISTERED + UNREGISTERED,
        ROWS,
    )
    if analyze:
        await pool.execute("ANALYZE scheduled_jobs")


async def flushed_stats(pool: asyncpg.Pool, reader: asyncpg.Connection) -> TableStats:
    """Counters of ``scheduled_jobs`` including everything the pool's sessions did so far."""
    async with asyncio.timeout(15):
        held = [await pool.acquire() for _ in range(pool.get_max_size())]
        try:
            for conn in held:  # all distinct: every session of the pool, however many are open
                await conn.execute("SELECT pg_stat_force_next_flush()")
        finally:
            for conn in held:
                await pool.release(conn)
    await reader.execute("SELECT pg_stat_clear_snapshot()")
    row = await reader.fetchrow(TABLE_STATS)
    assert row is not None, "scheduled_jobs has no statistics row"
    return TableStats(**dict(row))


def _register_tasks() -> None:
    for name in REGISTERED:

        async def task(n: int) -> None:
            return None

        job(name=name)(task)


async def test_idle_scheduler_over_200k_future_jobs_makes_no_seq_scan_and_no_write(
    pool: asyncpg.Pool, dsn: str
) -> None:
    _register_tasks()
    await Scheduler(pool).initialize_db()
    await load_future_jobs(pool)
    reader = await asyncpg.connect(dsn)
    scheduler = Scheduler(pool, **LOOK_OFTEN)
    try:
        await scheduler.start()
        await wait_for(lambda: scheduler.is_leader, message="leadership")
        # Settled: every leader service has done its first passes (vacuum runs once on election).
        for service in (scheduler.orphan_rescuer, scheduler.periodic_registrar, scheduler.vacuum):
            assert service is not None
            await service.wait_for_passes(3 if service is not scheduler.vacuum else 1, timeout=10)

        epoch = await reader.fetchval("SELECT epoch FROM scheduler_leader")
        before = await flushed_stats(pool, reader)
        assert before.n_tup_ins == ROWS, f"the measurement missed the load itself: {before}"
        # The window in which nothing must happen: a plain sleep is the point here.
        await asyncio.sleep(IDLE_WINDOW_SECONDS)
        after = await flushed_stats(pool, reader)
        idle = after - before
        print(f"\nidle {IDLE_WINDOW_SECONDS:.0f}s over {ROWS} future jobs: {idle}")

        # One term throughout: the leader's maintenance loop was running the whole window.
        assert scheduler.is_leader
        assert await reader.fetchval("SELECT epoch FROM scheduler_leader") == epoch
        assert idle.seq_scan == 0, f"idle scheduler scanned scheduled_jobs sequentially: {idle}"
        assert idle.writes() == {name: 0 for name in idle.writes()}, f"idle writes: {idle}"
        # It did look (every 0.2 s, one index probe per task name): silence is not a dead loop.
        assert idle.idx_scan >= 10, f"the scheduler did not poll during the window: {idle}"

        # Control: the same measurement sees a scan and an update made through the same pool.
        assert await pool.fetchval(DELIBERATE_SCAN) == ROWS
        await pool.execute("UPDATE scheduled_jobs SET priority = priority WHERE job_id = 'future-7'")
        control = await flushed_stats(pool, reader) - after
        print(f"control (one deliberate scan and one update): {control}")
        assert control.seq_scan >= 1, f"the measurement cannot see a sequential scan: {control}"
        assert control.n_tup_upd >= 1, f"the measurement cannot see an update: {control}"
    finally:
        await scheduler.shutdown()
        await reader.close()


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


def _seq_scans_on_jobs(explain: Any) -> list[str]:
    plan = (json.loads(explain) if isinstance(explain, str) else explain)[0]
    return [
        f"{n['Node Type']} on {n.get('Relation Name')}"
        for n in _plan_nodes(plan["Plan"])
        if "Seq Scan" in n["Node Type"] and n.get("Relation Name") == "scheduled_jobs"
    ]


def _literal(value: Any) -> str:
    """SQL literal of a test constant (names without quotes, numbers)."""
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(_literal(v) for v in value) + "]::text[]"
    if isinstance(value, str):
        assert "'" not in value
        return f"'{value}'"
    return repr(value)


# The statements of the idle loop: the worker's probe (and the claim it makes once the probe says
# a job is due), the leader's orphan rescue (every rescue interval). Arguments as the code passes
# them: task names, batch limit, worker id, lease seconds, misfire tolerance seconds.
IDLE_STATEMENTS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "JOB_NEXT_DUE": (queries.JOB_GET_NEXT_DUE, (REGISTERED,)),
    "JOB_CLAIM": (queries.job_claim_sql(10), (REGISTERED, 10, "idle-test-worker", 30.0, 1.0)),
    "JOB_RESCUE": (queries.JOB_RESCUE, ()),
}


async def test_idle_loop_queries_plan_no_seq_scan_over_200k_rows(pool: asyncpg.Pool, dsn: str) -> None:
    await Scheduler(pool).initialize_db()
    await load_future_jobs(pool)
    conn = await asyncpg.connect(dsn)
    try:
        for name, (sql, args) in IDLE_STATEMENTS.items():
            # Custom plan, with the values bound as the worker binds them. EXPLAIN without
            # ANALYZE executes nothing, so nothing is claimed or rescued.
            custom = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
            assert _seq_scans_on_jobs(custom) == [], f"{name}: {custom}"
            # Generic plan: what a prepared statement may switch to after five executions.
            # EXECUTE takes no bind parameters, so the same values go in as literals.
            statement = f"idle_{name.lower()}"
            values = ", ".join(_literal(a) for a in args)
            async with conn.transaction():
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                await conn.execute(f"PREPARE {statement} AS {sql}")
                generic = await conn.fetchval(
                    f"EXPLAIN (FORMAT JSON) EXECUTE {statement}" + (f"({values})" if args else "")
                )
                await conn.execute(f"DEALLOCATE {statement}")
            assert _seq_scans_on_jobs(generic) == [], f"{name} (generic plan): {generic}"

        # Timings. ANALYZE executes, so the claim runs in a transaction that is rolled back
        # (nothing is due anyway). One warm-up run first: the first touches cold buffers.
        timings: dict[str, float] = {}
        for name in ("JOB_NEXT_DUE", "JOB_CLAIM"):
            sql, args = IDLE_STATEMENTS[name]
            tx = conn.transaction()
            await tx.start()
            try:
                await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *args)
                analyzed = json.loads(await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *args))
            finally:
                await tx.rollback()
            assert _seq_scans_on_jobs(analyzed) == [], f"{name} (executed): {analyzed}"
            timings[name] = analyzed[0]["Execution Time"]
        print(
            f"\nexecution over {ROWS} future rows: "
            + ", ".join(f"{k} {v:.3f} ms" for k, v in timings.items())
        )
        # Typically ~0.1 ms; the bound is generous so a busy CI machine cannot make it flaky.
        assert timings["JOB_NEXT_DUE"] < 50, timings
        assert await conn.fetchval("SELECT count(*) FROM scheduled_jobs WHERE status = 'pending'") == ROWS, (
            "EXPLAIN must not have claimed anything"
        )
    finally:
        await conn.close()


async def test_a_busy_workers_claims_keep_one_generic_plan_that_scans_nothing(
    pool: asyncpg.Pool, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy worker claims and completes in one statement many times a second. PostgreSQL used
    to plan it afresh at every execution (the custom plan looked cheaper than the generic one's
    guess at LIMIT $n): a third of its CPU per job in a drain. The claim statements must reach a
    cached generic plan after PostgreSQL's five custom ones, and that plan must not scan the
    table."""
    monkeypatch.setattr(plans, "PLAN_REFRESH_SECONDS", 1e9)  # one plan generation throughout
    await Scheduler(pool).initialize_db()
    await load_future_jobs(pool)
    await _add_due_jobs(pool, 300)
    await pool.execute("ANALYZE scheduled_jobs")
    claim_sql = queries.job_claim_sql(10)
    refill_sql = queries.job_complete_and_claim_sql(10)
    one = await asyncpg.create_pool(dsn, min_size=1, max_size=1)  # one session: its own cache
    try:
        claimer = Claimer(one, worker_id="plan-test-worker", lease_seconds=30, misfire_tolerance_seconds=1)
        for _ in range(8):
            jobs = await claimer.claim(REGISTERED, 10)
        for _ in range(8):
            done, jobs = await claimer.complete_and_claim(
                [j.job_id for j in jobs], [j.attempt for j in jobs], REGISTERED, 10
            )
            assert len(done) == 10 and len(jobs) == 10
        prepared = {
            r["statement"]: (r["generic_plans"], r["custom_plans"])
            for r in await one.fetch(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
            )
        }
    finally:
        await one.close()
    for name, sql in (("claim", claim_sql), ("complete and claim", refill_sql)):
        generic, custom = prepared[plans.fresh(sql)]
        assert custom <= 5 and generic == 8 - custom, (name, generic, custom)

    # The generic plan of the combined statement, over the 200,000 future rows: no Seq Scan.
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            await conn.execute(f"PREPARE refill AS {refill_sql}")
            generic_plan = await conn.fetchval(
                "EXPLAIN (FORMAT JSON) EXECUTE refill('plan-test-worker', ARRAY['due-1']::text[],"
                f" ARRAY[1]::int[], {_literal(REGISTERED)}, 10, 30.0, 1.0)"
            )
            await conn.execute("DEALLOCATE refill")
    finally:
        await conn.close()
    assert _seq_scans_on_jobs(generic_plan) == [], generic_plan


async def test_a_claim_planned_on_an_empty_table_is_planned_again_once_the_table_has_grown(
    pool: asyncpg.Pool, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generic plan made on an empty table finds the claimed rows again by a sequential scan;
    kept while the table grew to 200,000 rows, every claim read them all until the next ANALYZE.
    The worker's statements are new every PLAN_REFRESH_SECONDS (worker/plans.py), so within one
    period the claims plan from the table as it is, and scan nothing."""
    monkeypatch.setattr(plans, "PLAN_REFRESH_SECONDS", 1.0)
    await Scheduler(pool).initialize_db()
    # No ANALYZE may come to the rescue: only the plan refresh can replace the empty-table plan.
    await pool.execute("ALTER TABLE scheduled_jobs SET (autovacuum_enabled = off)")
    one = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    reader = await asyncpg.connect(dsn)
    try:
        claimer = Claimer(one, worker_id="plan-test-worker", lease_seconds=30, misfire_tolerance_seconds=1)
        # Start right after a generation begins, so that the eight claims share one.
        began = plans.generation()
        await wait_for(lambda: plans.generation() > began, timeout=3, message="a new generation")
        first = plans.generation()
        for _ in range(8):  # five custom plans, then the generic plan, on the empty table
            assert await claimer.claim(REGISTERED, 10) == []
        assert plans.generation() == first, "the empty-table claims spanned two generations"
        # Grown by a load that refreshes nothing (no ANALYZE, no bulk path).
        await load_future_jobs(pool, analyze=False)
        await _add_due_jobs(pool, 100)
        await wait_for(lambda: plans.generation() > first, timeout=3, message="next generation")

        before = await flushed_stats(one, reader)
        claimed = [j for _ in range(8) for j in await claimer.claim(REGISTERED, 10)]
        scanned = (await flushed_stats(one, reader) - before).seq_scan
    finally:
        await reader.close()
        await one.close()
    assert len(claimed) == 80
    assert scanned == 0, f"{scanned} sequential scans of scheduled_jobs in 8 claims"


async def _add_due_jobs(pool: asyncpg.Pool, count: int) -> None:
    await pool.execute(
        "INSERT INTO scheduled_jobs (job_id, job_name, execution_time, task_data)"
        " SELECT 'due-' || i, $1, now() - interval '1 second', '{\"args\": [], \"kwargs\": {}}'"
        " FROM generate_series(1, $2::int) AS i",
        REGISTERED[0],
        count,
    )


async def test_a_due_job_on_the_loaded_table_completes_within_2s(pool: asyncpg.Pool) -> None:
    ran: list[str] = []

    @job(name="idle.urgent")
    async def urgent(tag: str) -> None:
        ran.append(tag)

    _register_tasks()
    await Scheduler(pool).initialize_db()
    await load_future_jobs(pool)
    async with Scheduler(pool, **LOOK_OFTEN) as scheduler:
        await wait_for(lambda: scheduler.is_leader, message="leadership")
        started = time.monotonic()
        job_id = await scheduler.schedule(urgent, execution_time=datetime.now(UTC), args=("now",))

        await wait_for_status(scheduler, job_id, "completed", timeout=2.0, interval=0.02)
        print(
            f"\ndue job completed {time.monotonic() - started:.3f}s after schedule() over {ROWS} future rows"
        )
        assert ran == ["now"]
        # Only that job was claimed: the future rows are all still pending, untouched.
        counts = dict(await pool.fetch(queries.JOB_COUNT_BY_STATUS))
        assert counts == {"pending": ROWS, "completed": 1}


async def test_an_idle_worker_sends_the_due_probe_alone_and_still_finds_unannounced_jobs(
    pool: asyncpg.Pool,
) -> None:
    # Quiet turns: no news, nothing due before the poll interval, no limited queue. Each sends
    # the due-time probe alone; a claim follows only when the probe finds a job due.
    ran: list[str] = []

    @job(name="idle.quiet")
    async def quiet(tag: str) -> None:
        ran.append(tag)

    calls = {"probe": 0, "claim": 0, "claim_limited": 0}
    async with Scheduler(pool, **LOOK_OFTEN) as scheduler:
        job_id = await scheduler.schedule(
            quiet, execution_time=datetime.now(UTC) + timedelta(hours=1), args=("unannounced",)
        )
        worker = scheduler.worker
        assert worker is not None
        claimer = worker._claimer
        for name, method in (
            ("probe", "seconds_until_due"),
            ("claim", "claim"),
            ("claim_limited", "claim_limited"),
        ):
            setattr(claimer, method, _counted(calls, name, getattr(claimer, method)))
        # The worker's first turns after the schedule() notification settle into quiet ones.
        await wait_for(lambda: calls["probe"] >= 3, timeout=5, message="three probes")
        settled = dict(calls)
        await wait_for(lambda: calls["probe"] >= settled["probe"] + 10, timeout=10, message="ten probes")
        quiet_turns = {k: calls[k] - settled[k] for k in calls}
        print(f"\nan idle worker's statements over {quiet_turns['probe']} quiet turns: {quiet_turns}")
        assert quiet_turns["claim"] == 0 and quiet_turns["claim_limited"] == 0, quiet_turns
        # A job made due by an UPDATE (no trigger, no notification) is found by the probe and
        # claimed within about one poll interval.
        made_due = time.monotonic()
        await pool.execute("UPDATE scheduled_jobs SET execution_time = now() WHERE job_id = $1", job_id)
        await wait_for_status(scheduler, job_id, "completed", timeout=5.0, interval=0.02)
        took = time.monotonic() - made_due
        print(f"an unannounced due job completed {took:.3f}s after it became due (poll 0.2 s)")
        assert ran == ["unannounced"]
        assert took < 2 * LOOK_OFTEN["poll_interval_seconds"] + 1.0, took


def _counted(calls: dict[str, int], name: str, method: Any) -> Any:
    """``method`` (a bound coroutine method), counting its calls in ``calls[name]``."""

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls[name] += 1
        return await method(*args, **kwargs)

    return counted
