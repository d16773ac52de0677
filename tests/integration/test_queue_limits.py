"""Queue limits against a real PostgreSQL: what the claim admits, and how limits are stored.

- racing claimers never admit more than ``concurrency`` running jobs of a queue, nor more than
  ``key_concurrency`` per key, nor more than ``rate`` starts per period (retries included);
- only live leases count: a running row whose lease ended frees its slot;
- a key at its limit, a paused queue or a spent rate holds back only its own jobs: the rows
  behind them are claimed (no head-of-line blocking), and the plain claim never takes a limited
  queue's rows;
- the code's declaration, an operator's ``set`` (which wins until ``reset``), pause and resume,
  and bad values refused in one line before anything is written;
- in-process Schedulers keep a limit while they run real jobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from pg_scheduler import ConfigurationError, JobState, Scheduler, declare_queue, job
from pg_scheduler.shared import queries
from pg_scheduler.shared.locks import QUEUE_KEY_LOCK_CLASS, QUEUE_LOCK_CLASS
from pg_scheduler.shared.queue_limits import publish_declared
from pg_scheduler.worker.claimer import Claimer
from pg_scheduler.worker.worker import PLAIN_RECHECK_MAX_SECONDS
from tests.rows import Sql, insert_job, wait_for_status
from tests.support import FAST, wait_for

TASK = "limits.task"
HandOver = Callable[
    [asyncpg.Pool | asyncpg.Connection, str, list[asyncpg.Record], int], Awaitable[list[asyncpg.Record]]
]


async def ready(pool: asyncpg.Pool) -> Scheduler:
    scheduler = Scheduler(pool)
    await scheduler.initialize_db()
    return scheduler


async def _send_completions(
    wrapper: Callable[..., Awaitable[tuple[list[asyncpg.Record], list[asyncpg.Record], bool]]],
    conn: asyncpg.Pool | asyncpg.Connection,
    worker: str,
    done: list[asyncpg.Record],
    limit: int,
) -> list[asyncpg.Record]:
    """The jobs claimed by ``wrapper`` (a queries wrapper of a limited claim) with the
    completions of ``done``, none of which may be refused."""
    claimed, refused, _ = await wrapper(
        conn,
        worker_id=worker,
        job_ids=[row["job_id"] for row in done],
        attempts=[row["attempt"] for row in done],
        names=[TASK],
        limit=limit,
        lease_seconds=30.0,
        misfire_tolerance_seconds=1.0,
        queues=None,
        timeout=10.0,
    )
    assert refused == []
    return claimed


async def complete_and_claim(
    conn: asyncpg.Pool | asyncpg.Connection, worker: str, done: list[asyncpg.Record], limit: int = 10
) -> list[asyncpg.Record]:
    """The completions and the claim of limited queues, in pg_scheduler_claim_limited."""
    return await _send_completions(queries.job_claim_limited, conn, worker, done, limit)


async def hand_over_alone(
    conn: asyncpg.Pool | asyncpg.Connection, worker: str, done: list[asyncpg.Record], limit: int = 10
) -> list[asyncpg.Record]:
    """The completions and their hand-over as a worker sends them alone, outside the function."""
    return await _send_completions(queries.job_complete_and_hand_over, conn, worker, done, limit)


HAND_OVERS = pytest.mark.parametrize(
    "send", [complete_and_claim, hand_over_alone], ids=["in_function", "alone"]
)
"""The hand-over's tests, for both ways a worker sends it."""


async def claim(
    pool: asyncpg.Pool | asyncpg.Connection, worker: str, limit: int = 10
) -> list[asyncpg.Record]:
    """The claim of limited queues, as a worker's loop sends it (no completions)."""
    return await complete_and_claim(pool, worker, [], limit)


async def claim_plain(pool: asyncpg.Pool, limit: int = 100) -> list[asyncpg.Record]:
    return await queries.job_claim(
        pool,
        names=[TASK],
        limit=limit,
        worker_id="plain",
        lease_seconds=30.0,
        misfire_tolerance_seconds=1.0,
        queues=None,
        plan_generation=0,
        timeout=10.0,
    )


async def add_jobs(pool: asyncpg.Pool, queue: str, count: int, key: str | None = None) -> None:
    await pool.execute(
        """
        INSERT INTO scheduled_jobs (job_id, job_name, execution_time, queue, concurrency_key)
        SELECT $5 || '-' || i, $2, now() - interval '1 second' + i * interval '1 microsecond', $1, $3
          FROM generate_series(1, $4) AS i
        """,
        queue,
        TASK,
        key,
        count,
        f"{queue}-{key}",
    )


async def running(pool: asyncpg.Pool, queue: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT job_id, concurrency_key FROM scheduled_jobs WHERE queue = $1 AND status = 'running'",
        queue,
    )


async def race(pool: asyncpg.Pool, claimers: int, limit: int = 10) -> list[asyncpg.Record]:
    batches = await asyncio.gather(*(claim(pool, f"w{i}", limit) for i in range(claimers)))
    return [row for batch in batches for row in batch]


