"""The command line as far as this release has it: ``pg-scheduler migrate`` and help."""

from __future__ import annotations

import asyncpg
import pytest

from pg_scheduler.shared.schema import latest_version
from pg_scheduler.worker import event_loop
from tests.support import run_cli


async def test_migrate_creates_the_schema_once(dsn: str, pool: asyncpg.Pool) -> None:
    first = run_cli("migrate", "--database-url", dsn)
    assert first.returncode == 0, first.stderr
    every = list(range(1, latest_version() + 1))
    assert f"applied migrations {every}; schema is at version {every[-1]}" in first.stdout
    second = run_cli("migrate", "--database-url", dsn)
    assert second.returncode == 0 and "up to date" in second.stdout
    assert await pool.fetchval("SELECT max(version) FROM scheduler_migrations") == every[-1] == 17


def test_migrate_with_an_unreachable_database_says_so_in_one_line() -> None:
    result = run_cli("migrate", "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 1
    assert result.stderr.startswith("pg-scheduler: cannot migrate:")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_migrate_with_a_malformed_dsn_says_so_in_one_line() -> None:
    result = run_cli("migrate", "--database-url", "not a dsn")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_help() -> None:
    result = run_cli("--help")
    assert result.returncode == 0 and "migrate" in result.stdout
    result = run_cli("migrate", "--help")
    assert result.returncode == 0 and "DATABASE_URL" in result.stdout


def test_the_worker_event_loop_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert event_loop.resolve("auto") == "uvloop"  # a dependency wherever it builds
    assert event_loop.resolve("asyncio") == "asyncio"
    monkeypatch.setattr(event_loop, "uvloop_installed", lambda: False)
    assert event_loop.resolve("auto") == "asyncio"
    with pytest.raises(ValueError, match="pip install uvloop"):
        event_loop.resolve("uvloop")
    with pytest.raises(ValueError, match="unknown event loop 'trio'"):
        event_loop.resolve("trio")
