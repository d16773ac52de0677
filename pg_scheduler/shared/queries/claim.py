"""What a worker runs about its jobs, from the claim to the outcome.

The next due time, the claim, lease renewal, completion (alone or with the next claim),
failure, release, skip, and the exclusive lock of a run."""

from __future__ import annotations

import functools
from typing import Any, Protocol

import asyncpg

from ..locks import QUEUE_KEY_LOCK_CLASS as _KEY_LOCK_CLASS
from ..locks import QUEUE_LOCK_CLASS as _QUEUE_LOCK_CLASS

# A window of a periodic job with overlap 'skip' or 'queue' waits while a run of that job runs
# (see PERIODIC_SETTLE_OVERLAP for what happens to it then); anything else is claimable.
_NOT_BLOCKED = """
(j.overlap IS NULL OR j.overlap = 'allow'
 OR NOT EXISTS (SELECT 1 FROM scheduled_jobs AS r
                 WHERE r.dedup_key = j.dedup_key AND r.status = 'running'))
"""

LIMITED_CLAIM_BOUND = 128
"""The most jobs one claim takes from one limited queue without a key limit (a literal, as the
plain claim's bound, so that the plan reads no more rows than that)."""

LIMITED_CLAIM_SCAN = 256
"""How many due rows of a key-limited queue one claim reads (past keys at their limit) to pick
the ones with room."""

LIMITED_CLAIM_FIRST_SCAN = 64
"""How many of those a claim of a queue limited by key only reads first: it reads
LIMITED_CLAIM_SCAN only when these held fewer keys with room than it wants (reading 256 rows
was a third of such a claim's cost while 64 held enough keys)."""

LIMITED_CLAIM_KEY_TRIES = 3
"""How many times a claim of a key-limited queue looks for keys with room, in all: again when
keys it locked turn out to have been filled by another claimer meanwhile, or when its first
LIMITED_CLAIM_FIRST_SCAN rows held too few keys with room."""

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


# A queue with a limit or paused is claimed only through JOB_CLAIM_LIMITED; every other claim
# leaves its rows alone. The list is read by the statement itself (a hashed SubPlan, one scan
# of a table of a few rows), never cached by a process: a limit or a pause binds every claim
# that begins after it committed. Written as NOT IN, not ``<> ALL (ARRAY(...))``: the planner
# guesses that the latter keeps almost no row, and would then sort every pending row of a name
# instead of reading its index in order.
_NOT_LIMITED = """
j.queue NOT IN (SELECT name FROM scheduler_queues WHERE limited)
"""


def _in_queues(queues: str | None) -> str:
    """The claim's queue test over the placeholder ``queues`` (a text array); none when the
    worker claims every queue, so that statement stays exactly the one without queues."""
    return "" if queues is None else f" AND j.queue = ANY({queues}::text[])"


def _next_due(queues: str | None) -> str:
    return f"""
SELECT extract(epoch FROM min(due.execution_time) - now())::float8 AS due,
       EXISTS (SELECT FROM scheduler_queues WHERE limited) AS limited
FROM unnest($1::text[]) AS t(name)
CROSS JOIN LATERAL (
    SELECT execution_time FROM scheduled_jobs AS j
     WHERE status = 'pending' AND job_name = t.name AND {_NOT_BLOCKED}
       AND {_NOT_AWAITING_MISFIRE} AND {_NOT_LIMITED}{_in_queues(queues)}
     ORDER BY execution_time
     LIMIT 1
) AS due
"""


# Next due time per task name this worker can run, outside limited queues (JOB_GET_NEXT_LIMITED
# covers those): one index probe per name, never a scan; and whether any queue is limited.
# $1 names
JOB_GET_NEXT_DUE = _next_due(None)
# The same for a worker that claims only some queues. No index holds the queue: the probe reads
# past pending rows of the same names in other queues (docs/queues.md says what that costs).
# $1 names, $2 queues
JOB_GET_NEXT_DUE_IN_QUEUES = _next_due("$2")


# Claim up to $2 due jobs of the names $1, priority first, then due time. A row whose lateness
# (claim time minus due time) exceeds its misfire grace (plus the pickup tolerance $5) is marked
# expired instead of run: misfire is judged against the due time, on the database clock.
#
# The rows are found again by ctid (a TID scan: the row versions just locked cannot move before
# this statement updates them), not by a join on job_id: PostgreSQL's generic plan (which
# asyncpg's prepared statements get after five runs) guesses LIMIT $2 at a tenth of the table,
# and with a join it would hash-join and scan the whole table at every claim. A TID scan is
# chosen whatever the guess at the limit (on a table of a few pages, a sequential scan may be:
# worker/plans.py re-plans as the table grows).
#
# The rows are picked under a literal LIMIT (``bound``, the power of two at or above the limit)
# and the parameter $2 then cuts them to the free slots; LockRows locks only the rows the outer
# LIMIT pulls. Under a bare LIMIT $2, the generic plan's guess would make it look dearer than a
# custom one, and PostgreSQL would plan the statement afresh at every execution. With a literal
# bound the two cost the same and the generic plan is kept after five executions; a handful of
# bounds keeps the statements few in asyncpg's statement cache.
def claim_bound(limit: int) -> int:
    """The literal inner LIMIT of a claim of ``limit`` rows: the power of two at or above it."""
    if type(limit) is not int or limit < 1:
        raise ValueError(f"claim limit must be a positive int, got {limit!r}")
    return 1 << (limit - 1).bit_length()


def _claim(
    names: str, limit: str, bound: int, worker: str, lease: str, tolerance: str, queues: str | None
) -> str:
    """The claim UPDATE, over the given parameter placeholders (it is also a CTE of
    job_complete_and_claim_sql's statement); ``queues`` None claims every queue. Limited queues
    are left to JOB_CLAIM_LIMITED."""
    return _update_claimed(
        f"""
           SELECT ctid FROM (
               SELECT ctid FROM scheduled_jobs AS j
                WHERE status = 'pending' AND execution_time <= now()
                  AND job_name = ANY({names}::text[]) AND {_NOT_BLOCKED}
                  AND {_NOT_AWAITING_MISFIRE} AND {_NOT_LIMITED}{_in_queues(queues)}
                ORDER BY priority, execution_time
                LIMIT {bound:d}
                  FOR UPDATE SKIP LOCKED) AS due
            LIMIT {limit}""",
        worker,
        lease,
        tolerance,
    )


