"""Memory: one worker process running 50 jobs at once (each sleeps); its resident set (VmRSS)
once all 50 have started, and its peak (VmHWM)."""

from __future__ import annotations

from typing import Any

from .. import processes
from ..systems import OURS, System
from ..trial import Context, Trial, TrialError

CONCURRENT = 50
SLEEP_SECONDS = 15.0


async def memory(ctx: Context, system: System) -> dict[str, Any]:
    async with Trial(ctx, system, "memory") as t:
        await t.start_workers(1, CONCURRENT)
        await t.warm_up(batch=5)
        await t.enqueue(CONCURRENT, sleep=SLEEP_SECONDS)
        keys = set(range(CONCURRENT))
        starts = [s for s in await t.wait_recorded(keys, within=SLEEP_SECONDS - 2) if s.key in keys]
        if {s.key for s in starts} != keys:
            raise TrialError(
                f"only {len(starts)} of {CONCURRENT} sleeping jobs started within "
                f"{SLEEP_SECONDS - 2:.0f} s: never {CONCURRENT} at once"
            )
        (pid,) = {s.pid for s in starts}
        rss = processes.rss_kib(pid)
        result: dict[str, Any] = {"rss_mb": rss["VmRSS"] / 1024, "peak_mb": rss["VmHWM"] / 1024}
        if system is OURS:  # the pod's other process, which runs no job
            result["supervisor_rss_mb"] = processes.rss_kib(t.workers[0].pid)["VmRSS"] / 1024
        await t.wait_drained()
        await t.verify()
        return result
