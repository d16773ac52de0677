"""Periodic jobs: definitions, overrides, the registrar's pass, manual triggers, overlap policy.

The registrar's pass covers windows, its cursor and the misfire policy; the overlap policy
applies at the end of a run."""

from __future__ import annotations

from datetime import datetime

import asyncpg

# Definitions are code: every process that imports them upserts them, touching the row only when
# something changed. ``enabled`` is cluster state: set on insert only. The code's schedule goes to
# code_*; it is also the schedule in force (every_seconds, cron, timezone) unless one was set from
# the CLI (overridden_at). A change of the schedule in force resets the window cursor so the new
# schedule starts at its next window, and cancels the windows already written ahead from the old
# one (else they still run, off the new grid). A change of queue moves the pending windows to
# the new queue.
# $1 dedup_key, $2 task_name, $3 job_name, $4 every_seconds, $5 cron, $6 timezone, $7 priority, $8 max_retries, $9 use_advisory_lock, $10 enabled, $11 on_dst_gap, $12 on_dst_fold, $13 misfire, $14 catch_up_seconds, $15 overlap, $16 queue  # noqa: E501
PERIODIC_UPSERT = """
WITH old AS (
    SELECT every_seconds, cron, timezone, overridden_at
      FROM scheduler_periodic WHERE dedup_key = $1
), dropped AS (
    UPDATE scheduled_jobs
       SET status = 'cancelled', finished_at = now(), error_message = 'periodic schedule changed'
     WHERE dedup_key = $1 AND status = 'pending' AND window_start IS NOT NULL
       AND EXISTS (SELECT 1 FROM old
                    WHERE old.overridden_at IS NULL
                      AND (old.every_seconds, old.cron, old.timezone)
                          IS DISTINCT FROM ($4::double precision, $5::text, $6::text))
    RETURNING job_id
), requeued AS (
    UPDATE scheduled_jobs SET queue = $16
     WHERE dedup_key = $1 AND status = 'pending' AND queue <> $16
       AND job_id NOT IN (SELECT job_id FROM dropped)
)
INSERT INTO scheduler_periodic AS p
    (dedup_key, task_name, job_name, every_seconds, cron, timezone, priority, max_retries,
     use_advisory_lock, enabled, on_dst_gap, on_dst_fold, misfire, catch_up_seconds, overlap,
     code_every_seconds, code_cron, code_timezone, queue)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $4, $5, $6, $16)
ON CONFLICT (dedup_key) DO UPDATE SET
    task_name = EXCLUDED.task_name, job_name = EXCLUDED.job_name,
    priority = EXCLUDED.priority, max_retries = EXCLUDED.max_retries,
    use_advisory_lock = EXCLUDED.use_advisory_lock,
    on_dst_gap = EXCLUDED.on_dst_gap, on_dst_fold = EXCLUDED.on_dst_fold,
    misfire = EXCLUDED.misfire, catch_up_seconds = EXCLUDED.catch_up_seconds,
    overlap = EXCLUDED.overlap, queue = EXCLUDED.queue,
    code_every_seconds = EXCLUDED.code_every_seconds, code_cron = EXCLUDED.code_cron,
    code_timezone = EXCLUDED.code_timezone,
    every_seconds = CASE WHEN p.overridden_at IS NULL THEN EXCLUDED.every_seconds
                         ELSE p.every_seconds END,
    cron = CASE WHEN p.overridden_at IS NULL THEN EXCLUDED.cron ELSE p.cron END,
    timezone = CASE WHEN p.overridden_at IS NULL THEN EXCLUDED.timezone ELSE p.timezone END,
    updated_at = now(),
    next_run_at = CASE WHEN p.overridden_at IS NULL
                            AND (p.every_seconds, p.cron, p.timezone)
                                IS DISTINCT FROM (EXCLUDED.every_seconds, EXCLUDED.cron,
                                                  EXCLUDED.timezone)
                       THEN NULL ELSE p.next_run_at END
WHERE (p.task_name, p.job_name, p.code_every_seconds, p.code_cron, p.code_timezone, p.priority,
       p.max_retries, p.use_advisory_lock, p.on_dst_gap, p.on_dst_fold, p.misfire,
       p.catch_up_seconds, p.overlap, p.queue)
      IS DISTINCT FROM
      (EXCLUDED.task_name, EXCLUDED.job_name, EXCLUDED.code_every_seconds, EXCLUDED.code_cron,
       EXCLUDED.code_timezone, EXCLUDED.priority, EXCLUDED.max_retries,
       EXCLUDED.use_advisory_lock, EXCLUDED.on_dst_gap, EXCLUDED.on_dst_fold, EXCLUDED.misfire,
       EXCLUDED.catch_up_seconds, EXCLUDED.overlap, EXCLUDED.queue)
"""