def _update_claimed(tids: str, worker: str, lease: str, tolerance: str, started: str = "now()") -> str:
    """The UPDATE that claims the rows whose ctids the sub-select ``tids`` yields (each still
    pending), with a ``worker`` lease of ``lease`` seconds, started at ``started``; a row later
    than its misfire grace plus ``tolerance`` expires instead. job_id and attempt come first in
    RETURNING: job_complete_and_claim_sql's UNION pads the rest.

    ``now()``, the transaction's start, for the plain claim: no later than its snapshot, so a
    job it starts without seeing a queue's new concurrency started before that change committed
    (the hand-over's test against ``concurrency_since`` relies on it)."""
    # Inline in each CASE, not computed once in a sub-SELECT: a sub-SELECT is a SubPlan run per
    # row, dearer than the test, which is one null check for the many rows without a misfire
    # grace.
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
        CASE WHEN {m} THEN j.started_at ELSE {started} END,
        CASE WHEN {m} THEN now() ELSE NULL END,
        CASE WHEN {m}
             THEN format('misfired: %s s late, misfire grace is %s s',
                         round(extract(epoch FROM now() - j.execution_time)::numeric, 3),
                         j.misfire_grace_time)
             ELSE j.error_message END)
 WHERE j.ctid = ANY (ARRAY({tids})) AND j.status = 'pending'
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


# $1 names, $2 limit, $3 worker_id, $4 lease_seconds, $5 misfire_tolerance_seconds
def job_claim_sql(limit: int, *, in_queues: bool = False) -> str:
    """The claim of up to $2 rows, for a $2 of ``limit``; ``in_queues``: only rows of the queues
    $6. One statement per claim_bound, shared by the limits under it."""
    return _job_claim(claim_bound(limit), in_queues)


@functools.cache
def _job_claim(bound: int, in_queues: bool) -> str:
    return _claim("$1", "$2", bound, "$3", "$4", "$5", "$6" if in_queues else None)


def _and_queues(args: tuple[Any, ...], queues: list[str] | None) -> tuple[Any, ...]:
    """A statement's arguments, with the queues as the last one when they are given (the
    statement ``in_queues`` of the same text then has one placeholder more)."""
    return args if queues is None else (*args, queues)


async def job_get_next_due(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    names: list[str],
    queues: list[str] | None,
    plan_generation: int,
    timeout: float,
) -> tuple[float | None, bool]:
    """JOB_GET_NEXT_DUE (JOB_GET_NEXT_DUE_IN_QUEUES when ``queues`` are given) as the statement
    of ``plan_generation``: seconds until the next due job of ``names`` outside limited queues
    (or None), and whether any queue is limited."""
    sql = JOB_GET_NEXT_DUE if queues is None else JOB_GET_NEXT_DUE_IN_QUEUES
    row = await conn.fetchrow(
        replanned(sql, plan_generation), *_and_queues((names,), queues), timeout=timeout
    )
    assert row is not None  # an aggregate always returns its row
    due = row["due"]
    return (None if due is None else float(due)), bool(row["limited"])


async def job_claim(
    conn: _Fetches,
    *,
    names: list[str],
    limit: int,
    worker_id: str,
    lease_seconds: float,
    misfire_tolerance_seconds: float,
    queues: list[str] | None,
    plan_generation: int,
    timeout: float,
) -> list[asyncpg.Record]:
    """Run job_claim_sql(limit) (of ``queues`` only, unless None) as the statement of
    ``plan_generation``: the jobs claimed."""
    return await conn.fetch(
        replanned(job_claim_sql(limit, in_queues=queues is not None), plan_generation),
        *_and_queues((names, limit, worker_id, lease_seconds, misfire_tolerance_seconds), queues),
        timeout=timeout,
    )


# When a claim of the limited queues (of $2 only, unless NULL) could next find something for the
# names $1, in seconds from now: per queue, the latest of its next due job, the moment its oldest
# logged start leaves the rate period (when the rate is used up) and the first end of a live lease
# (when the concurrency is used up); the soonest over the queues. NULL: none has due jobs of
# these names. A queue held back only by its keys answers 0: its keys free up as their runs end.
# $1 names, $2 queues
JOB_GET_NEXT_LIMITED = f"""
SELECT min(CASE WHEN due.at IS NOT NULL THEN greatest(due.at, rate.at, slots.at) END)
  FROM scheduler_queues AS q
 CROSS JOIN LATERAL (
       SELECT extract(epoch FROM min(d.execution_time) - now())::float8 AS at
         FROM unnest($1::text[]) AS t(name)
        CROSS JOIN LATERAL (
              SELECT execution_time FROM scheduled_jobs AS j
               WHERE j.status = 'pending' AND j.job_name = t.name AND j.queue = q.name
                 AND {_NOT_BLOCKED} AND {_NOT_AWAITING_MISFIRE}
               ORDER BY execution_time
               LIMIT 1) AS d) AS due
 CROSS JOIN LATERAL (
       SELECT CASE WHEN count(*) >= q.rate_limit
                   THEN extract(epoch FROM min(s.started_at)
                                + make_interval(secs => q.rate_period_seconds) - now())
              END::float8 AS at
         FROM scheduler_queue_starts AS s
        WHERE s.queue = q.name
          AND s.started_at > now() - make_interval(secs => q.rate_period_seconds)) AS rate
 CROSS JOIN LATERAL (
       SELECT CASE WHEN count(*) >= q.concurrency
                   THEN extract(epoch FROM min(r.lease_until) - now())
              END::float8 AS at
         FROM scheduled_jobs AS r
        WHERE r.status = 'running' AND r.queue = q.name AND r.lease_until > now()) AS slots
 WHERE q.limited AND NOT q.paused AND ($2::text[] IS NULL OR q.name = ANY ($2::text[]))
"""


# Renew the leases of the jobs this worker runs, fenced by (job, worker, attempt). A job missing
# from the result lost its lease (rescued, cancelled, replaced): the worker stops running it.
# Rows are locked in job_id order here and in JOB_COMPLETE_MANY: the heartbeat and the batched
# completion of one worker update overlapping sets of rows from two connections, and two
# multi-row updates that lock in different orders can deadlock.
#
# Driven by the arrays: each (job_id, attempt) is one primary-key probe, locked in the order of
# the sorted arrays, and only then checked for this worker and ``running`` (on the version
# locked). Joined the other way, the generic plan (statistics taken while no row runs guess one
# running row per worker) would scan the worker's running rows and, for each, every array element:
# n x n comparisons. Neither the worker nor the status is in the locking sub-select, so no index
# but the primary key can serve it.
def _lock_my_runs(ids: str, attempts: str, worker: str = "$1", *, lease: bool = False) -> str:
    """Lock this worker's (``worker``, $1 by default) running rows named by the (job_id,
    attempt) arrays, in job_id order; with ``lease``, also whether each lease was live when
    its row was locked (``live``, by the clock then)."""
    live = ", j.lease_until > clock_timestamp() AS live" if lease else ""
    lease_until = ", j.lease_until" if lease else ""
    return f"""
WITH mine AS (
    SELECT j.job_id{live}
      FROM (SELECT * FROM unnest({ids}::text[], {attempts}::int[]) AS r(job_id, attempt)
             ORDER BY job_id) AS r
     CROSS JOIN LATERAL (
           SELECT j.job_id, j.worker_id, j.status{lease_until} FROM scheduled_jobs AS j
            WHERE j.job_id = r.job_id AND j.attempt = r.attempt
           OFFSET 0
              FOR UPDATE) AS j
     WHERE j.worker_id = {worker} AND j.status = 'running'
)"""


