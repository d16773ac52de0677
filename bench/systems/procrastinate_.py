"""procrastinate 3.x (psycopg 3)."""

from __future__ import annotations

from .base import System

PROCRASTINATE = System(
    key="procrastinate",
    label="procrastinate 3.10",
    driver="procrastinate_driver.py",
    unfinished_sql="SELECT 1 FROM procrastinate_jobs WHERE status IN ('todo', 'doing')",
    # A job that succeeded at the first try has attempts = 1 (bumped when it finishes).
    outcome_sql="""
        SELECT count(*) FILTER (WHERE status = 'succeeded') AS done,
               count(*) FILTER (WHERE status = 'succeeded' AND attempts = 1) AS first_attempt,
               count(*) AS total
          FROM procrastinate_jobs
    """,
    finished_at_sql="""
        SELECT extract(epoch FROM max(at))::float8 FROM procrastinate_events WHERE type = 'succeeded'
    """,
    scenarios=frozenset({"drain", "enqueue", "latency", "memory", "slots", "io", "steady"}),
)
