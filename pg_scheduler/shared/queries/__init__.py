"""Every SQL statement pg_scheduler runs, by name, in one module per entity. No SQL lives anywhere
else; every name is re-exported here, so ``queries.JOB_GET`` works whichever module holds it.

All values are bind parameters; the literals are a claim's LIMIT bound, an int the code derives
from its free slots (``claim_bound``), and the fixed :data:`MISSED_AFTER_SECONDS`, never input.
Times come from the database clock (``now()``), never from the application host, so clock skew
between pods cannot shift a lease, a misfire or a window.
Names are ``<ENTITY>_<VERB>``.
"""

from __future__ import annotations

from .admin import (
    CLUSTER_SAMPLE,
    DB_NOW,
    EMBEDDED_OTHER_SESSIONS,
    JOB_COUNTS,
    JOB_LIST,
    JOB_RETRY,
    JOBS_OLDEST_DUE_LAG,
    JOBS_UNRUNNABLE,
    LEADER_GET,
    MIGRATIONS_APPLIED,
    MIGRATIONS_CREATE,
    MIGRATIONS_CURRENT,
    MIGRATIONS_LOCK,
    MIGRATIONS_RECORD,
    SAMPLE_NO_SEQSCAN,
    WORKERS_LIST,
)

# Fragments bench/sqlcost.py removes from the claim statements to price them.
from .claim import _NOT_AWAITING_MISFIRE as _NOT_AWAITING_MISFIRE
from .claim import _NOT_BLOCKED as _NOT_BLOCKED
from .claim import (
    EXCLUSIVE_TRY_LOCK,
    EXCLUSIVE_UNLOCK,
    JOB_COMPLETE_MANY,
    JOB_FAIL,
    JOB_NEXT_DUE,
    JOB_RELEASE,
    JOB_RENEW_LEASES,
    JOB_SKIP,
    MISSED_AFTER_SECONDS,
    claim_bound,
    job_claim,
    job_complete_and_claim,
    replanned,
)
from .jobs import (
    JOB_CANCEL,
    JOB_COPY_COLUMNS,
    JOB_GET,
    JOB_INSERT,
    JOB_INSERT_BULK,
    JOB_STATUS,
    JOB_UPSERT,
    JOB_UPSERT_BULK,
    JOBS_ANALYZE,
    JOBS_NOTIFY,
    JOBS_PLANNER_ROWS,
    JOBS_TABLE,
)
from .leader import (
    LEADER_BUMP_EPOCH,
    LEADER_CHECK,
    LEADER_FENCE,
    LEADER_RESIGN,
    LEADER_TRY_LOCK,
    SET_LOCAL_STATEMENT_TIMEOUT,
)
from .periodic import (
    PERIODIC_ADVANCE,
    PERIODIC_ENQUEUE,
    PERIODIC_LIST,
    PERIODIC_LIST_DUE,
    PERIODIC_LOCK,
    PERIODIC_PASS_STAMP,
    PERIODIC_RULE_MISSED,
    PERIODIC_RUNS,
    PERIODIC_SET_ENABLED,
    PERIODIC_SET_SCHEDULE,
    PERIODIC_SETTLE_OVERLAP,
    PERIODIC_TRIGGER,
    PERIODIC_UPSERT,
)
from .registry import (
    WORKER_DEREGISTER,
    WORKER_HEARTBEAT,
    WORKER_REGISTER,
    WORKERS_LIVE_OF_SUPERVISOR,
)
from .rescue import (
    JOB_RELEASE_WORKER,
    JOB_RESCUE,
    JOB_RESCUE_DEAD_WORKER,
    WORKER_PRUNE_STALE,
)
from .vacuum import (
    VACUUM_AFTER,
    VACUUM_ALL,
    VACUUM_KEEP_LAST,
    VACUUM_RECORD,
    VACUUM_STATS,
    VACUUM_TOTALS,
)

__all__ = [
    "JOBS_TABLE", "JOB_COPY_COLUMNS", "JOB_INSERT", "JOB_UPSERT", "JOB_INSERT_BULK", "JOB_UPSERT_BULK",
    "JOBS_PLANNER_ROWS", "JOBS_ANALYZE", "JOB_GET", "JOB_STATUS", "JOB_CANCEL", "JOBS_NOTIFY",
    "MISSED_AFTER_SECONDS", "JOB_NEXT_DUE", "claim_bound", "replanned", "job_claim", "JOB_RENEW_LEASES",
    "JOB_COMPLETE_MANY", "job_complete_and_claim", "JOB_FAIL", "JOB_RELEASE", "JOB_SKIP",
    "EXCLUSIVE_TRY_LOCK", "EXCLUSIVE_UNLOCK", "WORKER_REGISTER", "WORKER_HEARTBEAT", "WORKER_DEREGISTER",
    "WORKERS_LIVE_OF_SUPERVISOR", "LEADER_TRY_LOCK", "LEADER_BUMP_EPOCH", "LEADER_CHECK",
    "LEADER_RESIGN", "SET_LOCAL_STATEMENT_TIMEOUT", "LEADER_FENCE", "WORKER_PRUNE_STALE", "JOB_RESCUE",
    "JOB_RESCUE_DEAD_WORKER", "JOB_RELEASE_WORKER", "PERIODIC_UPSERT", "PERIODIC_SET_SCHEDULE",
    "PERIODIC_LIST", "PERIODIC_LIST_DUE", "PERIODIC_LOCK", "PERIODIC_RUNS", "PERIODIC_SET_ENABLED",
    "PERIODIC_ENQUEUE", "PERIODIC_ADVANCE", "PERIODIC_PASS_STAMP", "PERIODIC_RULE_MISSED",
    "PERIODIC_TRIGGER", "PERIODIC_SETTLE_OVERLAP", "VACUUM_AFTER", "VACUUM_ALL", "VACUUM_KEEP_LAST",
    "VACUUM_RECORD", "VACUUM_STATS", "VACUUM_TOTALS", "MIGRATIONS_CREATE", "MIGRATIONS_LOCK",
    "MIGRATIONS_APPLIED", "MIGRATIONS_RECORD", "MIGRATIONS_CURRENT", "DB_NOW", "SAMPLE_NO_SEQSCAN",
    "CLUSTER_SAMPLE", "JOB_COUNTS", "EMBEDDED_OTHER_SESSIONS", "WORKERS_LIST", "LEADER_GET",
    "JOBS_OLDEST_DUE_LAG", "JOBS_UNRUNNABLE", "JOB_LIST", "JOB_RETRY",
]
