"""Raw SQL on asyncpg: the ceiling, with no lease, heartbeat, retry or fencing."""

from __future__ import annotations

from .base import System

_REMAINING = "SELECT count(*) FROM raw_jobs WHERE status IN ('pending', 'running')"
_OUTCOME = """
    SELECT count(*) FILTER (WHERE status = 'done') AS done,
           count(*) FILTER (WHERE status = 'done' AND attempt = 1) AS first_attempt,
           count(*) AS total
      FROM raw_jobs
"""
_FINISHED_AT = "SELECT extract(epoch FROM max(finished_at))::float8 FROM raw_jobs"

RAW_ONE = System(
    key="raw-one",
    label="raw SQL, claim 1, mark done",
    driver="raw_driver.py",
    remaining_sql=_REMAINING,
    outcome_sql=_OUTCOME,
    finished_at_sql=_FINISHED_AT,
    worker_mode="one",
    scenarios=frozenset({"drain", "latency"}),
)

RAW_BATCH = System(
    key="raw-batch",
    label="raw SQL, claim 100, mark 100 done",
    driver="raw_driver.py",
    remaining_sql=_REMAINING,
    outcome_sql=_OUTCOME,
    finished_at_sql=_FINISHED_AT,
    worker_mode="batch",
    scenarios=frozenset({"drain", "enqueue"}),  # enqueue: INSERT ... unnest
)

RAW_SLOTS = System(
    key="raw-slots",
    label="raw SQL, claim the 20 free slots, mark them done",
    driver="raw_driver.py",
    remaining_sql=_REMAINING,
    outcome_sql=_OUTCOME,
    finished_at_sql=_FINISHED_AT,
    worker_mode="slots",
    scenarios=frozenset({"drain"}),
)
