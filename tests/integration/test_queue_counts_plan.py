"""QUEUE_LIST's counts on a table of mostly finished jobs, against a real PostgreSQL.

What is proven here: the running and the pending jobs are counted through their partial
indexes, never by a scan of the whole table (on a big table the pending ones are an index-only
scan of scheduled_jobs_next_due_idx, which carries the queue: bench/dashboard_pages.py), and the
counts are right.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from pg_scheduler import Scheduler
from pg_scheduler.shared import queries
from pg_scheduler.shared.queue_limits import list_queues


async def test_queue_counts_read_the_partial_indexes_not_the_table(pool: asyncpg.Pool) -> None:
    await Scheduler(pool).initialize_db()
    await pool.execute(
        "INSERT INTO scheduled_jobs (job_id, job_name, execution_time, status, finished_at, queue)"
        " SELECT 'done-' || g, 't', now(), 'completed', now(), 'q' || (g % 3)"
        " FROM generate_series(1, 30000) AS g"
    )
    await pool.execute(
        "INSERT INTO scheduled_jobs (job_id, job_name, execution_time, queue)"
        " SELECT 'due-' || g, 't', now() - interval '1 minute' + (g % 2) * interval '1 day', 'q' || (g % 3)"
        " FROM generate_series(1, 600) AS g"
    )
    await pool.execute(
        "INSERT INTO scheduled_jobs (job_id, job_name, execution_time, status, worker_id,"
        " started_at, lease_until, queue)"
        " SELECT 'run-' || g, 't', now(), 'running', 'w', now(), now() + interval '1 hour', 'q1'"
        " FROM generate_series(1, 7) AS g"
    )
    await pool.execute("VACUUM ANALYZE scheduled_jobs")
    plan = json.loads(await pool.fetchval(f"EXPLAIN (FORMAT JSON) {queries.QUEUE_LIST}"))[0]["Plan"]
    assert "scheduled_jobs" not in _seq_scanned(plan), json.dumps(plan)
    async with pool.acquire() as conn:
        counted = {q.name: (q.running, q.pending, q.due) for q in await list_queues(conn)}
    assert counted == {"q0": (0, 200, 100), "q1": (7, 200, 100), "q2": (0, 200, 100)}


def _seq_scanned(node: dict[str, Any]) -> set[str]:
    """The tables a plan (a JSON plan node) reads by sequential scan."""
    found = {node["Relation Name"]} if node.get("Node Type") == "Seq Scan" else set()
    for child in node.get("Plans", []):
        found |= _seq_scanned(child)
    return found
