"""Queues: the code's declarations, an operator's limits, pause and resume, the listing.

The limits themselves are enforced by the claim (claim.py: JOB_CLAIM_LIMITED); a change here
binds every claim that begins after it commits, since claims read the queue rows themselves.
Every change that may let a job start (limits set, declared or reset, a resume) wakes idle
workers."""

from __future__ import annotations

# The code's declaration goes to code_*; it is also in force unless an operator set limits
# (overridden_at). The row is written only when the declaration changed.
# $1 name, $2 concurrency, $3 key_concurrency, $4 rate_limit, $5 rate_period_seconds
QUEUE_DECLARE = """
INSERT INTO scheduler_queues AS q
    (name, concurrency, key_concurrency, rate_limit, rate_period_seconds,
     code_concurrency, code_key_concurrency, code_rate_limit, code_rate_period_seconds, declared)
VALUES ($1, $2, $3, $4, $5, $2, $3, $4, $5, true)
ON CONFLICT (name) DO UPDATE SET
    code_concurrency = EXCLUDED.code_concurrency,
    code_key_concurrency = EXCLUDED.code_key_concurrency,
    code_rate_limit = EXCLUDED.code_rate_limit,
    code_rate_period_seconds = EXCLUDED.code_rate_period_seconds,
    declared = true,
    concurrency = CASE WHEN q.overridden_at IS NULL THEN EXCLUDED.concurrency ELSE q.concurrency END,
    key_concurrency = CASE WHEN q.overridden_at IS NULL THEN EXCLUDED.key_concurrency
                           ELSE q.key_concurrency END,
    rate_limit = CASE WHEN q.overridden_at IS NULL THEN EXCLUDED.rate_limit ELSE q.rate_limit END,
    rate_period_seconds = CASE WHEN q.overridden_at IS NULL THEN EXCLUDED.rate_period_seconds
                               ELSE q.rate_period_seconds END,
    updated_at = now()
 WHERE (q.code_concurrency, q.code_key_concurrency, q.code_rate_limit,
        q.code_rate_period_seconds, q.declared)
       IS DISTINCT FROM (EXCLUDED.code_concurrency, EXCLUDED.code_key_concurrency,
                         EXCLUDED.code_rate_limit, EXCLUDED.code_rate_period_seconds, true)
RETURNING pg_notify('pg_scheduler_jobs', '')
"""

# The queue's row, locked until the caller's transaction ends (a set reads, then writes).
QUEUE_LOCK = """
SELECT concurrency, key_concurrency, rate_limit, rate_period_seconds
  FROM scheduler_queues WHERE name = $1 FOR UPDATE
"""

# An operator's limits: in force, over the code's, until a reset. Creates the row if needed.
# $1 name, $2 concurrency, $3 key_concurrency, $4 rate_limit, $5 rate_period_seconds
QUEUE_SET_LIMITS = """
WITH written AS (
    INSERT INTO scheduler_queues AS q
        (name, concurrency, key_concurrency, rate_limit, rate_period_seconds, overridden_at)
    VALUES ($1, $2, $3, $4, $5, now())
    ON CONFLICT (name) DO UPDATE SET
        concurrency = EXCLUDED.concurrency, key_concurrency = EXCLUDED.key_concurrency,
        rate_limit = EXCLUDED.rate_limit, rate_period_seconds = EXCLUDED.rate_period_seconds,
        overridden_at = now(), updated_at = now()
    RETURNING name
)
SELECT name, pg_notify('pg_scheduler_jobs', '') FROM written
"""

# The time from which a hand-over may skip its count, for queues whose concurrency was set or
# lowered, or whose row is new ('infinity' until then: migration 9), of the queue $1 or of every
# queue (NULL): this statement begins after that change committed, so every claim that did not
# see the change started before it.
QUEUE_STAMP_CONCURRENCY = """
UPDATE scheduler_queues SET concurrency_since = clock_timestamp()
 WHERE concurrency_since = 'infinity' AND concurrency IS NOT NULL
   AND ($1::text IS NULL OR name = $1)
"""

