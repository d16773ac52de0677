"""pgqueuer 1.x (asyncpg). A finished job leaves the queue table and gets a log row."""

from __future__ import annotations

from .base import System

PGQUEUER = System(
    key="pgqueuer",
    label="pgqueuer 1.6",
    driver="pgqueuer_driver.py",
    unfinished_sql="SELECT 1 FROM pgqueuer",
    # The log has a row per enqueue ('queued'), pick and outcome. No attempt count: a job that
    # ran twice shows as two picks; those beyond the first are taken off the first-attempt count.
    outcome_sql="""
        SELECT count(*) FILTER (WHERE status = 'successful') AS done,
               count(DISTINCT job_id) FILTER (WHERE status = 'successful')
                 - (count(*) FILTER (WHERE status = 'picked')
                    - count(DISTINCT job_id) FILTER (WHERE status = 'picked')) AS first_attempt,
               count(DISTINCT job_id) FILTER (WHERE status = 'queued') AS total
          FROM pgqueuer_log
    """,
    finished_at_sql="""
        SELECT extract(epoch FROM max(created))::float8 FROM pgqueuer_log WHERE status = 'successful'
    """,
    scenarios=frozenset({"drain", "enqueue", "latency", "memory", "slots", "io", "steady"}),
)
