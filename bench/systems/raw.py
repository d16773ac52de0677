"""Raw SQL on asyncpg: the ceiling, with no lease, heartbeat, retry or fencing."""

from __future__ import annotations

from .base import System

# One branch per partial index: EXISTS stops at the first entry of either.
_UNFINISHED = """
    SELECT 1 FROM raw_jobs WHERE status = 'pending'
    UNION ALL SELECT 1 FROM raw_jobs WHERE status = 'running'
"""
_OUTCOME = """
    SELECT count(*) FILTER (WHERE status = 'done') AS done,
           count(*) FILTER (WHERE status = 'done' AND attempt = 1) AS first_attempt,
           count(*) AS total
      FROM raw_jobs
"""
_FINISHED_AT = "SELECT extract(epoch FROM max(finished_at))::float8 FROM raw_jobs"


def _raw(key: str, label: str, mode: str, scenarios: set[str]) -> System:
    """One worker mode of drivers/raw_driver.py, on the same table and checks."""
    return System(
        key=key,
        label=label,
        driver="raw_driver.py",
        unfinished_sql=_UNFINISHED,
        outcome_sql=_OUTCOME,
        finished_at_sql=_FINISHED_AT,
        worker_mode=mode,
        scenarios=frozenset(scenarios),
    )


RAW_ONE = _raw("raw-one", "raw SQL, claim 1, mark done", "one", {"drain", "latency"})
RAW_SLOTS = _raw("raw-slots", "raw SQL, claim the free slots, mark them done", "slots", {"drain", "slots"})
RAW_BATCH = _raw(
    "raw-batch", "raw SQL, claim 100, mark 100 done", "batch", {"drain", "enqueue"}
)  # enqueue: INSERT ... unnest
