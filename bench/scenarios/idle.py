"""Idle cost and big-table drain, pg-scheduler only.

Idle: a million pending jobs due tomorrow, a pod of 2 workers that has run its warm-up jobs;
after a settling pause, the counters of ``pg_stat_user_tables`` over a 30-second window: what
the idle pod read by sequential scan and what it wrote. Backends publish their counters when
idle, at most 10 s late, so the window starts after a pause longer than that.

Finished rows: the same drain as the drain scenario, once on an empty table and once with a
million completed rows in it (finished an hour ago, so vacuum leaves them); the ratio of the two.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from ..systems import OURS
from ..trial import Context, Trial
from .drain import drain

SETTLE_SECONDS = 12.0
STATS = """
SELECT relname, seq_scan, coalesce(idx_scan, 0) AS idx_scan,
       n_tup_ins + n_tup_upd + n_tup_del AS writes
  FROM pg_stat_user_tables
"""
FILL_FUTURE = """
INSERT INTO scheduled_jobs (job_id, job_name, execution_time, task_data, priority)
SELECT 'filler-' || g, 'bench.filler', now() + interval '1 day' + g * interval '1 millisecond',
       '{"args": [], "kwargs": {}}'::jsonb, 5
  FROM generate_series(1, $1::int) AS g
"""
FILL_FINISHED = """
INSERT INTO scheduled_jobs (job_id, job_name, execution_time, task_data, priority, status,
                            attempt, started_at, finished_at)
SELECT 'filler-' || g, 'bench.filler', now() - interval '1 hour',
       '{"args": [], "kwargs": {}}'::jsonb, 5, 'completed', 1,
       now() - interval '1 hour', now() - interval '1 hour'
  FROM generate_series(1, $1::int) AS g
"""


async def _fill(conn: asyncpg.Connection, statement: str, rows: int) -> None:
    await conn.execute(statement, rows)
    # Steady state, as autovacuum would leave it, before anything is measured.
    await conn.execute("VACUUM ANALYZE scheduled_jobs")


async def _stats(conn: asyncpg.Connection) -> dict[str, dict[str, int]]:
    return {
        r["relname"]: {"seq_scan": r["seq_scan"], "idx_scan": r["idx_scan"], "writes": r["writes"]}
        for r in await conn.fetch(STATS)
    }


async def idle(ctx: Context, *, rows: int, window: float) -> dict[str, Any]:
    async with Trial(ctx, OURS, "idle") as t:
        await _fill(t.conn, FILL_FUTURE, rows)
        await t.start_workers(ctx.options.processes, ctx.options.concurrency)
        await t.warm_up()
        await asyncio.sleep(SETTLE_SECONDS)
        before = await _stats(t.conn)
        await asyncio.sleep(window)
        after = await _stats(t.conn)
        await t.verify()
    delta = {
        name: {k: after[name][k] - before.get(name, {}).get(k, 0) for k in after[name]} for name in after
    }
    jobs = delta.get("scheduled_jobs", {"seq_scan": 0, "idx_scan": 0, "writes": 0})
    others = {n: d for n, d in delta.items() if n != "scheduled_jobs"}
    return {
        "rows": rows,
        "window_s": window,
        "jobs_seq_scans": jobs["seq_scan"],
        "jobs_idx_scans": jobs["idx_scan"],
        "jobs_writes": jobs["writes"],
        "other_writes": sum(d["writes"] for d in others.values()),
        "other_seq_scans": sum(d["seq_scan"] for d in others.values()),
        "tables": delta,
    }


async def finished_rows(ctx: Context, *, rows: int) -> dict[str, Any]:
    async def prefill(conn: asyncpg.Connection) -> None:
        await _fill(conn, FILL_FINISHED, rows)

    empty = await drain(ctx, OURS, title="drain_empty")
    full = await drain(ctx, OURS, prefill=prefill, title="drain_full")
    return {
        "rows": rows,
        "empty_jobs_per_s": empty["jobs_per_s"],
        "full_jobs_per_s": full["jobs_per_s"],
        "ratio": full["jobs_per_s"] / empty["jobs_per_s"],
    }
