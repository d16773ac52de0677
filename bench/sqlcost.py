"""``python -m bench.sqlcost``: what PostgreSQL spends per job on claim and completion, alone.

One connection (``--connections`` for more, draining at once), no worker: claim ``--batch``
jobs, complete them, again until the table is empty, reading the backends' CPU time from
``/proc``. It separates the database's share of the drain from the worker's:

- ``raw``: the raw batched ceiling's statements on its narrow table (bigint key, two partial indexes);
- ``ours``: the production statement, job_complete_and_claim_sql (a batch's completions and the
  claim that refills its slots), on ``scheduled_jobs``;
- ``ours-replanned``: the same, planned afresh at every execution (``force_custom_plan``), as
  PostgreSQL chose to before the claim's LIMIT had a literal bound (``queries.claim_bound``);
- ``ours-hand-over``: the queue limited by a concurrency that never binds (as the limits
  scenario's ``capped``), drained by job_complete_and_hand_over_sql, the statement a busy worker
  sends for such a queue (each completion's slot handed to a new job in the same commit);
- ``ours-no-misfire`` / ``ours-no-overlap`` / ``ours-no-window-wait``: the same without the
  misfire check, the overlap check, or the wait of a late window written ahead for the leader's
  misfire ruling (what each costs; none is a shippable variant).

Rounds are interleaved; each prints backend CPU per job (min / median / max). Not a test and not
part of ``python -m bench``: it explains the drain's ratio to the raw ceiling (README).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from collections import Counter

import asyncpg

from pg_scheduler import Scheduler
from pg_scheduler.shared import queries

from .arguments import split_choices
from .drivers.raw_sql import CLAIM as RAW_CLAIM
from .drivers.raw_sql import DONE_MANY as RAW_DONE
from .drivers.raw_sql import TABLE as RAW_SCHEMA
from .postgres import check_durability, start_server
from .processes import cpu_seconds

_MISFIRE = re.compile(r"\(j\.misfire_grace_time IS NOT NULL.*?\)\)", re.S)
COMBINED = (
    "ours",
    "ours-replanned",
    "ours-hand-over",
    "ours-no-misfire",
    "ours-no-overlap",
    "ours-no-window-wait",
)
VARIANTS = ("raw", *COMBINED)


def _combined(variant: str, batch: int) -> str:
    sql = queries.job_complete_and_claim_sql(batch)
    if variant == "ours-no-misfire":
        return _MISFIRE.sub("false", sql)
    if variant == "ours-no-overlap":
        return sql.replace(queries._NOT_BLOCKED, " true ")
    if variant == "ours-no-window-wait":
        return sql.replace(queries._NOT_AWAITING_MISFIRE, " true ")
    return sql


_WAITS = "SELECT state, wait_event_type, wait_event FROM pg_stat_activity WHERE pid = ANY($1::int[])"
"""What ``--waits`` samples of the drainers' backends."""
TASK = "bench.noop"
CAPPED = 10_000
"""The concurrency of ``ours-hand-over``'s queue: more jobs than the connections ever run."""
WORKER = "sqlcost"


async def _fill(conn: asyncpg.Connection, jobs: int, variant: str) -> None:
    await conn.execute("TRUNCATE scheduled_jobs, raw_jobs, scheduler_queues")
    if variant == "ours-hand-over":
        # As `pg-scheduler queues set default --concurrency N` sets it: the limit, then, after
        # its commit, the stamp from which hand-overs need not count the queue.
        await conn.execute(queries.QUEUE_SET_LIMITS, "default", CAPPED, None, None, None)
        await conn.execute(queries.QUEUE_STAMP_CONCURRENCY, "default")
    await conn.execute(
        "INSERT INTO scheduled_jobs (job_id, job_name, execution_time, task_data)"
        ' SELECT gen_random_uuid()::text, $1, now(), \'{"args": [1, 0.0], "kwargs": {}}\''
        " FROM generate_series(1, $2)",
        TASK,
        jobs,
    )
    await conn.execute(
        "INSERT INTO raw_jobs (key, enqueued_at) SELECT g, 0 FROM generate_series(1, $1) AS g", jobs
    )
    await conn.execute("VACUUM ANALYZE scheduled_jobs")
    await conn.execute("VACUUM ANALYZE raw_jobs")
    await conn.execute("CHECKPOINT")


async def _drain(conn: asyncpg.Connection, variant: str, batch: int, worker: str = WORKER) -> int:
    """Claim and complete until nothing is left; the number of jobs completed."""
    done = 0
    if variant == "raw":
        while rows := await conn.fetch(RAW_CLAIM, batch):
            await conn.execute(RAW_DONE, [r["id"] for r in rows])
            done += len(rows)
    elif variant == "ours-hand-over":
        args = [[TASK], batch, 30.0, 60.0, None]
        sql = queries.job_complete_and_hand_over_sql(batch)
        held: list[asyncpg.Record] = []
        while True:
            if len(held) < batch:
                # As a worker does when the hand-over came back short (a hand-over whose queue
                # lock was busy hands nothing over): the claim of limited queues for the rest.
                more = await conn.fetch(
                    queries.JOB_CLAIM_LIMITED, worker, [], [], [TASK], batch - len(held), *args[2:]
                )
                held += [r for r in more if r["claimed"]]
            if not held:
                break
            out = await conn.fetch(
                sql, worker, [r["job_id"] for r in held], [r["attempt"] for r in held], *args
            )
            done += len(held) - sum(1 for r in out if r["claimed"] is False)  # those refused
            held = [r for r in out if r["claimed"]]
    else:
        sql = _combined(variant, batch)
        has_tolerance = "$7" in sql  # the misfire check is the only user of the tolerance
        rows = await conn.fetch(queries.job_claim_sql(batch), [TASK], batch, worker, 30.0, 60.0)
        while rows:
            args = [
                worker,
                [r["job_id"] for r in rows],
                [r["attempt"] for r in rows],
                [TASK],
                batch,
                30.0,
            ] + ([60.0] if has_tolerance else [])
            out = await conn.fetch(sql, *args)
            done += len(rows) - sum(1 for r in out if not r["claimed"])  # those refused
            rows = [r for r in out if r["claimed"]]
    return done


