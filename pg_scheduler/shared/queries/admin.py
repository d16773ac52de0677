"""Administrative statements: migrations, the database clock, the cluster sample, inspection.

Also what the leader samples for its gauges, and what the embedded server and the management
CLI read or change."""

from __future__ import annotations

from .claim import _NOT_BLOCKED

# The priorities in use among pending jobs, as ``prios`` (a NULL row ends it): a loose index scan
# over the claim index, one probe per priority (a handful), whatever the number of pending jobs.
_PENDING_PRIORITIES = """WITH RECURSIVE prios AS (
    (SELECT priority FROM scheduled_jobs WHERE status = 'pending' ORDER BY priority LIMIT 1)
    UNION ALL
    SELECT (SELECT j.priority FROM scheduled_jobs AS j
             WHERE j.status = 'pending' AND j.priority > p.priority
             ORDER BY j.priority LIMIT 1)
      FROM prios AS p WHERE p.priority IS NOT NULL
)"""

# --------------------------------------------------------------------------- schema

MIGRATION_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS scheduler_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
MIGRATION_TAKE_LOCK = "SELECT pg_advisory_xact_lock($1, $2)"
MIGRATION_LIST_APPLIED = "SELECT version FROM scheduler_migrations"
MIGRATION_RECORD = "INSERT INTO scheduler_migrations (version, name) VALUES ($1, $2)"
MIGRATION_GET_CURRENT = "SELECT coalesce(max(version), 0) FROM scheduler_migrations"

# --------------------------------------------------------------------------- clock

DB_GET_NOW = "SELECT now()"

# --------------------------------------------------------------------------- metrics

# The leader's cluster sample (QueueSampler). Counts go through the partial indexes of each state
# (their cost grows with the rows in that state); the oldest due job is found per priority (a
# loose index scan over the claim index), leaving out windows held back behind a running run
# (overlap skip/queue), which nobody could claim. $1: seconds after which a worker's heartbeat is
# stale.
DB_DISABLE_SEQSCAN = "SET LOCAL enable_seqscan = off"
CLUSTER_SAMPLE = f"""
{_PENDING_PRIORITIES}
SELECT
    (SELECT count(*) FROM scheduled_jobs WHERE status = 'pending')   AS pending,
    (SELECT count(*) FROM scheduled_jobs WHERE status = 'running')   AS running,
    (SELECT count(*) FROM scheduled_jobs WHERE status = 'completed') AS completed,
    (SELECT count(*) FROM scheduled_jobs WHERE status = 'failed')    AS failed,
    (SELECT count(*) FROM scheduled_jobs WHERE status = 'cancelled') AS cancelled,
    (SELECT count(*) FROM scheduled_jobs WHERE status = 'expired')   AS expired,
    (SELECT greatest(extract(epoch FROM now() - min(due.t)), 0)::float8
       FROM prios AS p
       CROSS JOIN LATERAL (
           SELECT j.execution_time AS t FROM scheduled_jobs AS j
            WHERE j.status = 'pending' AND j.priority = p.priority AND j.execution_time <= now()
              AND {_NOT_BLOCKED}
            ORDER BY j.execution_time LIMIT 1) AS due
      WHERE p.priority IS NOT NULL)                                   AS oldest_due_age,
    (SELECT max(extract(epoch FROM now() - last_heartbeat))::float8
       FROM scheduler_workers
      WHERE kind <> 'supervisor'
        AND last_heartbeat > now() - make_interval(secs => $1))       AS oldest_heartbeat_age
"""

# --------------------------------------------------------------------------- inspection

JOB_COUNT_BY_STATUS = "SELECT status, count(*)::int AS n FROM scheduled_jobs GROUP BY status"

# --------------------------------------------------------------------------- embedded server

# Client sessions other than the asking one: the embedded PostgreSQL is left running while any
# other process still uses it.
DB_COUNT_OTHER_SESSIONS = """
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
"""