async def test_racing_claimers_never_admit_more_than_the_concurrency(pool: asyncpg.Pool) -> None:
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("capped", concurrency=3)
    await add_jobs(pool, "capped", 100)
    for round_ in range(5):
        claimed = await race(pool, claimers=12)
        assert len(await running(pool, "capped")) == 3, round_
        assert len(claimed) == (3 if round_ == 0 else 2)
        # Two end: two slots free, and the next race fills exactly those.
        await pool.execute(
            """UPDATE scheduled_jobs SET status = 'completed', finished_at = now()
                WHERE job_id IN (SELECT job_id FROM scheduled_jobs
                                  WHERE queue = 'capped' AND status = 'running' LIMIT 2)"""
        )


async def test_only_live_leases_hold_slots(pool: asyncpg.Pool) -> None:
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("capped", concurrency=2)
    await insert_job(pool, "dead", job_name=TASK, queue="capped", status="running",
                     lease_until=Sql("now() - interval '1 second'"))  # fmt: skip
    await insert_job(pool, "live", job_name=TASK, queue="capped", status="running")
    await add_jobs(pool, "capped", 5)
    assert len(await race(pool, claimers=4)) == 1  # the dead lease frees its slot
    assert len(await race(pool, claimers=4)) == 0


async def test_key_concurrency_admits_k_per_key_and_passes_over_saturated_keys(pool: asyncpg.Pool) -> None:
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("imports", key_concurrency=1)
    # 50 rows of a hot key come first in due order; one row each of 5 other keys behind them;
    # rows without a key are not limited by key.
    await add_jobs(pool, "imports", 50, key="hot")
    for i in range(5):
        await add_jobs(pool, "imports", 1, key=f"k{i}")
    await add_jobs(pool, "imports", 3)
    claimed = await race(pool, claimers=8, limit=20)
    rows = await running(pool, "imports")
    assert len(claimed) == len(rows) == 1 + 5 + 3
    keys = [r["concurrency_key"] for r in rows if r["concurrency_key"] is not None]
    assert sorted(keys) == ["hot", "k0", "k1", "k2", "k3", "k4"]
    assert await race(pool, claimers=4) == []  # every key is at its limit; no keyless row is left

    await scheduler.set_queue_limits("imports", key_concurrency=3)
    await race(pool, claimers=4, limit=20)
    assert [r["concurrency_key"] for r in await running(pool, "imports")].count("hot") == 3


async def test_one_claim_reaches_past_a_keys_many_jobs_to_other_keys(pool: asyncpg.Pool) -> None:
    """A claim of a key-limited queue reads its first LIMITED_CLAIM_FIRST_SCAN due rows; when
    they hold fewer keys with room than it wants (here one key's many jobs), it reads further in
    the same claim rather than coming back with one job."""
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("imports", key_concurrency=1)
    await add_jobs(pool, "imports", 2 * queries.LIMITED_CLAIM_FIRST_SCAN, key="hot")
    for i in range(9):
        await add_jobs(pool, "imports", 1, key=f"k{i}")
    claimed = await claim(pool, "w", 10)
    assert sorted(r["job_id"].split("-")[1] for r in claimed) == ["hot", *(f"k{i}" for i in range(9))]


async def test_rate_counts_every_start_within_the_period(pool: asyncpg.Pool) -> None:
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("sms", rate="5/2s")
    await add_jobs(pool, "sms", 20)
    claimed = await race(pool, claimers=6)
    assert len(claimed) == 5
    # A retry is a start: failing one back to pending does not give its start back.
    await pool.execute(
        """UPDATE scheduled_jobs SET status = 'pending', worker_id = NULL, lease_until = NULL
            WHERE job_id = $1""",
        claimed[0]["job_id"],
    )
    assert await race(pool, claimers=6) == []
    starts = await pool.fetchval("SELECT count(*) FROM scheduler_queue_starts WHERE queue = 'sms'")
    assert starts == 5
    # Once the period has passed since those starts, 5 more start, and the old log is pruned.
    await pool.execute("UPDATE scheduler_queue_starts SET started_at = started_at - interval '3 seconds'")
    assert len(await race(pool, claimers=6)) == 5
    assert await pool.fetchval("SELECT count(*) FROM scheduler_queue_starts") == 5


async def test_a_paused_queue_starts_nothing_and_other_queues_flow(pool: asyncpg.Pool) -> None:
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("held", concurrency=10)
    await add_jobs(pool, "held", 3)
    await add_jobs(pool, "open", 3)
    assert await scheduler.pause_queue("held")
    assert await race(pool, claimers=3) == []
    plain = await claim_plain(pool)
    assert sorted(r["job_id"] for r in plain) == ["open-None-1", "open-None-2", "open-None-3"]
    assert await scheduler.resume_queue("held")
    assert len(await race(pool, claimers=3)) == 3


async def test_the_plain_claim_and_probe_leave_limited_queues_alone(pool: asyncpg.Pool) -> None:
    scheduler = await ready(pool)
    await add_jobs(pool, "capped", 2)
    due, limited = await queries.job_get_next_due(
        pool, names=[TASK], queues=None, plan_generation=0, timeout=5
    )
    assert due is not None and due <= 0 and not limited
    await scheduler.set_queue_limits("capped", concurrency=1)
    assert await claim_plain(pool) == []
    due, limited = await queries.job_get_next_due(
        pool, names=[TASK], queues=None, plan_generation=0, timeout=5
    )
    assert due is None and limited
    # The limited probe says: due now; once the one slot is taken, when its lease ends.
    assert (await pool.fetchval(queries.JOB_GET_NEXT_LIMITED, [TASK], None)) <= 0
    assert len(await claim(pool, "w")) == 1
    later = await pool.fetchval(queries.JOB_GET_NEXT_LIMITED, [TASK], None)
    assert 25 < later <= 30  # the 30 s lease
    # With no limit left, the plain claim takes the rest again.
    await scheduler.set_queue_limits("capped", concurrency=None)
    assert len(await claim_plain(pool)) == 1


