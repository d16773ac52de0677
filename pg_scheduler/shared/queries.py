"""Every SQL statement pg_scheduler runs, by name. No SQL lives anywhere else.

All values are bind parameters; the literals are a claim's LIMIT bound, an int the code derives
from its free slots (``claim_bound``), and the fixed :data:`MISSED_AFTER_SECONDS`, never input.
Times come from the database clock (``now()``), never from the application host, so clock skew
between pods cannot shift a lease, a misfire or a window.
Names are ``<ENTITY>_<VERB>``.
"""

from __future__ import annotations

import functools

# --------------------------------------------------------------------------- schema

MIGRATIONS_CREATE = """
CREATE TABLE IF NOT EXISTS scheduler_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
MIGRATIONS_LOCK = "SELECT pg_advisory_xact_lock($1, $2)"
MIGRATIONS_APPLIED = "SELECT version FROM scheduler_migrations"
MIGRATIONS_RECORD = "INSERT INTO scheduler_migrations (version, name) VALUES ($1, $2)"
MIGRATIONS_CURRENT = "SELECT coalesce(max(version), 0) FROM scheduler_migrations"

# --------------------------------------------------------------------------- producing jobs

JOBS_TABLE = "scheduled_jobs"
# The columns a producer writes, in JOB_INSERT's parameter order (also schedule_bulk's COPY).
JOB_COPY_COLUMNS = ("job_id", "job_name", "execution_time", "task_data", "priority", "max_retries",
                    "misfire_grace_time", "timeout_seconds")

_JOB_INSERT_COLUMNS = f"({', '.join(JOB_COPY_COLUMNS)})"

JOB_INSERT = f"""
INSERT INTO scheduled_jobs {_JOB_INSERT_COLUMNS}
VALUES (coalesce($1, gen_random_uuid()::text), $2, $3, $4::jsonb, $5, $6, $7, $8)
ON CONFLICT (job_id) DO NOTHING
RETURNING job_id
"""

_JOB_REPLACE_SET = """
    job_name = EXCLUDED.job_name, execution_time = EXCLUDED.execution_time,
    task_data = EXCLUDED.task_data, priority = EXCLUDED.priority,
    max_retries = EXCLUDED.max_retries, misfire_grace_time = EXCLUDED.misfire_grace_time,
    timeout_seconds = EXCLUDED.timeout_seconds, status = 'pending', retry_count = 0,
    worker_id = NULL, lease_until = NULL, last_heartbeat = NULL, error_message = NULL,
    started_at = NULL, finished_at = NULL"""

# REPLACE resets the row to a fresh pending job. ``attempt`` is kept: it only grows, so a run of
# the replaced job still in flight is fenced out and its completion refused.
JOB_UPSERT = f"""
INSERT INTO scheduled_jobs {_JOB_INSERT_COLUMNS}
VALUES (coalesce($1, gen_random_uuid()::text), $2, $3, $4::jsonb, $5, $6, $7, $8)
ON CONFLICT (job_id) DO UPDATE SET {_JOB_REPLACE_SET}
RETURNING job_id
"""

_JOB_BULK_ROWS = """
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::int[],
                     $6::int[], $7::float8[], $8::float8[])
    AS b(job_id, job_name, execution_time, task_data, priority, max_retries,
         misfire_grace_time, timeout_seconds)
"""

JOB_INSERT_BULK = f"""
INSERT INTO scheduled_jobs {_JOB_INSERT_COLUMNS}
SELECT job_id, job_name, execution_time, task_data::jsonb, priority, max_retries,
       misfire_grace_time, timeout_seconds
FROM ({_JOB_BULK_ROWS}) AS rows
ON CONFLICT (job_id) DO NOTHING
RETURNING job_id
"""

JOB_UPSERT_BULK = f"""
INSERT INTO scheduled_jobs {_JOB_INSERT_COLUMNS}
SELECT job_id, job_name, execution_time, task_data::jsonb, priority, max_retries,
       misfire_grace_time, timeout_seconds
