"""pg-scheduler, this repository: pods started exactly as production does, ``pg-scheduler run``;
and, for the I/O-bound scenario, an application embedding the in-process ``Scheduler``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .base import DRIVERS, Launch, System

PROCESSES_PER_POD = 2


class Ours(System):
    def launches(self, dsn: str, processes: int, concurrency: int, pods: int = 0) -> list[Launch]:
        """``pods`` pods of ``processes // pods`` worker processes (default: pods of 2)."""
        pods = pods or max(1, processes // PROCESSES_PER_POD)
        per_pod = max(1, processes // pods)
        cmd = [
            str(self.python),
            "-m",
            "pg_scheduler",
            "run",
            str(DRIVERS / "ours_app.py"),
            "--database-url",
            dsn,
            "--workers",
            str(per_pod),
            "--max-concurrent-jobs",
            str(concurrency),
            # Many pods on one machine: no HTTP endpoints (metrics are still recorded).
            "--metrics-port",
            "0",
            "--log-level",
            "WARNING",
        ]
        return [Launch(f"ours-pod-{i}", cmd, per_pod) for i in range(pods)]


OURS = Ours(
    key="ours",
    label="pg-scheduler (this repo)",
    driver="ours_driver.py",
    # The idle scenario's million 'bench.filler' rows are not part of any workload. The harness
    # polls this every 50 ms during a drain, so it must not cost what it measures: one branch per
    # state, each on its partial index. `status IN ('pending', 'running')` was planned as a
    # parallel sequential scan, 118 ms of three backends per poll over the million finished
    # rows, which took more CPU than the drain it timed.
    unfinished_sql="""
        SELECT 1 FROM scheduled_jobs WHERE status = 'pending' AND job_name <> 'bench.filler'
        UNION ALL
        SELECT 1 FROM scheduled_jobs WHERE status = 'running' AND job_name <> 'bench.filler'
    """,
    outcome_sql="""
        SELECT count(*) FILTER (WHERE status = 'completed') AS done,
               count(*) FILTER (WHERE status = 'completed' AND attempt = 1) AS first_attempt,
               count(*) AS total
          FROM scheduled_jobs WHERE job_name <> 'bench.filler'
    """,
    finished_at_sql="""
        SELECT extract(epoch FROM max(finished_at))::float8 FROM scheduled_jobs
         WHERE job_name <> 'bench.filler'
    """,
    scenarios=frozenset({"drain", "enqueue", "latency", "memory", "scale", "idle", "slots", "io", "steady"}),
)

OURS_INPROC = System(
    key="ours-inproc",
    label="pg-scheduler, in-process Scheduler",
    driver="ours_driver.py",  # worker --mode inproc: Scheduler(pool, max_concurrent_jobs=C)
    unfinished_sql=OURS.unfinished_sql,
    outcome_sql=OURS.outcome_sql,
    finished_at_sql=OURS.finished_at_sql,
    worker_mode="inproc",
    scenarios=frozenset({"io"}),
)


def baseline_system(commit: str, python: Path) -> System:
    """pg-scheduler at an earlier ``commit``, run as OURS is, for the drain, the latency, the
    enqueue and the steady load (the figures a change must not make worse): the key is
    ``ours@<commit>``, which the report compares with ``ours``."""
    return dataclasses.replace(
        OURS,
        key=f"ours@{commit[:7]}",
        label=f"ours@{commit[:7]}",  # the report labels it by its key, as here
        python=python,
        scenarios=frozenset({"drain", "latency", "enqueue", "steady"}),
    )