async def test_the_lock_class_in_the_migration_is_the_one_in_locks(pool: asyncpg.Pool) -> None:
    await ready(pool)
    source = await pool.fetchval("SELECT prosrc FROM pg_proc WHERE proname = 'pg_scheduler_claim_limited'")
    assert f"pg_advisory_xact_lock({QUEUE_LOCK_CLASS}," in source


async def test_declaration_set_reset_and_pause_round_trip(pool: asyncpg.Pool) -> None:
    scheduler = await ready(pool)
    declare_queue("partner", concurrency=5, rate="100/1m")
    async with pool.acquire() as conn:
        assert await publish_declared(conn) == ["partner"]
        assert await publish_declared(conn) == []  # unchanged: nothing written

    def info(name: str) -> dict[str, object]:
        return next(q.to_dict() for q in found if q.name == name)

    found = await scheduler.get_queues()
    partner = info("partner")
    assert (partner["concurrency"], partner["rate"], partner["overridden"]) == (5, "100/1m", False)

    await scheduler.set_queue_limits("partner", concurrency=2)
    found = await scheduler.get_queues()
    partner = info("partner")
    assert (partner["concurrency"], partner["rate"], partner["overridden"]) == (2, "100/1m", True)
    # A process that publishes the code's declaration again does not undo the operator's set.
    declare_queue("partner", concurrency=6, rate="100/1m")
    async with pool.acquire() as conn:
        await publish_declared(conn)
    found = await scheduler.get_queues()
    assert info("partner")["concurrency"] == 2
    assert info("partner")["declared"] == {"concurrency": 6, "key_concurrency": None, "rate": "100/1m"}

    assert await scheduler.pause_queue("partner")
    assert await scheduler.reset_queue("partner")
    found = await scheduler.get_queues()
    partner = info("partner")
    assert (partner["concurrency"], partner["overridden"], partner["state"]) == (6, False, "paused")
    assert await scheduler.resume_queue("partner")

    # `set` creates a row; `reset` of a queue no code declares clears its limits.
    await scheduler.set_queue_limits("adhoc", key_concurrency=1)
    assert await scheduler.reset_queue("adhoc")
    found = await scheduler.get_queues()
    assert info("adhoc")["state"] == "open"
    assert not await scheduler.pause_queue("nosuch")
    assert not await scheduler.reset_queue("nosuch")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"concurrency": 0}, "invalid concurrency 0"),
        ({"concurrency": -1}, "invalid concurrency -1"),
        ({"key_concurrency": 1.5}, "invalid key_concurrency 1.5"),
        ({"rate": "10/0s"}, "the period must be longer than 0 s"),
        ({"rate": "0/1s"}, "must be from 1 to 2147483647, got 0"),
        ({"rate": "5/400d"}, "from 1 ms to 366 days"),
        ({"rate": "5/0.0001s"}, "from 1 ms to 366 days"),
        ({"concurrency": 2**31}, "invalid concurrency 2147483648"),
        ({"rate": "ten a minute"}, "invalid rate"),
        ({"burst": 3}, "unknown queue limit 'burst'"),
        ({}, "nothing to set"),
    ],
)
async def test_bad_limits_are_refused_in_one_line_and_write_nothing(
    pool: asyncpg.Pool, changes: dict[str, object], message: str
) -> None:
    scheduler = await ready(pool)
    with pytest.raises(ConfigurationError, match=message) as raised:
        await scheduler.set_queue_limits("q", **changes)  # type: ignore[arg-type]
    assert "\n" not in str(raised.value)
    assert await pool.fetchval("SELECT count(*) FROM scheduler_queues") == 0
    with pytest.raises(ConfigurationError, match="invalid queue name"):
        await scheduler.set_queue_limits("bad name", concurrency=1)


def test_declare_queue_checks_its_values() -> None:
    with pytest.raises(ConfigurationError, match="invalid concurrency 0"):
        declare_queue("q", concurrency=0)
    with pytest.raises(ConfigurationError, match="invalid rate"):
        declare_queue("q", rate="100 per minute")
    limits = declare_queue("q", key_concurrency=1, rate="50/500ms")
    assert limits.describe() == "key_concurrency=1 rate=50/500ms"
    assert str(declare_queue("q", rate="10/s").rate) == "10/1s"
    assert str(declare_queue("q", rate="100/1m").rate) == "100/1m"