# Back to the code's declaration (none, for a queue only an operator set). NULL: no such row.
QUEUE_RESET = """
WITH written AS (
    UPDATE scheduler_queues
       SET concurrency = code_concurrency, key_concurrency = code_key_concurrency,
           rate_limit = code_rate_limit, rate_period_seconds = code_rate_period_seconds,
           overridden_at = NULL, updated_at = now()
     WHERE name = $1
    RETURNING name
)
SELECT name, pg_notify('pg_scheduler_jobs', '') FROM written
"""

# Pause ($2 true) or resume ($2 false) a queue that has a row; NULL: no such row.
QUEUE_SET_PAUSED = """
WITH written AS (
    UPDATE scheduler_queues
       SET paused = $2, paused_at = CASE WHEN $2 THEN coalesce(paused_at, now()) END,
           updated_at = now()
     WHERE name = $1
    RETURNING name
)
SELECT name, CASE WHEN NOT $2 THEN pg_notify('pg_scheduler_jobs', '') END FROM written
"""

# Every queue with a row or with unfinished jobs, with its limits, state and counts: running
# (with a live lease), pending, due now, and the age of its oldest due job.
QUEUE_LIST = """
WITH counts AS (
    SELECT queue,
           count(*) FILTER (WHERE status = 'running' AND lease_until > now()) AS running,
           count(*) FILTER (WHERE status = 'pending') AS pending,
           count(*) FILTER (WHERE status = 'pending' AND execution_time <= now()) AS due,
           extract(epoch FROM now() - min(execution_time) FILTER (
               WHERE status = 'pending' AND execution_time <= now()))::float8 AS oldest_due_seconds
      FROM scheduled_jobs
     WHERE status IN ('pending', 'running')
     GROUP BY queue
)
SELECT coalesce(q.name, c.queue) AS name, q.name IS NOT NULL AS has_row,
       q.concurrency, q.key_concurrency, q.rate_limit, q.rate_period_seconds,
       coalesce(q.paused, false) AS paused, q.paused_at,
       q.code_concurrency, q.code_key_concurrency, q.code_rate_limit, q.code_rate_period_seconds,
       coalesce(q.declared, false) AS declared, q.overridden_at,
       coalesce(c.running, 0) AS running, coalesce(c.pending, 0) AS pending,
       coalesce(c.due, 0) AS due, c.oldest_due_seconds,
       (SELECT count(*) FROM scheduler_queue_starts AS s
         WHERE s.queue = q.name
           AND s.started_at > now() - make_interval(secs => q.rate_period_seconds)) AS recent_starts
  FROM scheduler_queues AS q
  FULL JOIN counts AS c ON c.queue = q.name
 ORDER BY 1
"""

# The queues with a row, their limits and pause, without counting their jobs (zeros in the
# count columns): what the dashboard still shows, and lets pause, when QUEUE_LIST's count of
# every unfinished job runs out of time on a very large backlog.
QUEUE_LIST_ROWS = """
SELECT q.name, true AS has_row,
       q.concurrency, q.key_concurrency, q.rate_limit, q.rate_period_seconds,
       q.paused, q.paused_at,
       q.code_concurrency, q.code_key_concurrency, q.code_rate_limit, q.code_rate_period_seconds,
       q.declared, q.overridden_at,
       0 AS running, 0 AS pending, 0 AS due, NULL::float8 AS oldest_due_seconds, 0 AS recent_starts
  FROM scheduler_queues AS q
 ORDER BY q.name
"""

