"""``pg-scheduler run``: real supervisors with real worker processes, killed and stopped.

Each test starts pods with ``python -m tests.apps.pod run tests.apps.tasks`` (the CLI with
PR_SET_PDEATHSIG) and checks the history the tasks write to ``test_events`` and the job rows.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from pg_scheduler import JobSpec, Scheduler
from pg_scheduler.embedded import process_state
from tests.pods import Pod, leader_supervisor, start_pod
from tests.replicas import ensure_events_table, events
from tests.rows import job_row, wait_for_status
from tests.support import FAST, ROOT, run_cli, wait_for

pytestmark = pytest.mark.slow


def alive(pid: int) -> bool:
    return process_state(pid) not in (None, "Z", "X")


async def db_now(pool: asyncpg.Pool) -> datetime:
    return await pool.fetchval("SELECT clock_timestamp()")


async def schedule(pool: asyncpg.Pool, task: str, *args: object, max_retries: int = 0) -> str:
    return await Scheduler(pool).schedule(
        task, execution_time=datetime.now(UTC), args=args, max_retries=max_retries
    )


async def started(pool: asyncpg.Pool, tag: str, n: int) -> list[asyncpg.Record] | None:
    rows = await events(pool, "start", tag)
    return rows if len(rows) >= n else None


async def test_two_pods_drain_3000_jobs_each_exactly_once_and_status_shows_the_tree(
    dsn: str, pool: asyncpg.Pool, pods: list[Pod], tmp_path: Path
) -> None:
    await ensure_events_table(pool)
    a, b = await start_pod(dsn, tmp_path), await start_pod(dsn, tmp_path)
    pods += [a, b]
    await a.wait_ready(pool, 3)
    await b.wait_ready(pool, 3)
    now = datetime.now(UTC)
    ids = await Scheduler(pool).schedule_bulk(
        [JobSpec(func="apps.send_invoice", execution_time=now, args=(i,)) for i in range(3000)]  # type: ignore[arg-type]
    )
    assert len(ids) == 3000

    async def drained() -> bool:
        return await pool.fetchval("SELECT count(*) FROM scheduled_jobs WHERE status = 'completed'") == 3000

    scheduled = time.monotonic()
    await wait_for(drained, timeout=120, interval=0.2, message="3000 jobs completed")
    print(f"measured: 2 pods x 3 workers drained 3000 jobs in {time.monotonic() - scheduled:.2f}s")
    rows = await events(pool, "send_invoice")
    assert len(rows) == 3000 and len({r["tag"] for r in rows}) == 3000
    assert await pool.fetchval("SELECT max(attempt) FROM scheduled_jobs") == 1
    workers = set(await a.worker_pids(pool)) | set(await b.worker_pids(pool))
    ran_on = {r["pid"] for r in rows}
    assert ran_on <= workers, "a job ran outside the worker processes (the supervisor never runs one)"
    assert len(ran_on) > 1

    result = run_cli("status", "--json", env={"DATABASE_URL": dsn})
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert len(status["supervisors"]) == 2 and len(status["workers"]) == 6
    assert status["leader"] is not None and status["leader"]["pid"] in (a.pid, b.pid)
    assert [s["pid"] for s in status["supervisors"] if s["is_leader"]] == [status["leader"]["pid"]]
    assert {w["pid"] for w in status["workers"]} == workers
    assert status["jobs"]["completed"] == 3000


async def test_a_killed_worker_is_replaced_and_its_job_runs_again_at_once(
    dsn: str, pool: asyncpg.Pool, pods: list[Pod], tmp_path: Path
) -> None:
    await ensure_events_table(pool)
    pod = await start_pod(dsn, tmp_path, **{"--lease-seconds": 30})  # no help from lease expiry
    pods.append(pod)
    await pod.wait_ready(pool, 3)
    job_id = await schedule(pool, "apps.slow", "k", 60, max_retries=3)
    [first] = await wait_for(lambda: started(pool, "k", 1), message="job started")
    victim = first["pid"]
    before = set(await pod.worker_pids(pool))
    assert victim in before
    killed_at = await db_now(pool)
    os.kill(victim, signal.SIGKILL)

    async def replaced() -> datetime | None:
        return await pool.fetchval(
            "SELECT max(started_at) FROM scheduler_workers WHERE kind = 'worker' "
            "AND supervisor_id = $1 AND pid <> ALL($2::int[]) HAVING count(*) = 1",
            pod.supervisor_id,
            list(before),
        )

    replacement_at = await wait_for(replaced, timeout=5, message="a replacement worker")
    print(f"measured: worker replaced {(replacement_at - killed_at).total_seconds():.2f}s after kill -9")
    assert (replacement_at - killed_at).total_seconds() < 3
    _, second = await wait_for(lambda: started(pool, "k", 2), timeout=5, message="second start")
    assert (second["at"] - killed_at).total_seconds() < 3
    print(f"measured: job restarted {(second['at'] - killed_at).total_seconds():.2f}s after kill -9")
    assert second["pid"] != victim
    row = await job_row(pool, job_id)
    assert (row["status"], row["attempt"], row["retry_count"]) == ("running", 2, 1)
    assert len(await pod.worker_pids(pool)) == 3
    assert victim not in await pod.worker_pids(pool)


async def test_killing_the_leading_supervisor_ends_its_workers_and_moves_leadership(
    dsn: str, pool: asyncpg.Pool, pods: list[Pod], tmp_path: Path
) -> None:
    await ensure_events_table(pool)
    periodic = {"APP_PERIODIC": "1"}
    a = await start_pod(dsn, tmp_path, env=periodic)
    pods.append(a)
    await a.wait_ready(pool, 3)
    await wait_for(lambda: _is(leader_supervisor(pool), a.supervisor_id), message="a leads")
    b = await start_pod(dsn, tmp_path, env=periodic)
    pods.append(b)
    await b.wait_ready(pool, 3)
    await wait_for(lambda: _ticks_completed(pool, 2), timeout=10, message="ticks before")
    orphans = await a.worker_pids(pool)
    a.signal(signal.SIGKILL)
    killed = time.monotonic()

    await wait_for(
        lambda: not any(alive(p) for p in orphans), timeout=5, message="the dead supervisor's workers exit"
    )
    print(f"measured: orphaned workers gone {time.monotonic() - killed:.2f}s after kill -9")
    await wait_for(
        lambda: _is(leader_supervisor(pool), b.supervisor_id), timeout=10, interval=0.05, message="b leads"
    )
    took = time.monotonic() - killed
    print(f"measured: other pod leads {took:.2f}s after kill -9 of the leader")
    assert took < 10
    ticks_at_kill = await _ticks_completed(pool, 0)
    await wait_for(lambda: _ticks_completed(pool, ticks_at_kill + 3), timeout=10, message="ticks go on")
    # No window ran twice: one execution per completed window row, one row per window.
    completed = await pool.fetchval(
        "SELECT count(*) FROM scheduled_jobs WHERE dedup_key = 'apps.tick' AND status = 'completed'"
    )
    ran = len(await events(pool, "tick"))
    assert ran == completed or ran == completed + 1  # + one running now, recorded before done
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM (SELECT window_start FROM scheduled_jobs WHERE dedup_key = 'apps.tick'"
            " GROUP BY window_start HAVING count(*) > 1) AS twice"
        )
        == 0
    )


async def test_sigterm_of_the_leading_pod_hands_over_leadership_and_its_long_job(
    dsn: str, pool: asyncpg.Pool, pods: list[Pod], tmp_path: Path
) -> None:
    await ensure_events_table(pool)
    a = await start_pod(dsn, tmp_path, **{"--shutdown-timeout": 1, "--lease-seconds": 30})
    pods.append(a)
    await a.wait_ready(pool, 3)
    await wait_for(lambda: _is(leader_supervisor(pool), a.supervisor_id), message="a leads")
    job_id = await schedule(pool, "apps.slow", "long", 60)
    [first] = await wait_for(lambda: started(pool, "long", 1), message="long job started")
    assert first["pid"] in await a.worker_pids(pool)
    b = await start_pod(dsn, tmp_path, **{"--lease-seconds": 30})
    pods.append(b)
    await b.wait_ready(pool, 3)
    b_workers = await b.worker_pids(pool)

    signalled = time.monotonic()
    a.signal(signal.SIGTERM)
    await wait_for(
        lambda: _is(leader_supervisor(pool), b.supervisor_id), timeout=5, interval=0.01, message="b leads"
    )
    led = time.monotonic() - signalled
    assert led < 1.0
    assert await a.wait(timeout=1 + 10 + 5) == 0
    exited = time.monotonic() - signalled
    assert exited < 1 + 10
    _, second = await wait_for(lambda: started(pool, "long", 2), timeout=5, message="picked up")
    picked = time.monotonic() - signalled
    print(
        f"measured: SIGTERM -> other pod leads {led:.3f}s, pod exit 0 after {exited:.2f}s, "
        f"long job restarted on the other pod after {picked:.2f}s (shutdown timeout 1s)"
    )
    assert second["pid"] in b_workers
    row = await job_row(pool, job_id)
    # Handed back, not crashed: the attempt goes up, no retry is consumed.
    assert (row["status"], row["attempt"], row["retry_count"]) == ("running", 2, 0)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM scheduler_workers WHERE pid = $1 OR supervisor_id = $2",
            a.pid,
            a.supervisor_id,
        )
        == 0
    )


async def test_a_job_that_kills_its_worker_is_retried_then_failed(
    dsn: str, pool: asyncpg.Pool, pods: list[Pod], tmp_path: Path
) -> None:
    await ensure_events_table(pool)
    pod = await start_pod(dsn, tmp_path, workers=2, **{"--lease-seconds": 30})
    pods.append(pod)
    await pod.wait_ready(pool, 2)
    job_id = await schedule(pool, "apps.crash", "c", max_retries=2)

    row = await wait_for_status(pool, job_id, "failed", timeout=30)
    assert len(await events(pool, "start", "c")) == 3
    assert row["retry_count"] == 2 and row["attempt"] == 3
    assert "died during attempt 3" in row["error_message"]
    assert "exit status 1" in row["error_message"]
    await pod.wait_ready(pool, 2)  # the pod replaced every worker the job killed
    # It never loops: nothing runs it again.
    assert len(await events(pool, "start", "c")) == 3


async def test_pods_and_in_process_schedulers_share_one_leadership(
    dsn: str, pool: asyncpg.Pool, pods: list[Pod], tmp_path: Path
) -> None:
    scheduler = Scheduler(pool, **FAST)
    await scheduler.start()
    try:
        await wait_for(lambda: scheduler.is_leader, message="scheduler leads")
        pod = await start_pod(dsn, tmp_path, workers=1)
        pods.append(pod)
        await pod.wait_ready(pool, 1)
        assert await leader_supervisor(pool) == scheduler.worker_id
    finally:
        await scheduler.shutdown()
    await wait_for(
        lambda: _is(leader_supervisor(pool), pod.supervisor_id),
        timeout=5,
        message="the pod leads after the scheduler resigned",
    )


async def test_a_second_signal_hands_jobs_back_at_once(
    dsn: str, pool: asyncpg.Pool, pods: list[Pod], tmp_path: Path
) -> None:
    await ensure_events_table(pool)
    pod = await start_pod(dsn, tmp_path, workers=1, **{"--shutdown-timeout": 60})
    pods.append(pod)
    await pod.wait_ready(pool, 1)
    job_id = await schedule(pool, "apps.slow", "s", 120)
    await wait_for(lambda: started(pool, "s", 1), message="started")
    pod.signal(signal.SIGTERM)
    await wait_for(lambda: "draining" in pod.log(), message="draining")
    signalled = time.monotonic()
    pod.signal(signal.SIGINT)
    assert await pod.wait(timeout=15) == 0
    assert time.monotonic() - signalled < 10
    row = await job_row(pool, job_id)
    assert (row["status"], row["retry_count"]) == ("pending", 0)


async def test_run_without_a_database_starts_the_embedded_one_and_says_so(
    tmp_path: Path,
) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environ["PYTHONPATH"] = str(ROOT)
    app = tmp_path / "hello.py"
    app.write_text("from pg_scheduler import job\n\n@job\nasync def hello() -> None:\n    pass\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.apps.pod",
        "run",
        str(app),
        "--workers",
        "1",
        cwd=str(tmp_path),
        env=environ,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(90):
            while not any("claiming" in line for line in seen):
                line = (await proc.stderr.readline()).decode()
                assert line, "".join(seen)
                seen.append(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(proc.communicate(), 60))[1].decode()
    text = "".join(seen) + rest
    assert proc.returncode == 0, text
    assert "DATABASE_URL is not set" in text and "embedded PostgreSQL" in text
    assert (tmp_path / ".pg-scheduler" / "pgdata").is_dir()


def test_run_errors_are_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def oops(:\n")
    cases = [
        (
            ["run", "no_such_module_xyz", "--database-url", "postgresql://u@127.0.0.1:1/x"],
            "cannot import APP 'no_such_module_xyz': ModuleNotFoundError",
        ),
        (["run", str(broken), "--database-url", "postgresql://u@127.0.0.1:1/x"], "cannot import APP"),
        (["run", str(tmp_path / "missing.py")], "no such Python file"),
        (
            [
                "run",
                "tests.apps.tasks",
                "--database-url",
                "postgresql://u:hunter2@127.0.0.1:1/x",
                "--wait-for-database",
                "0",
            ],
            "cannot run: ConnectionRefusedError",
        ),
        (["run", "tests.apps.tasks", "--database-url", "not a dsn"], "cannot run: invalid DSN"),
        (
            [
                "run",
                "tests.apps.tasks",
                "--database-url",
                "postgresql://u@127.0.0.1:1/x",
                "--misfire-grace-time",
                "soon",
            ],
            "--misfire-grace-time must be",
        ),
    ]
    for args, expected in cases:
        result = run_cli(*args)
        assert result.returncode == 1, (args, result.stderr)
        # One error line, last; anything before it is an ordinary timestamped log line.
        *logged, last = result.stderr.strip().splitlines()
        assert last.startswith("pg-scheduler: ") and expected in last, (args, result.stderr)
        assert all(line[:4].isdigit() and " INFO " in line for line in logged), result.stderr
        assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_every_command_has_help() -> None:
    from click import Group

    from pg_scheduler.cli import main

    def walk(group: Group, path: list[str]) -> list[list[str]]:
        found = [path]
        for name, command in group.commands.items():
            if isinstance(command, Group):
                found += walk(command, [*path, name])
            else:
                found.append([*path, name])
        return found

    commands = walk(main, [])
    assert ["run"] in commands and ["migrate"] in commands
    for path in commands:
        result = run_cli(*path, "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout, (path, result.stderr)


async def _is(value: object, expected: object) -> bool:
    return (await value if asyncio.iscoroutine(value) else value) == expected


async def _ticks_completed(pool: asyncpg.Pool, n: int) -> int:
    done = await pool.fetchval(
        "SELECT count(*) FROM scheduled_jobs WHERE dedup_key = 'apps.tick' AND status = 'completed'"
    )
    return int(done) if done >= n else 0


@pytest.mark.parametrize(("option", "loop"), [(None, "uvloop"), ("asyncio", "asyncio")])
async def test_workers_run_on_uvloop_unless_asked_for_asyncio(
    dsn: str,
    pool: asyncpg.Pool,
    pods: list[Pod],
    tmp_path: Path,
    option: str | None,
    loop: str,
) -> None:
    await ensure_events_table(pool)
    pod = await start_pod(dsn, tmp_path, workers=1, **({"--event-loop": option} if option else {}))
    pods.append(pod)
    await pod.wait_ready(pool, 1)
    await schedule(pool, "apps.event_loop", "which")
    rows = await wait_for(lambda: events(pool, tag="which"), message="the job ran")
    assert [(r["kind"], r["pid"]) for r in rows] == [(loop, (await pod.worker_pids(pool))[0])]
    assert f"worker processes run on the {loop} event loop" in pod.log()


async def test_leader_database_url_carries_the_session_bound_connections_only(
    dsn: str, pool: asyncpg.Pool, pods: list[Pod], tmp_path: Path
) -> None:
    # Behind a transaction-pooling PgBouncer, the lock, LISTEN and heartbeat sessions must reach
    # PostgreSQL directly: here the "direct" DSN logs in as another role, so each session shows
    # which DSN it came through.
    await pool.execute("DROP ROLE IF EXISTS pgs_direct")
    await pool.execute("CREATE ROLE pgs_direct LOGIN SUPERUSER")
    direct = dsn.replace("postgresql://postgres@", "postgresql://pgs_direct@", 1)
    assert direct != dsn
    try:
        pod = await start_pod(dsn, tmp_path, workers=1, **{"--leader-database-url": direct})
        pods.append(pod)
        await pod.wait_ready(pool, 1)
        await wait_for(lambda: _is(leader_supervisor(pool), pod.supervisor_id), message="leads")

        async def sessions() -> dict[str, set[str]] | None:
            rows = await pool.fetch(
                "SELECT split_part(application_name, ':', 2) AS kind, usename FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name LIKE 'pg_scheduler:%'"
            )
            found: dict[str, set[str]] = {}
            for r in rows:
                found.setdefault(r["kind"], set()).add(r["usename"])
            return found if {"leader", "listen", "heartbeat"} <= set(found) else None

        found = await wait_for(sessions, message="leader, listen and heartbeat sessions")
        assert found["leader"] == found["listen"] == found["heartbeat"] == {"pgs_direct"}
        # The pools (claims, outcomes, leader transactions) stay on DATABASE_URL.
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'pgs_direct'"
                " AND application_name NOT LIKE 'pg_scheduler:%'"
            )
            == 0
        )
    finally:
        for p in pods:
            await p.stop()
        await pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'pgs_direct'"
        )
        await pool.execute("DROP ROLE IF EXISTS pgs_direct")


def test_run_keeps_other_files_of_the_metrics_dir_and_leaves_no_temp_folder(tmp_path: Path) -> None:
    shared = tmp_path / "metrics"
    (shared / "someone-elses").mkdir(parents=True)
    (shared / "notes.txt").write_text("keep me")
    (shared / "counter_1.db").write_bytes(b"old samples")
    temp = tmp_path / "tmp"
    temp.mkdir()
    result = run_cli("run", "no_such_module_xyz", "--metrics-dir", str(shared), env={"TMPDIR": str(temp)})
    assert result.returncode == 1
    assert (shared / "someone-elses").is_dir() and (shared / "notes.txt").exists()
    assert not (shared / "counter_1.db").exists()  # a previous run's samples are not summed in
    result = run_cli("run", "no_such_module_xyz", env={"TMPDIR": str(temp)})
    assert result.returncode == 1 and list(temp.iterdir()) == []  # its own folder, removed
