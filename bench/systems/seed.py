"""pg-scheduler 0.2.3 from PyPI, in its own virtualenv (same import name as this repository)."""

from __future__ import annotations

from ..environment import SEED_VENV
from .base import System

SEED = System(
    key="seed",
    label="pg-scheduler 0.2.3",
    driver="seed_driver.py",
    python=SEED_VENV.python,
    unfinished_sql="SELECT 1 FROM scheduled_jobs WHERE status IN ('pending', 'running')",
    outcome_sql="""
        SELECT count(*) FILTER (WHERE status = 'completed') AS done,
               count(*) FILTER (WHERE status = 'completed' AND retry_count = 0) AS first_attempt,
               count(*) AS total
          FROM scheduled_jobs
    """,
    scenarios=frozenset({"drain", "enqueue", "latency", "memory"}),
    stop_grace=5.0,  # its shutdown() can wait 40 s; the trial is already checked by then
)
