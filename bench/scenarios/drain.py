"""Drain: workers idle and ready, then N no-op jobs in one batch call; throughput is N over the
time from that call's return (the jobs are committed) until the system's own tables show none
left. Worker startup is not timed. The end is the last completion by the system's own timestamp
where it keeps one (pg-scheduler, procrastinate, pgqueuer, raw), else the poll (every 50 ms) that
saw the last job finished (0.2.3)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from ..systems import System
from ..trial import Context, Trial

Prefill = Callable[[asyncpg.Connection], Awaitable[None]]


async def drain(
    ctx: Context,
    system: System,
    *,
    processes: int | None = None,
    concurrency: int | None = None,
    pods: int = 0,
    prefill: Prefill | None = None,
    title: str = "drain",
) -> dict[str, Any]:
    opts = ctx.options
    async with Trial(ctx, system, title) as t:
        if prefill is not None:
            await prefill(t.conn)
        await t.start_workers(processes or opts.processes, concurrency or opts.concurrency, pods)
        await t.warm_up()
        enqueued = await t.enqueue(opts.jobs)
        noticed_at = await t.wait_drained()
        finished_at = await t.last_finished(noticed_at)
        seconds = finished_at - float(enqueued["done_at"])
        await t.verify()
        return {
            "jobs_per_s": opts.jobs / seconds,
            "seconds": seconds,
            "noticed_late_s": noticed_at - finished_at,
            "worker_processes": t.worker_processes,
        }