# A lease that has ended (by the clock when the rows are locked, not the statement's start) is
# not renewed, even before the rescuer takes the row back: once it ended, its slot counted as
# free to the claims of a limited queue, which may have given it to another job; reviving it
# would put one job more than the limit in the queue. The worker stops the job, as for any lease
# lost. A claim of a limited queue locks the rows whose lease it counts as ended (FOR KEY SHARE)
# before it counts: a renewal in flight finishes first and is counted, and one that comes later
# waits for the claim and finds the lease ended.
# $1 worker_id, $2 lease_seconds, $3 job_ids, $4 attempts
JOB_RENEW_LEASES = (
    _lock_my_runs("$3", "$4")
    + """
UPDATE scheduled_jobs AS j
   SET lease_until = now() + make_interval(secs => $2), last_heartbeat = now()
  FROM mine
 WHERE j.job_id = mine.job_id AND j.lease_until > clock_timestamp()
RETURNING j.job_id
"""
)

# Completions of one worker in one statement (worker/completer.py), each fenced by
# (job, worker, attempt) and ``running``; the rows returned are the completions that landed.
_COMPLETE_MINE = """
UPDATE scheduled_jobs AS j
   SET status = 'completed', finished_at = now(), lease_until = NULL, error_message = NULL
  FROM mine
 WHERE j.job_id = mine.job_id
RETURNING j.job_id, j.attempt
"""
# $1 worker_id, $2 job_ids, $3 attempts
JOB_COMPLETE_MANY = _lock_my_runs("$2", "$3") + _COMPLETE_MINE

# One completion with the job's return value, fenced as JOB_COMPLETE_MANY: a job that returns
# something other than None completes alone (the batched completions carry no values).
# $1 worker_id, $2 job_ids, $3 attempts, $4 result
JOB_COMPLETE_WITH_RESULT = (
    _lock_my_runs("$2", "$3")
    + """
UPDATE scheduled_jobs AS j
   SET status = 'completed', finished_at = now(), lease_until = NULL, error_message = NULL,
       result = $4::jsonb
  FROM mine
 WHERE j.job_id = mine.job_id
RETURNING j.job_id, j.attempt
"""
)


# A busy worker's completions and the claim that refills the slots they free, in one statement:
# one round trip and one commit instead of two (the commit, WAL flush included, is most of what a
# small statement costs PostgreSQL). $2/$3 are the completions' (job_id, attempt). Rows with
# ``claimed`` false are the completions that were refused by the fence (job_id and attempt only;
# usually none, so the reply carries the claimed rows alone); the others are claimed jobs, as
# job_claim_sql's statement returns them. Both updates see the statement's snapshot, so they
# touch disjoint rows (running ones and pending ones), and the claim's SKIP LOCKED never waits on
# the completion's locks. A held-back window of a skip/queue job whose run completes here is
# claimable only from the next statement on, as it would be after a separate completion.
# $1 worker_id, $2 job_ids, $3 attempts, $4 names, $5 limit, $6 lease_seconds, $7 misfire_tolerance_seconds
def job_complete_and_claim_sql(limit: int, *, in_queues: bool = False) -> str:
    """The statement above, for a claim limit $5 of ``limit`` (one per claim_bound); with
    ``in_queues``, claiming only rows of the queues $8."""
    return _job_complete_and_claim(claim_bound(limit), in_queues)


@functools.cache
def _job_complete_and_claim(bound: int, in_queues: bool) -> str:
    return (
        _lock_my_runs("$2", "$3")
        + f""",
done AS ({_COMPLETE_MINE}),
claimed AS ({_claim("$4", "$5", bound, "$1", "$6", "$7", "$8" if in_queues else None)})
SELECT true AS claimed, * FROM claimed
UNION ALL
SELECT false, r.job_id, r.attempt, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL
  FROM unnest($2::text[], $3::int[]) AS r(job_id, attempt)
 WHERE NOT EXISTS (SELECT FROM done WHERE done.job_id = r.job_id AND done.attempt = r.attempt)
"""
    )


class _Fetches(Protocol):
    """An asyncpg pool or connection, or anything that fetches like one (worker/busy_connection)."""

    async def fetch(self, query: str, *args: Any, timeout: float) -> list[asyncpg.Record]: ...


async def job_complete_and_claim(
    conn: _Fetches,
    *,
    worker_id: str,
    job_ids: list[str],
    attempts: list[int],
    names: list[str],
    limit: int,
    lease_seconds: float,
    misfire_tolerance_seconds: float,
    queues: list[str] | None,
    plan_generation: int,
    timeout: float,
) -> list[asyncpg.Record]:
    """Run job_complete_and_claim_sql(limit) as the statement of ``plan_generation``
    (``replanned``): the completions the fence refused (``claimed`` false) and the jobs
    claimed (of ``queues`` only, unless None)."""
    args = (worker_id, job_ids, attempts, names, limit, lease_seconds, misfire_tolerance_seconds)
    return await conn.fetch(
        replanned(job_complete_and_claim_sql(limit, in_queues=queues is not None), plan_generation),
        *_and_queues(args, queues),
        timeout=timeout,
    )


# Exponential backoff with equal jitter, in SQL so that worker and rescuer share one formula:
# min(base * 2^retry_count, max), then uniformly within [delay/2, delay] when jitter is on.
_RETRY_DELAY = """
make_interval(secs => least($4::float8 * power(2, least(j.retry_count, 60)), $5::float8)
                      * CASE WHEN $6::bool THEN 0.5 + random() * 0.5 ELSE 1 END)
"""

# A failed attempt: retry later while retries remain, else final ``failed``. Fenced.
# $1 job_id, $2 worker_id, $3 attempt, $4 retry_delay_seconds, $5 retry_max_delay_seconds, $6 retry_jitter, $7 error_message  # noqa: E501
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


async def job_fail(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    job_id: str,
    worker_id: str,
    attempt: int,
    retry_delay_seconds: float,
    retry_max_delay_seconds: float,
    retry_jitter: bool,
    error_message: str,
) -> asyncpg.Record | None:
    """JOB_FAIL: the row's new status, retry_count and execution_time, or None if the fence
    refused it."""
    row: asyncpg.Record | None = await conn.fetchrow(
        JOB_FAIL,
        job_id,
        worker_id,
        attempt,
        retry_delay_seconds,
        retry_max_delay_seconds,
        retry_jitter,
        error_message,
    )
    return row


# Give jobs back at shutdown (or when an exclusive lock is busy): pending again, due at
# $4 seconds from now, no retry consumed. Fenced by (job, worker, attempt).
# $1 worker_id, $2 job_ids, $3 attempts, $4 delay_seconds, $5 error_message
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

