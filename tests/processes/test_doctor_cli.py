"""``pg-scheduler doctor`` as a user runs it: exit status 0 / 1 / 2, the lines, ``--json``, and an
unreachable database in one line without its password."""

from __future__ import annotations

import json

import asyncpg

from pg_scheduler.shared import queries
from pg_scheduler.shared.diagnosis import CHECK_IDS
from pg_scheduler.shared.schema import migrate
from tests.support import run_cli


async def _migrated(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await migrate(conn)


async def test_a_fresh_schema_is_healthy_and_default_autovacuum_is_a_warning_with_its_fix(
    dsn: str, pool: asyncpg.Pool
) -> None:
    await _migrated(pool)
    fresh = run_cli("doctor", "--database-url", dsn)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    await pool.execute(
        "ALTER TABLE scheduled_jobs RESET (autovacuum_vacuum_scale_factor, "
        "autovacuum_vacuum_threshold, autovacuum_analyze_scale_factor)"
    )
    first = run_cli("doctor", "--database-url", dsn)
    assert first.returncode == 1, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == len(CHECK_IDS) + 2  # one per check, the one fix, the summary
    [warning] = [i for i, line in enumerate(lines) if line.startswith("warning")]
    assert "vacuum.autovacuum_settings" in lines[warning]
    fix = lines[warning + 1]
    assert fix.startswith(" " * 9 + "fix: ALTER TABLE scheduled_jobs SET (")
    assert lines[-1] == f"{len(CHECK_IDS) - 1} ok, 1 warning(s), 0 problem(s): exit status 1"

    await pool.execute(fix.strip().removeprefix("fix: "))
    healthy = run_cli("doctor", "--database-url", dsn)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert [line.split()[:2] for line in healthy.stdout.splitlines()[:-1]] == [
        ["ok", fid] for fid in CHECK_IDS
    ]
    assert (
        healthy.stdout.splitlines()[-1] == f"{len(CHECK_IDS)} ok, 0 warning(s), 0 problem(s): exit status 0"
    )
    assert healthy.stderr == ""


async def test_due_jobs_nobody_runs_make_exit_status_2_and_json_says_why(
    dsn: str, pool: asyncpg.Pool
) -> None:
    await _migrated(pool)
    await pool.execute(
        "INSERT INTO scheduled_jobs (job_name, execution_time) "
        "VALUES ('app.orphan', now() - interval '1 minute')"
    )
    human = run_cli("doctor", "--database-url", dsn)
    assert human.returncode == 2, human.stdout + human.stderr
    assert any(
        line.startswith("problem")
        and "tasks.no_live_worker" in line
        and "app.orphan (queue default): 1" in line
        for line in human.stdout.splitlines()
    ), human.stdout
    assert human.stdout.splitlines()[-1].endswith("1 problem(s): exit status 2")

    result = run_cli("doctor", "--json", "--database-url", dsn)
    assert result.returncode == 2, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "problem" and report["exit_status"] == 2
    assert report["counts"] == {"ok": len(CHECK_IDS) - 1, "warning": 0, "problem": 1}
    assert [f["id"] for f in report["findings"]] == list(CHECK_IDS)
    by_id = {f["id"]: f for f in report["findings"]}
    tasks = by_id["tasks.no_live_worker"]
    assert tasks["level"] == "problem" and tasks["fix"]
    assert tasks["details"]["tasks"][0]["task"] == "app.orphan" and tasks["details"]["tasks"][0]["due"] == 1
    assert by_id["schema.pending_migrations"] == {
        "id": "schema.pending_migrations",
        "level": "ok",
        "message": by_id["schema.pending_migrations"]["message"],
        "fix": None,
        "details": by_id["schema.pending_migrations"]["details"],
    }

    # A live worker that runs the task clears the problem; --stale-seconds says what live is.
    await pool.execute(queries.WORKER_REGISTER, "w-1", "worker", "h", 1, ["app.orphan"], None, None)
    assert run_cli("doctor", "--database-url", dsn).returncode == 0
    await pool.execute("UPDATE scheduler_workers SET last_heartbeat = now() - interval '10 minutes'")
    assert run_cli("doctor", "--database-url", dsn, "--stale-seconds", "3600").returncode == 0
    assert run_cli("doctor", "--database-url", dsn).returncode == 2


def test_an_unreachable_database_is_one_problem_line_without_the_password() -> None:
    secret = "s3cret-pw"
    url = f"postgresql://nobody:{secret}@127.0.0.1:1/none"
    result = run_cli("doctor", "--database-url", url)
    assert result.returncode == 2
    assert result.stdout.startswith("problem  database.reachable  cannot connect to the database:")
    assert len(result.stdout.strip().splitlines()) == 1 and result.stderr == ""
    assert "Traceback" not in result.stdout and secret not in result.stdout

    as_json = run_cli("doctor", "--json", "--database-url", url)
    assert as_json.returncode == 2
    report = json.loads(as_json.stdout)
    assert [(f["id"], f["level"]) for f in report["findings"]] == [("database.reachable", "problem")]
    assert secret not in as_json.stdout

    malformed = run_cli("doctor", "--database-url", "not a dsn")
    assert malformed.returncode == 2 and len(malformed.stdout.strip().splitlines()) == 1
    assert "Traceback" not in malformed.stdout + malformed.stderr


def test_help_lists_doctor_and_its_options() -> None:
    assert "doctor" in run_cli("--help").stdout
    result = run_cli("doctor", "--help")
    assert result.returncode == 0
    for option in ("--json", "--leader-database-url", "PG_SCHEDULER_LEADER_DATABASE_URL", "DATABASE_URL"):
        assert option in result.stdout
