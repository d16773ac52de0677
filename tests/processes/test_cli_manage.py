"""The management commands: ``status``, ``jobs list/show/cancel/retry`` and
``periodic list/enable/disable/trigger/next``, run as real subprocesses against a real database.

Subprocesses are awaited (never ``subprocess.run`` in a test's event loop): a started Scheduler
in the test shares that loop, and its elector must keep checking its lock while a command runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from pg_scheduler import Scheduler, job, periodic
from pg_scheduler.shared import queries
from pg_scheduler.shared.locks import LEADER_LOCK
from pg_scheduler.shared.models import JobState
from tests.rows import Sql, job_row, update_job, wait_for_status
from tests.support import FAST, wait_for

STATES = [s.value for s in JobState]
UNREACHABLE = "postgresql://nobody:s3cret-pw@127.0.0.1:1/x"


async def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pg_scheduler",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return subprocess.CompletedProcess(list(args), proc.returncode, out.decode(), err.decode())


async def ok(*args: str, env: dict[str, str] | None = None) -> str:
    result = await cli(*args, env=env)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


async def ok_json(*args: str) -> Any:
    return json.loads(await ok(*args, "--json"))


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 1, (result.args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, (result.args, result.stderr)
    assert lines[0].startswith("pg-scheduler: "), lines
    for text in expected:
        assert text in lines[0], (text, lines[0])


async def migrated(pool: asyncpg.Pool) -> Scheduler:
    """A never-started Scheduler (a producer) on a database with the schema; it also publishes
    the periodic definitions of this process."""
    producer = Scheduler(pool, **FAST)
    await producer.initialize_db()
    return producer


async def register(
    pool: asyncpg.Pool,
    worker_id: str,
    kind: str,
    *,
    host: str,
    pid: int,
    tasks: list[str] | None = None,
    supervisor_id: str | None = None,
) -> None:
    await pool.execute(queries.WORKER_REGISTER, worker_id, kind, host, pid, tasks or [], supervisor_id, None)


def by_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in items}


def now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- status


async def test_status_shows_the_leader_the_process_tree_jobs_and_unrunnable_tasks(
    dsn: str, pool: asyncpg.Pool
) -> None:
    # A long stale time: the leader's orphan rescuer must not prune the hand-made rows below.
    scheduler = Scheduler(pool, **{**FAST, "worker_stale_seconds": 3600.0, "leader_ttl_seconds": 10.0})
    await scheduler.start()
    try:
        await wait_for(lambda: scheduler.is_leader, message="the scheduler leads")
        await register(pool, "sup-a", "supervisor", host="pod-a", pid=100)
        for n in (1, 2):
            await register(
                pool,
                f"sup-a/w{n}",
                "worker",
                host="pod-a",
                pid=100 + n,
                tasks=["app.mail:send"],
                supervisor_id="sup-a",
            )
        await register(pool, "gone", "worker", host="pod-z", pid=999, supervisor_id="sup-z")
        await pool.execute(
            "UPDATE scheduler_workers SET last_heartbeat = now() - interval "
            "'10 minutes' WHERE worker_id = 'gone'"
        )
        for _ in range(2):
            await scheduler.schedule("ghost.module:haunt", execution_time=now() - timedelta(seconds=60))
        await scheduler.schedule("app.mail:send", execution_time=now() + timedelta(hours=1))

        status = await ok_json("status", "--database-url", dsn)

        leader = status["leader"]
        assert leader["id"] == scheduler.worker_id
        assert leader["pid"] == os.getpid() and leader["host"] == socket.gethostname()
        assert leader["epoch"] >= 1 and leader["kind"] == "scheduler"
        assert datetime.fromisoformat(leader["elected_at"]).utcoffset() == timedelta(0)
        [mine] = status["schedulers"]
        assert mine["id"] == scheduler.worker_id and mine["is_leader"] is True
        assert mine["pid"] == os.getpid() and 0 <= mine["heartbeat_age_seconds"] < 30
        [supervisor] = status["supervisors"]
        assert supervisor == {
            **supervisor,
            "id": "sup-a",
            "pid": 100,
            "host": "pod-a",
            "is_leader": False,
            "workers": 2,
        }
        assert set(supervisor) >= {"started_at", "heartbeat_age_seconds"}
        workers = by_id(status["workers"])
        assert set(workers) == {"sup-a/w1", "sup-a/w2"}  # "gone" is stale, not listed
        assert workers["sup-a/w1"]["supervisor_id"] == "sup-a"
        assert workers["sup-a/w2"]["pid"] == 102 and workers["sup-a/w2"]["tasks"] == ["app.mail:send"]
        assert status["stale_processes"] == 1
        assert status["jobs"] == {**dict.fromkeys(STATES, 0), "pending": 3}
        assert 60 <= status["oldest_due_lag_seconds"] < 120
        # app.mail:send is registered by live workers; ghost.module:haunt by nobody.
        [ghost] = status["unrunnable_tasks"]
        assert ghost["task"] == "ghost.module:haunt" and ghost["pending"] == 2

        text = await ok("status", "--database-url", dsn)
        assert f"leader: scheduler {scheduler.worker_id}" in text
        assert "sup-a/w2" in text and "ghost.module:haunt" in text
        assert "stale processes: 1" in text
    finally:
        await scheduler.shutdown()

    # The leader row outlives the leader; the lock does not.
    status = await ok_json("status", "--database-url", dsn)
    assert status["leader"] is None
    assert status["schedulers"] == []
    assert status["jobs"]["pending"] == 3
    assert "leader: none" in await ok("status", "--database-url", dsn)


async def test_status_maps_the_leading_supervisor_and_reads_the_stale_time_from_env(
    dsn: str, pool: asyncpg.Pool
) -> None:
    await migrated(pool)
    await register(pool, "sup-b", "supervisor", host="pod-b", pid=200)
    await register(pool, "sup-c", "supervisor", host="pod-c", pid=300)
    await register(pool, "sup-b/w1", "worker", host="pod-b", pid=201, tasks=["t:a"], supervisor_id="sup-b")
    await pool.execute(
        "UPDATE scheduler_workers SET last_heartbeat = now() - interval '5 minutes' WHERE worker_id = 'sup-c'"
    )
    # Take leadership as a supervisor's elector does: the lock on its own session, then the epoch.
    lock_session = await asyncpg.connect(dsn)
    try:
        assert await lock_session.fetchval(queries.LEADER_TRY_LOCK, *LEADER_LOCK) is True
        await lock_session.fetchval(queries.LEADER_BUMP_EPOCH, "sup-b", "pod-b", 200)

        status = await ok_json("status", "--database-url", dsn)
        assert status["leader"]["id"] == "sup-b" and status["leader"]["kind"] == "supervisor"
        assert [s["id"] for s in status["supervisors"]] == ["sup-b"]  # sup-c is stale at 30 s
        assert status["supervisors"][0]["is_leader"] is True
        assert status["stale_processes"] == 1

        env = {"PG_SCHEDULER_STALE_SECONDS": "3600"}
        status = json.loads(await ok("status", "--json", "--database-url", dsn, env=env))
        supervisors = by_id(status["supervisors"])
        assert supervisors["sup-b"]["is_leader"] is True
        assert supervisors["sup-c"]["is_leader"] is False
        assert status["stale_processes"] == 0
        assert by_id(status["workers"])["sup-b/w1"]["supervisor_id"] == "sup-b"
        assert status["oldest_due_lag_seconds"] is None and status["unrunnable_tasks"] == []
    finally:
        await lock_session.close()
    assert (await ok_json("status", "--database-url", dsn))["leader"] is None


# --------------------------------------------------------------------------- jobs


async def test_jobs_list_filters_and_show_prints_every_column(dsn: str, pool: asyncpg.Pool) -> None:
    producer = await migrated(pool)
    base = now()
    for n in range(3):
        await producer.schedule(
            "app.mail:send", execution_time=base + timedelta(minutes=n), job_id=f"mail-{n}"
        )
    await producer.schedule(
        "app.billing:charge",
        execution_time=base,
        job_id="charge-1",
        args=[42],
        kwargs={"currency": "EUR"},
        max_retries=2,
    )
    error = "ValueError: card declined\n  line two of the traceback\n" + "x" * 300
    await update_job(pool, "charge-1", status="failed", error_message=error, finished_at=Sql("now()"))
    await update_job(pool, "mail-0", status="cancelled")

    every = await ok_json("jobs", "list", "--database-url", dsn)
    assert {r["job_id"] for r in every} == {"mail-0", "mail-1", "mail-2", "charge-1"}
    assert [r["job_id"] for r in every][:1] == ["mail-2"]  # latest due time first
    failed = await ok_json("jobs", "list", "--state", "failed", "--database-url", dsn)
    assert [r["job_id"] for r in failed] == ["charge-1"]
    two_states = await ok_json(
        "jobs", "list", "--state", "failed", "--state", "cancelled", "--database-url", dsn
    )
    assert {r["job_id"] for r in two_states} == {"charge-1", "mail-0"}
    for name in ("send", "app.mail:send"):
        mail = await ok_json("jobs", "list", "--task", name, "--database-url", dsn)
        assert {r["job_id"] for r in mail} == {"mail-0", "mail-1", "mail-2"}
    pending_mail = await ok_json(
        "jobs", "list", "--task", "send", "--state", "pending", "--limit", "1", "--database-url", dsn
    )
    assert [r["job_id"] for r in pending_mail] == ["mail-2"]
    text = await ok("jobs", "list", "--database-url", dsn)
    assert "charge-1" in text and "ValueError: card declined" in text and "line two" not in text
    assert "no jobs match" in await ok("jobs", "list", "--task", "nothing", "--database-url", dsn)
    bad_state = await cli("jobs", "list", "--state", "sleeping", "--database-url", dsn)
    assert bad_state.returncode == 2 and "sleeping" in bad_state.stderr

    shown = await ok_json("jobs", "show", "charge-1", "--database-url", dsn)
    columns = await pool.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'scheduled_jobs'"
    )
    assert set(shown) == {c["column_name"] for c in columns} - {"awaited"}  # wait_for's flag
    assert shown["error_message"] == error
    assert shown["task_data"] == {"args": [42], "kwargs": {"currency": "EUR"}}
    assert shown["status"] == "failed" and shown["max_retries"] == 2
    text = await ok("jobs", "show", "charge-1", "--database-url", dsn)
    assert error in text and "5 (normal)" in text and "app.billing:charge" in text


async def test_jobs_cancel_of_a_pending_job_and_of_a_finished_one(dsn: str, pool: asyncpg.Pool) -> None:
    producer = await migrated(pool)
    await producer.schedule("app:later", execution_time=now() + timedelta(hours=1), job_id="later")

    out = await ok("jobs", "cancel", "later", "--database-url", dsn)
    assert "cancelled job later" in out and "pending" in out
    row = await pool.fetchrow("SELECT status, finished_at FROM scheduled_jobs WHERE job_id = 'later'")
    assert row["status"] == "cancelled" and row["finished_at"] is not None

    again = await cli("jobs", "cancel", "later", "--database-url", dsn)
    assert_one_line_error(again, "already cancelled")


async def test_jobs_cancel_stops_a_running_coroutine_in_another_process(dsn: str, pool: asyncpg.Pool) -> None:
    started = asyncio.Event()
    interrupted: list[float] = []

    @job
    async def sleeps_long() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            interrupted.append(time.monotonic())
            raise

    # A long lease and heartbeat: the renewal (which would also notice) does not come in time,
    # so the stop proves the cancellation notice.
    async with Scheduler(pool, **{**FAST, "lease_seconds": 30.0, "heartbeat_seconds": 10.0}) as s:
        worker = s.worker
        assert worker is not None
        job_id = await s.schedule(sleeps_long, execution_time=now())
        await wait_for(started.is_set, timeout=10, message="job started")
        await wait_for(lambda: worker.listening, timeout=5, message="LISTEN")

        out = await ok("jobs", "cancel", job_id, "--database-url", dsn)
        assert "was running" in out and s.worker_id in out
        await wait_for(lambda: interrupted, timeout=5, message="coroutine cancelled")
        await wait_for(lambda: job_id not in worker.running_job_ids, timeout=5)
        row = await pool.fetchrow("SELECT status, attempt FROM scheduled_jobs WHERE job_id = $1", job_id)
    assert row["status"] == "cancelled" and row["attempt"] == 1


async def test_jobs_retry_runs_a_failed_job_again(dsn: str, pool: asyncpg.Pool) -> None:
    should_fail = [True]
    runs: list[int] = []

    @job
    async def flaky() -> None:
        runs.append(1)
        if should_fail[0]:
            raise RuntimeError("first run fails")

    listener = await asyncpg.connect(dsn)
    wakeups: list[str] = []
    try:
        async with Scheduler(pool, **FAST) as s:
            job_id = await s.schedule(flaky, execution_time=now(), max_retries=1)

            await wait_for_status(pool, job_id, "failed")
            failed = await job_row(pool, job_id)
            assert failed["retry_count"] == 1 and failed["attempt"] == 2

            refused = await cli("jobs", "retry", "nope", "--database-url", dsn)
            assert_one_line_error(refused, "no job 'nope'")

            should_fail[0] = False
            await listener.add_listener("pg_scheduler_jobs", lambda *a: wakeups.append(a[2]))
            out = await ok("jobs", "retry", job_id, "--database-url", dsn)
            assert "pending again" in out and "attempt 3" in out
            await wait_for(lambda: wakeups, message="workers woken")
            await wait_for_status(pool, job_id, "completed")
            done = await job_row(pool, job_id)
            assert done["attempt"] == 3 and done["retry_count"] == 0 and len(runs) == 3
            assert done["error_message"] is None

            again = await cli("jobs", "retry", job_id, "--database-url", dsn)
            assert_one_line_error(again, "is completed", "only failed, cancelled or expired")
            await s.schedule(flaky, execution_time=now() + timedelta(hours=1), job_id="waiting")
            pending = await cli("jobs", "retry", "waiting", "--database-url", dsn)
            assert_one_line_error(pending, "is pending")
    finally:
        await listener.close()


async def test_jobs_retry_keeps_the_error_and_counts_attempts_on(dsn: str, pool: asyncpg.Pool) -> None:
    producer = await migrated(pool)
    await producer.schedule("app:x", execution_time=now() - timedelta(days=1), job_id="old", max_retries=3)
    await update_job(
        pool,
        "old",
        status="expired",
        attempt=4,
        retry_count=3,
        worker_id="w",
        started_at=Sql("now()"),
        finished_at=Sql("now()"),
        error_message="misfired",
    )
    await ok("jobs", "retry", "old", "--database-url", dsn)
    row = await job_row(pool, "old")
    assert row["status"] == "pending" and row["retry_count"] == 0 and row["attempt"] == 4
    assert row["worker_id"] is None and row["started_at"] is None and row["finished_at"] is None
    assert row["error_message"] == "misfired"
    assert row["execution_time"] <= await pool.fetchval("SELECT now()")
    assert row["execution_time"] > now() - timedelta(minutes=1)


# --------------------------------------------------------------------------- periodic


async def test_periodic_list_enable_disable_trigger_and_next(dsn: str, pool: asyncpg.Pool) -> None:
    @periodic(every=timedelta(hours=1), dedup_key="cli-hourly")
    async def hourly() -> None:
        pass

    @periodic(cron="30 9 * * *", timezone="Europe/Lisbon", dedup_key="cli-daily", enabled=False)
    async def daily() -> None:
        pass

    await migrated(pool)  # publishes both definitions

    listed = {p["dedup_key"]: p for p in await ok_json("periodic", "list", "--database-url", dsn)}
    assert set(listed) == {"cli-hourly", "cli-daily"}
    assert listed["cli-hourly"]["enabled"] is True and listed["cli-daily"]["enabled"] is False
    assert listed["cli-daily"]["cron"] == "30 9 * * *"
    assert listed["cli-daily"]["timezone"] == "Europe/Lisbon"
    text = await ok("periodic", "list", "--database-url", dsn)
    assert "cli-hourly" in text and "every 1:00:00" in text and "Europe/Lisbon" in text

    async def enabled(key: str) -> bool:
        return bool(await pool.fetchval("SELECT enabled FROM scheduler_periodic WHERE dedup_key = $1", key))

    assert "disabled for the whole cluster" in await ok(
        "periodic", "disable", "cli-hourly", "--database-url", dsn
    )
    assert await enabled("cli-hourly") is False
    assert "already disabled" in await ok("periodic", "disable", "cli-hourly", "--database-url", dsn)
    assert "enabled for the whole cluster" in await ok(
        "periodic", "enable", "cli-daily", "--database-url", dsn
    )
    assert await enabled("cli-daily") is True

    out = await ok("periodic", "trigger", "cli-hourly", "--database-url", dsn)
    triggered = await pool.fetch(
        "SELECT job_id, status, execution_time FROM scheduled_jobs WHERE dedup_key = 'cli-hourly'"
    )
    assert len(triggered) == 1 and triggered[0]["status"] == "pending"
    assert triggered[0]["job_id"] in out

    lines = (await ok("periodic", "next", "cli-hourly", "--count", "3", "--database-url", dsn)).splitlines()
    times = [datetime.fromisoformat(line) for line in lines]
    assert len(times) == 3
    assert all(t.utcoffset() == timedelta(0) and t.minute == t.second == 0 for t in times)
    assert times[0] > now() - timedelta(seconds=1)
    assert [b - a for a, b in zip(times, times[1:], strict=False)] == [timedelta(hours=1)] * 2

    lines = (await ok("periodic", "next", "cli-daily", "--database-url", dsn)).splitlines()
    assert len(lines) == 10
    local = [datetime.fromisoformat(line).astimezone(ZoneInfo("Europe/Lisbon")) for line in lines]
    assert {(t.hour, t.minute) for t in local} == {(9, 30)}
    assert len({t.date() for t in local}) == 10


# --------------------------------------------------------------------------- errors and help


async def test_errors_are_one_line_with_exit_status_1(dsn: str, pool: asyncpg.Pool, tmp_path: Path) -> None:
    # Before the schema exists: read commands say how to create it, and create nothing.
    for args in (["status"], ["jobs", "list"], ["periodic", "list"]):
        result = await cli(*args, "--database-url", dsn)
        assert_one_line_error(result, "no pg_scheduler schema", "pg-scheduler migrate")
    assert await pool.fetchval("SELECT to_regclass('scheduled_jobs')") is None

    @periodic(every=timedelta(hours=1), dedup_key="known")
    async def known() -> None:
        pass

    await migrated(pool)
    checks: list[tuple[list[str], tuple[str, ...]]] = [
        (["jobs", "show", "missing", "--database-url", dsn], ("no job 'missing'",)),
        (["jobs", "cancel", "missing", "--database-url", dsn], ("no job 'missing'",)),
        (["jobs", "retry", "missing", "--database-url", dsn], ("no job 'missing'",)),
        *(
            (["periodic", verb, "unknown-key", "--database-url", dsn], ("no periodic job 'unknown-key'",))
            for verb in ("enable", "disable", "trigger", "next")
        ),
        *(
            ([*args, "--database-url", "not a dsn"], ("cannot",))
            for args in (["status"], ["jobs", "list"], ["jobs", "cancel", "x"], ["periodic", "list"])
        ),
        *(
            ([*args, "--database-url", UNREACHABLE], ("cannot",))
            for args in (["status"], ["jobs", "show", "x"], ["jobs", "retry", "x"], ["periodic", "next", "k"])
        ),
    ]
    results = await asyncio.gather(*(cli(*args) for args, _ in checks))
    for (args, expected), result in zip(checks, results, strict=True):
        assert_one_line_error(result, *expected)
        assert "s3cret-pw" not in result.stderr, args
    assert await pool.fetchval("SELECT count(*) FROM scheduled_jobs") == 0

    # No database given, in a folder with no embedded PostgreSQL: say what to set.
    missing = await cli("status", env={"DATABASE_URL": ""}, cwd=tmp_path)
    assert_one_line_error(missing, "DATABASE_URL", "pg-scheduler run APP")
    assert not (tmp_path / ".pg-scheduler" / "pgdata").exists()


COMMANDS = [
    ["status"],
    ["jobs"],
    ["jobs", "list"],
    ["jobs", "show"],
    ["jobs", "cancel"],
    ["jobs", "retry"],
    ["periodic"],
    ["periodic", "list"],
    ["periodic", "enable"],
    ["periodic", "disable"],
    ["periodic", "trigger"],
    ["periodic", "next"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
async def test_help(command: list[str]) -> None:
    result = await cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: pg-scheduler " + " ".join(command) in result.stdout
    if len(command) > 1 or command == ["status"]:
        assert "DATABASE_URL" in result.stdout
