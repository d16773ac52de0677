"""Acting on jobs by hand, one or every job a filter matches: cancel, retry, run now, delete; and
the keyset pages of a listing.

The statements on one job and those on a filter's jobs are built from one text per action, so
that both change the same columns under the same state rule. A filter's statements take its
conditions as nullable parameters (NULL: no condition), in one order: $1 the states, $2 queue,
$3 task, $4 job_id, $5 args (the JSON ``task_data`` must contain), $6 since, $7 until. They are
run after DB_SET_CUSTOM_PLANS, so each call is planned with its values: a condition left out
folds away and the ones given can use the indexes, which a generic plan of every NULL test
could not.

A bulk action works in batches, each one statement that locks up to $8 matching rows (``FOR
UPDATE SKIP LOCKED``: a row another transaction holds, a claim say, is left to the next batch or
the next call) and acts on them; the caller repeats until a batch comes back short. A call acts
only on jobs already in their state when it began ($9, the database's clock then: the time a job
was written, or its last attempt started, for a pending one; its start for a running one; its
finish for a finished one), so
its batches end whatever goes on meanwhile: a retried job that fails again, jobs completing or
inserted while it deletes or cancels, are left to the next call, and no job is acted on twice
by one call.
"""

from __future__ import annotations

from .admin import _PENDING_PRIORITIES

_FINISHED = "('completed', 'failed', 'cancelled', 'expired')"

# The time of a row's own state, which a filter's since/until bound.
_STATE_TIME = (
    "CASE status WHEN 'pending' THEN execution_time WHEN 'running' THEN started_at ELSE finished_at END"
)

# Plan each statement of the transaction with its parameter values.
DB_SET_CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"


def _matching(status: str, time: str) -> str:
    """A filter's conditions ($2 to $7) after the state test ``status``, the range over ``time``.
    A task given in full (with its module: it holds a ``:``, which no part of a name after the
    first ``:`` can) is tested on ``job_name`` alone, which the plan of that value can look up
    in the pending jobs' index by task name."""
    return f"""{status}
   AND ($2::text IS NULL OR queue = $2)
   AND ($3::text IS NULL OR job_name = $3 OR (strpos($3, ':') = 0 AND split_part(job_name, ':', 2) = $3))
   AND ($4::text IS NULL OR job_id = $4)
   AND ($5::jsonb IS NULL OR task_data @> $5::jsonb)
   AND ($6::timestamptz IS NULL OR {time} >= $6)
   AND ($7::timestamptz IS NULL OR {time} < $7)"""


# Since when a row has been in its state, as far as the table tells: what pins a bulk action's set.
# A pending job is pending since it was written or, when a failed attempt or a released lease put
# it back, since that attempt started (both keep started_at), so one claimed during the call is
# not taken again.
_IN_STATE_SINCE = (
    "CASE status WHEN 'pending' THEN coalesce(greatest(created_at, started_at), '-infinity') "
    "WHEN 'running' THEN coalesce(started_at, '-infinity') "
    "ELSE coalesce(finished_at, '-infinity') END"
)


def _batch(also: str = "") -> str:
    """``= ANY (ids)``: the ids of up to $8 rows that match the filter (and ``also``) and were
    in their state before $9, locked."""
    return f"""= ANY (ARRAY(
    SELECT job_id FROM scheduled_jobs
     WHERE {_matching("status = ANY ($1::text[])", _STATE_TIME)}{also}
       AND {_IN_STATE_SINCE} < $9::timestamptz
     LIMIT $8
       FOR UPDATE SKIP LOCKED))"""


# --------------------------------------------------------------------------- cancel


def _cancel(ids: str, reason: str) -> str:
    """Cancel the pending or running jobs whose id is ``ids``; each cancelled one is announced
    on ``pg_scheduler_cancel``, which tells the worker running it to cancel the coroutine at
    once (it stops at the next await; its completion is refused, the row being final)."""
    return f"""
WITH cancelled AS (
    UPDATE scheduled_jobs
       SET status = 'cancelled', finished_at = now(), lease_until = NULL,
           error_message = coalesce({reason}, 'cancelled')
     WHERE job_id {ids} AND status IN ('pending', 'running')
    RETURNING job_id
)
SELECT job_id, pg_notify('pg_scheduler_cancel', job_id) AS notified FROM cancelled
"""


JOB_CANCEL = _cancel("= $1", "$2")
# $1 states, $2 queue, $3 task, $4 job_id, $5 args, $6 since, $7 until, $8 batch_size, $9 begun, $10 reason  # noqa: E501
JOB_CANCEL_MATCHING = _cancel(_batch(), "$10")

# --------------------------------------------------------------------------- retry


