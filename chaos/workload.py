"""The APP the chaos pods run (``pg-scheduler run chaos.workload``).

Every run writes its side effects (start, end) to an append-only file of its process, not to
the database: a body must keep recording while its pod is cut off from PostgreSQL, and a late
run of a job whose lease was lost is exactly what the checker looks for. One ``os.write`` on an
``O_APPEND`` descriptor per event is atomic for lines this short and survives SIGKILL (it is in
the kernel once the call returns).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import timedelta
from typing import Any

from pg_scheduler import current_job, declare_queue, job, periodic

EFFECTS_DIR_ENV = "CHAOS_EFFECTS_DIR"
QUEUES_ENV = "PG_SCHEDULER_QUEUES"
"""The queues the pod claims (``pg-scheduler run`` reads it); unset: every queue."""
PINNED_QUEUE = "pinned"
"""A queue that one pod does not claim: none of its jobs may run there."""
CAPPED_QUEUE = "capped"
"""At most CAPPED_CONCURRENCY of its jobs run at once in the whole cluster."""
CAPPED_CONCURRENCY = 3
KEYED_QUEUE = "keyed"
"""At most one running job per concurrency key (``KEYS`` of them)."""
KEYS = ("k0", "k1", "k2", "k3")
LIMITS: dict[str, dict[str, int]] = {
    CAPPED_QUEUE: {"concurrency": CAPPED_CONCURRENCY},
    KEYED_QUEUE: {"key_concurrency": 1},
}
"""The limits every pod declares (below), by queue; the checker holds the runs to them."""
for _name, _limits in LIMITS.items():
    declare_queue(
        _name, concurrency=_limits.get("concurrency"), key_concurrency=_limits.get("key_concurrency")
    )

TICK_EVERY = "chaos.tick_every"
"""Every second, ``misfire="all"``: every window of the run must complete exactly once."""
TICK_CRON = "chaos.tick_cron"
"""Every 2 s by cron, the default ``misfire="coalesce"``: windows missed while no leader was
healthy may be coalesced away, never run twice."""
TICK_LONG = "chaos.tick_long"
"""Every 5 s, a 2.5-s body: long periodic runs that worker kills and partitions land in."""
TICK_SKIP = "chaos.tick_skip"
"""Every 3 s, ``misfire="skip"``: no window that passed while no leader ran may run late."""
PERIODIC_KEYS = (TICK_EVERY, TICK_CRON, TICK_LONG, TICK_SKIP)
MISFIRE = {TICK_EVERY: "all", TICK_CRON: "coalesce", TICK_LONG: "coalesce", TICK_SKIP: "skip"}
"""Each periodic job's misfire policy, as declared below."""

_fd: int | None = None


class DesignedFailure(Exception):
    """Raised by a job told to fail its first attempts."""


def _record(event: str, **fields: Any) -> None:
    global _fd
    if _fd is None:
        folder = os.environ[EFFECTS_DIR_ENV]
        _fd = os.open(
            os.path.join(folder, f"effects-{os.getpid()}.jsonl"),
            os.O_WRONLY | os.O_APPEND | os.O_CREAT,
            0o644,
        )
    context = current_job()
    line = json.dumps(
        {
            "ev": event,
            "job": context.job_id,
            "attempt": context.attempt,
            "worker": context.worker_id,
            "pid": os.getpid(),
            "t": time.time(),
            "claims": os.environ.get(QUEUES_ENV),
            **fields,
        }
    )
    os.write(_fd, (line + "\n").encode())


async def _body(seconds: float, fail_attempts: int = 0) -> None:
    _record("start")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:  # lease lost, cancelled, or handed back at shutdown
        _record("end", ok=None)
        raise
    if current_job().attempt <= fail_attempts:
        _record("end", ok=False)
        raise DesignedFailure(f"designed failure of attempt {current_job().attempt}")
    _record("end", ok=True)


@job(name="chaos.work")
async def work(seconds: float, fail_attempts: int = 0) -> None:
    """A one-off job: sleeps ``seconds``; its first ``fail_attempts`` attempts raise."""
    await _body(seconds, fail_attempts)


@periodic(every=timedelta(seconds=1), dedup_key=TICK_EVERY, misfire="all", max_retries=10)
async def tick_every() -> None:
    await _body(0.05)


@periodic(cron="* * * * * */2", dedup_key=TICK_CRON, max_retries=10)
async def tick_cron() -> None:
    await _body(0.05)


@periodic(every=timedelta(seconds=5), dedup_key=TICK_LONG, max_retries=10)
async def tick_long() -> None:
    await _body(2.5)


@periodic(every=timedelta(seconds=3), dedup_key=TICK_SKIP, misfire="skip", max_retries=10)
async def tick_skip() -> None:
    await _body(0.05)
