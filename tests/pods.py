"""Real ``pg-scheduler run`` pods (a supervisor and its worker processes) for integration tests.

A pod is ready when the process registry shows its supervisor and all its workers: the tests
read the same rows that ``pg-scheduler status`` reads. Each pod's log goes to a file that a
failing test prints.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from tests.replicas import stop_process
from tests.support import ROOT, wait_for

FAST_POD_OPTIONS: dict[str, Any] = {
    "--lease-seconds": 2,
    "--heartbeat-seconds": 0.5,
    "--leader-ttl-seconds": 3,
    "--retry-delay-seconds": 0.1,
    "--retry-max-delay-seconds": 1,
    "--poll-interval-seconds": 1,
    "--shutdown-timeout": 2,
    "--metrics-port": 0,  # many pods on one machine: a test that scrapes gives each a free port
}


class Pod:
    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path
        self.supervisor_id: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, sig)

    async def wait(self, timeout: float) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def wait_ready(self, pool: asyncpg.Pool, workers: int, timeout: float = 30) -> None:
        async def ready() -> bool:
            if self.proc.returncode is not None:
                raise AssertionError(f"pod {self.pid} exited ({self.proc.returncode}):\n{self.log()}")
            row = (
                await pool.fetchrow(
                    "SELECT worker_id FROM scheduler_workers WHERE kind = 'supervisor' AND pid = $1",
                    self.pid,
                )
                if await _registry_exists(pool)
                else None
            )
            if row is None:
                return False
            self.supervisor_id = row["worker_id"]
            return len(await self.worker_pids(pool)) == workers

        await wait_for(ready, timeout=timeout, message=f"pod {self.pid} ready")

    async def worker_pids(self, pool: asyncpg.Pool) -> list[int]:
        rows = await pool.fetch(
            "SELECT pid FROM scheduler_workers WHERE kind = 'worker' AND supervisor_id = $1",
            self.supervisor_id,
        )
        return sorted(r["pid"] for r in rows)

    async def stop(self) -> None:
        """Make sure the pod is gone (its workers follow it: they watch their parent)."""
        await stop_process(self.proc, term_grace=20.0)


async def _registry_exists(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval("SELECT to_regclass('scheduler_workers') IS NOT NULL"))


async def start_pod(
    dsn: str,
    log_dir: Path,
    *,
    workers: int = 3,
    app: str = "tests.apps.tasks",
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    **options: Any,
) -> Pod:
    """``pg-scheduler run APP`` in ``cwd`` (a module APP is imported from there), logging to a
    file in ``log_dir``; ``ROOT`` stays on ``PYTHONPATH`` for the pod's wrapper."""
    args = ["run", app, "--workers", str(workers)]
    for key, value in {**FAST_POD_OPTIONS, **options}.items():
        args += [key, str(value)]
    environ = dict(os.environ)
    environ.update({"DATABASE_URL": dsn, "PYTHONPATH": str(ROOT), **(env or {})})
    log_path = log_dir / f"pod-{time.monotonic_ns()}.log"
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.apps.pod",
            *args,
            cwd=str(cwd),
            env=environ,
            stdout=log_fd,
            stderr=log_fd,
        )
    finally:
        os.close(log_fd)
    return Pod(proc, log_path)


async def leader_supervisor(pool: asyncpg.Pool) -> str | None:
    """The supervisor id holding leadership now (lock granted and epoch row naming it)."""
    return await pool.fetchval(
        """
        SELECT l.leader_id FROM scheduler_leader AS l
         WHERE EXISTS (SELECT 1 FROM pg_locks
                        WHERE locktype = 'advisory' AND granted
                          AND classid = $1::int8::oid AND objid = $2::int8::oid
                          AND database = (SELECT oid FROM pg_database
                                           WHERE datname = current_database()))
        """,
        0x5053_4302,
        1,
    )