async def periodic_upsert(
    conn: asyncpg.Connection,
    *,
    dedup_key: str,
    task_name: str,
    job_name: str,
    every_seconds: float | None,
    cron: str | None,
    timezone: str | None,
    priority: int,
    max_retries: int,
    use_advisory_lock: bool,
    enabled: bool,
    on_dst_gap: str,
    on_dst_fold: str,
    misfire: str,
    catch_up_seconds: float | None,
    overlap: str,
    queue: str,
) -> str:
    """PERIODIC_UPSERT of one definition; returns the command status."""
    status: str = await conn.execute(
        PERIODIC_UPSERT,
        dedup_key,
        task_name,
        job_name,
        every_seconds,
        cron,
        timezone,
        priority,
        max_retries,
        use_advisory_lock,
        enabled,
        on_dst_gap,
        on_dst_fold,
        misfire,
        catch_up_seconds,
        overlap,
        queue,
    )
    return status


# ``pg-scheduler periodic set``: a schedule in force that survives restarts ($2 every seconds or
# $3 cron, $4 time zone; $5 false: back to the code's schedule). Like a code change, it restarts
# the window cursor and cancels the windows written ahead under the old schedule. Run after
# PERIODIC_LOCK in the same transaction.
# $1 dedup_key, $2 every_seconds, $3 cron, $4 timezone, $5 override
PERIODIC_SET_SCHEDULE = """
WITH changed AS (
    UPDATE scheduler_periodic
       SET every_seconds = CASE WHEN $5 THEN $2::double precision ELSE code_every_seconds END,
           cron          = CASE WHEN $5 THEN $3::text ELSE code_cron END,
           timezone      = CASE WHEN $5 THEN $4::text ELSE code_timezone END,
           overridden_at = CASE WHEN $5 THEN now() END,
           next_run_at = NULL, updated_at = now()
     WHERE dedup_key = $1
    RETURNING every_seconds, cron, timezone
), dropped AS (
    UPDATE scheduled_jobs
       SET status = 'cancelled', finished_at = now(), error_message = 'periodic schedule changed'
     WHERE dedup_key = $1 AND status = 'pending' AND window_start IS NOT NULL
       AND EXISTS (SELECT 1 FROM changed)
    RETURNING job_id
)
SELECT c.every_seconds, c.cron, c.timezone, (SELECT count(*) FROM dropped) AS dropped
  FROM changed AS c
"""

PERIODIC_LIST = "SELECT * FROM scheduler_periodic ORDER BY dedup_key"
# Locks the definitions for the pass: a disable or a schedule change (which lock the row first,
# see PERIODIC_LOCK) either waits for the pass to commit and then cancels its windows, or commits
# first and the pass re-reads the row (not enabled: skipped). Without it, a pass racing a disable
# would write windows the disable cannot see, and they would run.
PERIODIC_LIST_DUE = """
SELECT * FROM scheduler_periodic AS p
 WHERE enabled AND (next_run_at IS NULL OR next_run_at <= now() + make_interval(secs => $1))
   AND EXISTS (SELECT 1 FROM scheduler_workers AS w
                WHERE w.kind <> 'supervisor' AND p.task_name = ANY (w.tasks)
                  AND (w.queues IS NULL OR p.queue = ANY (w.queues)))
 ORDER BY dedup_key
   FOR NO KEY UPDATE OF p
"""
# Taken in its own statement before PERIODIC_SET_ENABLED / PERIODIC_UPSERT, in one transaction,
# so that their snapshot (READ COMMITTED: per statement) includes windows a registrar pass that
# held the row has just committed.
PERIODIC_LOCK = "SELECT 1 FROM scheduler_periodic WHERE dedup_key = $1 FOR NO KEY UPDATE"

