"""Real OS processes running a Scheduler (tests/apps/replica.py), for crash and restart tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

import asyncpg

from tests.support import ROOT


class Replica:
    def __init__(self, proc: asyncio.subprocess.Process, worker_id: str | None) -> None:
        self.proc = proc
        self.worker_id = worker_id

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, sig)

    async def wait(self, timeout: float) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def stop(self) -> None:
        await stop_process(self.proc, term_grace=10.0)


async def stop_process(proc: asyncio.subprocess.Process, *, term_grace: float) -> None:
    """Make sure it is gone: SIGCONT (if frozen), SIGTERM, then SIGKILL."""
    if proc.returncode is not None:
        return
    for sig, grace in ((signal.SIGCONT, 0.0), (signal.SIGTERM, term_grace), (signal.SIGKILL, 5.0)):
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            return
        if grace:
            try:
                await asyncio.wait_for(proc.wait(), grace)
                return
            except TimeoutError:
                continue


def _env(dsn: str, **overrides: Any) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = dsn
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    for key, value in overrides.items():
        env[key] = json.dumps(value) if isinstance(value, dict) else str(value)
    return env


async def start_replica(dsn: str, *, ready: bool = True, **env: Any) -> Replica:
    """Start ``python -m tests.apps.replica``; with ``ready`` wait for its "ready" line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.apps.replica",
        cwd=str(ROOT),
        env=_env(dsn, **env),
        stdout=asyncio.subprocess.PIPE,
    )
    worker_id = None
    if ready:
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(30):
                while True:
                    line = (await proc.stdout.readline()).decode()
                    if not line:
                        raise RuntimeError(f"replica {proc.pid} exited before it was ready")
                    if line.startswith("ready "):
                        worker_id = line.split()[1]
                        break
        except BaseException:
            await Replica(proc, None).stop()  # never leave a half-started replica behind
            raise
    return Replica(proc, worker_id)


async def run_producer(dsn: str, schedule: dict[str, Any]) -> str:
    """Run a replica process that only schedules one job and exits; returns the job id."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.apps.replica",
        cwd=str(ROOT),
        env=_env(dsn, APP_SCHEDULE=schedule, APP_EXIT_AFTER_SCHEDULE=1),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out
    [line] = [ln for ln in out.decode().splitlines() if ln.startswith("scheduled ")]
    return line.split()[1]


async def events(pool: asyncpg.Pool, kind: str | None = None, tag: str | None = None) -> list[Any]:
    exists = await pool.fetchval("SELECT to_regclass('test_events') IS NOT NULL")
    if not exists:
        return []
    return list(
        await pool.fetch(
            "SELECT kind, tag, pid, at FROM test_events WHERE ($1::text IS NULL OR kind = $1)"
            " AND ($2::text IS NULL OR tag = $2) ORDER BY id",
            kind,
            tag,
        )
    )


async def ensure_events_table(pool: asyncpg.Pool) -> None:
    from tests.apps.tasks import EVENTS_DDL

    await pool.execute(EVENTS_DDL)
