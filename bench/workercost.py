"""``python -m bench.workercost``: the worker's own Python per job, without a database.

A real ``Worker`` runs no-op jobs through its whole per-job path (claimed rows made into jobs,
launched as tasks, the context, the fenced completion through the completer, the outcome, the
metrics in a multiprocess folder as in a pod), but its one database statement, the completion
and the refill claim, is replaced by a function that returns at once with the next batch of
rows. What is left is the CPU that the worker spends per job besides asyncpg and the socket:
the part of a drain that this repository's Python decides. It is deterministic to within a few
percent on this machine, where a drain moves by 20 % from run to run, so it tells small changes
apart. Not a test and not part of ``python -m bench``; the drain in ``python -m bench`` is the
measurement that counts.

``--profile`` prints cProfile's top functions (which inflates the time per job about 3.5 times).
``--event-loop``: as ``pg-scheduler run``'s (``auto``: uvloop where installed, as in a pod).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

# Imports no metrics module: PROMETHEUS_MULTIPROC_DIR is set in main() before one is imported.
from pg_scheduler.worker.event_loop import EVENT_LOOPS, new_event_loop, resolve

SLOTS = 20
TASK = "bench.workercost.noop"


def _rows(first: int, count: int, now: datetime) -> list[dict[str, Any]]:
    """Claimed rows as job_complete_and_claim_sql's statement returns them (dicts stand in for records)."""
    return [
        {
            "job_id": f"job-{key}",
            "job_name": TASK,
            "attempt": 1,
            "status": "running",
            "task_data": f'{{"args": [{key}, 0.0], "kwargs": {{}}}}',
            "execution_time": now,
            "started_at": now,
            "timeout_seconds": None,
            "retry_count": 0,
            "max_retries": 0,
            "use_advisory_lock": False,
            "dedup_key": None,
            "overlap": None,
            "lag_seconds": 0.001,
            "window_lag_seconds": None,
            "priority": 5,
            "claimed": True,
        }
        for key in range(first, first + count)
    ]


async def _noop(key: int, enqueued_at: float) -> None:
    return None


async def _drain(jobs: int) -> float:
    """CPU seconds per job for ``jobs`` no-op jobs through one worker with SLOTS slots."""
    from pg_scheduler.shared.config import SchedulerConfig
    from pg_scheduler.shared.tasks import registry
    from pg_scheduler.worker import claimer
    from pg_scheduler.worker.worker import Worker

    if registry.find(TASK) is None:
        registry.register(_noop, name=TASK)
    now = datetime.now(UTC)
    made = 0
    finished = 0
    all_done = asyncio.Event()
    worker = Worker(
        None,
        registry,
        (),
        {},
        SchedulerConfig.build(max_concurrent_jobs=SLOTS),  # type: ignore[arg-type]
        worker_id="workercost",
    )

    def batch(count: int) -> list[claimer.ClaimedJob]:
        nonlocal made
        count = min(count, jobs - made)
        rows = _rows(made, count, now)
        made += count
        return claimer._in_priority_order(rows, time.monotonic())  # type: ignore[arg-type]

    async def complete_and_claim(
        job_ids: list[str],
        attempts: list[int],
        names: Any,
        limit: int,
    ) -> tuple[set[tuple[str, int]], list[claimer.ClaimedJob]]:
        nonlocal finished
        await asyncio.sleep(0)  # the reply arrives in a later loop iteration, as from a socket
        finished += len(job_ids)
        if finished >= jobs:
            all_done.set()
        return set(zip(job_ids, attempts, strict=True)), batch(limit)

    worker._claimer.complete_and_claim = complete_and_claim  # type: ignore[method-assign]
    worker._loop = asyncio.get_running_loop()
    started = time.process_time()
    for claimed in batch(SLOTS):
        worker._launch(claimed)
    await all_done.wait()
    return (time.process_time() - started) / jobs


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workercost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=200_000, help="jobs per run (200000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs, each printed (3)")
    parser.add_argument("--profile", action="store_true", help="one run under cProfile")
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="auto",
        help="the worker's event loop, as pg-scheduler run's (auto)",
    )
    options = parser.parse_args()

    def run(jobs: int) -> float:
        with asyncio.Runner(loop_factory=lambda: new_event_loop(options.event_loop)) as runner:
            return runner.run(_drain(jobs))

    with tempfile.TemporaryDirectory(prefix="pg-scheduler-workercost-") as folder:
        # As in a pod's worker process: multiprocess metric values, with the cached pid.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        from pg_scheduler.shared.metrics import use_cached_pid_store

        use_cached_pid_store()
        if options.profile:
            profile = cProfile.Profile()
            profile.runcall(run, options.jobs)
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
            return
        for _ in range(options.rounds):
            per_job = run(options.jobs)
            print(
                f"{per_job * 1e6:.2f} µs of worker CPU per job ({options.jobs:,} no-op jobs, "
                f"{SLOTS} slots, no database, {resolve(options.event_loop)})"
            )


if __name__ == "__main__":
    main()
