"""Orphan rescue: stale registry rows, expired leases, and the jobs of a vanished worker.

A vanished worker is a worker process that died or stopped."""

from __future__ import annotations

WORKER_PRUNE_STALE = """
DELETE FROM scheduler_workers
 WHERE last_heartbeat < now() - make_interval(secs => $1)
RETURNING worker_id, kind, host, pid
"""

# A lost attempt counts as a retry: the job runs again at once, or with no retries left it ends
# ``failed`` (so a job that kills its process cannot loop forever). Followed by error_message.
_LOST_ATTEMPT_SET = """
    status         = CASE WHEN j.retry_count < j.max_retries THEN 'pending' ELSE 'failed' END,
    retry_count    = CASE WHEN j.retry_count < j.max_retries THEN j.retry_count + 1
                          ELSE j.retry_count END,
    execution_time = CASE WHEN j.retry_count < j.max_retries THEN now() ELSE j.execution_time END,
    finished_at    = CASE WHEN j.retry_count < j.max_retries THEN NULL ELSE now() END,
    lease_until    = NULL,
    worker_id      = NULL,
"""

# Running jobs whose lease expired. A lease is honoured to its end even when its worker is gone
# from the registry: the registry's heartbeat and the lease renewal are separate writes, so a
# worker that is alive but frozen can be pruned as stale a moment before a lease it renewed since
# runs out. Rows with no lease at all (written by 0.2.3) fall back to the registry.
JOB_RESCUE = f"""
WITH lost AS (
    SELECT job_id FROM scheduled_jobs AS j
     WHERE status = 'running'
       AND (lease_until < now()
            OR (lease_until IS NULL
                AND (worker_id IS NULL
                     OR NOT EXISTS (SELECT 1 FROM scheduler_workers AS w
                                     WHERE w.worker_id = j.worker_id))))
       FOR UPDATE SKIP LOCKED
)
UPDATE scheduled_jobs AS j SET {_LOST_ATTEMPT_SET}
    error_message  = format('worker %s was lost during attempt %s (its lease expired)',
                            coalesce(j.worker_id, '?'), j.attempt)
  FROM lost
 WHERE j.job_id = lost.job_id
RETURNING j.job_id, j.job_name, j.status
"""

# The supervisor saw one of its worker processes die ($1 its id, $2 how): its running jobs run
# again at once, the attempt counted, without waiting for their leases. No fence is needed: the
# process is gone, so nothing else writes as that worker.
JOB_RESCUE_DEAD_WORKER = f"""
WITH gone AS (
    DELETE FROM scheduler_workers WHERE worker_id = $1
), rescued AS (
    UPDATE scheduled_jobs AS j SET {_LOST_ATTEMPT_SET}
        error_message = format('worker %s died during attempt %s: %s', $1::text, j.attempt, $2::text)
     WHERE j.status = 'running' AND j.worker_id = $1
    RETURNING j.job_id, j.job_name, j.status
)
SELECT job_id, job_name, status,
       CASE WHEN status = 'pending' THEN pg_notify('pg_scheduler_jobs', '') END
  FROM rescued
"""

# A worker that stopped (exit 0: it gave its jobs back itself, unless the database was away) or
# that the supervisor had to kill at the end of its shutdown grace ($1 its id): what it still
# holds is handed back like a drained worker's jobs (pending now, no retry consumed).
JOB_RELEASE_WORKER = """
WITH gone AS (
    DELETE FROM scheduler_workers WHERE worker_id = $1
), released AS (
    UPDATE scheduled_jobs
       SET status = 'pending', worker_id = NULL, lease_until = NULL, execution_time = now(),
           error_message = $2
     WHERE status = 'running' AND worker_id = $1
    RETURNING job_id
)
SELECT job_id, pg_notify('pg_scheduler_jobs', '') FROM released
"""
