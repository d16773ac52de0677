"""Enqueue: the batch API with N jobs in one call (no workers running), then the single-job API
200 times after 20 warm-up calls: median latency per call, and the statements it sends when the
driver can count them (asyncpg's query logger; the pool's reset on release is one of them)."""

from __future__ import annotations

from typing import Any

from ..systems import System
from ..trial import Context, Trial, TrialError

SINGLE_CALLS = 200
WARMUP_CALLS = 20  # drivers/driver_cli.py


async def enqueue(ctx: Context, system: System) -> dict[str, Any]:
    jobs = ctx.options.jobs
    async with Trial(ctx, system, "enqueue") as t:
        bulk = await t.enqueue(jobs)
        single = await t.driver("schedule-one", "--first-key", str(jobs), "--calls", str(SINGLE_CALLS))
        row = await t.conn.fetchrow(system.outcome_sql)
        assert row is not None
        want = jobs + SINGLE_CALLS + WARMUP_CALLS
        if row["total"] != want:  # none lost, none doubled on the way in
            raise TrialError(f"{row['total']} rows after enqueueing {want} jobs")
        return {
            "jobs_per_s": jobs / float(bulk["seconds"]),
            "one_ms": single["p50_ms"],
            "one_statements": single["statements_per_call"],
            "one_pool_resets": single["pool_resets_per_call"],
        }
