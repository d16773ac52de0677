"""``pg-scheduler dashboard`` as a real process.

What is proven here:

- it serves the dashboard on the port asked, against the database given, and says where in
  its log, without the DSN or the password; with credentials set, every page needs them;
- served without credentials, it refuses (400) a request whose Host is not a loopback name;
- it refuses to bind a non-loopback address without credentials, in one line, exit 1, before
  touching the database;
- ``pg-scheduler run --dashboard-port`` serves it from the pod's supervisor, which still stops
  cleanly on SIGTERM;
- without the ``dashboard`` extra, ``--help`` still works and running it says, in one line,
  which extra to install (exit 1).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx

from pg_scheduler import Scheduler
from tests.pods import Pod, start_pod
from tests.support import ROOT, run_cli, wait_for

UNREACHABLE = "postgresql://nobody:hunter2@127.0.0.1:1/none"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_the_command_serves_the_dashboard_and_requires_the_credentials_it_is_given(
    dsn: str, pool: asyncpg.Pool
) -> None:
    await Scheduler(pool).initialize_db()
    await pool.execute(
        "INSERT INTO scheduled_jobs (job_id, job_name, execution_time) VALUES ('j-1', 't', now())"
    )
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PG_SCHEDULER_DASHBOARD_USER": "ops",
        "PG_SCHEDULER_DASHBOARD_PASSWORD": "pa55word",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pg_scheduler",
        "dashboard",
        "--database-url",
        dsn,
        "--port",
        str(port),
        "--read-only",
        env=env,
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

            async def answers() -> httpx.Response | None:
                try:
                    return await client.get("/")
                except httpx.TransportError:
                    return None

            first = await wait_for(answers, timeout=30, message="the dashboard to answer")
            assert first.status_code == 401
            page = await client.get("/jobs?state=pending", auth=("ops", "pa55word"))
            assert page.status_code == 200 and "j-1" in page.text and "read-only" in page.text
            assert "server-timing" in page.headers
    finally:
        process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    log = stderr.decode()
    assert f"serving the dashboard on http://127.0.0.1:{port}/ (read-only; basic auth required)" in log
    assert dsn not in log and "pa55word" not in log
    assert process.returncode == 0, log
    assert "received SIGTERM: stopping the dashboard" in log and "the dashboard stopped" in log


def test_on_sigterm_it_stops_the_embedded_server_it_started(tmp_path: Path) -> None:
    """With no database given it starts the folder's embedded PostgreSQL and, on SIGTERM, ends
    normally: exit 0, and the server it started is stopped."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONPATH"] = str(ROOT)
    migrated = subprocess.run(
        [sys.executable, "-m", "pg_scheduler", "migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    log_path = tmp_path / "dashboard.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "pg_scheduler", "dashboard", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while "serving the dashboard" not in log_path.read_text():
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
            assert page.status_code == 200
            # No credentials: a DNS-rebinding page's own name is refused, loopback names answered.
            for name, status in (("evil.example", 400), ("127.0.0.1", 200), ("localhost", 200)):
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/", headers={"host": f"{name}:{port}"}, timeout=10
                )
                assert answer.status_code == status, (name, answer.text)
            pid_file = tmp_path / ".pg-scheduler" / "pgdata" / "postmaster.pid"
            server_pid = int(pid_file.read_text().split()[0])
        finally:
            process.send_signal(signal.SIGTERM)
            returncode = process.wait(timeout=60)
    log = log_path.read_text()
    assert returncode == 0, log
    assert "the dashboard stopped" in log and "stopping the embedded PostgreSQL" in log, log
    assert not pid_file.exists()
    # The postmaster removes its pid file just before it exits.
    deadline = time.monotonic() + 10
    while _alive(server_pid):
        assert time.monotonic() < deadline, f"the embedded PostgreSQL (pid {server_pid}) still runs"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_non_loopback_bind_without_credentials_is_refused_in_one_line() -> None:
    for host in ("0.0.0.0", "10.1.2.3", "::"):
        result = run_cli("dashboard", "--host", host, "--database-url", UNREACHABLE)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pg-scheduler: refusing to serve the dashboard on"), (
            lines
        )
        assert "hunter2" not in result.stderr
    half = run_cli("dashboard", "--database-url", UNREACHABLE, env={"PG_SCHEDULER_DASHBOARD_USER": "ops"})
    assert half.returncode == 1 and "set both PG_SCHEDULER_DASHBOARD_USER" in half.stderr


def test_without_the_extra_help_works_and_running_says_which_extra_to_install(tmp_path: Path) -> None:
    # A Python where the extra's packages cannot be found, as after a plain `pip install pg-scheduler`.
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nfor name in ('starlette', 'jinja2', 'uvicorn'):\n    sys.modules[name] = None\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    helped = run_cli("dashboard", "--help", env=env)
    assert helped.returncode == 0 and "--read-only" in helped.stdout and "--allowed-host" in helped.stdout
    result = run_cli("dashboard", "--database-url", UNREACHABLE, env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "pip install 'pg-scheduler[dashboard]'" in lines[0]
    assert "starlette, jinja2, uvicorn not installed" in lines[0]


async def test_a_pod_serves_the_dashboard_beside_its_supervisor_and_still_stops_cleanly(
    dsn: str, pool: asyncpg.Pool, pods: list[Pod], tmp_path: Path
) -> None:
    await Scheduler(pool).initialize_db()
    port = free_port()
    pod = await start_pod(
        dsn, tmp_path, workers=1, env={"PG_SCHEDULER_DASHBOARD_READ_ONLY": "1"}, **{"--dashboard-port": port}
    )
    pods.append(pod)
    await pod.wait_ready(pool, workers=1)
    supervisor = await pool.fetchval("SELECT worker_id FROM scheduler_workers WHERE kind = 'supervisor'")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

        async def shows_the_supervisor() -> bool:
            try:
                page = await client.get("/")
            except httpx.TransportError:
                return False
            return page.status_code == 200 and supervisor in page.text

        await wait_for(shows_the_supervisor, timeout=30, message="the pod's dashboard")
    pod.signal(signal.SIGTERM)
    assert await pod.wait(timeout=30) == 0, pod.log()[-3000:]
    assert f"serving the dashboard on http://127.0.0.1:{port}/ (read-only;" in pod.log()