FROM ({_JOB_BULK_ROWS}) AS rows
ON CONFLICT (job_id) DO UPDATE SET {_JOB_REPLACE_SET}
RETURNING job_id
"""

# What the planner believes the jobs table holds (-1: never analyzed), and the refresh.
JOBS_PLANNER_ROWS = "SELECT reltuples FROM pg_class WHERE oid = 'scheduled_jobs'::regclass"
# The refresh only has to tell the planner that many rows are pending now; a sample of 3,000 rows
# (statistics target 10) does, where the default 30,000 read a whole 20,000-row burst: 5 ms
# instead of 14-18, a tenth of schedule_bulk's time for such a burst. Autovacuum's next ANALYZE
# replaces these coarser statistics. Run inside the insert's transaction, which the SET LOCAL
# ends with.
JOBS_ANALYZE = """SET LOCAL default_statistics_target = 10;
ANALYZE scheduled_jobs (status, job_name, priority, execution_time)"""

JOB_GET = "SELECT * FROM scheduled_jobs WHERE job_id = $1"
JOB_STATUS = "SELECT status FROM scheduled_jobs WHERE job_id = $1"

# Cancelling a running job also tells its worker, which cancels the coroutine at once.
JOB_CANCEL = """
WITH cancelled AS (
    UPDATE scheduled_jobs
       SET status = 'cancelled', finished_at = now(), lease_until = NULL,
           error_message = coalesce($2, 'cancelled')
     WHERE job_id = $1 AND status IN ('pending', 'running')
    RETURNING job_id
)
SELECT pg_notify('pg_scheduler_cancel', job_id) FROM cancelled
"""

# --------------------------------------------------------------------------- workers: claiming

# Next due time per task name this worker can run: one index probe per name, never a scan.
# A window of a periodic job with overlap 'skip' or 'queue' waits while a run of that job runs
# (see PERIODIC_SETTLE_OVERLAP for what happens to it then); anything else is claimable.
_NOT_BLOCKED = """
(j.overlap IS NULL OR j.overlap = 'allow'
 OR NOT EXISTS (SELECT 1 FROM scheduled_jobs AS r
                 WHERE r.dedup_key = j.dedup_key AND r.status = 'running'))
"""

MISSED_AFTER_SECONDS = 1.0
"""A periodic window picked up (or written) later than this after its start is a missed window
when no leader ran at its time; earlier, it was only picked up late and runs as usual."""

# A window row written ahead (due at its own start) that is later than the pickup tolerance and
# whose start lies after the registrar's last pass may have passed while no leader ran: it waits
# until a leader's pass has applied the job's misfire policy to it (PERIODIC_RULE_MISSED), which
# re-dates what it keeps and stamps a new pass. While a leader passes every second or so, no row
# waits longer than one pass. Rows of one-off jobs are let through by the first test.
_NOT_AWAITING_MISFIRE = f"""
(j.window_start IS NULL OR j.execution_time <> j.window_start
 OR j.window_start >= now() - interval '{MISSED_AFTER_SECONDS:g} seconds'
 OR j.window_start <= coalesce((SELECT pass_at FROM scheduler_periodic_pass), 'infinity'))
"""

JOB_NEXT_DUE = f"""
SELECT extract(epoch FROM min(due.execution_time) - now())::float8
FROM unnest($1::text[]) AS t(name)
CROSS JOIN LATERAL (
    SELECT execution_time FROM scheduled_jobs AS j
     WHERE status = 'pending' AND job_name = t.name AND {_NOT_BLOCKED}
       AND {_NOT_AWAITING_MISFIRE}
     ORDER BY execution_time
     LIMIT 1
) AS due
"""

DB_NOW = "SELECT now()"

# Claim up to $2 due jobs of the names $1, priority first, then due time. A row whose lateness
# (claim time minus due time) exceeds its misfire grace (plus the pickup tolerance $5) is marked
# expired instead of run: misfire is judged against the due time, on the database clock.
#
# The rows are found again by ctid (a TID scan: the row versions just locked cannot move before
# this statement updates them). A join on job_id let PostgreSQL's generic plan (which asyncpg's
# prepared statements get after five runs) guess LIMIT $2 at a tenth of the table, hash-join and
# scan the whole table at every claim: the drain spent 49 CPU-seconds of PostgreSQL on 60,000
# jobs. A TID scan is chosen whatever the guess at the limit (on a table of a few pages, a
# sequential scan may be: worker/plans.py re-plans as the table grows).
#
# The rows are picked under a literal LIMIT (``bound``, the power of two at or above the limit)
# and the parameter $2 then cuts them to the free slots; LockRows locks only the rows the outer
# LIMIT pulls. With the bare LIMIT $2, the generic plan's guess made it look dearer than a custom
# one, so PostgreSQL planned the statement afresh at every execution: about a third of the
# database's CPU per job in a drain (bench/sqlcost.py). With a literal bound the two cost the
# same and the generic plan is kept after five executions; a handful of bounds keeps the
# statements few in asyncpg's statement cache.
def claim_bound(limit: int) -> int:
    """The literal inner LIMIT of a claim of ``limit`` rows: the power of two at or above it."""
    if type(limit) is not int or limit < 1:
        raise ValueError(f"claim limit must be a positive int, got {limit!r}")
    return 1 << (limit - 1).bit_length()


def _claim(names: str, limit: str, bound: int, worker: str, lease: str, tolerance: str) -> str:
    """The claim UPDATE, over the given parameter placeholders (it is also a CTE of
    JOB_COMPLETE_AND_CLAIM). job_id and attempt come first in RETURNING: that statement's
    UNION pads the rest."""
    # Inline in each CASE, not computed once in a sub-SELECT: a sub-SELECT is a SubPlan run per
    # row, about a tenth of the statement's cost (bench/sqlcost.py); the test itself is one null
    # check for the many rows without a misfire grace.
    m = f"""(j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + {tolerance}))"""
    return f"""