# Last run and next pending window, for status: both read from the jobs table.
PERIODIC_GET_RUNS = """
SELECT
    (SELECT row_to_json(last) FROM (
         SELECT job_id, status, window_start, execution_time, started_at, finished_at,
                error_message, attempt
           FROM scheduled_jobs
          WHERE dedup_key = $1 AND status <> 'pending'
          ORDER BY coalesce(started_at, finished_at, execution_time) DESC
          LIMIT 1) AS last)::text AS last_run,
    (SELECT min(execution_time) FROM scheduled_jobs
      WHERE dedup_key = $1 AND status = 'pending') AS next_pending
"""


def _last_run(key: str) -> str:
    """The last run of the schedule ``key`` (an expression), as JSON text: the newest window
    that is not pending, by the (dedup_key, window_start) index read backwards, or a manual run
    (no window), whichever started last. It reads a few rows per schedule where
    PERIODIC_GET_RUNS reads every window the table keeps (20,160 a week for a schedule every
    30 s)."""
    return f"""
SELECT row_to_json(last)::text FROM (
    SELECT job_id, status, window_start, execution_time, started_at, finished_at, error_message,
           attempt
      FROM ((SELECT * FROM scheduled_jobs
              WHERE dedup_key = {key} AND window_start IS NOT NULL AND status <> 'pending'
              ORDER BY window_start DESC LIMIT 1)
            UNION ALL
            (SELECT * FROM scheduled_jobs
              WHERE dedup_key = {key} AND window_start IS NULL AND status <> 'pending'
              ORDER BY coalesce(started_at, finished_at, execution_time) DESC LIMIT 1)) AS runs
     ORDER BY coalesce(started_at, finished_at, execution_time) DESC
     LIMIT 1) AS last"""


# The last run of one schedule ($1).
PERIODIC_GET_LAST_RUN = _last_run("$1")
# Every schedule, as PERIODIC_LIST, with its last run (``last_run``), in one statement: the
# dashboard's page of every schedule, one round trip however many schedules there are.
PERIODIC_LIST_WITH_LAST_RUN = f"""
SELECT p.*, ({_last_run("p.dedup_key")}) AS last_run
  FROM scheduler_periodic AS p
 ORDER BY p.dedup_key
"""

PERIODIC_SET_ENABLED = """
WITH changed AS (
    UPDATE scheduler_periodic
       SET enabled = $2, updated_at = now(),
           next_run_at = CASE WHEN $2 AND NOT enabled THEN NULL ELSE next_run_at END
     WHERE dedup_key = $1
    RETURNING dedup_key
), dropped AS (
    UPDATE scheduled_jobs
       SET status = 'cancelled', finished_at = now(), error_message = 'periodic job disabled'
     WHERE NOT $2 AND dedup_key = $1 AND status = 'pending' AND window_start IS NOT NULL
    RETURNING job_id
)
SELECT (SELECT count(*) FROM changed) AS changed, (SELECT count(*) FROM dropped) AS dropped
"""

# One row per window: the unique (dedup_key, window_start) key makes a second insert of the same
# window a no-op, whoever tries it. A window written late (coalesced after downtime) is due now:
# misfire is judged against the due time. A window that a disable or a schedule change cancelled
# before it came is written again (pending) when the job is re-enabled or the schedule wants it:
# else the cancelled rows would block the windows for up to the lookahead after an enable.
# $1 dedup_key, $2 task_name, $3 priority, $4 max_retries, $5 misfire_grace_time, $6 use_advisory_lock, $7 windows, $8 overlap, $9 queue  # noqa: E501
PERIODIC_ENQUEUE = """
INSERT INTO scheduled_jobs AS j
    (job_id, job_name, execution_time, task_data, priority, max_retries, misfire_grace_time,
     dedup_key, window_start, use_advisory_lock, overlap, queue)
SELECT 'periodic:' || $1 || ':' || (extract(epoch FROM w) * 1000)::bigint,
       $2, greatest(w, now()), '{"args": [], "kwargs": {}}'::jsonb, $3, $4, $5, $1, w, $6, $8, $9
  FROM unnest($7::timestamptz[]) AS w
ON CONFLICT (dedup_key, window_start) WHERE dedup_key IS NOT NULL DO UPDATE SET
    status = 'pending', job_name = EXCLUDED.job_name, execution_time = EXCLUDED.execution_time,
    priority = EXCLUDED.priority, max_retries = EXCLUDED.max_retries,
    misfire_grace_time = EXCLUDED.misfire_grace_time,
    use_advisory_lock = EXCLUDED.use_advisory_lock, overlap = EXCLUDED.overlap,
    queue = EXCLUDED.queue, finished_at = NULL, error_message = NULL
 WHERE j.status = 'cancelled' AND j.started_at IS NULL
   AND j.error_message IN ('periodic job disabled', 'periodic schedule changed')
RETURNING job_id
"""


