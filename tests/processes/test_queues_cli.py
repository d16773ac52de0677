"""``pg-scheduler run --queues`` (and ``PG_SCHEDULER_QUEUES``) with real pods, and what
``status`` says about queues: a pod claims only its queues, and status shows which queue no live
process claims."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from pg_scheduler import Scheduler
from pg_scheduler.shared.models import JobState
from tests.pods import Pod, start_pod
from tests.processes.test_cli_manage import ok, ok_json
from tests.replicas import ensure_events_table
from tests.rows import wait_for_status
from tests.support import run_cli


def test_bad_queue_lists_stop_run_with_one_line_and_start_nothing() -> None:
    for args, env in (
        (["--queues", "has space"], {}),
        (["--queues", "a,,b"], {}),
        ([], {"PG_SCHEDULER_QUEUES": "emails,-x"}),
    ):
        result = run_cli("run", "tests.apps.tasks", *args, env=env)
        assert result.returncode == 1, (args, env, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "invalid queue name" in lines[0], result.stderr
        assert "embedded" not in result.stderr  # refused before any database is started
    for args, env in ((["--queues", " "], {}), ([], {"PG_SCHEDULER_QUEUES": ""})):
        empty = run_cli("run", "tests.apps.tasks", *args, env=env)
        assert empty.returncode == 1 and "is empty" in empty.stderr, (args, env, empty.stderr)
        assert len(empty.stderr.splitlines()) == 1
    assert "PG_SCHEDULER_QUEUES" in run_cli("run", "--help").stdout


async def test_a_pod_claims_only_its_queues_and_status_shows_the_unclaimed_one(
    dsn: str, pool: asyncpg.Pool, pods: list[Pod], tmp_path: Path
) -> None:
    await ensure_events_table(pool)
    producer = Scheduler(pool)
    await producer.initialize_db()
    now = datetime.now(UTC)
    emails = [
        await producer.schedule("apps.send_invoice", execution_time=now, args=(i,), queue="emails")
        for i in range(3)
    ]
    stranded = await producer.schedule("apps.send_invoice", execution_time=now, args=(99,))

    pod = await start_pod(dsn, tmp_path, workers=1, env={"PG_SCHEDULER_QUEUES": "emails"})
    pods.append(pod)
    await pod.wait_ready(pool, workers=1)
    for job_id in emails:
        await wait_for_status(pool, job_id, JobState.COMPLETED, timeout=20)
    assert "claim jobs of the queues emails only" in pod.log()

    status = await ok_json("status", "--database-url", dsn)
    [worker] = status["workers"]
    assert worker["queues"] == ["emails"]
    assert status["queues"] == [
        {
            "queue": "default",
            "state": "open",
            "concurrency": None,
            "key_concurrency": None,
            "rate": None,
            "pending": 1,
            "due": 1,
            "running": 0,
            "claimed_by": 0,
        }
    ]
    assert status["unaware_of_limits"] == []
    assert [(t["task"], t["queue"], t["pending"]) for t in status["unrunnable_tasks"]] == [
        ("apps.send_invoice", "default", 1)
    ]
    text = await ok("status", "--database-url", dsn)
    assert "queues:" in text and "0 process(es)" in text
    assert (await pool.fetchval("SELECT status FROM scheduled_jobs WHERE job_id = $1", stranded)) == "pending"

    # A second pod that claims every queue runs it.
    every = await start_pod(dsn, tmp_path, workers=1)
    pods.append(every)
    await wait_for_status(pool, stranded, JobState.COMPLETED, timeout=20)
    status = await ok_json("status", "--database-url", dsn)
    assert status["queues"] == [] and status["unrunnable_tasks"] == []
    assert sorted(str(w["queues"]) for w in status["workers"]) == ["None", "['emails']"]


async def test_status_shows_limits_and_warns_of_processes_that_predate_them(
    dsn: str, pool: asyncpg.Pool, pods: list[Pod], tmp_path: Path
) -> None:
    """A process of an earlier version registers without ``enforces_limits``: while a queue is
    limited, status names it."""
    scheduler = Scheduler(pool)
    await scheduler.initialize_db()
    await scheduler.set_queue_limits("partner", concurrency=5, rate="100/1m")
    await pool.execute(
        """INSERT INTO scheduler_workers (worker_id, kind, host, pid, tasks)
           VALUES ('old-pod:1:w1', 'worker', 'old-pod', 1, ARRAY['apps.send_invoice'])"""
    )
    status = await ok_json("status", "--database-url", dsn)
    [partner] = status["queues"]
    assert (partner["queue"], partner["state"], partner["concurrency"], partner["rate"]) == (
        "partner",
        "limited",
        5,
        "100/1m",
    )
    assert status["unaware_of_limits"] == ["old-pod:1:w1"]
    text = await ok("status", "--database-url", dsn)
    assert "concurrency=5 rate=100/1m" in text
    assert "warning: 1 live process(es) of an earlier version do not enforce queue limits" in text
    # A pod of this version registers as enforcing them; with no queue limited, no warning.
    pod = await start_pod(dsn, tmp_path, workers=1)
    pods.append(pod)
    await pod.wait_ready(pool, workers=1)
    await scheduler.set_queue_limits("partner", concurrency=None, rate=None)
    assert (await ok_json("status", "--database-url", dsn))["unaware_of_limits"] == []