# A window claimed while another run of its job ran anyway (two workers claimed two windows in the
# same instant; the advisory lock caught it): overlap 'skip' ends it unrun. Fenced like the rest.
# $1 job_id, $2 worker_id, $3 attempt, $4 error_message
JOB_SKIP = """
UPDATE scheduled_jobs
   SET status = 'cancelled', finished_at = now(), lease_until = NULL, error_message = $4
 WHERE job_id = $1 AND worker_id = $2 AND attempt = $3 AND status = 'running'
"""

# use_advisory_lock jobs hold this on a connection kept for the whole run.
JOB_TRY_LOCK_EXCLUSIVE = "SELECT pg_try_advisory_lock($1, $2)"
JOB_UNLOCK_EXCLUSIVE = "SELECT pg_advisory_unlock($1, $2)"


# ------------------------------------------------------------------ limited queues


def _due_in(queue: str, names: str) -> str:
    """The test of a claimable row of ``queue`` for ``names`` (alias ``j``)."""
    return f"""j.status = 'pending' AND j.execution_time <= now() AND j.queue = {queue}
       AND j.job_name = ANY ({names}::text[]) AND {_NOT_BLOCKED} AND {_NOT_AWAITING_MISFIRE}"""


def _claimed_rows(picked: str, worker: str, lease: str, tolerance: str, started: str = "now()") -> str:
    """The claim of the rows whose ctids the CTE ``picked`` holds, as rows of the function."""
    return f"""claimed AS ({_update_claimed(f"SELECT tid FROM {picked}", worker, lease, tolerance, started)}
)"""


def _hold_ended_leases(queue: str, keys: str | None = None) -> str:
    """Lock (FOR KEY SHARE) the running rows of ``queue`` (of the ``keys`` only, if given) whose
    lease has ended by the clock: a renewal of one of them in flight (it locks them FOR UPDATE)
    commits first, so the count that follows sees it; a renewal that comes later waits for this
    claim to commit and then finds the lease ended (JOB_RENEW_LEASES). In job_id order, the order
    in which renewals and completions lock a worker's rows, so that none of them can deadlock
    with it."""
    of_keys = "" if keys is None else f" AND concurrency_key = ANY ({keys})"
    return f"""PERFORM 1 FROM scheduled_jobs
             WHERE status = 'running' AND queue = {queue}{of_keys}
               AND lease_until <= clock_timestamp()
             ORDER BY job_id
               FOR KEY SHARE"""


def _counted_room(queue: str, limit: str, at: str) -> str:
    """The CTEs ``q`` (the queue's limits, none if paused), ``live`` (its running rows whose
    lease is live, by key), ``started`` (its starts logged within the rate's period before
    ``at``) and ``room`` (how many it may start: the least of ``limit``, the concurrency minus
    the live rows and the rate minus the starts)."""
    return f"""
WITH q AS (
    SELECT concurrency, key_concurrency, rate_limit, rate_period_seconds
      FROM scheduler_queues WHERE name = {queue} AND NOT paused
), live AS (
    SELECT concurrency_key AS k FROM scheduled_jobs
     WHERE status = 'running' AND queue = {queue} AND lease_until > now()
), started AS (
    SELECT count(*) AS n FROM scheduler_queue_starts AS s, q
     WHERE s.queue = {queue} AND s.started_at > {at} - make_interval(secs => q.rate_period_seconds)
), room AS (
    SELECT greatest(0, least({limit}, coalesce(q.concurrency - (SELECT count(*) FROM live), {limit}),
                                 coalesce(q.rate_limit - (SELECT n FROM started), {limit})))::int AS n,
           q.key_concurrency AS per_key
      FROM q
)"""


def _counted_tail(queue: str, worker: str, lease: str, tolerance: str, at: str) -> str:
    """The claim of the rows ``picked``, started at ``at``, each start logged when the queue has
    a rate, and the log pruned of starts older than the period."""
    return f""", {_claimed_rows("picked", worker, lease, tolerance, at)}, logged AS (
    INSERT INTO scheduler_queue_starts (queue, started_at)
    SELECT {queue}, {at} FROM claimed, q WHERE claimed.status = 'running' AND q.rate_limit IS NOT NULL
), pruned AS (
    DELETE FROM scheduler_queue_starts AS s USING q
     WHERE s.queue = {queue} AND s.started_at <= {at} - make_interval(secs => q.rate_period_seconds)
)
SELECT true, claimed.* FROM claimed"""


def _claim_counted(
    queue: str, names: str, limit: str, worker: str, lease: str, tolerance: str, at: str
) -> str:
    """The claim of up to ``limit`` jobs of ``names`` in ``queue``, a queue with a concurrency
    or a rate and a key limit, over the given placeholders (the variables of
    pg_scheduler_claim_limited, which runs it under the queue's lock, in a snapshot taken after
    the lock was granted: every claim of the queue committed before is in its counts).

    A running row whose lease ended holds no slot: a killed worker's jobs stop counting when its
    supervisor hands them back or at worst when their lease ends (its worker, unable to renew,
    has stopped them by then). Jobs whose key is at key_concurrency are passed over, not waited
    for: the due rows behind them are claimed (no head-of-line blocking); of the other keys, each
    takes no more rows than it has room for. ``at`` is the claim's time, read after the lock was
    granted, so that the starts of successive claims are logged in the order they count them."""
    return (
        _counted_room(queue, limit, at)
        + f""", keys AS MATERIALIZED (
    SELECT k, count(*) AS n FROM live WHERE k IS NOT NULL GROUP BY k
), due AS (
    SELECT j.ctid AS tid, j.concurrency_key AS k, j.priority, j.execution_time
      FROM scheduled_jobs AS j
     WHERE {_due_in(queue, names)}
       AND (j.concurrency_key IS NULL
            OR j.concurrency_key NOT IN (SELECT keys.k FROM keys, room WHERE keys.n >= room.per_key))
       AND EXISTS (SELECT FROM room WHERE room.n > 0)
     ORDER BY j.priority, j.execution_time
     LIMIT {LIMITED_CLAIM_SCAN:d}
), picked AS (
    SELECT d.tid FROM (
        SELECT due.*, row_number() OVER (PARTITION BY due.k
                                         ORDER BY due.priority, due.execution_time) AS rn
          FROM due) AS d, room
     WHERE d.k IS NULL OR room.per_key IS NULL
        OR d.rn <= room.per_key - coalesce((SELECT keys.n FROM keys WHERE keys.k = d.k), 0)
     ORDER BY d.priority, d.execution_time
     LIMIT (SELECT n FROM room)
)"""
        + _counted_tail(queue, worker, lease, tolerance, at)
    )