UPDATE scheduled_jobs AS j SET
    (status, attempt, worker_id, lease_until, last_heartbeat, started_at, finished_at, error_message) =
    ROW(CASE WHEN {m} THEN 'expired' ELSE 'running' END,
        CASE WHEN {m} THEN j.attempt ELSE j.attempt + 1 END,
        CASE WHEN {m} THEN NULL ELSE {worker} END,
        CASE WHEN {m} THEN NULL ELSE now() + make_interval(secs => {lease}) END,
        CASE WHEN {m} THEN j.last_heartbeat ELSE now() END,
        CASE WHEN {m} THEN j.started_at ELSE now() END,
        CASE WHEN {m} THEN now() ELSE NULL END,
        CASE WHEN {m}
             THEN format('misfired: %s s late, misfire grace is %s s',
                         round(extract(epoch FROM now() - j.execution_time)::numeric, 3),
                         j.misfire_grace_time)
             ELSE j.error_message END)
 WHERE j.ctid = ANY (ARRAY(
           SELECT ctid FROM (
               SELECT ctid FROM scheduled_jobs AS j
                WHERE status = 'pending' AND execution_time <= now()
                  AND job_name = ANY({names}::text[]) AND {_NOT_BLOCKED}
                  AND {_NOT_AWAITING_MISFIRE}
                ORDER BY priority, execution_time
                LIMIT {bound:d}
                  FOR UPDATE SKIP LOCKED) AS due
            LIMIT {limit}))
RETURNING j.job_id, j.attempt, j.job_name, j.task_data, j.status, j.execution_time, j.started_at,
          j.timeout_seconds, j.retry_count, j.max_retries, j.use_advisory_lock, j.dedup_key,
          j.window_start, j.priority, j.overlap,
          extract(epoch FROM now() - j.execution_time)::float8 AS lag_seconds,
          extract(epoch FROM now() - j.window_start)::float8 AS window_lag_seconds
"""


@functools.lru_cache(maxsize=256)
def replanned(sql: str, generation: int) -> str:
    """``sql`` as a distinct statement for each plan ``generation`` (worker/plans.py): a new text
    is a new prepared statement, planned afresh. The comment changes nothing else (and
    pg_stat_statements, which ignores comments, counts the generations as one statement)."""
    return f"/* plan generation {generation:d} */ {sql}"


def job_claim(limit: int) -> str:
    """The claim of up to $2 rows, for a $2 of ``limit``; $1 names, $3 worker, $4 lease seconds,
    $5 misfire tolerance. One statement per claim_bound, shared by the limits under it."""
    return _job_claim(claim_bound(limit))


@functools.cache
def _job_claim(bound: int) -> str:
    return _claim("$1", "$2", bound, "$3", "$4", "$5")

# --------------------------------------------------------------------------- workers: running

# Renew the leases of the jobs this worker runs, fenced by (job, worker, attempt). A job missing
# from the result lost its lease (rescued, cancelled, replaced): the worker stops running it.
# Rows are locked in job_id order here and in JOB_COMPLETE_MANY: the heartbeat and the batched
# completion of one worker update overlapping sets of rows from two connections, and two
# multi-row updates that lock in different orders can deadlock.
#
# Driven by the arrays: each (job_id, attempt) is one primary-key probe, locked in the order of
# the sorted arrays, and only then checked for this worker and ``running`` (on the version
# locked). Joined the other way, the generic plan (statistics taken while no row runs guess one
# running row per worker) scanned the worker's running rows and, for each, every array element:
# n x n comparisons, 1.7 of a 100-job statement's 3.4 ms (bench/sqlcost.py: 32 -> 22 us of
# PostgreSQL CPU per job at 100). Neither the worker nor the status is in the locking
# sub-select, so no index but the primary key can serve it.
def _lock_my_runs(ids: str, attempts: str) -> str:
    """Lock this worker's ($1) running rows named by the (job_id, attempt) arrays, in job_id
    order."""
    return f"""