# Live processes that claim jobs but predate queue limits: they would claim limited queues
# without their limits (status warns while any queue is limited). $1: seconds since a process's
# last heartbeat after which it counts as gone.
QUEUE_LIST_UNAWARE_WORKERS = """
SELECT worker_id, host, pid
  FROM scheduler_workers
 WHERE NOT enforces_limits AND kind <> 'supervisor'
   AND last_heartbeat > now() - make_interval(secs => $1)
   AND EXISTS (SELECT FROM scheduler_queues WHERE limited)
 ORDER BY worker_id
"""

# The leader's per-queue sample for the metrics: every queue with a row or unfinished jobs, its
# running jobs (live leases), pending and due jobs, the age of its oldest due job, its limits and
# pause, and the due jobs held back, by the first reason that holds them: the pause, the
# concurrency, the rate, or (for the rest) their key being at key_concurrency.
QUEUE_SAMPLE = """
WITH live AS (
    SELECT queue, concurrency_key AS k FROM scheduled_jobs
     WHERE status = 'running' AND lease_until > now()
), running AS (
    SELECT queue, count(*) AS n FROM live GROUP BY queue
), saturated AS (
    SELECT l.queue, l.k
      FROM live AS l JOIN scheduler_queues AS q ON q.name = l.queue
     WHERE l.k IS NOT NULL
     GROUP BY l.queue, l.k, q.key_concurrency
    HAVING count(*) >= q.key_concurrency
), pending AS (
    SELECT j.queue, count(*) AS n,
           count(*) FILTER (WHERE j.execution_time <= now()) AS due,
           count(*) FILTER (WHERE j.execution_time <= now()
                              AND (j.queue, j.concurrency_key) IN (SELECT queue, k FROM saturated))
               AS key_held,
           extract(epoch FROM now() - min(j.execution_time)
                   FILTER (WHERE j.execution_time <= now()))::float8 AS oldest
      FROM scheduled_jobs AS j
     WHERE j.status = 'pending'
     GROUP BY j.queue
), starts AS (
    SELECT s.queue, count(*) AS n
      FROM scheduler_queue_starts AS s JOIN scheduler_queues AS q ON q.name = s.queue
     WHERE s.started_at > now() - make_interval(secs => q.rate_period_seconds)
     GROUP BY s.queue
), names AS (
    SELECT name FROM scheduler_queues UNION SELECT queue FROM pending UNION SELECT queue FROM running
), sample AS (
    SELECT n.name AS queue, coalesce(r.n, 0) AS running, coalesce(p.n, 0) AS pending,
           coalesce(p.due, 0) AS due, coalesce(p.key_held, 0) AS key_held,
           coalesce(p.oldest, 0) AS oldest_due_age, q.concurrency, q.key_concurrency,
           q.rate_limit, q.rate_period_seconds, coalesce(q.paused, false) AS paused,
           coalesce(q.paused, false) AS held_by_pause,
           coalesce(r.n, 0) >= coalesce(q.concurrency, 2147483647) AS held_by_concurrency,
           coalesce(s.n, 0) >= coalesce(q.rate_limit, 2147483647) AS held_by_rate
      FROM names AS n
      LEFT JOIN scheduler_queues AS q ON q.name = n.name
      LEFT JOIN pending AS p ON p.queue = n.name
      LEFT JOIN running AS r ON r.queue = n.name
      LEFT JOIN starts AS s ON s.queue = n.name
)
SELECT queue, running, pending, due, oldest_due_age, concurrency, key_concurrency, rate_limit,
       rate_period_seconds, paused,
       CASE WHEN held_by_pause THEN due ELSE 0 END AS held_paused,
       CASE WHEN NOT held_by_pause AND held_by_concurrency THEN due ELSE 0 END AS held_concurrency,
       CASE WHEN NOT held_by_pause AND NOT held_by_concurrency AND held_by_rate THEN due ELSE 0 END
           AS held_rate,
       CASE WHEN held_by_pause OR held_by_concurrency OR held_by_rate THEN 0 ELSE key_held END
           AS held_key
  FROM sample
 ORDER BY queue
"""