def _claim_counted_keyless(
    queue: str, names: str, limit: str, worker: str, lease: str, tolerance: str, at: str
) -> str:
    """``_claim_counted`` for a queue without a key limit: the room counted the same way, the
    rows picked as the plain claim picks them (its literal bound, then the room). Nothing if the
    queue has a key limit in this statement's snapshot (set since the loop read it)."""
    return (
        _counted_room(queue, limit, at)
        + f""", picked AS (
    SELECT d.tid FROM (
        SELECT j.ctid AS tid FROM scheduled_jobs AS j
         WHERE {_due_in(queue, names)}
         ORDER BY j.priority, j.execution_time
         LIMIT {LIMITED_CLAIM_BOUND:d}
           FOR UPDATE SKIP LOCKED) AS d
     LIMIT CASE WHEN (SELECT per_key FROM room) IS NULL THEN coalesce((SELECT n FROM room), 0)
                ELSE 0 END
)"""
        + _counted_tail(queue, worker, lease, tolerance, at)
    )


PICK_DUE_FUNCTION = f"""CREATE OR REPLACE FUNCTION pg_scheduler_pick_due(
    queue_name TEXT, names TEXT[], n BIGINT)
RETURNS SETOF tid
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    RETURN QUERY
    SELECT b.tid FROM (
        SELECT j.ctid AS tid FROM scheduled_jobs AS j
         WHERE {_due_in("queue_name", "names")}
         ORDER BY j.priority, j.execution_time
         LIMIT {LIMITED_CLAIM_BOUND:d}
           FOR UPDATE SKIP LOCKED) AS b
     LIMIT n;
END
$fn$;
"""
"""The hand-over's pick (_complete_and_hand_over), as migration 17 creates it: up to ``n`` (at
most LIMITED_CLAIM_BOUND) due jobs of ``names`` in ``queue_name``, locked, in priority order.

A function because it is VOLATILE: in READ COMMITTED, its query takes a snapshot of its own when
it runs, after the hand-over's completions, not the calling statement's. Picked in the calling
statement's snapshot (taken before the completions), a row that another claimer claimed and
committed since still looked pending: locking it locked the claimer's new version, which was
then passed over but stayed locked until this commit, and that claimer's completion of the job
waited for it (measured: 9-16 % of two drainers' time on ``Lock transactionid``).

A row picked here whose version the calling statement cannot see (inserted or rewritten since
its snapshot: rare, as the pick follows that snapshot by the completions' time) is not claimed,
yet counts against ``n`` and stays locked to the commit: the hand-over takes fewer jobs, never
more, and the claim of limited queues that a short hand-over is followed by takes the rest
(inside pg_scheduler_claim_limited, the same transaction's counted claim can take those very
rows). The caller reads every row this returns (a function's rows are made before they are
read), so it asks for no more than it claims.

PL/pgSQL, whose statements keep their plans on every supported PostgreSQL (an SQL function's
do only from PostgreSQL 18); the literal inner LIMIT, as the plain claim's, makes the generic
plan as cheap as a custom one."""


def _complete_and_hand_over(
    ids: str,
    attempts: str,
    names: str,
    limit: str,
    worker: str,
    lease: str,
    tolerance: str,
    queues: str,
    *,
    said_capped: bool = False,
    bound: int | None = None,
) -> str:
    """The worker's completions (the ``ids``/``attempts`` arrays, fenced as JOB_COMPLETE_MANY) and,
    in the same statement, the claim of a new job of the same queue for each job completed while
    its lease was live (by the clock when its row was locked), in every queue still limited by a
    concurrency alone (of ``queues`` only, unless NULL); up to ``limit`` in all. Rows with claim
    false are the completions the fence refused; with ``said_capped``, a last row with claim NULL
    says that completions of live leases were of such queues (whether or not their slots could be
    handed over).

    Each claimed job takes the slot of a completed one, and both land in the same commit: the
    queue's count is the same before and after it, and every other claimer counts the completed
    jobs as running until it, so no claim can see those slots as free twice. A lease that ended
    before its completion hands nothing over (a counted claim may have given its slot away).

    A queue hands slots over only under its lock, held shared (hand-overs run side by side; a
    change of the queue takes it alone, migration 8's trigger), and only if its row as this
    statement's snapshot reads it is still its row once the lock is held (read again in a new
    snapshot by pg_scheduler_queue_version): a change committed in between would otherwise go
    unseen, and a change that comes later waits for this claim.

    A queue is within its concurrency unless the concurrency was lowered, or set where there
    was none, while more jobs ran. ``concurrency_since`` is a time after which every job of the
    queue was started by a claim that saw its concurrency (migration 9 says how it is kept): a
    queue whose completed jobs all started after it (by more than a second, should the
    database's clock step back) hands over without counting, since each of those claims kept
    the queue within its concurrency and nothing has raised the count since (counted claims
    stop at the limit, hand-overs keep it). Otherwise the queue hands over only
    while its live jobs, counted in this statement's snapshot (where the completed jobs still
    run), are within its concurrency: after the limit was lowered below what runs, completions
    free their slots for the counted claim, which starts nothing until the queue is under the
    new limit. The jobs start at the clock after the completions (their ``finished_at`` is the
    transaction's start).

    How many each queue takes is settled in this statement's snapshot; which jobs, by
    pg_scheduler_pick_due, in a snapshot of its own taken after the completions (its docstring
    says why). The queue's lock, held from ``handing`` to the commit, keeps the count valid
    meanwhile: no counted claim or change of the queue runs until then, and other hand-overs
    leave the count as it was.

    ``bound``, a literal at or above ``limit``, caps the rows before ``limit`` does: a generic
    plan, which cannot see ``limit``'s value, then costs what a custom one does, and PostgreSQL
    keeps it rather than planning the statement afresh at every call (pg_scheduler_claim_limited
    forces generic plans instead)."""
    handed_rows = f"""SELECT t.tid FROM handed
     CROSS JOIN LATERAL pg_scheduler_pick_due(handed.queue, {names}::text[], greatest(handed.n, 0))
                     AS t(tid)"""

    def bounded(rows: str) -> str:
        return rows if bound is None else f"SELECT b.tid FROM ({rows}\n     LIMIT {bound:d}) AS b"

    return (
        _lock_my_runs(ids, attempts, worker, lease=True)
        + f""",
done AS ({_COMPLETE_MINE.rstrip()}, j.queue, j.started_at, mine.live
), capped AS MATERIALIZED (
    SELECT q.name, q.concurrency, q.concurrency_since, q.xmin AS version
      FROM scheduler_queues AS q
     WHERE q.name IN (SELECT done.queue FROM done WHERE done.live)
       AND q.concurrency IS NOT NULL AND q.rate_limit IS NULL
       AND q.key_concurrency IS NULL AND NOT q.paused
       AND ({queues} IS NULL OR q.name = ANY ({queues}))
), handing AS (
    -- The queues' locks are tried only for those queues (MATERIALIZED: never pushed below
    -- their test).
    SELECT c.name, c.concurrency, c.concurrency_since
      FROM capped AS c
     WHERE CASE WHEN pg_try_advisory_xact_lock_shared({_QUEUE_LOCK_CLASS}, hashtext(c.name))
                THEN pg_scheduler_queue_version(c.name) = c.version
                ELSE false END
), handed AS (
    -- Each queue's share, cut so that the shares add up to no more than the claim's limit:
    -- pg_scheduler_pick_due locks every row it returns.
    SELECT h.name AS queue,
           least(count(*), {limit} - coalesce(sum(count(*)) OVER (ORDER BY h.name ROWS BETWEEN
                                                                  UNBOUNDED PRECEDING AND 1 PRECEDING),
                                              0))::bigint AS n
      FROM done JOIN handing AS h ON h.name = done.queue
     WHERE done.live
     GROUP BY h.name, h.concurrency, h.concurrency_since
    HAVING bool_and((done.started_at > h.concurrency_since + interval '1 second') IS TRUE)
        OR (SELECT count(*) FROM scheduled_jobs AS r
             WHERE r.status = 'running' AND r.queue = h.name AND r.lease_until > now()) <= h.concurrency
), picked AS (
    {bounded(handed_rows)}
     LIMIT {limit}
), {_claimed_rows("picked", worker, lease, tolerance, "clock_timestamp()")}
SELECT true, claimed.* FROM claimed
UNION ALL
SELECT false, r.job_id, r.attempt, {_TYPED_PADDING}
  FROM unnest({ids}, {attempts}) AS r(job_id, attempt)
 WHERE NOT EXISTS (SELECT FROM done WHERE done.job_id = r.job_id AND done.attempt = r.attempt)"""
        + (
            f"""
UNION ALL
SELECT NULL, NULL, NULL, {_TYPED_PADDING}
 WHERE EXISTS (SELECT FROM capped)"""
            if said_capped
            else ""
        )
    )