async def _sample_waits(
    conn: asyncpg.Connection, backends: list[int], into: Counter[str], stop: asyncio.Event
) -> None:
    """Count what the drainers' backends are doing, every millisecond or so, until ``stop``."""
    while not stop.is_set():
        for state, kind, event in await conn.fetch(_WAITS, backends):
            into["running" if state == "active" and kind is None else f"{state}: {kind} {event}"] += 1
        await asyncio.sleep(0.001)


async def run(
    jobs: int, batch: int, rounds: int, variants: list[str], connections: int = 1, waits: bool = False
) -> None:
    server = start_server()
    try:
        dsn = server.dsn()
        await check_durability(dsn)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        await Scheduler(pool).initialize_db()
        await pool.close()
        conn = await asyncpg.connect(dsn)
        await conn.execute(RAW_SCHEMA)
        drainers = [conn] + [await asyncpg.connect(dsn) for _ in range(connections - 1)]
        backends = [await c.fetchval("SELECT pg_backend_pid()") for c in drainers]
        cost: dict[str, list[float]] = {v: [] for v in variants}
        rate: dict[str, list[float]] = {v: [] for v in variants}
        seen: dict[str, Counter[str]] = {v: Counter() for v in variants}
        watcher = await asyncpg.connect(dsn) if waits else None
        for rnd in range(1, rounds + 1):
            for variant in variants:
                await _fill(conn, jobs, variant)
                mode = "force_custom_plan" if variant == "ours-replanned" else "auto"
                for c in drainers:
                    await c.execute(f"SET plan_cache_mode = {mode}")
                stop = asyncio.Event()
                sampler = (
                    asyncio.create_task(_sample_waits(watcher, backends, seen[variant], stop))
                    if watcher is not None
                    else None
                )
                cpu, wall = sum(map(cpu_seconds, backends)), time.perf_counter()
                try:
                    done = sum(
                        await asyncio.gather(
                            *(_drain(c, variant, batch, f"{WORKER}-{i}") for i, c in enumerate(drainers))
                        )
                    )
                finally:
                    stop.set()
                    if sampler is not None:
                        await sampler
                if done != jobs:
                    raise SystemExit(f"{variant}: completed {done} of {jobs} jobs")
                us = 1e6 * (sum(map(cpu_seconds, backends)) - cpu) / done
                cost[variant].append(us)
                rate[variant].append(done / (time.perf_counter() - wall))
                print(
                    f"[round {rnd}/{rounds}] {variant:16} {us:6.1f} µs of backend CPU per job "
                    f"({rate[variant][-1]:,.0f} jobs/s)",
                    flush=True,
                )
        for c in drainers:
            await c.close()
        if watcher is not None:
            await watcher.close()
        print(f"\n{jobs:,} jobs, batches of {batch}, {connections} connection(s); backend CPU per job, µs")
        print("| statements | min | median | max | jobs/s, median |\n| --- | --- | --- | --- | --- |")
        for variant, values in cost.items():
            print(
                f"| {variant} | {min(values):.1f} | {statistics.median(values):.1f} | {max(values):.1f} "
                f"| {statistics.median(rate[variant]):,.0f} |"
            )
        if waits:
            print("\nWhat the drainers' backends were doing (pg_stat_activity samples, all rounds), %")
            print("| statements | " + " | ".join(["most", "then", "then", "then", "then"]) + " |")
            print("| --- |" + " --- |" * 5)
            for variant, counts in seen.items():
                total = sum(counts.values()) or 1
                top = [f"{name} {100 * n / total:.1f}" for name, n in counts.most_common(5)]
                print(f"| {variant} | " + " | ".join(top + [""] * (5 - len(top))) + " |")
    finally:
        server.close()


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.sqlcost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--jobs", type=int, default=40_000, help="jobs per drain (40000)")
    p.add_argument("--batch", type=int, default=20, help="jobs per claim (20: a worker's slots)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    p.add_argument(
        "--connections", type=int, default=1, help="connections draining at once, as workers do (1)"
    )
    p.add_argument(
        "--waits", action="store_true", help="also sample the drainers' wait events (pg_stat_activity)"
    )
    p.add_argument(
        "--only", default=",".join(VARIANTS), help=f"variants, comma-separated ({', '.join(VARIANTS)})"
    )
    a = p.parse_args()
    variants = split_choices(a.only, VARIANTS, p)
    if a.connections < 1:
        p.error("--connections must be at least 1")
    asyncio.run(run(a.jobs, a.batch, a.rounds, variants, a.connections, a.waits))


if __name__ == "__main__":
    main()