WITH mine AS (
    SELECT j.job_id
      FROM (SELECT * FROM unnest({ids}::text[], {attempts}::int[]) AS r(job_id, attempt)
             ORDER BY job_id) AS r
     CROSS JOIN LATERAL (
           SELECT j.job_id, j.worker_id, j.status FROM scheduled_jobs AS j
            WHERE j.job_id = r.job_id AND j.attempt = r.attempt
           OFFSET 0
              FOR UPDATE) AS j
     WHERE j.worker_id = $1 AND j.status = 'running'
)"""


JOB_RENEW_LEASES = _lock_my_runs("$3", "$4") + """
UPDATE scheduled_jobs AS j
   SET lease_until = now() + make_interval(secs => $2), last_heartbeat = now()
  FROM mine
 WHERE j.job_id = mine.job_id
RETURNING j.job_id
"""

# Completions of one worker in one statement (worker/completer.py), each fenced by
# (job, worker, attempt) and ``running``; the rows returned are the completions that landed.
_COMPLETE_MINE = """
UPDATE scheduled_jobs AS j
   SET status = 'completed', finished_at = now(), lease_until = NULL, error_message = NULL
  FROM mine
 WHERE j.job_id = mine.job_id
RETURNING j.job_id, j.attempt
"""
JOB_COMPLETE_MANY = _lock_my_runs("$2", "$3") + _COMPLETE_MINE

# A busy worker's completions and the claim that refills the slots they free, in one statement:
# one round trip and one commit where there were two (the commit, WAL flush included, is most of
# what a small statement costs PostgreSQL). $1 worker, $2/$3 the completions' (job_id, attempt),
# $4 names, $5 limit, $6 lease seconds, $7 misfire tolerance. Rows with ``claimed`` false are
# the completions that were refused by the fence (job_id and attempt only; usually none, so the
# reply carries the claimed rows alone); the others are claimed jobs, as job_claim returns them.
# Both updates see the statement's snapshot, so they touch disjoint rows
# (running ones and pending ones), and the claim's SKIP LOCKED never waits on the completion's
# locks. A held-back window of a skip/queue job whose run completes here is claimable only from
# the next statement on, as it would be after a separate completion.
def job_complete_and_claim(limit: int) -> str:
    """The statement above, for a claim limit $5 of ``limit`` (one per claim_bound)."""
    return _job_complete_and_claim(claim_bound(limit))


@functools.cache
def _job_complete_and_claim(bound: int) -> str:
    return _lock_my_runs("$2", "$3") + f""",
done AS ({_COMPLETE_MINE}),
claimed AS ({_claim("$4", "$5", bound, "$1", "$6", "$7")})
SELECT true AS claimed, * FROM claimed
UNION ALL
SELECT false, r.job_id, r.attempt, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL
  FROM unnest($2::text[], $3::int[]) AS r(job_id, attempt)
 WHERE NOT EXISTS (SELECT FROM done WHERE done.job_id = r.job_id AND done.attempt = r.attempt)
"""

# Exponential backoff with equal jitter, in SQL so that worker and rescuer share one formula:
# min(base * 2^retry_count, max), then uniformly within [delay/2, delay] when jitter is on.
_RETRY_DELAY = """
make_interval(secs => least($4::float8 * power(2, least(j.retry_count, 60)), $5::float8)
                      * CASE WHEN $6::bool THEN 0.5 + random() * 0.5 ELSE 1 END)