def _retry(ids: str) -> str:
    """A finished job that did not complete runs again: pending, due now, with its retries back
    to zero. ``attempt`` keeps counting up (it fences completions, so it only grows); the last
    error stays until the next attempt ends, as it does between automatic retries. Wakes idle
    workers."""
    return f"""
WITH retried AS (
    UPDATE scheduled_jobs
       SET status = 'pending', execution_time = now(), retry_count = 0, worker_id = NULL,
           lease_until = NULL, last_heartbeat = NULL, started_at = NULL, finished_at = NULL
     WHERE job_id {ids} AND status IN ('failed', 'cancelled', 'expired')
    RETURNING job_id, attempt, max_retries
)
SELECT job_id, attempt, max_retries, pg_notify('pg_scheduler_jobs', '') AS notified FROM retried
"""


JOB_RETRY = _retry("= $1")
# $1 states, $2 queue, $3 task, $4 job_id, $5 args, $6 since, $7 until, $8 batch_size, $9 begun
JOB_RETRY_MATCHING = _retry(_batch())

# --------------------------------------------------------------------------- run now


def _due_now(ids: str) -> str:
    """A pending job becomes due now; one already due keeps its due time (and so its place
    among the due jobs). Wakes idle workers."""
    return f"""
WITH due AS (
    UPDATE scheduled_jobs SET execution_time = least(execution_time, now())
     WHERE job_id {ids} AND status = 'pending'
    RETURNING job_id
)
SELECT job_id, pg_notify('pg_scheduler_jobs', '') AS notified FROM due
"""


JOB_SET_DUE_NOW = _due_now("= $1")
# Only jobs due later: those already due are left as they are, which ends the batches.
# $1 states, $2 queue, $3 task, $4 job_id, $5 args, $6 since, $7 until, $8 batch_size, $9 begun
JOB_SET_DUE_NOW_MATCHING = _due_now(_batch("\n       AND execution_time > now()"))

# --------------------------------------------------------------------------- delete


def _delete(ids: str) -> str:
    """Delete the finished jobs (completed, failed, cancelled, expired) whose id is ``ids``; a
    pending or running job is never deleted."""
    return f"""
DELETE FROM scheduled_jobs
 WHERE job_id {ids} AND status IN {_FINISHED}
RETURNING job_id
"""


JOB_DELETE_FINISHED = _delete("= $1")
# $1 states, $2 queue, $3 task, $4 job_id, $5 args, $6 since, $7 until, $8 batch_size, $9 begun
JOB_DELETE_MATCHING = _delete(_batch())

# --------------------------------------------------------------------------- listing


def _page(time: str, order: str, also: str = "") -> str:
    """A keyset page of the jobs of the one state $1 that match the filter (and ``also``),
    ordered by ``time`` then job_id (``order``: ASC or DESC), after the cursor ($8 the last
    row's ``time``, $9 its id; NULL: from the start), of at most $10 rows. The cursor's test is
    written so that its first half bounds an index scan on ``time``."""
    past = ">" if order == "ASC" else "<"
    return f"""
SELECT * FROM scheduled_jobs
 WHERE {_matching(also + "status = $1", time)}
   AND ($8::timestamptz IS NULL
        OR ({time} {past}= $8 AND ({time} {past} $8 OR job_id {past} $9::text)))
 ORDER BY {time} {order}, job_id {order}
 LIMIT $10
"""


# Finished jobs, newest first (scheduled_jobs_finished_idx: status, finished_at).
# $1 state, $2 queue, $3 task, $4 job_id, $5 args, $6 since, $7 until, $8 after_key, $9 after_id, $10 limit  # noqa: E501
JOB_LIST_FINISHED_PAGE = _page("finished_at", "DESC")
# Pending jobs, the first due first. No index orders every pending job by due time alone (one
# would cost every job's insert), but the claim index (priority, execution_time, job_name) orders
# those of one priority: the page takes the first $10 of each priority in use (a loose scan finds
# the few priorities) and keeps the first $10 of those. The cost follows the page size and the
# number of priorities, not the pending jobs, which a sort of them all would (millions of jobs
# scheduled ahead are common).
# $1 state, $2 queue, $3 task, $4 job_id, $5 args, $6 since, $7 until, $8 after_key, $9 after_id, $10 limit  # noqa: E501
JOB_LIST_PENDING_PAGE = f"""
{_PENDING_PRIORITIES}
SELECT page.* FROM prios AS p
 CROSS JOIN LATERAL ({_page("execution_time", "ASC", also="priority = p.priority AND ")}) AS page
 WHERE p.priority IS NOT NULL
 ORDER BY page.execution_time ASC, page.job_id ASC
 LIMIT $10
"""
# Running jobs, the last started first.
# $1 state, $2 queue, $3 task, $4 job_id, $5 args, $6 since, $7 until, $8 after_key, $9 after_id, $10 limit  # noqa: E501
JOB_LIST_RUNNING_PAGE = _page("started_at", "DESC")

# Any state's jobs that match, by id: for a filter that names a job_id (no order is needed for one
# row, and no state is required).
# $1 states, $2 queue, $3 task, $4 job_id, $5 args, $6 since, $7 until, $8 limit
JOB_LIST_MATCHING = f"""
SELECT * FROM scheduled_jobs
 WHERE {_matching("status = ANY ($1::text[])", _STATE_TIME)}
 ORDER BY job_id
 LIMIT $8
"""
