"""Queues, against a real PostgreSQL: every job has one, and a process can claim only some.

- a job is in ``"default"`` unless its task (``@job(queue=...)``), its periodic definition or
  the call (``schedule(queue=...)``, ``JobSpec(queue=...)``) names another; a concurrency key
  is stored as given; both round-trip through ``get_job``;
- bad queue names and keys are refused in one line, before anything is written;
- a Scheduler given ``queues`` claims jobs of those queues only, even when other queues' jobs
  are due first and rank higher, and the claim statements of a Scheduler without queues are
  exactly those of a database without queues;
- rows written without a queue (by 0.2.3, or by a program of an earlier version) are in the
  queue ``"default"``.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from pg_scheduler import (
    ConfigurationError,
    ConflictResolution,
    InvalidJobError,
    InvalidScheduleError,
    JobPriority,
    JobSpec,
    JobState,
    Scheduler,
    job,
    periodic,
)
from pg_scheduler.shared import queries
from pg_scheduler.shared.periodic import periodic_registry, publish
from pg_scheduler.shared.queues import parse_queues
from pg_scheduler.shared.schema import ensure_schema
from pg_scheduler.shared.tasks import registry
from pg_scheduler.supervisor.fence import Unfenced
from pg_scheduler.supervisor.maintenance.periodic_registrar import PeriodicRegistrar
from tests.rows import insert_job, job_row, wait_for_status
from tests.support import FAST, wait_for


def later() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


async def test_a_job_is_in_its_tasks_queue_unless_the_call_names_another(pool: asyncpg.Pool) -> None:
    @job
    async def plain() -> None:
        pass

    @job(queue="emails")
    async def send() -> None:
        pass

    scheduler = Scheduler(pool)
    when = later()
    in_default = await scheduler.schedule(plain, execution_time=when)
    in_emails = await scheduler.schedule(send, execution_time=when, concurrency_key="customer:7")
    moved = await scheduler.schedule(send, execution_time=when, queue="reports")
    by_name = await scheduler.schedule("elsewhere:task", execution_time=when, queue="batch")
    unknown_name = await scheduler.schedule("elsewhere:task", execution_time=when)

    queues = {
        r["job_id"]: (r["queue"], r["concurrency_key"])
        for r in await pool.fetch("SELECT job_id, queue, concurrency_key FROM scheduled_jobs")
    }
    assert queues == {
        in_default: ("default", None),
        in_emails: ("emails", "customer:7"),
        moved: ("reports", None),
        by_name: ("batch", None),
        unknown_name: ("default", None),
    }
    found = await scheduler.get_job(in_emails)
    assert found is not None
    assert (found.queue, found.concurrency_key) == ("emails", "customer:7")

    # REPLACE rewrites the queue and the key with the rest of the row.
    await scheduler.schedule(
        plain,
        execution_time=when,
        job_id=in_emails,
        conflict_resolution=ConflictResolution.REPLACE,
        queue="other",
    )
    row = await job_row(pool, in_emails)
    assert (row["queue"], row["concurrency_key"]) == ("other", None)


async def test_schedule_bulk_writes_each_specs_queue_and_key_on_both_paths(pool: asyncpg.Pool) -> None:
    @job(queue="emails")
    async def send(n: int) -> None:
        pass

    scheduler = Scheduler(pool)
    when = later()

    def specs(with_ids: bool) -> list[JobSpec]:
        prefix = "ids" if with_ids else ""
        return [
            JobSpec(
                send,
                when,
                args=(i,),
                job_id=f"{prefix}-{i}" if with_ids else None,
                queue=None if i % 3 == 0 else ("a" if i % 3 == 1 else "b"),
                concurrency_key=None if i % 2 else f"k{i}",
            )
            for i in range(12)
        ]

    for with_ids in (False, True):  # COPY when every id is generated; batches otherwise
        ids = await scheduler.schedule_bulk(specs(with_ids), batch_size=5)
        assert len(ids) == 12
        rows = {
            r["job_id"]: r
            for r in await pool.fetch(
                "SELECT job_id, queue, concurrency_key, task_data FROM scheduled_jobs "
                "WHERE job_id = ANY($1::text[])",
                ids,
            )
        }
        for job_id, spec in zip(ids, specs(with_ids), strict=True):
            n = spec.args[0]
            expected_queue = "emails" if n % 3 == 0 else ("a" if n % 3 == 1 else "b")
            assert rows[job_id]["queue"] == expected_queue, (with_ids, n)
            assert rows[job_id]["concurrency_key"] == (None if n % 2 else f"k{n}"), (with_ids, n)


async def test_bad_queue_names_and_keys_are_refused_in_one_line_and_write_nothing(
    pool: asyncpg.Pool,
) -> None:
    @job
    async def task() -> None:
        pass

    scheduler = Scheduler(pool)
    await scheduler.initialize_db()
    when = later()
    bad: list[dict[str, Any]] = [
        {"queue": ""},
        {"queue": "has space"},
        {"queue": "-starts-with-dash"},
        {"queue": "x" * 64},
        {"queue": "émails"},
        {"queue": 5},
        {"concurrency_key": ""},
        {"concurrency_key": 7},
        {"concurrency_key": "k" * 201},
    ]
    for kwargs in bad:
        with pytest.raises(InvalidJobError) as caught:
            await scheduler.schedule(task, execution_time=when, **kwargs)
        message = str(caught.value)
        assert "\n" not in message and ("queue" in message or "concurrency_key" in message), kwargs
        with pytest.raises(InvalidJobError):
            await scheduler.schedule_bulk([JobSpec(task, when), JobSpec(task, when, **kwargs)])
    assert await pool.fetchval("SELECT count(*) FROM scheduled_jobs") == 0

    # The longest valid name and the allowed punctuation pass.
    for name in ("x" * 63, "a.b_c-d", "0"):
        await scheduler.schedule(task, execution_time=when, queue=name)

    with pytest.raises(InvalidJobError, match="invalid queue name"):

        @job(queue="no spaces")
        async def refused() -> None:
            pass

    tasks_before, periodic_before = registry.names(), set(periodic_registry.all())
    with pytest.raises(InvalidScheduleError, match="invalid queue name"):

        @periodic(every=timedelta(seconds=5), queue="")
        async def refused_periodic() -> None:
            pass

    assert registry.names() == tasks_before and set(periodic_registry.all()) == periodic_before

    for queues in ("a,,b", "a b", ["ok", "not ok"], []):
        with pytest.raises(ConfigurationError):
            Scheduler(pool, queues=queues)


def test_queue_lists_parse_to_each_name_once_in_order() -> None:
    assert parse_queues(None) is None
    assert parse_queues("") is None
    assert parse_queues("  ") is None
    assert parse_queues("emails") == ("emails",)
    assert parse_queues(" emails , reports,emails ") == ("emails", "reports")
    assert parse_queues(["b", "a", "b"]) == ("b", "a")


async def test_a_scheduler_given_queues_claims_only_their_jobs(pool: asyncpg.Pool) -> None:
    @job
    async def work(tag: str) -> None:
        pass

    producer = Scheduler(pool)
    now = datetime.now(UTC)
    # The other queues' jobs are due first and rank higher: a claim that ignored queues would
    # take them before the emails jobs.
    others = [
        await producer.schedule(
            work,
            execution_time=now - timedelta(minutes=1),
            args=(f"other-{i}",),
            priority=JobPriority.CRITICAL,
            queue=queue,
        )
        for i, queue in enumerate(["default", "reports", "default", "reports"])
    ]
    emails = [
        await producer.schedule(work, execution_time=now, args=(f"email-{i}",), queue="emails")
        for i in range(6)
    ]

    only_emails = Scheduler(pool, max_concurrent_jobs=2, queues=["emails", "unused"], **FAST)
    await only_emails.start()
    try:
        for job_id in emails:
            await wait_for_status(pool, job_id, JobState.COMPLETED, timeout=15)
        # A job added after the start, due now, in a queue it does not claim, stays too.
        late = await producer.schedule(work, execution_time=datetime.now(UTC), args=("late",))
        marker = await producer.schedule(
            work, execution_time=datetime.now(UTC), args=("marker",), queue="emails"
        )
        await wait_for_status(pool, marker, JobState.COMPLETED, timeout=15)
        statuses = {
            r["job_id"]: r["status"]
            for r in await pool.fetch(
                "SELECT job_id, status FROM scheduled_jobs WHERE job_id = ANY($1::text[])",
                [*others, late],
            )
        }
        assert statuses == dict.fromkeys([*others, late], "pending")
        registered = await pool.fetchval("SELECT queues FROM scheduler_workers WHERE kind = 'scheduler'")
        assert registered == ["emails", "unused"]
    finally:
        await only_emails.shutdown()

    every_queue = Scheduler(pool, **FAST)
    await every_queue.start()
    try:
        for job_id in [*others, late]:
            await wait_for_status(pool, job_id, JobState.COMPLETED, timeout=15)
        assert await pool.fetchval("SELECT queues FROM scheduler_workers WHERE kind = 'scheduler'") is None
    finally:
        await every_queue.shutdown()


async def test_periodic_windows_and_triggers_are_written_in_the_periodic_jobs_queue(
    pool: asyncpg.Pool,
) -> None:
    @periodic(every=timedelta(seconds=1), queue="reports")
    async def report() -> None:
        pass

    @job(queue="emails")
    @periodic(every=timedelta(seconds=1), dedup_key="digest")
    async def digest() -> None:
        pass

    scheduler = Scheduler(pool, queues=["reports", "emails"], **FAST)
    await scheduler.start()
    try:

        async def both_ran() -> bool:
            return bool(
                await pool.fetchval(
                    "SELECT count(DISTINCT dedup_key) = 2 FROM scheduled_jobs "
                    "WHERE status = 'completed' AND dedup_key IS NOT NULL"
                )
            )

        await wait_for(both_ran, timeout=15, message="a window of each periodic job ran")
        triggered = await scheduler.trigger_periodic_job("digest")
        assert triggered is not None
        await wait_for_status(pool, triggered, JobState.COMPLETED, timeout=15)
    finally:
        await scheduler.shutdown()

    by_key = {
        r["dedup_key"]: r["queues"]
        for r in await pool.fetch(
            "SELECT dedup_key, array_agg(DISTINCT queue ORDER BY queue) AS queues "
            "FROM scheduled_jobs WHERE dedup_key IS NOT NULL GROUP BY dedup_key"
        )
    }
    report_key = next(k for k in periodic_registry.all() if k != "digest")
    assert by_key == {report_key: ["reports"], "digest": ["emails"]}
    stored = {
        r["dedup_key"]: r["queue"]
        for r in await pool.fetch("SELECT dedup_key, queue FROM scheduler_periodic")
    }
    assert stored == {report_key: "reports", "digest": "emails"}
    info = (await scheduler.get_periodic_jobs())["digest"]
    assert info.queue == "emails"


async def test_rows_written_without_a_queue_are_in_the_default_queue(pool: asyncpg.Pool) -> None:
    @job
    async def work() -> None:
        pass

    scheduler = Scheduler(pool, queues=["default"], **FAST)
    await scheduler.initialize_db()
    # As 0.2.3 (or a program of an earlier version) writes a row: no queue, no key.
    await pool.execute(
        "INSERT INTO scheduled_jobs (job_id, job_name, execution_time, task_data) "
        "VALUES ('old', $1, now(), '{\"args\": [], \"kwargs\": {}}')",
        registry.name_of(work),
    )
    row = await job_row(pool, "old")
    assert (row["queue"], row["concurrency_key"]) == ("default", None)
    await scheduler.start()
    try:
        await wait_for_status(pool, "old", JobState.COMPLETED, timeout=15)
    finally:
        await scheduler.shutdown()


async def test_the_claim_of_every_queue_is_the_statement_without_queues(pool: asyncpg.Pool) -> None:
    """A process that claims every queue sends the statements it sent before queues existed,
    but for the test that leaves limited queues to their own claim; a process given queues adds
    one test on the queue and nothing else."""
    for limit in (1, 7, 100):
        every = queries.job_claim_sql(limit)
        some = queries.job_claim_sql(limit, in_queues=True)
        assert "queue" not in every.replace(queries._NOT_LIMITED, "").replace("overlap", "")
        assert some.replace(" AND j.queue = ANY($6::text[])", "") == every
        every_refill = queries.job_complete_and_claim_sql(limit)
        some_refill = queries.job_complete_and_claim_sql(limit, in_queues=True)
        assert some_refill.replace(" AND j.queue = ANY($8::text[])", "") == every_refill
    assert (
        queries.JOB_GET_NEXT_DUE_IN_QUEUES.replace(" AND j.queue = ANY($2::text[])", "")
        == queries.JOB_GET_NEXT_DUE
    )
    # And each runs: the queue-filtered claim takes only its queue's due rows.
    scheduler = Scheduler(pool)
    await scheduler.initialize_db()
    await insert_job(pool, "in-a", job_name="t", queue="a")
    await insert_job(pool, "in-b", job_name="t", queue="b")
    rows = await pool.fetch(queries.job_claim_sql(10, in_queues=True), ["t"], 10, "w", 30.0, 1.0, ["b"])
    assert [r["job_id"] for r in rows] == ["in-b"]
    due = await pool.fetchval(queries.JOB_GET_NEXT_DUE_IN_QUEUES, ["t"], ["zzz"])
    assert due is None


NOON = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


async def published(pool: asyncpg.Pool, key: str, claims: list[str] | None) -> PeriodicRegistrar:
    """Publish the periodic definition ``key``, register a worker that can run its task and
    claims ``claims`` (None: every queue), and return a registrar to drive by hand."""
    definition = periodic_registry.get(key)
    assert definition is not None
    async with pool.acquire() as conn:
        await ensure_schema(conn)
        await publish(conn, [definition])
        await conn.execute(
            queries.WORKER_REGISTER, f"w-{claims}", "worker", "h", 1, [definition.task_name], None, claims
        )
    return PeriodicRegistrar(Unfenced(pool), interval_seconds=1, misfire_grace_time=300)


async def test_windows_wait_unwritten_until_a_process_claims_their_queue(pool: asyncpg.Pool) -> None:
    """Windows written for a queue nobody claims would pile up and then run in a burst; they are
    not written, and the ones missed meanwhile follow the misfire policy once a claimer comes."""

    @periodic(every=timedelta(hours=1), dedup_key="q-report", queue="reports")
    async def report() -> None: ...

    report_task = registry.name_of(report)
    registrar = await published(pool, "q-report", ["emails"])
    await pool.execute("UPDATE scheduler_periodic SET next_run_at = $1", NOON)
    await registrar.run_once(now=NOON + timedelta(seconds=0.5))
    await registrar.run_once(now=NOON + timedelta(hours=1, seconds=0.5))
    assert await pool.fetchval("SELECT count(*) FROM scheduled_jobs") == 0

    await pool.execute(
        queries.WORKER_REGISTER, "w-reports", "worker", "h", 2, [report_task], None, ["reports"]
    )
    await registrar.run_once(now=NOON + timedelta(hours=2, seconds=30))
    rows = await pool.fetch("SELECT window_start, queue FROM scheduled_jobs ORDER BY window_start")
    # misfire="coalesce" (the default): one run for the three windows missed, the latest.
    assert [tuple(r) for r in rows] == [(NOON + timedelta(hours=2), "reports")]


async def test_a_periodic_jobs_new_queue_moves_its_pending_windows(pool: asyncpg.Pool) -> None:
    @periodic(every=timedelta(seconds=1), dedup_key="q-move", queue="old")
    async def moving() -> None: ...

    registrar = await published(pool, "q-move", None)
    definition = periodic_registry.get("q-move")
    assert definition is not None
    await registrar.run_once()
    written = await pool.fetchval("SELECT count(*) FROM scheduled_jobs WHERE queue = 'old'")
    assert written >= 2
    async with pool.acquire() as conn:
        await publish(conn, [dataclasses.replace(definition, queue="new")])
    queues = await pool.fetch("SELECT DISTINCT queue FROM scheduled_jobs WHERE status = 'pending'")
    assert [r["queue"] for r in queues] == ["new"]
    assert await pool.fetchval("SELECT queue FROM scheduler_periodic") == "new"
    # A new schedule and a new queue at once: the windows of the old schedule are cancelled (not
    # moved to run off the new grid).
    async with pool.acquire() as conn:
        await publish(conn, [dataclasses.replace(definition, queue="newer", interval=timedelta(seconds=2))])
    rows = await pool.fetch("SELECT status, queue, error_message FROM scheduled_jobs")
    assert {(r["status"], r["queue"], r["error_message"]) for r in rows} == {
        ("cancelled", "new", "periodic schedule changed")
    }