def _lock_keys(queue: str, names: str, limit: str, per_key: str, scan: int) -> str:
    """For a queue limited by key only: try the key lock of each key among its first ``scan`` due
    rows (in their priority order), passing over keys at their limit as this snapshot sees them,
    until ``limit`` keys are held; into ``held`` the keys held, into ``keyless`` whether rows
    without a key were among those rows, into ``tids`` the row versions of the held keys among
    them (the claim reads no other: a key needs no more rows than its first few), into ``scanned``
    how many rows it read (fewer than ``scan``: every due row of a key with room). A key whose
    lock another claimer holds is passed over: claimers of one queue wait for no one, and meet
    only on the keys they both want."""
    return f"""
WITH r AS (
    SELECT j.ctid AS tid, j.concurrency_key AS k, j.priority, j.execution_time
      FROM scheduled_jobs AS j
     WHERE {_due_in(queue, names)}
       AND (j.concurrency_key IS NULL OR j.concurrency_key NOT IN (
               SELECT b.concurrency_key FROM scheduled_jobs AS b
                WHERE b.status = 'running' AND b.queue = {queue} AND b.lease_until > now()
                  AND b.concurrency_key IS NOT NULL
                GROUP BY b.concurrency_key HAVING count(*) >= {per_key}))
     ORDER BY j.priority, j.execution_time
     LIMIT {scan:d}
), locked AS (
    -- OFFSET 0 keeps the try-lock out of the grouping (PostgreSQL would push it down as a
    -- HAVING test and try the lock of every key read); above it, the try-locks run in the
    -- keys' order, and the LIMIT stops them once ``limit`` keys are held.
    SELECT c.k
      FROM (SELECT r.k FROM r GROUP BY r.k ORDER BY min(r.priority), min(r.execution_time)
            OFFSET 0) AS c
     WHERE c.k IS NULL OR pg_try_advisory_xact_lock({_KEY_LOCK_CLASS}, hashtext({queue} || ':' || c.k))
     LIMIT {limit}
)
SELECT coalesce(array_agg(locked.k) FILTER (WHERE locked.k IS NOT NULL), '{{}}'),
       coalesce(bool_or(locked.k IS NULL), false),
       ARRAY(SELECT r.tid FROM r WHERE r.k IN (SELECT locked.k FROM locked)),
       (SELECT count(*) FROM r)
  INTO held, keyless, tids, scanned
  FROM locked"""


def _claim_held_keys(queue: str, names: str, limit: str, worker: str, lease: str, tolerance: str) -> str:
    """The claim of up to ``limit`` jobs of the keys ``held`` (their locks held) among the row
    versions ``tids``, in a snapshot taken after the locks were granted: a version claimed
    meanwhile is no longer visible, and each key takes no more rows than key_concurrency minus
    its running rows whose lease is live. Nothing if the queue is no longer limited by key only
    (a concurrency or a rate set since the loop read it: the counted claim's)."""
    return f"""
WITH q AS (
    SELECT key_concurrency FROM scheduler_queues
     WHERE name = {queue} AND NOT paused AND concurrency IS NULL AND rate_limit IS NULL
), keys AS MATERIALIZED (
    -- Once per claim, not once per due row (inlined, it would be a subquery of each).
    SELECT concurrency_key AS k, count(*) AS n FROM scheduled_jobs
     WHERE status = 'running' AND queue = {queue} AND lease_until > now()
       AND concurrency_key = ANY (held)
     GROUP BY concurrency_key
), due AS (
    SELECT j.ctid AS tid, j.concurrency_key AS k, j.priority, j.execution_time
      FROM scheduled_jobs AS j
     WHERE j.ctid = ANY (tids) AND {_due_in(queue, names)} AND j.concurrency_key = ANY (held)
), picked AS (
    SELECT d.tid FROM (
        SELECT due.*, row_number() OVER (PARTITION BY due.k
                                         ORDER BY due.priority, due.execution_time) AS rn
          FROM due) AS d, q
     WHERE d.rn <= q.key_concurrency - coalesce((SELECT keys.n FROM keys WHERE keys.k = d.k), 0)
     ORDER BY d.priority, d.execution_time
     LIMIT {limit}
), {_claimed_rows("picked", worker, lease, tolerance)}
SELECT true, claimed.* FROM claimed"""


def _claim_keyless(queue: str, names: str, limit: str, worker: str, lease: str, tolerance: str) -> str:
    """The claim of up to ``limit`` jobs without a key of a queue limited by key only (nothing
    limits them; nothing if the queue has gained another limit): as the plain claim, under SKIP
    LOCKED."""
    return f"""
WITH q AS (
    SELECT 1 FROM scheduler_queues
     WHERE name = {queue} AND NOT paused AND concurrency IS NULL AND rate_limit IS NULL
), picked AS (
    SELECT d.tid FROM (
        SELECT j.ctid AS tid FROM scheduled_jobs AS j
         WHERE {_due_in(queue, names)} AND j.concurrency_key IS NULL AND EXISTS (SELECT FROM q)
         ORDER BY j.priority, j.execution_time
         LIMIT {LIMITED_CLAIM_SCAN:d}
           FOR UPDATE SKIP LOCKED) AS d
     LIMIT {limit}
), {_claimed_rows("picked", worker, lease, tolerance)}
SELECT true, claimed.* FROM claimed"""