"""

# A failed attempt: retry later while retries remain, else final ``failed``. Fenced.
JOB_FAIL = f"""
UPDATE scheduled_jobs AS j SET
    status         = CASE WHEN j.retry_count < j.max_retries THEN 'pending' ELSE 'failed' END,
    retry_count    = CASE WHEN j.retry_count < j.max_retries THEN j.retry_count + 1
                          ELSE j.retry_count END,
    execution_time = CASE WHEN j.retry_count < j.max_retries THEN now() + {_RETRY_DELAY}
                          ELSE j.execution_time END,
    worker_id      = CASE WHEN j.retry_count < j.max_retries THEN NULL ELSE j.worker_id END,
    finished_at    = CASE WHEN j.retry_count < j.max_retries THEN NULL ELSE now() END,
    lease_until    = NULL,
    error_message  = left($7, 4000)
 WHERE j.job_id = $1 AND j.worker_id = $2 AND j.attempt = $3 AND j.status = 'running'
RETURNING j.status, j.retry_count, j.execution_time
"""

# Give jobs back at shutdown (or when an exclusive lock is busy): pending again, due at
# $4 seconds from now, no retry consumed. Fenced by (job, worker, attempt).
JOB_RELEASE = """
WITH released AS (
    UPDATE scheduled_jobs AS j
       SET status = 'pending', worker_id = NULL, lease_until = NULL,
           execution_time = now() + make_interval(secs => $4), error_message = $5
      FROM unnest($2::text[], $3::int[]) AS r(job_id, attempt)
     WHERE j.job_id = r.job_id AND j.attempt = r.attempt AND j.worker_id = $1
       AND j.status = 'running'
    RETURNING j.job_id
)
-- Wake idle workers only for jobs due now; a later one is found by their next-due timers.
SELECT job_id, CASE WHEN $4 <= 0 THEN pg_notify('pg_scheduler_jobs', '') END FROM released
"""

# A run of a periodic job with overlap 'skip' or 'queue' is ending ($1 its dedup key, $2 its job
# id; run before its outcome is written, while its row still blocks claims). The windows that
# came due while it ran were held back by _NOT_BLOCKED: regular windows (due at their own start;
# catch-up rows written late after downtime run one after another instead) that started after
# the run's own window, or after it started for a manual trigger. 'skip' cancels them all;
# 'queue' keeps the first, due now (it waited on purpose: misfire must not expire it), and
# cancels the rest. The worker sends JOBS_NOTIFY once the outcome is written, for what is left.
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
     WHERE j.job_id = w.job_id
    RETURNING j.job_id, j.status
)
SELECT count(*) FILTER (WHERE status = 'cancelled') AS skipped FROM settled
"""

# A window claimed while another run of its job ran anyway (two workers claimed two windows in the
# same instant; the advisory lock caught it): overlap 'skip' ends it unrun. Fenced like the rest.
JOB_SKIP = """
UPDATE scheduled_jobs
   SET status = 'cancelled', finished_at = now(), lease_until = NULL, error_message = $4
 WHERE job_id = $1 AND worker_id = $2 AND attempt = $3 AND status = 'running'
"""

JOBS_NOTIFY = "SELECT pg_notify('pg_scheduler_jobs', '')"

# use_advisory_lock jobs hold this on a connection kept for the whole run.
EXCLUSIVE_TRY_LOCK = "SELECT pg_try_advisory_lock($1, $2)"
EXCLUSIVE_UNLOCK = "SELECT pg_advisory_unlock($1, $2)"

# --------------------------------------------------------------------------- worker registry

WORKER_REGISTER = """
INSERT INTO scheduler_workers (worker_id, kind, host, pid, tasks, supervisor_id)
VALUES ($1, $2, $3, $4, $5::text[], $6)
ON CONFLICT (worker_id) DO UPDATE
   SET last_heartbeat = now(), tasks = EXCLUDED.tasks
"""
WORKER_HEARTBEAT = "UPDATE scheduler_workers SET last_heartbeat = now() WHERE worker_id = $1"
WORKER_DEREGISTER = "DELETE FROM scheduler_workers WHERE worker_id = $1"
# The readiness probe of a supervisor ($1): its worker processes that registered and beat lately.
WORKERS_LIVE_OF_SUPERVISOR = """
SELECT count(*) FROM scheduler_workers
 WHERE supervisor_id = $1 AND kind = 'worker'
   AND last_heartbeat > now() - make_interval(secs => $2)
"""

# --------------------------------------------------------------------------- leadership

