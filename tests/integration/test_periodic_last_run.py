"""PERIODIC_GET_LAST_RUN, the last run of a schedule, against a real PostgreSQL.

What is proven here: it is the newest window that is not pending, or a manual run (no window)
that started later, the same run PERIODIC_GET_RUNS finds by reading every window, and the same
PERIODIC_LIST_WITH_LAST_RUN (the dashboard's) gives each schedule; and it reads the windows
through the (dedup_key, window_start) index from the newest, not all of them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg

from pg_scheduler import Scheduler
from pg_scheduler.shared import queries
from tests.rows import insert_job, insert_periodic

START = datetime(2026, 1, 1, tzinfo=UTC)


async def last_run(pool: asyncpg.Pool, key: str) -> str | None:
    text = await pool.fetchval(queries.PERIODIC_GET_LAST_RUN, key)
    assert (text is None) == ((await pool.fetchrow(queries.PERIODIC_GET_RUNS, key))["last_run"] is None)
    listed = {r["dedup_key"]: r["last_run"] for r in await pool.fetch(queries.PERIODIC_LIST_WITH_LAST_RUN)}
    assert listed[key] == text
    if text is None:
        return None
    found: str = json.loads(text)["job_id"]
    # The same run as the status command's statement, which reads every window.
    every = json.loads((await pool.fetchrow(queries.PERIODIC_GET_RUNS, key))["last_run"])
    assert every["job_id"] == found
    return found


async def test_the_last_run_is_the_newest_window_run_or_a_later_manual_run(pool: asyncpg.Pool) -> None:
    await Scheduler(pool).initialize_db()
    for key in ("k", "other"):
        await insert_periodic(pool, key)
    assert await last_run(pool, "k") is None

    def at(minutes: int) -> datetime:
        return START + timedelta(minutes=minutes)

    for i in range(5):
        await insert_job(
            pool,
            f"w{i}",
            dedup_key="k",
            window_start=at(i),
            execution_time=at(i),
            status="completed" if i < 3 else "pending",
            started_at=at(i) if i < 3 else None,
            finished_at=at(i) if i < 3 else None,
        )
    await insert_job(pool, "other", dedup_key="other", window_start=at(9), status="failed", started_at=at(9))
    assert await last_run(pool, "k") == "w2"  # the pending windows 3 and 4 have not run
    await insert_job(
        pool, "manual-early", dedup_key="k", status="completed", started_at=at(1), execution_time=at(1)
    )
    assert await last_run(pool, "k") == "w2"
    await insert_job(
        pool, "manual-late", dedup_key="k", status="failed", started_at=at(2) + timedelta(seconds=30)
    )
    assert await last_run(pool, "k") == "manual-late"


async def test_the_last_run_reads_the_window_index_from_the_newest(pool: asyncpg.Pool) -> None:
    await Scheduler(pool).initialize_db()
    await insert_periodic(pool, "k")
    await pool.execute(
        "INSERT INTO scheduled_jobs (job_id, job_name, execution_time, status, dedup_key,"
        " window_start, started_at, finished_at)"
        " SELECT 'w' || g, 't', t, 'completed', 'k', t, t, t"
        " FROM generate_series(1, 20000) AS g,"
        " LATERAL (SELECT timestamptz '2026-01-01' + g * interval '30 seconds' AS t) AS w"
    )
    await pool.execute("ANALYZE scheduled_jobs")
    plan = json.loads(
        await pool.fetchval(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {queries.PERIODIC_GET_LAST_RUN}".replace("$1", "'k'")
        )
    )[0]["Plan"]
    assert "scheduled_jobs_periodic_window_key" in json.dumps(plan)
    # A few index and heap pages: 5 here, where reading the 20,000 windows takes hundreds.
    assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] < 50, plan
    # The same per schedule inside the dashboard's list of every schedule.
    listed = json.loads(
        await pool.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {queries.PERIODIC_LIST_WITH_LAST_RUN}")
    )[0]["Plan"]
    assert "scheduled_jobs_periodic_window_key" in json.dumps(listed)
    assert listed["Shared Hit Blocks"] + listed["Shared Read Blocks"] < 50, listed
    assert await last_run(pool, "k") == "w20000"