async def test_schedulers_keep_a_concurrency_limit_while_running_jobs(pool: asyncpg.Pool) -> None:
    """Three in-process Schedulers, eight slots each, one queue limited to 2: the jobs' own
    start and end times never overlap more than twice, and all of them run."""
    spans: list[tuple[float, float]] = []

    @job(name="limits.slow", queue="two_at_a_time")
    async def slow() -> None:
        start = asyncio.get_running_loop().time()
        await asyncio.sleep(0.05)
        spans.append((start, asyncio.get_running_loop().time()))

    producer = await ready(pool)
    await producer.set_queue_limits("two_at_a_time", concurrency=2)
    ids = [await producer.schedule(slow, execution_time=datetime.now(UTC)) for _ in range(30)]
    schedulers = [Scheduler(pool, max_concurrent_jobs=8, **FAST) for _ in range(3)]
    for s in schedulers:
        await s.start()
    try:
        for job_id in ids:
            await wait_for_status(pool, job_id, JobState.COMPLETED, timeout=30)
    finally:
        for s in schedulers:
            await s.shutdown()
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    at_once = peak = 0
    for _, step in edges:
        at_once += step
        peak = max(peak, at_once)
    assert len(spans) == 30
    assert peak == 2


async def test_a_job_of_a_queue_limited_after_it_was_scheduled_waits_its_turn(pool: asyncpg.Pool) -> None:
    scheduler = await ready(pool)
    when = datetime.now(UTC) - timedelta(seconds=1)
    await insert_job(pool, "a", job_name=TASK, queue="q", execution_time=when)
    await insert_job(pool, "b", job_name=TASK, queue="q", execution_time=when)
    await scheduler.set_queue_limits("q", concurrency=1)
    assert len(await race(pool, claimers=2)) == 1


async def test_the_leaders_sample_says_what_holds_each_queue_back(pool: asyncpg.Pool) -> None:
    from prometheus_client.core import Metric

    from pg_scheduler.shared.metrics import _queue_families
    from pg_scheduler.supervisor.fence import Unfenced
    from pg_scheduler.supervisor.maintenance.queue_sampler import QueueSampler

    scheduler = await ready(pool)
    await scheduler.set_queue_limits("full", concurrency=1)
    await scheduler.set_queue_limits("keyed", key_concurrency=1)
    await scheduler.set_queue_limits("metered", rate="1/1h")
    await scheduler.set_queue_limits("held", concurrency=5)
    await scheduler.pause_queue("held")
    for queue in ("full", "metered", "held", "open"):
        await add_jobs(pool, queue, 3)
    await add_jobs(pool, "keyed", 3, key="a")
    await add_jobs(pool, "keyed", 1, key="b")
    await race(pool, claimers=2, limit=1)  # one of full, of metered, of keyed (key a or b)
    await race(pool, claimers=2, limit=1)
    await race(pool, claimers=2, limit=1)
    await race(pool, claimers=2, limit=1)
    sampler = QueueSampler(Unfenced(pool), interval_seconds=5, worker_stale_seconds=30)
    sample = await sampler.run_once()
    await sampler.stop()
    by_queue = {q["queue"]: q for q in sample["queues"]}
    held = {
        name: {r: q[f"held_{r}"] for r in ("paused", "concurrency", "rate", "key") if q[f"held_{r}"]}
        for name, q in by_queue.items()
    }
    assert held == {
        "full": {"concurrency": 2},
        "held": {"paused": 3},
        "keyed": {"key": 2},
        "metered": {"rate": 2},
        "open": {},
    }
    assert (by_queue["keyed"]["running"], by_queue["keyed"]["pending"]) == (2, 2)
    assert by_queue["held"]["paused"] and by_queue["metered"]["rate_period_seconds"] == 3600
    families: dict[str, Metric] = {f.name: f for f in _queue_families(sample["queues"])}
    limit_samples = families["pg_scheduler_queue_limit"].samples
    limits = {(s.labels["queue"], s.labels["limit"]): s.value for s in limit_samples}
    assert limits == {
        ("full", "concurrency"): 1,
        ("keyed", "key_concurrency"): 1,
        ("metered", "rate"): 1,
        ("held", "concurrency"): 5,
    }


async def test_a_renewal_in_flight_is_counted_before_its_slot_is_given_away(pool: asyncpg.Pool) -> None:
    """A running row whose lease looks ended may be being renewed: the claim waits for that
    renewal and counts it, rather than give its slot to another job."""
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("capped", concurrency=1)
    await insert_job(pool, "renewing", job_name=TASK, queue="capped", status="running",
                     lease_until=Sql("now() - interval '0.1 seconds'"))  # fmt: skip
    await add_jobs(pool, "capped", 2)
    async with pool.acquire() as renewal:
        tx = renewal.transaction()
        await tx.start()
        await renewal.execute("SELECT FROM scheduled_jobs WHERE job_id = 'renewing' FOR UPDATE")
        claim_task = asyncio.create_task(claim(pool, "w2"))
        await wait_for(
            lambda: pool.fetchval("SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"),
            message="the claim waiting on the renewal's row lock",
        )
        assert not claim_task.done()
        await renewal.execute(
            "UPDATE scheduled_jobs SET lease_until = now() + interval '30 seconds' WHERE job_id = 'renewing'"
        )
        await tx.commit()
    assert await claim_task == []  # the renewed lease holds the one slot
    # Once it really ends, its slot is free, and a late renewal does not revive it.
    await pool.execute("UPDATE scheduled_jobs SET lease_until = now() - interval '1 second'")
    assert len(await claim(pool, "w2")) == 1
    renewed = await pool.fetch(queries.JOB_RENEW_LEASES, "ghost-worker", 30.0, ["renewing"], [1])
    assert renewed == []


