"""Producing and reading jobs: inserts, get, and the wake-up notification.

Inserts are of one job or many; the planner's view of the table serves a large bulk insert."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

JOBS_TABLE = "scheduled_jobs"
# The columns a producer writes, in JOB_INSERT's parameter order (also schedule_bulk's COPY).
JOB_COPY_COLUMNS = (
    "job_id",
    "job_name",
    "execution_time",
    "task_data",
    "priority",
    "max_retries",
    "misfire_grace_time",
    "timeout_seconds",
    "queue",
    "concurrency_key",
)

_JOB_INSERT_COLUMNS = f"({', '.join(JOB_COPY_COLUMNS)})"

# REPLACE resets the row to a fresh pending job. ``attempt`` is kept: it only grows, so a run of
# the replaced job still in flight is fenced out and its completion refused.
_JOB_REPLACE_SET = """
    job_name = EXCLUDED.job_name, execution_time = EXCLUDED.execution_time,
    task_data = EXCLUDED.task_data, priority = EXCLUDED.priority,
    max_retries = EXCLUDED.max_retries, misfire_grace_time = EXCLUDED.misfire_grace_time,
    timeout_seconds = EXCLUDED.timeout_seconds, queue = EXCLUDED.queue,
    concurrency_key = EXCLUDED.concurrency_key, status = 'pending', retry_count = 0,
    worker_id = NULL, lease_until = NULL, last_heartbeat = NULL, error_message = NULL,
    started_at = NULL, finished_at = NULL, result = NULL"""


def _insert_jobs(rows: str, *, replace: bool) -> str:
    """The INSERT of the job rows ``rows`` yields (in JOB_COPY_COLUMNS' order): a row whose id
    exists is left as it is, or with ``replace`` reset (_JOB_REPLACE_SET); the ids written."""
    action = f"DO UPDATE SET {_JOB_REPLACE_SET}" if replace else "DO NOTHING"
    return f"""
INSERT INTO scheduled_jobs {_JOB_INSERT_COLUMNS}
{rows}
ON CONFLICT (job_id) {action}
RETURNING job_id
"""


_ONE_ROW = "VALUES (coalesce($1, gen_random_uuid()::text), $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10)"

# $1 job_id, $2 job_name, $3 execution_time, $4 task_data, $5 priority, $6 max_retries, $7 misfire_grace_time, $8 timeout_seconds, $9 queue, $10 concurrency_key  # noqa: E501
JOB_INSERT = _insert_jobs(_ONE_ROW, replace=False)
# $1 job_id, $2 job_name, $3 execution_time, $4 task_data, $5 priority, $6 max_retries, $7 misfire_grace_time, $8 timeout_seconds, $9 queue, $10 concurrency_key  # noqa: E501
JOB_UPSERT = _insert_jobs(_ONE_ROW, replace=True)

# The same, but leaving the wake-up to a NOTIFY sent after their commit (migration 14:
# pg_scheduler.announce = 'later' for their transaction, which an autocommitted statement is).
# The sub-select runs set_config once, before the trigger that reads it; the casts give the
# parameters the types VALUES would have taken from the columns.
_LATER_ROW = """SELECT coalesce($1::text, gen_random_uuid()::text), $2::text, $3::timestamptz, $4::jsonb,
       $5::int, $6::int, $7::float8, $8::float8, $9::text, $10::text
  FROM (SELECT set_config('pg_scheduler.announce', 'later', true)) AS later"""

# $1 job_id, $2 job_name, $3 execution_time, $4 task_data, $5 priority, $6 max_retries, $7 misfire_grace_time, $8 timeout_seconds, $9 queue, $10 concurrency_key  # noqa: E501
JOB_INSERT_LATER = _insert_jobs(_LATER_ROW, replace=False)
# $1 job_id, $2 job_name, $3 execution_time, $4 task_data, $5 priority, $6 max_retries, $7 misfire_grace_time, $8 timeout_seconds, $9 queue, $10 concurrency_key  # noqa: E501
JOB_UPSERT_LATER = _insert_jobs(_LATER_ROW, replace=True)


async def job_insert(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    job_id: str | None,
    job_name: str,
    execution_time: datetime,
    task_data: str,
    priority: int,
    max_retries: int,
    misfire_grace_time: float | None,
    timeout_seconds: float | None,
    queue: str,
    concurrency_key: str | None,
    replace: bool,
    later: bool = False,
) -> str | None:
    """JOB_INSERT (JOB_UPSERT with ``replace``; their ``_LATER`` forms with ``later``): the job's
    id, or None where an existing row with that id was left as it was."""
    if later:
        sql = JOB_UPSERT_LATER if replace else JOB_INSERT_LATER
    else:
        sql = JOB_UPSERT if replace else JOB_INSERT
    new_id: str | None = await conn.fetchval(
        sql,
        job_id,
        job_name,
        execution_time,
        task_data,
        priority,
        max_retries,
        misfire_grace_time,
        timeout_seconds,
        queue,
        concurrency_key,
    )
    return new_id


_JOB_BULK_ROWS = """
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::int[],
                     $6::int[], $7::float8[], $8::float8[], $9::text[], $10::text[])
    AS b(job_id, job_name, execution_time, task_data, priority, max_retries,
         misfire_grace_time, timeout_seconds, queue, concurrency_key)
