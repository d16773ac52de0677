"""Acting on jobs through the public API, one or every job a filter matches, and listing them,
against a real PostgreSQL.

What is proven here:

- ``retry_job``, ``run_job_now``, ``delete_job`` act on the states they allow and refuse the
  others (False, the row unchanged); retry and run-now wake the workers;
- the bulk actions act on every matching job, over more batches than one, and on no other;
  bulk cancel announces each cancelled job to its worker, and a running worker stops the
  coroutine, as ``cancel_job`` does;
- each filter condition (state, queue, task, time range over the state's own time, arguments,
  job id) selects what it says;
- ``list_jobs`` pages visit every job of a state exactly once, in the state's order, ties
  included;
- a bad filter is refused with one ``ConfigurationError`` before anything runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from pg_scheduler import ConfigurationError, JobCursor, JobFilter, JobState, Scheduler, job
from pg_scheduler.shared import queries
from tests.rows import Sql, insert_job, job_row
from tests.support import FAST, wait_for

BASE = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def producer(pool: asyncpg.Pool) -> Scheduler:
    scheduler = Scheduler(pool)
    await scheduler.initialize_db()
    return scheduler


@pytest.fixture
async def notices(dsn: str) -> AsyncIterator[dict[str, list[str]]]:
    """The payloads received on the wake-up and cancel channels."""
    got: dict[str, list[str]] = {"pg_scheduler_jobs": [], "pg_scheduler_cancel": []}
    conn = await asyncpg.connect(dsn)
    for channel, payloads in got.items():
        await conn.add_listener(channel, lambda *a, p=payloads: p.append(a[3]))
    try:
        yield got
    finally:
        await conn.close()


async def statuses(pool: asyncpg.Pool) -> dict[str, str]:
    return {r["job_id"]: r["status"] for r in await pool.fetch("SELECT job_id, status FROM scheduled_jobs")}


# --------------------------------------------------------------------------- one job


async def test_retry_job_takes_failed_cancelled_and_expired_jobs_only(
    pool: asyncpg.Pool, producer: Scheduler, notices: dict[str, list[str]]
) -> None:
    for state in JobState:
        await insert_job(pool, state.value, status=state.value, retry_count=2, max_retries=3, attempt=3)
    for state in ("failed", "cancelled", "expired"):
        assert await producer.retry_job(state) is True
        row = await job_row(pool, state)
        assert (row["status"], row["retry_count"], row["attempt"]) == ("pending", 0, 3)
        assert row["finished_at"] is None and row["execution_time"] <= await pool.fetchval("SELECT now()")
    await wait_for(lambda: notices["pg_scheduler_jobs"], message="workers woken")
    for state in ("pending", "running", "completed", "no-such-job"):
        assert await producer.retry_job(state) is False
    assert (await job_row(pool, "running"))["status"] == "running"
    assert (await job_row(pool, "completed"))["status"] == "completed"


async def test_run_job_now_makes_a_pending_job_due_and_wakes_the_workers(
    pool: asyncpg.Pool, producer: Scheduler, notices: dict[str, list[str]]
) -> None:
    await insert_job(pool, "later", execution_time=datetime.now(UTC) + timedelta(days=1))
    await insert_job(pool, "overdue", execution_time=BASE)
    await insert_job(pool, "running", status="running")
    await insert_job(pool, "failed", status="failed")

    assert await producer.run_job_now("later") is True
    assert (await job_row(pool, "later"))["execution_time"] <= await pool.fetchval("SELECT now()")
    await wait_for(lambda: notices["pg_scheduler_jobs"], message="workers woken")
    assert await producer.run_job_now("overdue") is True
    assert (await job_row(pool, "overdue"))["execution_time"] == BASE  # keeps its place
    for job_id in ("running", "failed", "no-such-job"):
        assert await producer.run_job_now(job_id) is False
    assert (await job_row(pool, "failed"))["status"] == "failed"


async def test_delete_job_deletes_finished_jobs_only(pool: asyncpg.Pool, producer: Scheduler) -> None:
    for state in JobState:
        await insert_job(pool, state.value, status=state.value)
    for state in ("pending", "running", "no-such-job"):
        assert await producer.delete_job(state) is False
    for state in ("completed", "failed", "cancelled", "expired"):
        assert await producer.delete_job(state) is True
        assert await producer.delete_job(state) is False  # gone
    assert await statuses(pool) == {"pending": "pending", "running": "running"}


# --------------------------------------------------------------------------- bulk


async def test_cancel_jobs_cancels_every_match_in_batches_and_tells_the_workers(
    pool: asyncpg.Pool, producer: Scheduler, notices: dict[str, list[str]]
) -> None:
    wanted = set()
    for i in range(11):
        wanted.add(await insert_job(pool, f"p{i}", queue="bulk"))
    for i in range(3):
        wanted.add(await insert_job(pool, f"r{i}", queue="bulk", status="running"))
    await insert_job(pool, "done", queue="bulk", status="completed")
    await insert_job(pool, "elsewhere", queue="other")

    assert await producer.cancel_jobs({"queue": "bulk"}, reason="by test", batch_size=4) == 14
    after = await statuses(pool)
    assert {j for j, s in after.items() if s == "cancelled"} == wanted
    assert after["done"] == "completed" and after["elsewhere"] == "pending"
    assert (await job_row(pool, "r0"))["error_message"] == "by test"
    await wait_for(lambda: set(notices["pg_scheduler_cancel"]) == wanted, message="cancel notices")
    assert len(notices["pg_scheduler_cancel"]) == 14
    assert await producer.cancel_jobs({"queue": "bulk"}, batch_size=4) == 0
    assert await producer.cancel_jobs({"state": "completed"}) == 0  # not a state it cancels


async def test_cancel_jobs_stops_a_running_coroutine_like_cancel_job(pool: asyncpg.Pool) -> None:
    started = asyncio.Event()
    stopped: list[bool] = []

    @job
    async def sleeps_in_bulk() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped.append(True)
            raise

    async with Scheduler(pool, **{**FAST, "lease_seconds": 30.0, "heartbeat_seconds": 10.0}) as s:
        job_id = await s.schedule(sleeps_in_bulk, execution_time=datetime.now(UTC))
        await asyncio.wait_for(started.wait(), 10)
        running = await s.get_job(job_id)
        assert running is not None
        assert await s.cancel_jobs({"task": running.job_name, "state": "running"}) == 1
        await wait_for(lambda: stopped, timeout=5, message="coroutine cancelled")
        assert (await job_row(pool, job_id))["status"] == "cancelled"


async def test_retry_jobs_retries_every_failed_cancelled_or_expired_match(
    pool: asyncpg.Pool, producer: Scheduler
) -> None:
    ids = [await insert_job(pool, f"f{i}", status="failed", retry_count=1) for i in range(8)]
    ids += [await insert_job(pool, f"c{i}", status="cancelled") for i in range(2)]
    ids += [await insert_job(pool, f"e{i}", status="expired") for i in range(2)]
    await insert_job(pool, "ok", status="completed")
    await insert_job(pool, "run", status="running")

    assert await producer.retry_jobs({"state": "completed"}, batch_size=3) == 0
    assert await producer.retry_jobs({"state": "failed"}, batch_size=3) == 8
    assert await producer.retry_jobs({}, batch_size=3) == 4
    after = await statuses(pool)
    assert all(after[i] == "pending" for i in ids)
    assert after["ok"] == "completed" and after["run"] == "running"
    assert await pool.fetchval("SELECT max(retry_count) FROM scheduled_jobs WHERE status = 'pending'") == 0


async def test_run_jobs_now_makes_every_later_pending_match_due(
    pool: asyncpg.Pool, producer: Scheduler
) -> None:
    later = datetime.now(UTC) + timedelta(days=1)
    ids = [await insert_job(pool, f"l{i}", execution_time=later + timedelta(minutes=i)) for i in range(10)]
    await insert_job(pool, "overdue", execution_time=BASE)
    await insert_job(pool, "other", execution_time=later, queue="other")
    await insert_job(pool, "run", status="running")

    assert await producer.run_jobs_now({"queue": "default"}, batch_size=3) == 10
    now = await pool.fetchval("SELECT now()")
    for job_id in ids:
        assert (await job_row(pool, job_id))["execution_time"] <= now
    assert (await job_row(pool, "overdue"))["execution_time"] == BASE
    assert (await job_row(pool, "other"))["execution_time"] == later
    assert await producer.run_jobs_now({"queue": "default"}, batch_size=3) == 0


async def test_delete_jobs_deletes_finished_matches_only(pool: asyncpg.Pool, producer: Scheduler) -> None:
    for i in range(9):
        await insert_job(pool, f"c{i}", status="completed")
    for i in range(4):
        await insert_job(pool, f"f{i}", status="failed")
    await insert_job(pool, "pending")
    await insert_job(pool, "running", status="running")

    assert await producer.delete_jobs({"state": "pending"}, batch_size=2) == 0
    assert await producer.delete_jobs({"state": "completed"}, batch_size=2) == 9
    assert await producer.delete_jobs({}, batch_size=2) == 4
    assert await statuses(pool) == {"pending": "pending", "running": "running"}


# --------------------------------------------------------------------------- filters


async def test_each_filter_condition_selects_what_it_says(pool: asyncpg.Pool, producer: Scheduler) -> None:
    async def failed(job_id: str, **columns: Any) -> None:
        await insert_job(pool, job_id, status="failed", **columns)

    await failed("a", queue="q1", job_name="app.mail:send", finished_at=BASE)
    await failed("b", queue="q2", job_name="app.mail:send", finished_at=BASE + timedelta(hours=1))
    await failed("c", queue="q1", job_name="app.sms:send_text", finished_at=BASE + timedelta(hours=2))
    await failed(
        "d",
        queue="q1",
        job_name="app.mail:send",
        finished_at=BASE + timedelta(hours=3),
        task_data={"args": [42, "x"], "kwargs": {"to": "a@b.c", "opts": {"cc": True, "n": 1}}},
    )
    await insert_job(
        pool, "p", queue="q1", job_name="app.mail:send", execution_time=BASE + timedelta(hours=1)
    )

    async def ids(job_filter: JobFilter) -> list[str]:
        page = await producer.list_jobs(job_filter, limit=100)
        return sorted(j.job_id for j in page.jobs)

    assert await ids({"state": "failed"}) == ["a", "b", "c", "d"]
    assert await ids({"state": "failed", "queue": "q1"}) == ["a", "c", "d"]
    assert await ids({"state": "failed", "task": "app.mail:send"}) == ["a", "b", "d"]
    assert await ids({"state": "failed", "task": "send_text"}) == ["c"]
    assert await ids({"state": "failed", "task": "mail"}) == []
    span: JobFilter = {"since": BASE + timedelta(hours=1), "until": BASE + timedelta(hours=3)}
    assert await ids({"state": "failed", **span}) == ["b", "c"]  # since included, until not
    assert await ids({"state": "pending", **span}) == ["p"]  # over the due time
    assert await ids({"state": "failed", "args": [42]}) == ["d"]
    assert await ids({"state": "failed", "args": ["x", 42]}) == ["d"]
    assert await ids({"state": "failed", "args": [43]}) == []
    assert await ids({"state": "failed", "args": {"to": "a@b.c"}}) == ["d"]
    assert await ids({"state": "failed", "args": {"opts": {"cc": True}}}) == ["d"]
    assert await ids({"state": "failed", "args": {"to": "x"}}) == []
    assert await ids({"state": "failed", "job_id": "b"}) == ["b"]
    assert await ids({"state": "pending", "job_id": "b"}) == []
    assert await ids({"job_id": "p"}) == ["p"]  # a job id needs no state
    assert await ids({"job_id": "p", "queue": "q2"}) == []

    # The same conditions choose what a bulk action acts on.
    assert (
        await producer.delete_jobs({"queue": "q1", "task": "send", "until": BASE + timedelta(hours=2)}) == 1
    )
    assert await ids({"state": "failed"}) == ["b", "c", "d"]
    assert await producer.delete_jobs({"args": {"to": "a@b.c"}, "since": BASE}) == 1
    assert await ids({"state": "failed"}) == ["b", "c"]


async def test_a_bad_filter_is_refused_before_anything_runs(pool: asyncpg.Pool, producer: Scheduler) -> None:
    await insert_job(pool, "kept", status="failed")
    bad: list[tuple[dict[str, Any], str]] = [
        ({"state": "done"}, "unknown job state 'done'"),
        ({"status": "failed"}, "unknown job filter key 'status'"),
        ({"state": "failed", "since": datetime(2026, 1, 1)}, "aware datetime"),
        ({"state": "failed", "since": BASE, "until": BASE - timedelta(seconds=1)}, "is after"),
        ({"state": "failed", "queue": 3}, "'queue' must be a str"),
        ({"state": "failed", "args": "x"}, "a list or a dict"),
        ({"state": "failed", "args": [float("nan")]}, "must be JSON"),
    ]
    for job_filter, message in bad:
        for action in (producer.list_jobs, producer.delete_jobs):
            with pytest.raises(ConfigurationError, match=message) as raised:
                await action(job_filter)  # type: ignore[operator]
            assert "\n" not in str(raised.value)
    with pytest.raises(ConfigurationError, match="needs a state"):
        await producer.list_jobs({"queue": "default"})
    with pytest.raises(ConfigurationError, match="limit must be an int >= 1"):
        await producer.list_jobs({"state": "failed"}, limit=0)
    with pytest.raises(ConfigurationError, match="batch_size must be an int >= 1"):
        await producer.delete_jobs({}, batch_size=0)
    assert await statuses(pool) == {"kept": "failed"}


# --------------------------------------------------------------------------- pages


async def pages(producer: Scheduler, job_filter: JobFilter, limit: int) -> list[list[str]]:
    found: list[list[str]] = []
    after: JobCursor | None = None
    while True:
        page = await producer.list_jobs(job_filter, after=after, limit=limit)
        found.append([j.job_id for j in page.jobs])
        if page.next is None:
            return found
        after = page.next


async def test_pages_visit_every_finished_job_once_newest_first(
    pool: asyncpg.Pool, producer: Scheduler
) -> None:
    # Three jobs share each finish time: the cursor has to break ties by job id.
    for i in range(300):
        await insert_job(pool, f"j{i:03}", status="failed", finished_at=BASE + timedelta(seconds=i // 3))
    await insert_job(pool, "other-state", status="completed", finished_at=BASE)

    rows = await pool.fetch("SELECT job_id, finished_at FROM scheduled_jobs WHERE status = 'failed'")
    expected = [
        r["job_id"] for r in sorted(rows, key=lambda r: (r["finished_at"], r["job_id"]), reverse=True)
    ]
    found = await pages(producer, {"state": "failed"}, limit=7)
    assert [j for page in found for j in page] == expected
    assert [len(p) for p in found] == [7] * 42 + [6]
    assert (await pages(producer, {"state": "failed"}, limit=100))[-1] == expected[200:]  # no empty last page


async def test_pages_visit_pending_jobs_first_due_first_and_running_last_started_first(
    pool: asyncpg.Pool, producer: Scheduler
) -> None:
    for i in range(120):
        await insert_job(pool, f"p{i:03}", execution_time=BASE + timedelta(minutes=(i * 7) % 40))
    for i in range(30):
        await insert_job(pool, f"r{i:02}", status="running", started_at=BASE + timedelta(seconds=i % 10))

    pending = await pool.fetch("SELECT job_id, execution_time FROM scheduled_jobs WHERE status = 'pending'")
    expected = [r["job_id"] for r in sorted(pending, key=lambda r: (r["execution_time"], r["job_id"]))]
    assert [j for page in await pages(producer, {"state": "pending"}, limit=9) for j in page] == expected

    running = await pool.fetch("SELECT job_id, started_at FROM scheduled_jobs WHERE status = 'running'")
    expected = [
        r["job_id"] for r in sorted(running, key=lambda r: (r["started_at"], r["job_id"]), reverse=True)
    ]
    assert [j for page in await pages(producer, {"state": "running"}, limit=4) for j in page] == expected

    page = await producer.list_jobs({"state": "pending", "job_id": "p005"})
    assert [j.job_id for j in page.jobs] == ["p005"] and page.next is None
    assert page.jobs[0].status is JobState.PENDING


async def test_a_page_of_finished_jobs_is_planned_with_its_values_on_the_finish_index(
    pool: asyncpg.Pool, producer: Scheduler
) -> None:
    # Under force_custom_plan the NULL tests of the conditions left out fold away, so the state
    # and the cursor bound an index scan instead of a filter over every row.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(queries.DB_SET_CUSTOM_PLANS)
        await conn.execute(queries.DB_DISABLE_SEQSCAN)
        params = ("failed", None, None, None, None, None, None, BASE, "x", 51)
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {queries.JOB_LIST_FINISHED_PAGE}", *params))
    assert "scheduled_jobs_finished_idx" in plan, plan
    assert "Index Cond: ((status = 'failed'::text) AND (finished_at <=" in plan, plan
    assert "IS NULL" not in plan, plan


# --------------------------------------------------------------------------- a bulk call's set


async def test_a_bulk_action_leaves_jobs_that_entered_their_state_after_it_began(
    pool: asyncpg.Pool, producer: Scheduler
) -> None:
    """A call acts on the jobs in their state when it began: a job that failed again, finished
    or was written after that (here: an hour from now) is left to the next call."""
    later = Sql("now() + interval '1 hour'")
    for i in range(3):
        await insert_job(pool, f"failed-{i}", status="failed")
        await insert_job(pool, f"failed-later-{i}", status="failed", finished_at=later)
        await insert_job(pool, f"done-{i}", status="completed")
        await insert_job(pool, f"done-later-{i}", status="completed", finished_at=later)
        await insert_job(pool, f"pending-{i}", execution_time=Sql("now() + interval '1 day'"))
        await insert_job(pool, f"pending-later-{i}", created_at=later)
        # Put back to pending by a failed attempt (or a released lease) that started later.
        await insert_job(pool, f"pending-again-later-{i}", started_at=later, attempt=1, retry_count=1)
    assert await producer.retry_jobs({"state": "failed"}, batch_size=2) == 3
    assert await producer.delete_jobs({"state": "completed"}, batch_size=2) == 3
    # Pending when the cancel began: the three written for tomorrow and the three retried.
    assert await producer.cancel_jobs({"state": "pending"}, batch_size=2) == 6
    now = await statuses(pool)
    assert [now[f"failed-later-{i}"] for i in range(3)] == ["failed"] * 3
    assert [now.get(f"done-later-{i}") for i in range(3)] == ["completed"] * 3
    assert [now.get(f"done-{i}") for i in range(3)] == [None] * 3
    assert [now[f"pending-later-{i}"] for i in range(3)] == ["pending"] * 3
    assert [now[f"pending-again-later-{i}"] for i in range(3)] == ["pending"] * 3
    assert [now[f"pending-{i}"] for i in range(3)] == ["cancelled"] * 3
    assert [now[f"failed-{i}"] for i in range(3)] == ["cancelled"] * 3


async def test_a_bulk_delete_ends_while_jobs_keep_finishing(pool: asyncpg.Pool, producer: Scheduler) -> None:
    """Jobs finishing faster than the batches delete them do not keep the call going."""
    await pool.execute(
        "INSERT INTO scheduled_jobs (job_id, job_name, execution_time, status, finished_at)"
        " SELECT 'old-' || g, 'tests:nobody', now(), 'completed', now() FROM generate_series(1, 200) g"
    )
    inserted = 0
    done = asyncio.Event()

    async def keep_finishing() -> None:
        nonlocal inserted
        while not done.is_set():
            await pool.execute(
                "INSERT INTO scheduled_jobs (job_id, job_name, execution_time, status, finished_at)"
                " SELECT 'new-' || $1::int || '-' || g, 'tests:nobody', now(), 'completed', now()"
                " FROM generate_series(1, 50) g",
                inserted,
            )
            inserted += 50

    finishing = asyncio.create_task(keep_finishing())
    try:
        deleted = await asyncio.wait_for(producer.delete_jobs({"state": "completed"}, batch_size=5), 60)
    finally:
        done.set()
        await finishing
    assert inserted > 0
    assert 200 <= deleted < 200 + inserted
    assert await pool.fetchval("SELECT count(*) FROM scheduled_jobs WHERE job_id LIKE 'old-%'") == 0


async def test_a_page_with_a_statement_timeout_is_bounded_on_the_server_only_for_its_query(
    pool: asyncpg.Pool, producer: Scheduler
) -> None:
    """The timeout ends the page's query on the server, and the pooled session keeps its own
    setting afterwards."""
    await insert_job(pool, "done", status="completed")
    page = await producer.list_jobs({"state": "completed"}, statement_timeout=5)
    assert [j.job_id for j in page.jobs] == ["done"]
    locker = await pool.acquire()
    try:
        # A lock the page's read must wait for: its timeout ends the wait on the server.
        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE scheduled_jobs IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(asyncpg.QueryCanceledError):
            await producer.list_jobs({"state": "completed"}, statement_timeout=0.2)
        await tx.rollback()
    finally:
        await pool.release(locker)
    settings = {await pool.fetchval("SHOW statement_timeout") for _ in range(pool.get_size() + 1)}
    assert settings == {"0"}
    for bad in (0, -1, float("nan"), float("inf"), "1"):
        with pytest.raises(ConfigurationError, match="statement_timeout"):
            await producer.list_jobs({"state": "completed"}, statement_timeout=bad)  # type: ignore[arg-type]
