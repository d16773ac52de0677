"""Day one, as a new user runs it: a fresh folder, no ``DATABASE_URL``, the embedded PostgreSQL.

``pg-scheduler run APP`` starts the server in ``./.pg-scheduler``; ``status``, ``jobs add``,
``jobs list``, ``jobs show`` and ``doctor`` beside it join that server; a second ``run`` shares
it; two commands starting it at the same moment start it once; it stops with the last process
that started or joined it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

APP = textwrap.dedent(
    """
    import time

    from pg_scheduler import job


    @job
    async def add(a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}


    @job
    def multiply(a: int, b: int) -> int:
        time.sleep(0.05)  # a plain function: runs in a worker thread
        return a * b
    """
)


def env_without_database() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join([".", str(ROOT)])
    env["PG_SCHEDULER_APP"] = ""
    return env


def cli(folder: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pg_scheduler", *args],
        cwd=folder,
        env=env_without_database(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_run(folder: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pg_scheduler", "run", "myapp", "--workers", "1"],
            cwd=folder,
            env=env_without_database(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def poll(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def live_workers(folder: Path) -> int:
    done = cli(folder, "status", "--json")
    if done.returncode != 0:
        return 0
    return len(json.loads(done.stdout)["workers"])  # the live ones


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


def postmaster_pid(folder: Path) -> int | None:
    try:
        return int((folder / ".pg-scheduler" / "pgdata" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.timeout(300)
def test_every_command_finds_the_embedded_server_of_the_folder(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(APP)

    # Nothing runs and no cluster exists: a read command says what to set, in one line.
    missing = cli(tmp_path, "status")
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "DATABASE_URL" in missing.stderr, missing.stderr
    assert not (tmp_path / ".pg-scheduler" / "pgdata").exists()

    first = start_run(tmp_path, tmp_path / "run-1.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        poll(lambda: live_workers(tmp_path) >= 1, "the first run's worker")
        server = postmaster_pid(tmp_path)
        assert server is not None

        # A second run in the same folder shares the server.
        second = start_run(tmp_path, tmp_path / "run-2.log")
        poll(lambda: live_workers(tmp_path) >= 2, "the second run's worker")
        assert postmaster_pid(tmp_path) == server
        assert "reusing the embedded PostgreSQL" in (tmp_path / "run-2.log").read_text()

        added = cli(tmp_path, "jobs", "add", "myapp:add", "--args", "[2, 3]")
        assert added.returncode == 0, added.stderr
        add_id = added.stdout.strip()
        assert "started the embedded PostgreSQL" not in added.stderr  # joined, not started
        assert "warning" not in added.stderr, added.stderr
        multiplied = cli(tmp_path, "jobs", "add", "myapp:multiply", "--kwargs", '{"a": 6, "b": 7}')
        assert multiplied.returncode == 0, multiplied.stderr
        multiply_id = multiplied.stdout.strip()
        unknown = cli(tmp_path, "jobs", "add", "myapp:nobody_runs_this")
        assert unknown.returncode == 0 and "warning: no live worker runs" in unknown.stderr

        def shown(job_id: str) -> dict[str, Any] | None:
            done = cli(tmp_path, "jobs", "show", job_id, "--json")
            assert done.returncode == 0, done.stderr
            record: dict[str, Any] = json.loads(done.stdout)
            return record if record["status"] == "completed" else None

        assert poll(lambda: shown(add_id), "the add job")["result"] == {"sum": 5}
        assert poll(lambda: shown(multiply_id), "the multiply job")["result"] == 42
        text = cli(tmp_path, "jobs", "show", add_id)
        assert text.returncode == 0 and '{"sum": 5}' in text.stdout

        listed = cli(tmp_path, "jobs", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert {add_id, multiply_id} <= {r["job_id"] for r in json.loads(listed.stdout)}

        status = cli(tmp_path, "status")
        assert status.returncode == 0 and "myapp:nobody_runs_this" in status.stdout

        doctor = cli(tmp_path, "doctor", "--json")
        assert doctor.returncode == 2, doctor.stdout + doctor.stderr  # the task nobody runs
        findings = {f["id"]: f["level"] for f in json.loads(doctor.stdout)["findings"]}
        assert findings["tasks.no_live_worker"] == "problem"
        assert findings["schema.pending_migrations"] == "ok"
        assert findings["workers.stale_heartbeats"] == "ok"

        # The first run stops; the second still uses the server, which stays up.
        assert stop(first) == 0
        assert alive(server) and postmaster_pid(tmp_path) == server
        assert "left the embedded PostgreSQL running" in (tmp_path / "run-1.log").read_text()
        # The last process out stops it.
        assert stop(second) == 0
        poll(lambda: not alive(server), "the server to stop", timeout=30)
        assert "stopped the embedded PostgreSQL" in (tmp_path / "run-2.log").read_text()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.timeout(180)
def test_two_commands_starting_the_embedded_server_at_once_start_it_once(tmp_path: Path) -> None:
    async def both() -> list[tuple[int, bytes, bytes]]:
        async def migrate() -> tuple[int, bytes, bytes]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "pg_scheduler",
                "migrate",
                cwd=tmp_path,
                env=env_without_database(),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
            assert proc.returncode is not None
            return proc.returncode, out, err

        return list(await asyncio.gather(migrate(), migrate()))

    results = asyncio.run(both())
    assert [code for code, _, _ in results] == [0, 0], results
    log = (tmp_path / ".pg-scheduler" / "pgdata" / "pg_scheduler.log").read_text()
    # One initdb, at most two starts one after the other (never two servers on one folder).
    assert log.count("database system is ready to accept connections") <= 2
    assert "lock file" not in log and "already running" not in log
    assert postmaster_pid(tmp_path) is None  # the last one out stopped it
    again = cli(tmp_path, "migrate")
    assert again.returncode == 0 and "schema is up to date" in again.stdout
