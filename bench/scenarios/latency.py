"""Start latency at light load: idle workers; one job at a time at a fixed rate; each job
carries the wall-clock time just before its enqueue call, and its body notes when it started.
Same machine, same clock: start minus enqueue is the latency, round trip of the enqueue
included."""

from __future__ import annotations

from typing import Any

from .. import records
from ..systems import System
from ..trial import Context, Trial

RATE = 20.0


async def latency(ctx: Context, system: System, *, duration: float) -> dict[str, Any]:
    opts = ctx.options
    async with Trial(ctx, system, "latency") as t:
        await t.start_workers(opts.processes, opts.concurrency)
        await t.warm_up()
        sent = await t.trickle(rate=RATE, duration=duration)
        await t.wait_drained()
        await t.verify()
        count = int(sent["count"])
        ms = [(s.started_at - s.enqueued_at) * 1000 for s in records.read(t.record_dir) if s.key < count]
        return {
            "p50_ms": records.percentile(ms, 50),
            "p99_ms": records.percentile(ms, 99),
            "max_ms": max(ms),
            "jobs": count,
            "producer_late_s": sent["max_late_seconds"],
        }