def test_a_job_not_renewed_is_stopped_before_its_lease_ends() -> None:
    """The heartbeat thread's watch: with no database at all (every beat fails), a job is
    reported lost once, at lease - margin after its claim was sent, before its lease ends."""
    import threading
    import time

    from pg_scheduler.worker.heartbeat import Heartbeat

    reported: list[tuple[list[tuple[str, int]], float]] = []
    seen = threading.Event()

    def lost(jobs: list[tuple[str, int]]) -> None:
        reported.append((jobs, time.monotonic()))
        seen.set()

    beat = Heartbeat(
        ("postgresql://nobody@127.0.0.1:1/none",),
        {},
        worker_id="w",
        kind="worker",
        lease_seconds=2.0,
        interval_seconds=0.2,
        tasks=lambda: [],
        on_lost=lost,
    )
    claimed_at = time.monotonic()
    beat.track("j", 1, since=claimed_at)
    beat.start()
    try:
        assert seen.wait(5)
        seen.clear()
        assert not seen.wait(2.0)  # past the lease, and beats failing: not reported again
    finally:
        beat.stop()
    [(jobs, at)] = reported
    assert jobs == [("j", 1)]
    assert 2.0 - beat.stop_margin - 0.05 <= at - claimed_at < 2.0


async def hold_queue_lock_shared(conn: asyncpg.Connection, queue: str) -> None:
    """Take the queue's lock shared, as a hand-over or a key claim does, in the caller's open
    transaction: a counted claim cannot take it then, and a change of the queue waits."""
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1, hashtext($2))", QUEUE_LOCK_CLASS, queue)


@HAND_OVERS
async def test_completed_slots_pass_to_new_jobs_of_the_queue_beside_other_claims(
    pool: asyncpg.Pool, send: HandOver
) -> None:
    """A worker's completions free slots that the claim in the same statement fills beside
    other claims (no claimer can have counted them as free); only more than those needs the
    queue's lock alone, and a claimer that has completed jobs does not wait for it."""
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("capped", concurrency=2)
    await add_jobs(pool, "capped", 10)
    first = await claim(pool, "w", 2)
    assert len(first) == 2
    async with pool.acquire() as other, other.transaction():
        await hold_queue_lock_shared(other, "capped")
        handed = await asyncio.wait_for(send(pool, "w", first[:1], limit=2), 5.0)
        assert len(handed) == 1
        assert len(await running(pool, "capped")) == 2
    # With the lock free, the counted claim finds no more room either.
    assert await complete_and_claim(pool, "w", [], limit=2) == []


@HAND_OVERS
async def test_a_lowered_concurrency_gets_no_slot_handed_over(pool: asyncpg.Pool, send: HandOver) -> None:
    """After the limit is lowered below what runs, completions free slots for nobody until the
    queue is under its new limit."""
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("capped", concurrency=3)
    await add_jobs(pool, "capped", 10)
    runs = await claim(pool, "w", 3)
    assert len(runs) == 3
    await scheduler.set_queue_limits("capped", concurrency=1)
    async with pool.acquire() as other, other.transaction():
        # Only a hand-over can claim while the lock is held shared.
        await hold_queue_lock_shared(other, "capped")
        assert await send(pool, "w", runs[:1]) == []  # 2 run, limit 1
        assert await send(pool, "w", runs[1:2]) == []  # 1 runs
        assert len(await send(pool, "w", runs[2:])) == 1  # its slot goes on
    assert len(await running(pool, "capped")) == 1


@HAND_OVERS
async def test_a_job_completed_after_its_lease_ended_hands_no_slot_over(
    pool: asyncpg.Pool, send: HandOver
) -> None:
    """Once a lease has ended, its slot may have been counted as free by another claim: its
    late completion lands, but gives the slot to no one."""
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("capped", concurrency=1)
    await add_jobs(pool, "capped", 5)
    runs = await claim(pool, "w", 1)
    await pool.execute(
        "UPDATE scheduled_jobs SET lease_until = now() - interval '1 second' WHERE status = 'running'"
    )
    async with pool.acquire() as other, other.transaction():
        await hold_queue_lock_shared(other, "capped")
        assert await asyncio.wait_for(send(pool, "w", runs), 5.0) == []
    status = await pool.fetchval("SELECT status FROM scheduled_jobs WHERE job_id = $1", runs[0]["job_id"])
    assert status == "completed"


async def test_a_key_claim_locks_only_the_keys_it_claims(pool: asyncpg.Pool) -> None:
    """A claim of a key-limited queue holds the locks of the keys it takes, not of every key it
    read: a claimer beside it takes the others."""
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("imports", key_concurrency=1)
    for key in range(30):
        await add_jobs(pool, "imports", 1, key=f"customer:{key}")
    async with pool.acquire() as conn, conn.transaction():
        assert len(await claim(conn, "w1", 2)) == 2
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::oid"
            " AND pid = pg_backend_pid()",
            QUEUE_KEY_LOCK_CLASS,
        )
        assert held == 2
        assert len(await claim(pool, "w2", 5)) == 5


