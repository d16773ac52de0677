"""Every SQL statement pg_scheduler runs, by name, in one module per entity.

No SQL lives anywhere else; every name is re-exported here, so ``queries.JOB_GET`` works
whichever module holds it.

All values are bind parameters; the literals are a claim's LIMIT bound, an int the code derives
from its free slots (``claim_bound``), and the fixed :data:`MISSED_AFTER_SECONDS`,
:data:`LIMITED_CLAIM_SCAN`, :data:`LIMITED_CLAIM_BOUND`, :data:`LIMITED_CLAIM_KEY_TRIES` and
:data:`HAND_OVER_RECOUNT_SECONDS`, never input.
``LIMITED_CLAIM_FUNCTION`` is the function that migration 9 creates (a test checks the migration
holds that text).
Times come from the database clock (``now()``), never from the application host, so clock skew
between pods cannot shift a lease, a misfire or a window.
Statements are named ``<ENTITY>_<VERB>[_<WHAT>]``: the entity in the singular (``MIGRATION``,
``JOB``, ``WORKER``, ``LEADER``, ``PERIODIC``, ``QUEUE``, ``VACUUM``, ``CLUSTER``; ``DB`` for the server and
session settings), then what the statement does: ``JOB_GET_STATUS``, ``PERIODIC_STAMP_PASS``.
``JOBS_TABLE``, ``JOB_COPY_COLUMNS``, ``LIMITED_CLAIM_SCAN``, ``LIMITED_CLAIM_BOUND``,
``LIMITED_CLAIM_KEY_TRIES``, ``LIMITED_CLAIM_FUNCTION``, ``HAND_OVER_RECOUNT_SECONDS`` and
``MISSED_AFTER_SECONDS`` are values,
not statements.
A statement of more than two parameters has a legend on the line directly above it, in one form:
``# $1 job_id, $2 worker_id, $3 attempt`` (tests/unit/test_queries.py checks names and legends).
A statement whose text depends on the claim limit is built by ``<entity>_<verb>_sql(limit)``. The
widest statements (seven parameters or more) are run through a keyword-only wrapper beside them,
named after the statement in lower case (``job_fail(conn, job_id=..., worker_id=..., ...)``), so
that no call can swap two values of one type.
"""

from __future__ import annotations

from .admin import (
    CLUSTER_SAMPLE,
    DB_COUNT_OTHER_SESSIONS,
    DB_DISABLE_SEQSCAN,
    DB_GET_NOW,
    JOB_COUNT_BY_STATUS,
    JOB_COUNT_UNRUNNABLE,
    JOB_GET_OLDEST_DUE_LAG,
    JOB_LIST,
    JOB_RETRY,
    LEADER_GET,
    MIGRATION_CREATE_TABLE,
    MIGRATION_GET_CURRENT,
    MIGRATION_LIST_APPLIED,
    MIGRATION_RECORD,
    MIGRATION_TAKE_LOCK,
    WORKER_LIST,
)

# Fragments bench/sqlcost.py removes from the claim statements to price them (and tests find).
from .claim import _NOT_AWAITING_MISFIRE as _NOT_AWAITING_MISFIRE
from .claim import _NOT_BLOCKED as _NOT_BLOCKED
from .claim import _NOT_LIMITED as _NOT_LIMITED
from .claim import (
    HAND_OVER_RECOUNT_SECONDS,
    JOB_CLAIM_LIMITED,
    JOB_COMPLETE_AND_HAND_OVER,
    JOB_COMPLETE_MANY,
    JOB_FAIL,
    JOB_GET_NEXT_DUE,
    JOB_GET_NEXT_DUE_IN_QUEUES,
    JOB_GET_NEXT_LIMITED,
    JOB_RELEASE,
    JOB_RENEW_LEASES,
    JOB_SKIP,
    JOB_TRY_LOCK_EXCLUSIVE,
    JOB_UNLOCK_EXCLUSIVE,
    LIMITED_CLAIM_BOUND,
    LIMITED_CLAIM_FUNCTION,
    LIMITED_CLAIM_KEY_TRIES,
    LIMITED_CLAIM_SCAN,
    MISSED_AFTER_SECONDS,
    claim_bound,
    job_claim,
    job_claim_limited,
    job_claim_sql,
    job_complete_and_claim,
    job_complete_and_claim_sql,
    job_complete_and_hand_over,
    job_fail,
    job_get_next_due,
    replanned,
)
from .jobs import (
    JOB_ANALYZE,
    JOB_CANCEL,
    JOB_COPY_COLUMNS,
    JOB_GET,
    JOB_GET_PLANNER_ROWS,
    JOB_GET_STATUS,
    JOB_INSERT,
    JOB_INSERT_BULK,
    JOB_NOTIFY,
    JOB_UPSERT,
    JOB_UPSERT_BULK,
    JOBS_TABLE,
    job_insert,
    job_insert_bulk,
)
from .leader import (
    DB_SET_STATEMENT_TIMEOUT,
    LEADER_BUMP_EPOCH,
    LEADER_CHECK,
    LEADER_FENCE,
    LEADER_RESIGN,
    LEADER_TRY_LOCK,
)
from .periodic import (
    PERIODIC_ADVANCE,
    PERIODIC_ENQUEUE,
    PERIODIC_GET_RUNS,
    PERIODIC_LIST,
    PERIODIC_LIST_DUE,
    PERIODIC_LOCK,
    PERIODIC_RULE_MISSED,
    PERIODIC_SET_ENABLED,
    PERIODIC_SET_SCHEDULE,
    PERIODIC_SETTLE_OVERLAP,
    PERIODIC_STAMP_PASS,
    PERIODIC_TRIGGER,
    PERIODIC_UPSERT,
    periodic_enqueue,
    periodic_upsert,
)
from .queues import (
    QUEUE_DECLARE,
    QUEUE_LIST,
    QUEUE_LIST_UNAWARE_WORKERS,
    QUEUE_LOCK,
    QUEUE_RESET,
    QUEUE_SAMPLE,
    QUEUE_SET_LIMITS,
    QUEUE_SET_PAUSED,
)
from .registry import (
    WORKER_COUNT_LIVE,
    WORKER_DEREGISTER,
    WORKER_HEARTBEAT,
    WORKER_REGISTER,
)
from .rescue import (
    JOB_RELEASE_WORKER,
    JOB_RESCUE,
    JOB_RESCUE_DEAD_WORKER,
    WORKER_PRUNE_STALE,
)
from .vacuum import (
    VACUUM_DELETE_ALL,
    VACUUM_DELETE_BEYOND_LAST,
    VACUUM_DELETE_OLD,
    VACUUM_GET_TOTALS,
    VACUUM_LIST_STATS,
    VACUUM_RECORD,
)