_PADDING = ", ".join(["NULL"] * 15)
"""The columns of a claimed job after job_id and attempt, as NULLs (rows that are not claims)."""
_TYPED_PADDING = (
    "NULL::text, NULL::jsonb, NULL::text, NULL::timestamptz, NULL::timestamptz, NULL::float8,\n"
    "               NULL::int, NULL::int, NULL::boolean, NULL::text, NULL::timestamptz, NULL::int,\n"
    "               NULL::text, NULL::float8, NULL::float8"
)
"""The same, typed as the function's result (RETURN QUERY matches types exactly)."""

_VARIABLES = ("queue_name", "names", "max_jobs", "worker", "lease", "tolerance")
_COMPLETE_AND_HAND_OVER = _complete_and_hand_over(
    "done_ids",
    "done_attempts",
    "names",
    "max_jobs",
    "worker",
    "lease",
    "tolerance",
    "only_queues",
)
_CLAIM_COUNTED = _claim_counted(*_VARIABLES, "claim_at")
_CLAIM_COUNTED_KEYLESS = _claim_counted_keyless(*_VARIABLES, "claim_at")
_LOCK_KEYS_FIRST = _lock_keys(
    "queue_name", "names", "max_jobs", "lq.key_concurrency", LIMITED_CLAIM_FIRST_SCAN
)
_LOCK_KEYS = _lock_keys("queue_name", "names", "max_jobs", "lq.key_concurrency", LIMITED_CLAIM_SCAN)
_CLAIM_HELD_KEYS = _claim_held_keys(*_VARIABLES)
_CLAIM_KEYLESS = _claim_keyless(*_VARIABLES)

LIMITED_CLAIM_FUNCTION = f"""CREATE OR REPLACE FUNCTION pg_scheduler_claim_limited(
    worker TEXT, done_ids TEXT[], done_attempts INTEGER[], names TEXT[], max_jobs INTEGER,
    lease DOUBLE PRECISION, tolerance DOUBLE PRECISION, only_queues TEXT[])
RETURNS TABLE (claim BOOLEAN, job_id TEXT, attempt INTEGER, job_name TEXT, task_data JSONB,
               status TEXT, execution_time TIMESTAMPTZ, started_at TIMESTAMPTZ,
               timeout_seconds DOUBLE PRECISION, retry_count INTEGER, max_retries INTEGER,
               use_advisory_lock BOOLEAN, dedup_key TEXT, window_start TIMESTAMPTZ,
               priority INTEGER, overlap TEXT, lag_seconds DOUBLE PRECISION,
               window_lag_seconds DOUBLE PRECISION)
LANGUAGE plpgsql VOLATILE
-- A generic plan for every statement: a custom plan of these statements costs more to make
-- than it saves (their arrays' sizes are unknown to a generic plan, so PostgreSQL would
-- otherwise plan some of them afresh at every call).
SET plan_cache_mode = force_generic_plan
-- No bitmap scans: the running set is read by index scans, the only kind that marks the entries
-- of finished runs dead in the index (until vacuum, every run leaves one in the running index),
-- so that later claims skip them. A bitmap scan visits each of their rows at every claim.
SET enable_bitmapscan = off
AS $fn$
#variable_conflict use_column
DECLARE
    lq RECORD;
    queue_name TEXT;
    held TEXT[];
    keyless BOOLEAN;
    tids TID[];
    scanned BIGINT;
    claim_at TIMESTAMPTZ;
    may_wait BOOLEAN := true;
    got INTEGER;
    any_keyless BOOLEAN;
BEGIN
    -- The worker's completions first, and the jobs that take over their slots in queues limited
    -- by a concurrency alone (_complete_and_hand_over): the other slots they free count as free
    -- to the claims below, which run in later snapshots of this transaction. Refused completions
    -- count against max_jobs too (they are rare: a lease lost; the worker's loop claims for
    -- those slots). A claimer that has sent completions holds their rows' locks, so it waits for
    -- no queue lock: a claimer holding that lock may be waiting for one of those rows.
    IF cardinality(done_ids) > 0 THEN
        may_wait := false;
        RETURN QUERY{_COMPLETE_AND_HAND_OVER};
        GET DIAGNOSTICS got = ROW_COUNT;
        max_jobs := max_jobs - got;
        IF max_jobs <= 0 THEN
            RETURN;
        END IF;
    END IF;
    FOR lq IN
        SELECT q.name, q.key_concurrency, q.concurrency IS NULL AND q.rate_limit IS NULL AS by_key
          FROM scheduler_queues AS q
         WHERE q.limited AND NOT q.paused
           AND (only_queues IS NULL OR q.name = ANY (only_queues))
           -- One probe of the next-due index per task name.
           AND EXISTS (SELECT 1 FROM unnest(names) AS t(name)
                        CROSS JOIN LATERAL (
                              SELECT 1 FROM scheduled_jobs AS j
                               WHERE j.status = 'pending' AND j.job_name = t.name
                                 AND j.queue = q.name AND j.execution_time <= now()
                               ORDER BY j.execution_time
                               LIMIT 1) AS due)
         ORDER BY random()
    LOOP
        EXIT WHEN max_jobs <= 0;
        queue_name := lq.name;
        IF lq.by_key THEN
            -- Limited by key only: the queue's lock shared (claims that count the whole queue
            -- take it alone), and the locks of the keys it claims.
            CONTINUE WHEN NOT pg_try_advisory_xact_lock_shared({_QUEUE_LOCK_CLASS}, hashtext(queue_name));
            may_wait := false;
            -- A key whose jobs another claimer claimed and committed after this claim's
            -- snapshot, but before it tried the key's lock, is held for nothing: the claim finds
            -- the key full. Then it looks again, in a later snapshot that sees that key running,
            -- so that racing claimers come back with what they asked for. It looks again, wider,
            -- too when its first rows held too few keys with room (one key's many jobs first).
            any_keyless := false;
            FOR tries IN 1..{LIMITED_CLAIM_KEY_TRIES:d} LOOP
                IF tries = 1 THEN
                    {_LOCK_KEYS_FIRST.strip()};
                ELSE
                    {_LOCK_KEYS.strip()};
                END IF;
                any_keyless := any_keyless OR keyless;
                {_hold_ended_leases("queue_name", "held")};
                RETURN QUERY{_CLAIM_HELD_KEYS};
                GET DIAGNOSTICS got = ROW_COUNT;
                max_jobs := max_jobs - got;
                EXIT WHEN max_jobs <= 0 OR (got >= cardinality(held)
                                            AND (tries > 1 OR scanned < {LIMITED_CLAIM_FIRST_SCAN:d}));
            END LOOP;
            IF any_keyless AND max_jobs > 0 THEN
                RETURN QUERY{_CLAIM_KEYLESS};
                GET DIAGNOSTICS got = ROW_COUNT;
                max_jobs := max_jobs - got;
            END IF;
            CONTINUE;
        END IF;
        -- Only a claimer that holds no lock, nor rows it completed, waits for one: claimers
        -- never deadlock.
        IF may_wait THEN
            PERFORM pg_advisory_xact_lock({_QUEUE_LOCK_CLASS}, hashtext(queue_name));
            may_wait := false;
        ELSIF NOT pg_try_advisory_xact_lock({_QUEUE_LOCK_CLASS}, hashtext(queue_name)) THEN
            CONTINUE;
        END IF;
        {_hold_ended_leases("queue_name")};
        claim_at := clock_timestamp();
        IF lq.key_concurrency IS NULL THEN
            RETURN QUERY{_CLAIM_COUNTED_KEYLESS};
        ELSE
            RETURN QUERY{_CLAIM_COUNTED};
        END IF;
        GET DIAGNOSTICS got = ROW_COUNT;
        max_jobs := max_jobs - got;
    END LOOP;
END
$fn$;
"""
"""The function that claims from limited queues, as migration 17 creates it (a test checks that
the latest migration that creates it holds exactly this text): built from the claim's own
fragments, and run as static SQL so that PostgreSQL keeps its plans.

For each limited, unpaused queue with due jobs of the names (in random order, so that no queue
starves another), it takes a lock, then counts and claims in a later statement, whose snapshot
sees every claim committed by the lock's earlier holders: the count can never miss a claim, and
the lock is held until this claim commits. (The hand-over, first, is one statement that takes
its lock itself and then checks that its snapshot missed no change: _complete_and_hand_over.)

- A queue with a concurrency alone, for the jobs of it completed here while their leases were
  live: its lock shared (hand-overs run side by side). The statement that writes the completions
  gives each such job's slot to a new job of its queue (_complete_and_hand_over says why that
  cannot over-admit); only more than that takes the path below. A worker also sends that
  statement alone (job_complete_and_hand_over_sql), which spares it this function's cost.
- A queue with a concurrency or a rate: its lock, alone. Running rows whose lease has ended are
  locked before the count, so that no renewal can revive one after it was counted as free.
- A queue limited by key only: its lock shared (so that a claim counting the whole queue, after a
  limit was added, waits for these), and the locks of the keys it claims; claimers of such a
  queue meet only on the keys they both want.

Only a claimer that holds no lock yet, and has completed no job here (it holds those rows, which a
claimer holding the lock may be waiting for), waits for a queue's lock; every other lock is
tried, and a queue or key whose lock is busy is left to the next claim, so claimers never
deadlock."""