async def test_a_change_of_a_queue_waits_for_its_claims_in_flight(pool: asyncpg.Pool) -> None:
    """Claims of a limited queue hold its lock until they commit; a change of its limits, its
    declaration or its pause takes the lock alone first, so that no claim begun under the old
    limits commits beside claims that count under the new ones. The writers wait for the claim
    and then for each other, without deadlock."""
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("capped", concurrency=2)
    declare_queue("capped", concurrency=5)
    async with pool.acquire() as claim_in_flight:
        tx = claim_in_flight.transaction()
        await tx.start()
        await hold_queue_lock_shared(claim_in_flight, "capped")
        changes = [
            asyncio.create_task(scheduler.set_queue_limits("capped", key_concurrency=1)),
            asyncio.create_task(scheduler.pause_queue("capped")),
            asyncio.create_task(declare_from(pool)),
        ]
        try:
            await wait_for(
                lambda: pool.fetchval(
                    "SELECT count(*) = 3 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                ),
                message="the change, the pause and the declaration waiting for the claim",
            )
            assert not any(change.done() for change in changes)
            await tx.commit()
            await asyncio.wait_for(asyncio.gather(*changes), 5.0)
        finally:
            for change in changes:
                change.cancel()
    (queue,) = [q for q in await scheduler.get_queues() if q.name == "capped"]
    assert queue.paused and queue.limits.key_concurrency == 1


async def declare_from(pool: asyncpg.Pool) -> list[str]:
    async with pool.acquire() as conn:
        return await publish_declared(conn)


@HAND_OVERS
async def test_a_hand_over_waits_for_no_change_of_its_queue(pool: asyncpg.Pool, send: HandOver) -> None:
    """While a change of the queue (or a counted claim) holds its lock alone, completions hand
    no slot over: they land, and the slots go to the claims that follow the change."""
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("capped", concurrency=2)
    await add_jobs(pool, "capped", 10)
    runs = await claim(pool, "w", 2)
    async with pool.acquire() as change, change.transaction():
        await change.execute("SELECT pg_advisory_xact_lock($1, hashtext('capped'))", QUEUE_LOCK_CLASS)
        assert await asyncio.wait_for(send(pool, "w", runs[:1]), 5.0) == []
    assert len(await running(pool, "capped")) == 1


async def since(pool: asyncpg.Pool | asyncpg.Connection, queue: str) -> datetime | None:
    """The queue's concurrency_since; None for 'infinity'."""
    value: datetime | None = await pool.fetchval(
        "SELECT nullif(concurrency_since, 'infinity') FROM scheduler_queues WHERE name = $1", queue
    )
    return value


async def test_concurrency_since_is_stamped_after_each_change_commits(pool: asyncpg.Pool) -> None:
    """The time from which a hand-over may skip its count. A new row, and a concurrency set
    or lowered: 'infinity' (always count), in the change's own transaction too (claims that
    have not seen it may still start the queue's jobs), until a statement begun after the
    commit stamps its time: the API after its own changes, the leader's sampler for changes
    made by hand. A raise, a pause or another limit leaves it."""
    from pg_scheduler.supervisor.fence import Unfenced
    from pg_scheduler.supervisor.maintenance.queue_sampler import QueueSampler

    scheduler = await ready(pool)
    await pool.execute("INSERT INTO scheduler_queues (name, concurrency) VALUES ('by_hand', 3)")
    assert await since(pool, "by_hand") is None
    await QueueSampler(Unfenced(pool), interval_seconds=60, worker_stale_seconds=10).run_once()
    assert await since(pool, "by_hand") is not None
    await scheduler.set_queue_limits("capped", key_concurrency=2)
    assert await since(pool, "capped") is None  # no concurrency: nothing to stamp
    await scheduler.set_queue_limits("capped", concurrency=5)
    first = await since(pool, "capped")
    assert first is not None  # stamped by the API after its commit
    await scheduler.set_queue_limits("capped", concurrency=8)
    await scheduler.pause_queue("capped")
    await scheduler.resume_queue("capped")
    await scheduler.set_queue_limits("capped", key_concurrency=None)
    assert await since(pool, "capped") == first
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE scheduler_queues SET paused = true WHERE name = 'capped'")
        await conn.execute("UPDATE scheduler_queues SET concurrency = 4 WHERE name = 'capped'")
        assert await since(conn, "capped") is None  # limited by its own pause: still 'infinity'
    assert await since(pool, "capped") is None  # made by hand: until the leader's stamp
    await scheduler.set_queue_limits("capped", concurrency=3)
    lowered = await since(pool, "capped")
    assert lowered is not None and first < lowered


@HAND_OVERS
async def test_a_hand_over_counts_the_queue_unless_its_jobs_started_after_concurrency_since(
    pool: asyncpg.Pool, send: HandOver
) -> None:
    """Completed jobs that all started after concurrency_since hand their slots over without a
    count (claims that saw the concurrency started them, and kept the queue within it). Others
    are counted: here, where more run than the limit (rows written by hand, as only a lowered
    limit can leave them), they hand nothing over."""
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("capped", concurrency=2)
    await add_jobs(pool, "capped", 10)
    runs = await claim(pool, "w", 2)
    assert len(runs) == 2
    await insert_job(pool, "extra", job_name=TASK, queue="capped", status="running")  # 3 run, limit 2
    await pool.execute(
        "UPDATE scheduler_queues SET concurrency_since = now() - interval '2 seconds' WHERE name = 'capped'"
    )
    await pool.execute("UPDATE scheduled_jobs SET started_at = now() WHERE queue = 'capped'")
    assert len(await send(pool, "w", runs[:1], 2)) == 1  # not counted
    await pool.execute("UPDATE scheduler_queues SET concurrency_since = 'infinity' WHERE name = 'capped'")
    assert await send(pool, "w", runs[1:], 2) == []  # counted: 3 run, limit 2
    assert len(await running(pool, "capped")) == 2


async def test_a_claimer_hands_over_alone_while_its_completions_are_of_a_capped_queue(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hand-over alone claims exactly one job per completion of a live lease in a queue
    limited by a concurrency alone, whatever room is asked; completions of no such queue (a
    key-limited one) land and claim nothing, and send the claimer back to the function."""
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("capped", concurrency=4)
    await scheduler.set_queue_limits("keyed", key_concurrency=1)
    await add_jobs(pool, "capped", 10)
    await add_jobs(pool, "keyed", 3, key="k")
    monkeypatch.setattr("pg_scheduler.worker.claimer.HAND_OVER_RECHECK_SECONDS", 3600.0)
    claimer = Claimer(pool, worker_id="w", lease_seconds=30, misfire_tolerance_seconds=1, queues=["capped"])
    try:
        assert claimer.hands_over_alone()
        first, _ = await claimer.claim_limited([TASK], 2)
        done, jobs = await claimer.complete_and_hand_over(
            [j.job_id for j in first], [j.attempt for j in first], [TASK], 3
        )
        assert done == {(j.job_id, j.attempt) for j in first}
        assert len(jobs) == 2 and len(await running(pool, "capped")) == 2
        assert claimer.hands_over_alone()
        claimer.queues = ["keyed"]
        [one], _ = await claimer.claim_limited([TASK], 1)
        done, jobs = await claimer.complete_and_hand_over([one.job_id], [one.attempt], [TASK], 1)
        assert done == {(one.job_id, one.attempt)} and jobs == []
        assert not claimer.hands_over_alone()  # back to the function for a while
    finally:
        await claimer.close()


async def test_a_worker_refills_a_capped_queue_through_the_hand_over_alone(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An in-process worker with 8 slots on a queue whose concurrency is 4 refills the queue's
    slots through the hand-over sent alone (and the claim of limited queues for more room),
    runs every job once, and never more than 4 at once."""
    handed_over: list[int] = []
    original = Claimer.complete_and_hand_over

    async def spy(*args: Any, **kwargs: Any) -> Any:
        done, jobs = await original(*args, **kwargs)
        handed_over.append(len(jobs))
        return done, jobs

    monkeypatch.setattr(Claimer, "complete_and_hand_over", spy)
    spans: list[tuple[float, float]] = []

    @job(name="limits.handed", queue="capped")
    async def handed() -> None:
        start = asyncio.get_running_loop().time()
        await asyncio.sleep(0.005)
        spans.append((start, asyncio.get_running_loop().time()))

    producer = await ready(pool)
    await producer.set_queue_limits("capped", concurrency=4)
    ids = [await producer.schedule(handed, execution_time=datetime.now(UTC)) for _ in range(60)]
    worker = Scheduler(pool, max_concurrent_jobs=8, **FAST)
    await worker.start()
    try:
        for job_id in ids:
            await wait_for_status(pool, job_id, JobState.COMPLETED, timeout=30)
    finally:
        await worker.shutdown()
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    at_once = peak = 0
    for _, step in edges:
        at_once += step
        peak = max(peak, at_once)
    assert len(spans) == 60 and peak <= 4
    assert sum(handed_over) > 0  # jobs claimed and run through the hand-over alone


@HAND_OVERS
async def test_a_hand_over_whose_snapshot_missed_a_change_hands_nothing_over(
    pool: asyncpg.Pool, send: HandOver
) -> None:
    """A change that commits after the hand-over's snapshot was taken, but before it tries the
    queue's lock, is not in that snapshot: the hand-over reads the queue's row again once it
    holds the lock, finds a newer version, and hands nothing over. Here the hand-over waits for
    a completed job's row, locked by the transaction that pauses the queue."""
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("capped", concurrency=2)
    await add_jobs(pool, "capped", 10)
    runs = await claim(pool, "w", 2)
    async with pool.acquire() as change:
        tx = change.transaction()
        await tx.start()
        await change.execute("SELECT 1 FROM scheduled_jobs WHERE job_id = $1 FOR UPDATE", runs[0]["job_id"])
        await change.execute(queries.QUEUE_SET_PAUSED, "capped", True)
        hand_over = asyncio.create_task(send(pool, "w", runs[:1], 2))
        try:
            await wait_for(
                lambda: pool.fetchval(
                    "SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                ),
                message="the hand-over waiting for the completed job's row",
            )
            await tx.commit()
            assert await asyncio.wait_for(hand_over, 5.0) == []
        finally:
            hand_over.cancel()
    assert len(await running(pool, "capped")) == 1


@HAND_OVERS
async def test_a_hand_over_locks_no_row_claimed_since_its_snapshot(
    pool: asyncpg.Pool, send: HandOver
) -> None:
    """The hand-over picks its jobs in a snapshot taken after its completions
    (pg_scheduler_pick_due): jobs another worker claimed after the hand-over's statement began
    are not locked by it, so that worker's completions of them do not wait for the hand-over's
    commit. Here the hand-over waits for a completed job's row while the other worker claims."""
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("capped", concurrency=10)
    await add_jobs(pool, "capped", 10)
    runs = await claim(pool, "w", 2)
    async with pool.acquire() as blocker, pool.acquire() as hander:
        blocking = blocker.transaction()
        await blocking.start()
        await blocker.execute("SELECT 1 FROM scheduled_jobs WHERE job_id = $1 FOR UPDATE", runs[0]["job_id"])
        handing = hander.transaction()
        await handing.start()
        hand_over = asyncio.create_task(send(hander, "w", runs, 2))
        try:
            await wait_for(
                lambda: pool.fetchval(
                    "SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                ),
                message="the hand-over waiting for the completed job's row",
            )
            others = await claim(pool, "other", 2)
            assert len(others) == 2
            await blocking.rollback()
            handed = await asyncio.wait_for(hand_over, 5.0)
            assert len(handed) == 2
            assert not {row["job_id"] for row in handed} & {row["job_id"] for row in others}
            async with pool.acquire() as conn:
                await conn.execute("SET lock_timeout = '2s'")
                done = await conn.fetch(
                    queries.JOB_COMPLETE_MANY,
                    "other",
                    [row["job_id"] for row in others],
                    [row["attempt"] for row in others],
                )
            assert len(done) == 2
        finally:
            hand_over.cancel()
            await handing.rollback()
    assert len(await running(pool, "capped")) == 2


@HAND_OVERS
async def test_a_hand_over_locks_no_more_rows_than_it_may_claim(pool: asyncpg.Pool, send: HandOver) -> None:
    """Four completions with room for one more job: the hand-over claims one, and leaves every
    other pending row unlocked for other claimers while its transaction is open (its pick makes
    all its rows before any is read, so it must ask for no more than it claims)."""
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("capped", concurrency=10)
    await add_jobs(pool, "capped", 12)
    runs = await claim(pool, "w", 4)
    assert len(runs) == 4
    async with pool.acquire() as hander, hander.transaction():
        assert len(await send(hander, "w", runs, 1)) == 1
        free = await pool.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM scheduled_jobs WHERE queue = 'capped'"
            " AND status = 'pending' FOR UPDATE SKIP LOCKED) AS free"
        )
        assert free == 12 - 4 - 1


async def test_a_busy_worker_claims_a_job_due_elsewhere_within_a_second(pool: asyncpg.Pool) -> None:
    """A worker whose slots go to a capped queue's backlog (each completion hands its slot
    over) still claims a job of another queue that becomes due unannounced: within
    PLAIN_RECHECK_MAX_SECONDS of its due time, while the backlog still runs."""

    @job(name="limits.brief", queue="capped")
    async def brief() -> None:
        await asyncio.sleep(0.01)

    @job(name="limits.elsewhere")
    async def elsewhere() -> None:
        pass

    producer = await ready(pool)
    await producer.set_queue_limits("capped", concurrency=2)
    await pool.execute(
        """INSERT INTO scheduled_jobs (job_id, job_name, execution_time, queue, task_data)
           SELECT 'brief-' || i, 'limits.brief', now(), 'capped', '{"args": [], "kwargs": {}}'
             FROM generate_series(1, 1500) AS i"""
    )
    worker = Scheduler(pool, max_concurrent_jobs=2, **FAST)
    await worker.start()
    try:
        await wait_for(
            lambda: pool.fetchval("SELECT count(*) > 20 FROM scheduled_jobs WHERE status = 'completed'"),
            message="the worker busy with the capped queue",
        )
        due = datetime.now(UTC) + timedelta(seconds=0.5)
        job_id = await producer.schedule(elsewhere, execution_time=due)
        await wait_for_status(pool, job_id, JobState.COMPLETED, timeout=10)
        started, left = await pool.fetchrow(
            """SELECT s.started_at, (SELECT count(*) FROM scheduled_jobs
                                      WHERE queue = 'capped' AND status = 'pending')
                 FROM scheduled_jobs AS s WHERE s.job_id = $1""",
            job_id,
        )
    finally:
        await worker.shutdown()
    assert (started - due).total_seconds() < PLAIN_RECHECK_MAX_SECONDS + 0.5
    assert left > 0


async def test_a_hand_over_outside_read_committed_hands_nothing_over(pool: asyncpg.Pool) -> None:
    """Under REPEATABLE READ a statement gets no new snapshot, so the hand-over cannot learn
    whether its snapshot missed a change: it hands nothing over (the completions land)."""
    scheduler = await ready(pool)
    await scheduler.set_queue_limits("capped", concurrency=2)
    await add_jobs(pool, "capped", 10)
    runs = await claim(pool, "w", 2)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        assert await hand_over_alone(conn, "w", runs[:1], 2) == []
    assert len(await running(pool, "capped")) == 1