__all__ = [
    "JOBS_TABLE",
    "JOB_COPY_COLUMNS",
    "JOB_INSERT",
    "JOB_UPSERT",
    "job_insert",
    "JOB_INSERT_BULK",
    "JOB_UPSERT_BULK",
    "job_insert_bulk",
    "JOB_GET_PLANNER_ROWS",
    "JOB_ANALYZE",
    "JOB_GET",
    "JOB_GET_STATUS",
    "JOB_CANCEL",
    "JOB_NOTIFY",
    "MISSED_AFTER_SECONDS",
    "JOB_GET_NEXT_DUE",
    "JOB_GET_NEXT_DUE_IN_QUEUES",
    "claim_bound",
    "replanned",
    "job_claim_sql",
    "job_claim",
    "job_get_next_due",
    "LIMITED_CLAIM_SCAN",
    "LIMITED_CLAIM_KEY_TRIES",
    "LIMITED_CLAIM_FUNCTION",
    "LIMITED_CLAIM_BOUND",
    "JOB_CLAIM_LIMITED",
    "job_claim_limited",
    "JOB_COMPLETE_AND_HAND_OVER",
    "job_complete_and_hand_over",
    "HAND_OVER_RECOUNT_SECONDS",
    "JOB_GET_NEXT_LIMITED",
    "JOB_RENEW_LEASES",
    "JOB_COMPLETE_MANY",
    "job_complete_and_claim_sql",
    "job_complete_and_claim",
    "JOB_FAIL",
    "job_fail",
    "JOB_RELEASE",
    "JOB_SKIP",
    "JOB_TRY_LOCK_EXCLUSIVE",
    "JOB_UNLOCK_EXCLUSIVE",
    "QUEUE_DECLARE",
    "QUEUE_LOCK",
    "QUEUE_SET_LIMITS",
    "QUEUE_RESET",
    "QUEUE_SET_PAUSED",
    "QUEUE_LIST",
    "QUEUE_LIST_UNAWARE_WORKERS",
    "QUEUE_SAMPLE",
    "WORKER_REGISTER",
    "WORKER_HEARTBEAT",
    "WORKER_DEREGISTER",
    "WORKER_COUNT_LIVE",
    "LEADER_TRY_LOCK",
    "LEADER_BUMP_EPOCH",
    "LEADER_CHECK",
    "LEADER_RESIGN",
    "DB_SET_STATEMENT_TIMEOUT",
    "LEADER_FENCE",
    "WORKER_PRUNE_STALE",
    "JOB_RESCUE",
    "JOB_RESCUE_DEAD_WORKER",
    "JOB_RELEASE_WORKER",
    "PERIODIC_UPSERT",
    "periodic_upsert",
    "PERIODIC_SET_SCHEDULE",
    "PERIODIC_LIST",
    "PERIODIC_LIST_DUE",
    "PERIODIC_LOCK",
    "PERIODIC_GET_RUNS",
    "PERIODIC_SET_ENABLED",
    "PERIODIC_ENQUEUE",
    "periodic_enqueue",
    "PERIODIC_ADVANCE",
    "PERIODIC_STAMP_PASS",
    "PERIODIC_RULE_MISSED",
    "PERIODIC_TRIGGER",
    "PERIODIC_SETTLE_OVERLAP",
    "VACUUM_DELETE_OLD",
    "VACUUM_DELETE_ALL",
    "VACUUM_DELETE_BEYOND_LAST",
    "VACUUM_RECORD",
    "VACUUM_LIST_STATS",
    "VACUUM_GET_TOTALS",
    "MIGRATION_CREATE_TABLE",
    "MIGRATION_TAKE_LOCK",
    "MIGRATION_LIST_APPLIED",
    "MIGRATION_RECORD",
    "MIGRATION_GET_CURRENT",
    "DB_GET_NOW",
    "DB_DISABLE_SEQSCAN",
    "CLUSTER_SAMPLE",
    "JOB_COUNT_BY_STATUS",
    "DB_COUNT_OTHER_SESSIONS",
    "WORKER_LIST",
    "LEADER_GET",
    "JOB_GET_OLDEST_DUE_LAG",
    "JOB_COUNT_UNRUNNABLE",
    "JOB_LIST",
    "JOB_RETRY",
]