async def periodic_enqueue(
    conn: asyncpg.Connection,
    *,
    dedup_key: str,
    task_name: str,
    priority: int,
    max_retries: int,
    misfire_grace_time: float | None,
    use_advisory_lock: bool,
    windows: list[datetime],
    overlap: str,
    queue: str,
) -> list[asyncpg.Record]:
    """PERIODIC_ENQUEUE of one job's ``windows``; returns the job_id of each window written."""
    rows: list[asyncpg.Record] = await conn.fetch(
        PERIODIC_ENQUEUE,
        dedup_key,
        task_name,
        priority,
        max_retries,
        misfire_grace_time,
        use_advisory_lock,
        windows,
        overlap,
        queue,
    )
    return rows


# $1 dedup_key, $2 next_run_at, $3 last_window
PERIODIC_ADVANCE = """
UPDATE scheduler_periodic SET next_run_at = $2, last_window = coalesce($3, last_window)
 WHERE dedup_key = $1
"""

# Each registrar pass stamps its clock ($1, or the transaction's now() when NULL: the pass's
# clock, returned) and its term (the fence's pg_scheduler.epoch; NULL outside leadership) and
# reads the previous pass's, in its fenced transaction: a leaderless gap lies between two passes
# only if their terms differ (the same leader, passing late, never stopped).
# $1 pass_at
PERIODIC_STAMP_PASS = """
WITH previous AS (SELECT pass_at, epoch FROM scheduler_periodic_pass)
UPDATE scheduler_periodic_pass
   SET pass_at = coalesce($1::timestamptz, now()),
       epoch = nullif(current_setting('pg_scheduler.epoch', true), '')::bigint
RETURNING pass_at, (SELECT pass_at FROM previous) AS previous_pass_at,
          (SELECT epoch FROM previous) AS previous_epoch, epoch
"""

# After a leaderless gap: the written-ahead windows that passed during it ($1 the last pass before
# the gap, $2 the latest start that is missed rather than late, $3 the pass's clock) follow each
# job's misfire policy. Only untouched rows are missed windows: pending, due at their own start,
# never claimed. 'skip' cancels them. 'coalesce' keeps only the newest, due now, and only if no
# other window of the job runs for them: the registrar writes none up to now itself (its cursor is
# past now) and no row of a window in the last tolerance before now (only late, not missed) is
# left to run; otherwise that window is the one run and every missed one is cancelled. 'all'
# keeps each, due now, unless it started before catch_up (counted back from $2, as the
# registrar counts the windows it writes late). What is kept is re-dated, so the claims' wait
# (_NOT_AWAITING_MISFIRE) ends for it and the misfire grace judges it from now, as it does the
# missed windows written late.
# $1 previous_pass_at, $2 missed_before, $3 pass_at
PERIODIC_RULE_MISSED = """
WITH missed AS (
    SELECT j.job_id, p.misfire,
           CASE WHEN p.misfire = 'skip' THEN 'skipped'
                WHEN p.misfire = 'all' THEN
                     CASE WHEN j.window_start
                               < $2::timestamptz - make_interval(secs => p.catch_up_seconds)
                          THEN 'skipped' ELSE 'run' END
                WHEN coalesce(p.next_run_at, 'infinity') > $3::timestamptz
                     AND j.window_start = max(j.window_start) OVER (PARTITION BY j.dedup_key)
                     AND NOT EXISTS (SELECT 1 FROM scheduled_jobs AS n
                                      WHERE n.dedup_key = j.dedup_key AND n.status <> 'cancelled'
                                        AND n.window_start > $2::timestamptz
                                        AND n.window_start <= $3::timestamptz)
                     THEN 'run'
                ELSE 'coalesced' END AS outcome
      FROM scheduled_jobs AS j
      JOIN scheduler_periodic AS p ON p.dedup_key = j.dedup_key
     WHERE j.status = 'pending' AND j.attempt = 0 AND j.execution_time = j.window_start
       AND j.window_start > $1::timestamptz AND j.window_start <= $2::timestamptz
), ruled AS (
    UPDATE scheduled_jobs AS j
       SET status         = CASE WHEN m.outcome = 'run' THEN 'pending' ELSE 'cancelled' END,
           execution_time = CASE WHEN m.outcome = 'run' THEN now() ELSE j.execution_time END,
           finished_at    = CASE WHEN m.outcome = 'run' THEN NULL ELSE now() END,
           error_message  = CASE WHEN m.outcome = 'run' THEN j.error_message
                                 ELSE format('%s (misfire=%s): the window passed while no leader ran',
                                             m.outcome, m.misfire) END
      FROM missed AS m
     WHERE j.job_id = m.job_id AND j.status = 'pending'
    RETURNING j.dedup_key, j.window_start, m.outcome
)
SELECT dedup_key, window_start, outcome FROM ruled ORDER BY dedup_key, window_start
"""