LEADER_TRY_LOCK = "SELECT pg_try_advisory_lock($1, $2)"
LEADER_BUMP_EPOCH = """
UPDATE scheduler_leader
   SET epoch = epoch + 1, leader_id = $1, host = $2, pid = $3, elected_at = now()
RETURNING epoch
"""
# Leadership is checked, never renewed by locking again (session advisory locks stack).
LEADER_CHECK = """
SELECT EXISTS (
           SELECT 1 FROM pg_locks
            WHERE locktype = 'advisory' AND database = (
                      SELECT oid FROM pg_database WHERE datname = current_database())
              AND classid = $1::int8::oid AND objid = $2::int8::oid AND objsubid = 2
              AND pid = pg_backend_pid() AND granted)
       AND (SELECT epoch FROM scheduler_leader) = $3
"""
LEADER_RESIGN = "SELECT pg_advisory_unlock($1, $2), pg_notify('pg_scheduler_leadership', 'resigned')"
# Every leader transaction starts here: a new leader's epoch bump waits for it, and after the
# bump the old epoch matches no row, so a deposed leader's writes fail.
SET_LOCAL_STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', $1, true)"
# set_config: the transaction carries its epoch, so a trigger or an audit can tell which term
# wrote what (the chaos suite checks that no two terms ever acted at once).
LEADER_FENCE = """
SELECT set_config('pg_scheduler.epoch', epoch::text, true)
  FROM scheduler_leader WHERE epoch = $1 FOR SHARE
"""

# --------------------------------------------------------------------------- orphan rescue

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
# worker can be pruned as stale a moment before a lease it renewed since runs out (the chaos
# suite caught a rescue 0.5 s early, with the worker alive, only frozen). Rows with no lease at
# all (written by 0.2.3) fall back to the registry.
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

# --------------------------------------------------------------------------- periodic

# Definitions are code: every process that imports them upserts them, touching the row only when
# something changed. ``enabled`` is cluster state: set on insert only. The code's schedule goes to
# code_*; it is also the schedule in force (every_seconds, cron, timezone) unless one was set from
# the CLI (overridden_at). A change of the schedule in force resets the window cursor so the new
# schedule starts at its next window, and cancels the windows already written ahead from the old
# one (else they still run, off the new grid).
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
)
INSERT INTO scheduler_periodic AS p
    (dedup_key, task_name, job_name, every_seconds, cron, timezone, priority, max_retries,
     use_advisory_lock, enabled, on_dst_gap, on_dst_fold, misfire, catch_up_seconds, overlap,
     code_every_seconds, code_cron, code_timezone)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $4, $5, $6)
ON CONFLICT (dedup_key) DO UPDATE SET
    task_name = EXCLUDED.task_name, job_name = EXCLUDED.job_name,
    priority = EXCLUDED.priority, max_retries = EXCLUDED.max_retries,
    use_advisory_lock = EXCLUDED.use_advisory_lock,
    on_dst_gap = EXCLUDED.on_dst_gap, on_dst_fold = EXCLUDED.on_dst_fold,
    misfire = EXCLUDED.misfire, catch_up_seconds = EXCLUDED.catch_up_seconds,
    overlap = EXCLUDED.overlap,
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
       p.catch_up_seconds, p.overlap)
      IS DISTINCT FROM
      (EXCLUDED.task_name, EXCLUDED.job_name, EXCLUDED.code_every_seconds, EXCLUDED.code_cron,
       EXCLUDED.code_timezone, EXCLUDED.priority, EXCLUDED.max_retries,
       EXCLUDED.use_advisory_lock, EXCLUDED.on_dst_gap, EXCLUDED.on_dst_fold, EXCLUDED.misfire,
       EXCLUDED.catch_up_seconds, EXCLUDED.overlap)
"""

# ``pg-scheduler periodic set``: a schedule in force that survives restarts ($2 every seconds or
# $3 cron, $4 time zone; $5 false: back to the code's schedule). Like a code change, it restarts
# the window cursor and cancels the windows written ahead under the old schedule. Run after
# PERIODIC_LOCK in the same transaction.
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
# first and the pass re-reads the row (not enabled: skipped). Without it a pass racing a disable
# wrote windows the disable could not see, and they ran.
PERIODIC_LIST_DUE = """
SELECT * FROM scheduler_periodic AS p
 WHERE enabled AND (next_run_at IS NULL OR next_run_at <= now() + make_interval(secs => $1))
   AND EXISTS (SELECT 1 FROM scheduler_workers AS w WHERE p.task_name = ANY (w.tasks))
 ORDER BY dedup_key
   FOR NO KEY UPDATE OF p