# A worker's completions ($2/$3) and the jobs that take over their slots in queues limited by a
# concurrency alone (_complete_and_hand_over), up to $5 of the names $4 (of the queues $8 only,
# unless NULL): pg_scheduler_claim_limited's first statement, sent alone. Rows with ``claimed``
# true are claimed jobs, false the completions the fence refused; a last row with ``claimed``
# NULL says that some of the completions (of live leases) were of such queues, unpaused and
# among $8.
# $1 worker_id, $2 job_ids, $3 attempts, $4 names, $5 limit, $6 lease_seconds, $7 misfire_tolerance_seconds, $8 queues  # noqa: E501
def job_complete_and_hand_over_sql(limit: int) -> str:
    """The statement above, for a limit $5 of ``limit`` (one per claim_bound)."""
    return _job_complete_and_hand_over(claim_bound(limit))


@functools.cache
def _job_complete_and_hand_over(bound: int) -> str:
    return _complete_and_hand_over(
        "$2::text[]",
        "$3::int[]",
        "$4",
        "$5::int",
        "$1::text",
        "$6::float8",
        "$7::float8",
        "$8::text[]",
        said_capped=True,
        bound=bound,
    ).replace("SELECT true, claimed.*", "SELECT true AS claimed, claimed.*", 1)


# A worker's completions ($2/$3, possibly none) and the claim of up to $5 due jobs of the names
# $4 from the limited queues (of $8 only, unless NULL), in one round trip: pg_scheduler_claim_limited.
# Rows with ``claimed`` true are claimed jobs, false the completions the fence refused; the last
# row, ``claimed`` NULL, is there only when some queue is limited: a worker whose claims never
# see it stops asking, and looks again now and then.
# $1 worker_id, $2 job_ids, $3 attempts, $4 names, $5 limit, $6 lease_seconds, $7 misfire_tolerance_seconds, $8 queues  # noqa: E501
JOB_CLAIM_LIMITED = f"""
SELECT c.claim AS claimed, c.job_id, c.attempt, c.job_name, c.task_data, c.status,
       c.execution_time, c.started_at, c.timeout_seconds, c.retry_count, c.max_retries,
       c.use_advisory_lock, c.dedup_key, c.window_start, c.priority, c.overlap, c.lag_seconds,
       c.window_lag_seconds
  FROM pg_scheduler_claim_limited($1, $2, $3, $4, $5, $6, $7, $8) AS c
UNION ALL
(SELECT NULL, NULL, NULL, {_PADDING} FROM scheduler_queues WHERE limited LIMIT 1)
"""


async def job_claim_limited(
    conn: _Fetches,
    *,
    worker_id: str,
    job_ids: list[str],
    attempts: list[int],
    names: list[str],
    limit: int,
    lease_seconds: float,
    misfire_tolerance_seconds: float,
    queues: list[str] | None,
    timeout: float,
) -> tuple[list[asyncpg.Record], list[asyncpg.Record], bool]:
    """JOB_CLAIM_LIMITED: the jobs claimed from limited queues, the completions the fence
    refused, and whether any queue is limited."""
    rows = await conn.fetch(
        JOB_CLAIM_LIMITED,
        worker_id,
        job_ids,
        attempts,
        names,
        limit,
        lease_seconds,
        misfire_tolerance_seconds,
        queues,
        timeout=timeout,
    )
    return _claims_refusals_and_marker(rows)


async def job_complete_and_hand_over(
    conn: _Fetches,
    *,
    worker_id: str,
    job_ids: list[str],
    attempts: list[int],
    names: list[str],
    limit: int,
    lease_seconds: float,
    misfire_tolerance_seconds: float,
    queues: list[str] | None,
    timeout: float,
) -> tuple[list[asyncpg.Record], list[asyncpg.Record], bool]:
    """job_complete_and_hand_over_sql(limit): the jobs claimed, the completions the fence refused, and
    whether some completions were of queues limited by a concurrency alone."""
    rows = await conn.fetch(
        job_complete_and_hand_over_sql(limit),
        worker_id,
        job_ids,
        attempts,
        names,
        limit,
        lease_seconds,
        misfire_tolerance_seconds,
        queues,
        timeout=timeout,
    )
    return _claims_refusals_and_marker(rows)


def _claims_refusals_and_marker(
    rows: list[asyncpg.Record],
) -> tuple[list[asyncpg.Record], list[asyncpg.Record], bool]:
    """The rows of JOB_CLAIM_LIMITED or job_complete_and_hand_over_sql's, by ``claimed``: true the
    jobs claimed, false the completions the fence refused; and whether the marker row (NULL)
    came back."""
    claimed = [row for row in rows if row["claimed"]]
    refused = [row for row in rows if row["claimed"] is False]
    return claimed, refused, len(claimed) + len(refused) < len(rows)
