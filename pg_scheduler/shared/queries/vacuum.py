"""Vacuum: deleting finished jobs by policy, and the per-day record of what was deleted."""

from __future__ import annotations

# $1 status, $2 age_seconds, $3 batch_size
VACUUM_DELETE_OLD = """
DELETE FROM scheduled_jobs WHERE job_id IN (
    SELECT job_id FROM scheduled_jobs
     WHERE status = $1 AND finished_at < now() - make_interval(secs => $2)
     LIMIT $3)
"""
VACUUM_DELETE_ALL = """
DELETE FROM scheduled_jobs WHERE job_id IN (
    SELECT job_id FROM scheduled_jobs WHERE status = $1 LIMIT $2)
"""
# $1 status, $2 keep_count, $3 batch_size
VACUUM_DELETE_BEYOND_LAST = """
DELETE FROM scheduled_jobs WHERE job_id IN (
    SELECT job_id FROM scheduled_jobs WHERE status = $1
     ORDER BY finished_at DESC NULLS LAST, job_id DESC
    OFFSET $2 LIMIT $3)
"""
VACUUM_RECORD = """
INSERT INTO scheduler_vacuum_stats (stat_date, state, deleted, last_run)
VALUES (current_date, $1, $2, now())
ON CONFLICT (stat_date, state) DO UPDATE
   SET deleted = scheduler_vacuum_stats.deleted + EXCLUDED.deleted, last_run = now()
"""
VACUUM_LIST_STATS = """
SELECT stat_date,
       coalesce(sum(deleted) FILTER (WHERE state = 'completed'), 0)::int AS deleted_completed,
       coalesce(sum(deleted) FILTER (WHERE state = 'failed'), 0)::int AS deleted_failed,
       coalesce(sum(deleted) FILTER (WHERE state = 'cancelled'), 0)::int AS deleted_cancelled,
       coalesce(sum(deleted) FILTER (WHERE state = 'expired'), 0)::int AS deleted_expired,
       max(last_run) AS last_run
  FROM scheduler_vacuum_stats
 WHERE stat_date > current_date - $1::int
 GROUP BY stat_date ORDER BY stat_date DESC
"""
VACUUM_GET_TOTALS = """
SELECT coalesce(sum(deleted) FILTER (WHERE state = 'completed'), 0)::int AS total_completed,
       coalesce(sum(deleted) FILTER (WHERE state = 'failed'), 0)::int AS total_failed,
       coalesce(sum(deleted) FILTER (WHERE state = 'cancelled'), 0)::int AS total_cancelled,
       coalesce(sum(deleted) FILTER (WHERE state = 'expired'), 0)::int AS total_expired,
       count(DISTINCT stat_date)::int AS days_tracked,
       max(last_run) AS last_run
  FROM scheduler_vacuum_stats
"""