# A manual run keeps the job's overlap policy: with skip or queue it waits for a running run and
# then runs (it is never skipped: someone asked for it), and never overlaps one.
PERIODIC_TRIGGER = """
INSERT INTO scheduled_jobs
    (job_id, job_name, execution_time, task_data, priority, max_retries, dedup_key,
     use_advisory_lock, overlap, queue)
SELECT $2, task_name, now(), '{"args": [], "kwargs": {}}'::jsonb, priority, max_retries,
       dedup_key, use_advisory_lock, overlap, queue
  FROM scheduler_periodic WHERE dedup_key = $1
RETURNING job_id
"""

# A run of a periodic job with overlap 'skip' or 'queue' is ending ($1 its dedup key, $2 its job
# id; run before its outcome is written, while its row still blocks claims). The windows that
# came due while it ran were held back by _NOT_BLOCKED: regular windows (due at their own start;
# catch-up rows written late after downtime run one after another instead) that started after
# the run's own window, or after it started for a manual trigger. 'skip' cancels them all;
# 'queue' keeps the first, due now (it waited on purpose: misfire must not expire it), and
# cancels the rest. The worker sends JOB_NOTIFY once the outcome is written, for what is left.
PERIODIC_SETTLE_OVERLAP = """
WITH ending AS (
    SELECT coalesce(window_start, started_at) AS since FROM scheduled_jobs WHERE job_id = $2
), waiting AS (
    SELECT j.job_id, row_number() OVER (ORDER BY j.window_start) AS n
      FROM scheduled_jobs AS j, ending AS e
     WHERE j.dedup_key = $1 AND j.job_id <> $2 AND j.status = 'pending'
       AND j.overlap IN ('skip', 'queue') AND j.window_start IS NOT NULL
       AND j.execution_time = j.window_start
       AND j.window_start > e.since AND j.window_start <= now()
), settled AS (
    UPDATE scheduled_jobs AS j
       SET status        = CASE WHEN j.overlap = 'skip' OR w.n > 1 THEN 'cancelled' ELSE 'pending' END,
           finished_at   = CASE WHEN j.overlap = 'skip' OR w.n > 1 THEN now() END,
           execution_time = CASE WHEN j.overlap = 'skip' OR w.n > 1 THEN j.execution_time
                                 ELSE now() END,
           error_message = CASE WHEN j.overlap = 'skip' OR w.n > 1
                                THEN format('skipped (overlap=%s): due while the run %s was running',
                                            j.overlap, $2::text) END
      FROM waiting AS w
     WHERE j.job_id = w.job_id AND j.status = 'pending'
    RETURNING j.job_id, j.status
)
SELECT count(*) FILTER (WHERE status = 'cancelled') AS skipped FROM settled
"""