# --------------------------------------------------------------------------- management CLI
# ``pg-scheduler status`` and ``jobs``: read in one read-only transaction, so every figure comes
# from the same snapshot and the same ``now()``.

# Every registered process, with its heartbeat age on the database clock (clamped: a beat
# committed after this transaction began is not "in the future").
WORKER_LIST = """
SELECT worker_id, kind, host, pid, tasks, supervisor_id, queues, started_at, last_heartbeat,
       greatest(extract(epoch FROM now() - last_heartbeat), 0)::float8 AS heartbeat_age_seconds
  FROM scheduler_workers
 ORDER BY kind, host, pid, worker_id
"""

# The recorded leader, and whether any session of this database holds the leader lock now
# ($1, $2: the two-int key). A row whose lock is not held names a past leader, not a current one.
LEADER_GET = """
SELECT l.leader_id, l.host, l.pid, l.epoch, l.elected_at,
       EXISTS (SELECT 1 FROM pg_locks
                WHERE locktype = 'advisory' AND database = (
                          SELECT oid FROM pg_database WHERE datname = current_database())
                  AND classid = $1::int8::oid AND objid = $2::int8::oid AND objsubid = 2
                  AND granted) AS lock_held
  FROM scheduler_leader AS l
"""

# How late the oldest due pending job is (NULL when nothing is due).
JOB_GET_OLDEST_DUE_LAG = """
SELECT extract(epoch FROM now() - min(execution_time))::float8
  FROM scheduled_jobs
 WHERE status = 'pending' AND execution_time <= now()
"""


def _live_runner(task: str, queue: str, stale_seconds: str) -> str:
    """The test that a live process which runs jobs (supervisors never do) registered the task
    ``task`` and claims the queue ``queue``; a heartbeat older than ``stale_seconds`` is not
    live."""
    return f"""EXISTS (SELECT 1 FROM scheduler_workers AS w
                WHERE w.kind <> 'supervisor' AND {task} = ANY (w.tasks)
                  AND (w.queues IS NULL OR {queue} = ANY (w.queues))
                  AND w.last_heartbeat >= now() - make_interval(secs => {stale_seconds}))"""


def _unrunnable_jobs(count_as: str, due_only: bool) -> str:
    """Pending jobs (due ones only, with ``due_only``) that no live process can claim, counted
    as ``count_as`` by task and queue ($1: seconds after which a heartbeat is stale)."""
    due = " AND j.execution_time <= now()" if due_only else ""
    return f"""
SELECT j.job_name AS task, j.queue, count(*)::int AS {count_as},
       min(j.execution_time) AS oldest_execution_time
  FROM scheduled_jobs AS j
 WHERE j.status = 'pending'{due}
   AND NOT {_live_runner("j.job_name", "j.queue", "$1")}
 GROUP BY j.job_name, j.queue
 ORDER BY count(*) DESC, j.job_name, j.queue
"""


# Pending jobs that no live process which runs jobs can claim: none registered the task, or
# none that did claims the job's queue.
JOB_COUNT_UNRUNNABLE = _unrunnable_jobs("pending", due_only=False)

# Newest due time first. $1: states (NULL: all); $2: a task's full name or the part after the
# module (NULL: all); $3: most rows.
# $1 states, $2 task, $3 limit
JOB_LIST = """
SELECT * FROM scheduled_jobs
 WHERE ($1::text[] IS NULL OR status = ANY ($1::text[]))
   AND ($2::text IS NULL OR job_name = $2 OR split_part(job_name, ':', 2) = $2)
 ORDER BY execution_time DESC, job_id
 LIMIT $3
"""

# Whether a live process that runs jobs has registered the task $1 and claims the queue $2 ($3:
# seconds after which a heartbeat is stale): `jobs add` warns when none has.
# $1 task, $2 queue, $3 stale_seconds
WORKER_CHECK_TASK = f"SELECT {_live_runner('$1', '$2', '$3')}"
