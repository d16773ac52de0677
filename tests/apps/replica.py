"""A replica for real-process tests: ``python -m tests.apps.replica``.

Starts a Scheduler on DATABASE_URL with the timings in APP_* variables, optionally schedules one
job given as JSON in APP_SCHEDULE, prints "ready <worker_id>" once started, and runs until SIGTERM
or SIGINT (install_signal_handlers=True), or APP_EXIT_AFTER_SCHEDULE=1 (a pure producer run).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from datetime import UTC, datetime, timedelta

import asyncpg

from pg_scheduler import Scheduler
from tests.apps import tasks


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def exit_with_parent() -> None:
    """SIGTERM this replica when the test process that started it dies (Linux prctl), so that
    no replica outlives a crashed or interrupted test run."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


async def main() -> int:
    exit_with_parent()
    logging.basicConfig(
        level=os.environ.get("APP_LOG", "WARNING"),
        stream=sys.stderr,
        format=f"[{os.getpid()}] %(name)s %(levelname)s %(message)s",
    )
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=1, max_size=10)
    await pool.execute(tasks.EVENTS_DDL)
    lease = _float("APP_LEASE", 2.0)
    scheduler = Scheduler(
        pool,
        max_concurrent_jobs=int(os.environ.get("APP_CONCURRENCY", "10")),
        lease_seconds=lease,
        heartbeat_seconds=lease / 4,
        leader_ttl_seconds=_float("APP_LEADER_TTL", 3.0),
        elect_interval_seconds=_float("APP_ELECT_INTERVAL", 0.5),
        rescue_interval_seconds=_float("APP_RESCUE_INTERVAL", 0.3),
        worker_stale_seconds=lease,
        periodic_interval_seconds=0.2,
        retry_delay_seconds=0.1,
        shutdown_timeout_seconds=_float("APP_SHUTDOWN_TIMEOUT", 5.0),
        install_signal_handlers=True,
    )
    spec = os.environ.get("APP_SCHEDULE")
    if spec:
        s = json.loads(spec)
        job_id = await scheduler.schedule(
            s["task"],
            execution_time=datetime.now(UTC) + timedelta(seconds=s.get("delay", 0)),
            args=s.get("args", ()),
            max_retries=s.get("max_retries", 0),
            job_id=s.get("job_id"),
        )
        print(f"scheduled {job_id}", flush=True)
    if os.environ.get("APP_EXIT_AFTER_SCHEDULE") == "1":
        await pool.close()
        return 0
    await scheduler.start()
    print(f"ready {scheduler.worker_id}", flush=True)
    await scheduler.wait_closed()
    await pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
