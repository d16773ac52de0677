"""Fencing of worker writes by (job, worker, attempt), and a worker stopping a job whose lease it
lost (guarantees 1-3 of docs/guarantees.md)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from pg_scheduler import Scheduler, current_job, job
from pg_scheduler.shared import queries
from pg_scheduler.worker.claimer import Claimer
from tests.rows import Sql, insert_job, job_row, update_job, wait_for_status
from tests.support import FAST, wait_for


async def test_a_worker_that_lost_its_lease_stops_the_job_and_cannot_complete_it(
    pool: asyncpg.Pool,
) -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    @job
    async def long_job() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with Scheduler(pool, **FAST) as scheduler:
        job_id = await scheduler.schedule(long_job, execution_time=datetime.now(UTC))
        await asyncio.wait_for(started.wait(), 10)
        # Another worker took the job over (as the rescuer would after a partition): the row
        # now belongs to someone else, a live worker, with a newer attempt.
        await pool.execute(
            "INSERT INTO scheduler_workers (worker_id, kind, host, pid) VALUES"
            " ('someone-else', 'worker', 'test', 0)"
        )
        await update_job(
            pool,
            job_id,
            worker_id="someone-else",
            attempt=Sql("attempt + 1"),
            lease_until=Sql("now() + interval '1 hour'"),
        )
        # The heartbeat finds the lease gone and the worker stops the coroutine.
        await asyncio.wait_for(cancelled.wait(), FAST["heartbeat_seconds"] * 3 + 2)
        row = await job_row(pool, job_id)
        assert row["status"] == "running" and row["worker_id"] == "someone-else"
        assert row["attempt"] == 2
        await wait_for(
            lambda: not scheduler.worker or not scheduler.worker.running_job_ids, message="slot freed"
        )


async def test_completion_of_a_stale_attempt_is_refused(pool: asyncpg.Pool) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    @job
    async def gated() -> None:
        started.set()
        await release.wait()

    async with Scheduler(pool, **{**FAST, "heartbeat_seconds": 0.6}) as scheduler:
        job_id = await scheduler.schedule(gated, execution_time=datetime.now(UTC))
        await asyncio.wait_for(started.wait(), 10)
        # The leader rescued the job (lease expired) and another worker finished attempt 2.
        await update_job(
            pool,
            job_id,
            status="completed",
            worker_id="other",
            attempt=2,
            finished_at=Sql("now()"),
            error_message="done by other",
        )
        release.set()  # the stale attempt 1 now finishes and tries to complete
        await wait_for(
            lambda: not scheduler.worker or not scheduler.worker.running_job_ids, message="stale run ended"
        )
        row = await job_row(pool, job_id)
        assert (row["worker_id"], row["attempt"], row["error_message"]) == ("other", 2, "done by other")


async def test_rescuer_requeues_leaseless_jobs_of_a_worker_gone_from_the_registry(
    pool: asyncpg.Pool,
) -> None:
    ran = asyncio.Event()

    @job
    async def rescued() -> None:
        ran.set()

    async with Scheduler(pool, **{**FAST, "lease_seconds": 60, "heartbeat_seconds": 5}) as scheduler:
        await wait_for(lambda: scheduler.is_leader, message="leader")
        # A running row with no lease (as 0.2.3 wrote them) whose worker vanished: the registry
        # is all there is to go by.
        await insert_job(
            pool,
            "orphan",
            job_name=scheduler.registry.name_of(rescued),
            status="running",
            worker_id="dead-worker",
            attempt=1,
            started_at=None,
            lease_until=None,
            max_retries=3,
        )
        await asyncio.wait_for(ran.wait(), 10)
        row = await wait_for_status(pool, "orphan", "completed")
        assert row["attempt"] == 2 and row["retry_count"] == 1


async def test_a_lease_that_ended_is_not_renewed_before_the_rescuer_takes_it_back(
    pool: asyncpg.Pool,
) -> None:
    """Once a lease has ended its slot counts as free to a limited queue's claims; a late
    renewal must not revive it (the worker learns the job is lost, and stops it)."""
    await Scheduler(pool).initialize_db()
    await insert_job(pool, "ended", status="running", worker_id="w1", attempt=1,
                     lease_until=Sql("now() - interval '1 second'"))  # fmt: skip
    await insert_job(pool, "live", status="running", worker_id="w1", attempt=1)
    renewed = await pool.fetch(queries.JOB_RENEW_LEASES, "w1", 30.0, ["ended", "live"], [1, 1])
    assert [r["job_id"] for r in renewed] == ["live"]
    assert (await job_row(pool, "ended"))["lease_until"] < datetime.now(UTC)


async def test_rescuer_honours_a_lease_to_its_end_even_when_its_worker_left_the_registry(
    pool: asyncpg.Pool,
) -> None:
    """Found by the chaos suite: a frozen worker was pruned from the registry (its heartbeat
    there had gone stale) 0.5 s before the lease it had renewed since ran out, and its job was
    taken away while the lease was still valid. The lease is the contract: wait for it."""
    ran = asyncio.Event()

    @job
    async def leased() -> None:
        ran.set()

    async with Scheduler(pool, **FAST) as scheduler:
        await wait_for(lambda: scheduler.is_leader, message="leader")
        await insert_job(
            pool,
            "leased",
            job_name=scheduler.registry.name_of(leased),
            status="running",
            worker_id="pruned-worker",
            attempt=1,
            started_at=None,
            lease_until=Sql("now() + interval '2 seconds'"),
            max_retries=3,
        )
        lease_until = (await job_row(pool, "leased"))["lease_until"]
        await asyncio.wait_for(ran.wait(), 10)
        row = await job_row(pool, "leased")
        assert row["attempt"] == 2 and row["retry_count"] == 1
        assert row["started_at"] >= lease_until, "the job was taken back before its lease ran out"


async def test_a_rescued_job_is_run_again_not_expired(pool: asyncpg.Pool) -> None:
    # 0.2.3 judged a recovered job's misfire against its original due time and expired it.
    ran = asyncio.Event()

    @job
    async def recovered() -> None:
        ran.set()

    async with Scheduler(pool, **FAST) as scheduler:
        await wait_for(lambda: scheduler.is_leader, message="leader")
        await insert_job(
            pool,
            "crashed",
            job_name=scheduler.registry.name_of(recovered),
            execution_time=Sql("now() - interval '1 hour'"),
            status="running",
            worker_id="dead",
            attempt=1,
            started_at=None,
            lease_until=Sql("now() - interval '1 minute'"),
            max_retries=1,
            misfire_grace_time=5,
        )
        await asyncio.wait_for(ran.wait(), 10)
        row = await wait_for_status(pool, "crashed", "completed")
        assert row["attempt"] == 2 and row["retry_count"] == 1


async def test_completions_and_the_refill_claim_in_one_statement_keep_the_fence(
    pool: asyncpg.Pool,
) -> None:
    """job_complete_and_claim_sql (a busy worker's write): a completion lands only for the worker's
    own running attempt, and the claim in the same statement takes pending due rows only, no
    more than asked, leaving the refused row as it was."""
    await Scheduler(pool).initialize_db()
    await pool.execute(
        "INSERT INTO scheduler_workers (worker_id, kind, host, pid) VALUES ('w1', 'worker', 't', 0)"
    )
    for g in range(1, 7):
        await insert_job(
            pool, f"job-{g}", job_name="fenced", execution_time=Sql(f"now() - interval '{g} seconds'")
        )
    claimer = Claimer(pool, worker_id="w1", lease_seconds=30, misfire_tolerance_seconds=1)
    first = await claimer.claim(["fenced"], 2)
    assert sorted(j.job_id for j in first) == ["job-5", "job-6"]  # the most overdue first
    mine, stolen = first
    # The second run was taken over meanwhile (rescued and claimed again elsewhere).
    await update_job(pool, stolen.job_id, worker_id="w2", attempt=Sql("attempt + 1"))

    done, claimed = await claimer.complete_and_claim(
        [mine.job_id, stolen.job_id], [mine.attempt, stolen.attempt], ["fenced"], 3
    )

    assert done == {(mine.job_id, mine.attempt)}
    assert [j.job_id for j in claimed] == ["job-4", "job-3", "job-2"]
    assert all(j.attempt == 1 and not j.expired for j in claimed)
    rows = {r["job_id"]: r for r in await pool.fetch("SELECT * FROM scheduled_jobs")}
    assert rows[mine.job_id]["status"] == "completed"
    assert (
        rows[stolen.job_id]["status"],
        rows[stolen.job_id]["worker_id"],
        rows[stolen.job_id]["attempt"],
    ) == ("running", "w2", 2)
    assert [rows[f"job-{i}"]["status"] for i in (2, 3, 4)] == ["running"] * 3
    assert rows["job-1"]["status"] == "pending"


# The heartbeat and the batched completion of one worker write overlapping rows from two
# connections; each must lock them in job_id order whatever order the worker lists them in, or
# each could hold a row the other waits for (a deadlock, which aborts one of them).
# Each: the statement's arguments, and the state it leaves the two rows in.
_FENCED_WRITES = {
    "renew leases": (lambda ids, attempts: (queries.JOB_RENEW_LEASES, "w1", 30.0, ids, attempts), "running"),
    "complete": (lambda ids, attempts: (queries.JOB_COMPLETE_MANY, "w1", ids, attempts), "completed"),
    "complete and claim": (
        lambda ids, attempts: (
            queries.job_complete_and_claim_sql(2),
            "w1",
            ids,
            attempts,
            ["fenced"],
            2,
            30.0,
            1.0,
        ),
        "completed",
    ),
}


@pytest.mark.parametrize("statement", sorted(_FENCED_WRITES))
async def test_fenced_writes_lock_the_rows_in_job_id_order(
    pool: asyncpg.Pool,
    statement: str,
) -> None:
    await Scheduler(pool).initialize_db()
    for job_id in ("job-a", "job-b"):
        await insert_job(pool, job_id, job_name="fenced")
    claimer = Claimer(pool, worker_id="w1", lease_seconds=30, misfire_tolerance_seconds=1)
    claimed = {j.job_id: j.attempt for j in await claimer.claim(["fenced"], 2)}
    assert sorted(claimed) == ["job-a", "job-b"]
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute("SELECT FROM scheduled_jobs WHERE job_id = 'job-b' FOR UPDATE")
        ids = ["job-b", "job-a"]  # listed in the reverse order
        arguments, after = _FENCED_WRITES[statement]
        sql, *args = arguments(ids, [claimed[i] for i in ids])
        write = asyncio.create_task(pool.fetch(sql, *args))
        await wait_for(
            lambda: pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ),
            message="the write waiting for job-b",
        )
        # Waiting for job-b, it already holds job-a: it took them in job_id order.
        with pytest.raises(asyncpg.LockNotAvailableError):
            await pool.execute("SELECT FROM scheduled_jobs WHERE job_id = 'job-a' FOR UPDATE NOWAIT")
        assert not write.done()
    await asyncio.wait_for(write, 10)
    assert await pool.fetchval("SELECT array_agg(status ORDER BY job_id) FROM scheduled_jobs") == [
        after,
        after,
    ]


async def test_a_worker_paused_after_its_claim_does_not_start_the_job_once_its_lease_lapsed(
    pool: asyncpg.Pool,
) -> None:
    # A process stopped (SIGSTOP, a VM pause) after its claim committed and before the job
    # started learns of it only from its clock when it resumes. By then the leader may have
    # taken the job back and another worker may have run it: starting it then would run it
    # twice. The chaos suite's worker freeze caught a worker in that window once.
    attempts_run: list[int] = []
    paused = asyncio.Event()

    @job
    async def once() -> None:
        attempts_run.append(current_job().attempt)

    async with Scheduler(pool, **FAST) as scheduler:
        await wait_for(lambda: scheduler.is_leader, message="leadership")
        assert scheduler.worker is not None
        claimer = scheduler.worker._claimer
        real_claim = claimer.claim

        async def paused_after_the_claim(*args: Any, **kwargs: Any) -> Any:
            jobs = await real_claim(*args, **kwargs)
            if jobs and not paused.is_set():
                paused.set()
                # The pause itself (fault injection, not synchronisation): longer than a lease.
                await asyncio.sleep(FAST["lease_seconds"] + 1.0)
            return jobs

        claimer.claim = paused_after_the_claim  # type: ignore[method-assign]
        # A lapsed lease uses up a retry when the rescuer takes the job back (it may have run).
        job_id = await scheduler.schedule(once, execution_time=datetime.now(UTC), max_retries=2)
        await asyncio.wait_for(paused.wait(), 10)

        async def finished() -> asyncpg.Record | None:
            row = await pool.fetchrow("SELECT status, attempt FROM scheduled_jobs WHERE job_id = $1", job_id)
            return row if row is not None and row["status"] == "completed" else None

        row = await wait_for(finished, timeout=15, message="the job completed")
    # The paused claim's attempt never ran; the job ran once, as the next attempt.
    assert attempts_run == [row["attempt"]] and row["attempt"] >= 2, (attempts_run, dict(row))