"""
# Taken in its own statement before PERIODIC_SET_ENABLED / PERIODIC_UPSERT, in one transaction,
# so that their snapshot (READ COMMITTED: per statement) includes windows a registrar pass that
# held the row has just committed.
PERIODIC_LOCK = "SELECT 1 FROM scheduler_periodic WHERE dedup_key = $1 FOR NO KEY UPDATE"

# Last run and next pending window, for status: both read from the jobs table.
PERIODIC_RUNS = """
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
# else the cancelled rows blocked the windows for up to the lookahead after an enable.
PERIODIC_ENQUEUE = """
INSERT INTO scheduled_jobs AS j
    (job_id, job_name, execution_time, task_data, priority, max_retries, misfire_grace_time,
     dedup_key, window_start, use_advisory_lock, overlap)
SELECT 'periodic:' || $1 || ':' || (extract(epoch FROM w) * 1000)::bigint,
       $2, greatest(w, now()), '{"args": [], "kwargs": {}}'::jsonb, $3, $4, $5, $1, w, $6, $8
  FROM unnest($7::timestamptz[]) AS w
ON CONFLICT (dedup_key, window_start) WHERE dedup_key IS NOT NULL DO UPDATE SET
    status = 'pending', job_name = EXCLUDED.job_name, execution_time = EXCLUDED.execution_time,
    priority = EXCLUDED.priority, max_retries = EXCLUDED.max_retries,
    misfire_grace_time = EXCLUDED.misfire_grace_time,
    use_advisory_lock = EXCLUDED.use_advisory_lock, overlap = EXCLUDED.overlap,
    finished_at = NULL, error_message = NULL
 WHERE j.status = 'cancelled' AND j.started_at IS NULL
   AND j.error_message IN ('periodic job disabled', 'periodic schedule changed')
RETURNING job_id
"""
PERIODIC_ADVANCE = """
UPDATE scheduler_periodic SET next_run_at = $2, last_window = coalesce($3, last_window)
 WHERE dedup_key = $1
"""

# Each registrar pass stamps its clock ($1) and reads the previous pass's stamp, in its fenced
# transaction.
PERIODIC_PASS_STAMP = """
WITH previous AS (SELECT pass_at FROM scheduler_periodic_pass)
UPDATE scheduler_periodic_pass SET pass_at = $1
RETURNING (SELECT pass_at FROM previous)
"""

# After a leaderless gap: the written-ahead windows that passed during it ($1 the last pass before
# the gap, $2 the latest start that is missed rather than late, $3 the pass's clock) follow each
# job's misfire policy. Only untouched rows are missed windows: pending, due at their own start,
# never claimed. 'skip' cancels them. 'coalesce' keeps only the newest, due now, and only if the
# registrar will write no window up to now itself (its cursor is past now); otherwise that window
# is the one run and every written one is cancelled. 'all' keeps each, due now, unless it is older
# than catch_up. What is kept is re-dated, so the claims' wait (_NOT_AWAITING_MISFIRE) ends for
# it and the misfire grace judges it from now, as it does the missed windows written late.
PERIODIC_RULE_MISSED = """
WITH missed AS (
    SELECT j.job_id, p.misfire,
           CASE WHEN p.misfire = 'skip' THEN 'skipped'
                WHEN p.misfire = 'all' THEN
                     CASE WHEN j.window_start
                               < $3::timestamptz - make_interval(secs => p.catch_up_seconds)
                          THEN 'skipped' ELSE 'run' END
                WHEN coalesce(p.next_run_at, 'infinity') > $3::timestamptz
                     AND j.window_start = max(j.window_start) OVER (PARTITION BY j.dedup_key)
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
     use_advisory_lock, overlap)
SELECT $2, task_name, now(), '{"args": [], "kwargs": {}}'::jsonb, priority, max_retries,
       dedup_key, use_advisory_lock, overlap
  FROM scheduler_periodic WHERE dedup_key = $1
RETURNING job_id
"""

# --------------------------------------------------------------------------- vacuum

VACUUM_AFTER = """
DELETE FROM scheduled_jobs WHERE job_id IN (
    SELECT job_id FROM scheduled_jobs
     WHERE status = $1 AND finished_at < now() - make_interval(secs => $2)
     LIMIT $3)
"""
VACUUM_ALL = """
DELETE FROM scheduled_jobs WHERE job_id IN (
    SELECT job_id FROM scheduled_jobs WHERE status = $1 LIMIT $2)
"""
VACUUM_KEEP_LAST = """
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
VACUUM_STATS = """
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
VACUUM_TOTALS = """
SELECT coalesce(sum(deleted) FILTER (WHERE state = 'completed'), 0)::int AS total_completed,
       coalesce(sum(deleted) FILTER (WHERE state = 'failed'), 0)::int AS total_failed,
       coalesce(sum(deleted) FILTER (WHERE state = 'cancelled'), 0)::int AS total_cancelled,
       coalesce(sum(deleted) FILTER (WHERE state = 'expired'), 0)::int AS total_expired,
       count(DISTINCT stat_date)::int AS days_tracked,
       max(last_run) AS last_run
  FROM scheduler_vacuum_stats
"""

