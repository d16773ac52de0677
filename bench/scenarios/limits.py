"""Queue limits, pg-scheduler only: the drain of the drain scenario, in a limited queue.

- ``capped``: the queue's ``concurrency`` equals the cluster's slots (worker processes x
  concurrency), so it never binds: what the limited claim costs by itself (River Pro's global
  limit halved throughput in this case, river issue 1145).
- ``keyed``: ``key_concurrency=1``, the jobs spread round-robin over 1,000 keys: the per-key
  bookkeeping, with at most 40 of the 1,000 keys running at once.

The limits go on the queue ``default``, where the drain's jobs are; the keys are set by a
trigger from each job's key argument (the trigger runs during the enqueue, which the drain does
not time). Targets compare each with the plain drain of the same run.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from pg_scheduler.shared import queries

from ..systems import OURS
from ..trial import Context
from .drain import drain

KEYS = 1000
"""The number of keys the trigger below spreads the jobs over."""
KEYED = """
INSERT INTO scheduler_queues (name, key_concurrency) VALUES ('default', 1);
CREATE FUNCTION bench_concurrency_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.concurrency_key := 'k' || ((NEW.task_data -> 'args' ->> 0)::bigint % 1000);
    RETURN NEW;
END $$;
CREATE TRIGGER bench_concurrency_key BEFORE INSERT ON scheduled_jobs
    FOR EACH ROW EXECUTE FUNCTION bench_concurrency_key();
"""
KINDS = ("capped", "keyed")


async def limited(ctx: Context, kind: str) -> dict[str, Any]:
    slots = ctx.options.processes * ctx.options.concurrency

    async def prefill(conn: asyncpg.Connection) -> None:
        if kind == "capped":
            # As `pg-scheduler queues set default --concurrency N` sets it: the limit, then,
            # after its commit, the stamp from which hand-overs need not count the queue.
            await conn.execute(queries.QUEUE_SET_LIMITS, "default", slots, None, None, None)
            await conn.execute(queries.QUEUE_STAMP_CONCURRENCY, "default")
        else:
            await conn.execute(KEYED)

    result = await drain(ctx, OURS, prefill=prefill, title=f"limits-{kind}")
    return {**result, "limit": slots if kind == "capped" else f"1 per key, {KEYS} keys"}