"""

_BULK_ROWS = f"""SELECT job_id, job_name, execution_time, task_data::jsonb, priority, max_retries,
       misfire_grace_time, timeout_seconds, queue, concurrency_key
FROM ({_JOB_BULK_ROWS}) AS rows"""

# $1 job_ids, $2 job_names, $3 execution_times, $4 task_data, $5 priorities, $6 max_retries, $7 misfire_grace_times, $8 timeout_seconds, $9 queues, $10 concurrency_keys  # noqa: E501
JOB_INSERT_BULK = _insert_jobs(_BULK_ROWS, replace=False)
# $1 job_ids, $2 job_names, $3 execution_times, $4 task_data, $5 priorities, $6 max_retries, $7 misfire_grace_times, $8 timeout_seconds, $9 queues, $10 concurrency_keys  # noqa: E501
JOB_UPSERT_BULK = _insert_jobs(_BULK_ROWS, replace=True)


async def job_insert_bulk(
    conn: asyncpg.Connection,
    *,
    rows: Sequence[Sequence[Any]],
    replace: bool,
) -> list[asyncpg.Record]:
    """JOB_INSERT_BULK (JOB_UPSERT_BULK with ``replace``) of ``rows``, each in JOB_COPY_COLUMNS'
    order as schedule_bulk's COPY takes them; returns the rows written, by job_id."""
    columns = [list(column) for column in zip(*rows, strict=True)]
    rows_written: list[asyncpg.Record] = await conn.fetch(
        JOB_UPSERT_BULK if replace else JOB_INSERT_BULK,
        *columns,
    )
    return rows_written


# What the planner believes the jobs table holds (-1: never analyzed), and the refresh.
JOB_GET_PLANNER_ROWS = "SELECT reltuples FROM pg_class WHERE oid = 'scheduled_jobs'::regclass"
# The refresh only has to tell the planner that many rows are pending now; a sample of 3,000 rows
# (statistics target 10) does, where the default sample of 30,000 reads the whole of a burst of
# that size. Autovacuum's next ANALYZE replaces these coarser statistics. Run inside the insert's
# transaction, which the SET LOCAL ends with.
JOB_ANALYZE = """SET LOCAL default_statistics_target = 10;
ANALYZE scheduled_jobs (status, job_name, priority, execution_time)"""

JOB_GET = "SELECT * FROM scheduled_jobs WHERE job_id = $1"

# Scheduler.wait_for: mark the job as awaited (its end then notifies JOB_FINISHED_CHANNEL, by
# migration 11's trigger) and read its status, in one statement: an end committed before it is
# in the status read, one committed after it notifies.
JOB_SET_AWAITED = "UPDATE scheduled_jobs SET awaited = true WHERE job_id = $1 RETURNING status"
JOB_FINISHED_CHANNEL = "pg_scheduler_job_finished"
JOB_GET_STATUS = "SELECT status FROM scheduled_jobs WHERE job_id = $1"

JOB_NOTIFY = "SELECT pg_notify('pg_scheduler_jobs', '')"

# The wake-up of inserts that left theirs for later (JOB_INSERT_LATER), committed without waiting
# for its WAL flush: it writes no data, and the cluster-wide lock a NOTIFY takes at commit is
# held until the commit returns, so a flush would hold it longer. Only a crash of the server can
# lose it, and that ends the workers' LISTEN sessions too: they find the jobs by their poll.
JOB_NOTIFY_OWED = "SELECT set_config('synchronous_commit', 'off', true), pg_notify('pg_scheduler_jobs', '')"