# --------------------------------------------------------------------------- metrics

# The leader's cluster sample (QueueSampler). Counts go through the partial indexes of each state
# (their cost grows with the rows in that state); the oldest due job is found per priority (a
# loose index scan over the claim index), leaving out windows held back behind a running run
# (overlap skip/queue), which nobody could claim. $1: seconds after which a worker's heartbeat is
# stale.
SAMPLE_NO_SEQSCAN = "SET LOCAL enable_seqscan = off"
CLUSTER_SAMPLE = f"""
WITH RECURSIVE prios AS (
    (SELECT priority FROM scheduled_jobs WHERE status = 'pending' ORDER BY priority LIMIT 1)
    UNION ALL
    SELECT (SELECT j.priority FROM scheduled_jobs AS j
             WHERE j.status = 'pending' AND j.priority > p.priority
             ORDER BY j.priority LIMIT 1)
      FROM prios AS p WHERE p.priority IS NOT NULL
)
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

JOB_COUNTS = "SELECT status, count(*)::int AS n FROM scheduled_jobs GROUP BY status"

# --------------------------------------------------------------------------- embedded server

# Client sessions other than the asking one: the embedded PostgreSQL is left running while any
# other process still uses it.
EMBEDDED_OTHER_SESSIONS = """
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
"""

# --------------------------------------------------------------------------- management CLI
# ``pg-scheduler status`` and ``jobs``: read in one read-only transaction, so every figure comes
# from the same snapshot and the same ``now()``.

# Every registered process, with its heartbeat age on the database clock (clamped: a beat
# committed after this transaction began is not "in the future").
WORKERS_LIST = """
SELECT worker_id, kind, host, pid, tasks, supervisor_id, started_at, last_heartbeat,
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
JOBS_OLDEST_DUE_LAG = """
SELECT extract(epoch FROM now() - min(execution_time))::float8
  FROM scheduled_jobs
 WHERE status = 'pending' AND execution_time <= now()
"""

# Pending jobs of tasks that no live process which runs jobs registered ($1: seconds after which
# a heartbeat is stale). Supervisors never run jobs, so their task lists do not count.
JOBS_UNRUNNABLE = """
SELECT j.job_name AS task, count(*)::int AS pending, min(j.execution_time) AS oldest_execution_time
  FROM scheduled_jobs AS j
 WHERE j.status = 'pending'
   AND NOT EXISTS (SELECT 1 FROM scheduler_workers AS w
                    WHERE w.kind <> 'supervisor' AND j.job_name = ANY (w.tasks)
                      AND w.last_heartbeat >= now() - make_interval(secs => $1))
 GROUP BY j.job_name
 ORDER BY count(*) DESC, j.job_name
"""

# Newest due time first. $1: states (NULL: all); $2: a task's full name or the part after the
# module (NULL: all); $3: most rows.
JOB_LIST = """
SELECT * FROM scheduled_jobs
 WHERE ($1::text[] IS NULL OR status = ANY ($1::text[]))
   AND ($2::text IS NULL OR job_name = $2 OR split_part(job_name, ':', 2) = $2)
 ORDER BY execution_time DESC, job_id
 LIMIT $3
"""

# A finished job that did not complete runs again: pending, due now, with its retries back to
# zero. ``attempt`` keeps counting up (it fences completions, so it only grows); the last error
# stays until the next attempt ends, as it does between automatic retries. Wakes idle workers.
JOB_RETRY = """
WITH retried AS (
    UPDATE scheduled_jobs
       SET status = 'pending', execution_time = now(), retry_count = 0, worker_id = NULL,
           lease_until = NULL, last_heartbeat = NULL, started_at = NULL, finished_at = NULL
     WHERE job_id = $1 AND status IN ('failed', 'cancelled', 'expired')
    RETURNING job_id, attempt, max_retries
)
SELECT job_id, attempt, max_retries, pg_notify('pg_scheduler_jobs', '') AS notified FROM retried
"""
