"""Steady load: producers call the single-job API (pg-scheduler ``schedule()``, procrastinate
``defer_async``, pgqueuer ``enqueue``; one job per call) at a fixed total rate, from 32 concurrent
tasks in one producer process, for a fixed time, while the workers (2 processes x 20) drain.

Each job carries the wall-clock time just before its call and notes when it started, as in the
latency scenario: start lag p50 / p99 / max. The producer reports the rate it achieved (a
producer that falls behind its timetable offers less than the rate asked). Every second the
harness counts the jobs not finished yet (the backlog): flat if workers keep up, growing if not.
It is read as the mean of the first and the second half of the samples, and as the slope of a
least-squares line through them, in jobs/s; "flat" means a slope under 2 % of the offered rate
(at 5,000 jobs/s, a backlog growing by less than 100 jobs each second)."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from .. import records
from ..systems import System
from ..trial import Context, Trial

RATES = (2000.0, 5000.0)
QUICK_RATES = (500.0,)
PRODUCERS = 32
"""Concurrent producer tasks, each with its own connection or pool and one call at a time (as
a web application's request handlers are). A call is a round trip and a commit, 3 ms at the
median on this machine: 4 producers offered 2,000 jobs/s and sent 1,196 (pg-scheduler), 1,413
(pgqueuer) and 926 (procrastinate), so the scenario measured the producers, not the drain."""
SAMPLE_SECONDS = 1.0
FLAT_SLOPE = 0.02
"""The largest backlog slope, as a fraction of the offered rate, that still counts as flat."""


async def steady(ctx: Context, system: System, *, rate: float, duration: float) -> dict[str, Any]:
    opts = ctx.options
    async with Trial(ctx, system, f"steady{rate:.0f}") as t:
        await t.start_workers(opts.processes, opts.concurrency)
        await t.warm_up()
        samples: list[tuple[float, int]] = []

        async def sample() -> None:
            began = time.monotonic()
            while True:
                samples.append(
                    (time.monotonic() - began, int(await t.conn.fetchval(system.count_unfinished_sql)))
                )
                await asyncio.sleep(SAMPLE_SECONDS - (time.monotonic() - began) % SAMPLE_SECONDS)

        sampler = asyncio.create_task(sample())
        try:
            sent = await t.steady(rate=rate, duration=duration, producers=PRODUCERS)
        finally:
            sampler.cancel()
            try:
                await sampler
            except asyncio.CancelledError:
                pass
        await t.wait_drained()
        await t.verify()
        count = int(sent["count"])
        ms = [(s.started_at - s.enqueued_at) * 1000 for s in records.read(t.record_dir) if s.key < count]
    # The sampler runs a little longer than the producers (their start-up, their close): the
    # empty backlog before the first job and after the last is not part of the load.
    while samples and samples[0][1] == 0:
        samples.pop(0)
    while samples and samples[-1][1] == 0:
        samples.pop()
    backlog = [n for _, n in samples]
    half = len(backlog) // 2
    slope = _slope(samples)
    return {
        "rate": rate,
        "achieved_rate": sent["rate"],
        "p50_ms": records.percentile(ms, 50),
        "p99_ms": records.percentile(ms, 99),
        "max_ms": max(ms),
        "jobs": count,
        "producer_late_s": sent["max_late_seconds"],
        "late_calls": sent["late_calls"],
        "call_p50_ms": sent["call_p50_ms"],
        "call_p99_ms": sent["call_p99_ms"],
        "backlog_first_half": statistics.fmean(backlog[:half]) if half else None,
        "backlog_second_half": statistics.fmean(backlog[half:]) if backlog else None,
        "backlog_max": max(backlog, default=None),
        "backlog_slope": slope,
        "flat": None if slope is None else slope < FLAT_SLOPE * rate,
        "backlog": samples,
    }


def _slope(samples: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of the backlog over time, jobs/s (None with fewer than 3 samples)."""
    if len(samples) < 3:
        return None
    xs = [x for x, _ in samples]
    ys = [float(y) for _, y in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else None
