"""One trial: a fresh database, one system's schema and workers, a workload, and the check that
every job ran exactly once. Every wait has a deadline; every process is stopped by its PID."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg

from . import processes, records
from .environment import MAIN, ROOT
from .postgres import Databases
from .systems import System

POLL_SECONDS = 0.05
WARMUP_KEYS = itertools.count(1_000_000_000)  # never clash with a workload's keys (0..N-1)
FLUSH_GRACE = 15.0  # how long the jobs' own records may lag behind the database


class TrialError(RuntimeError):
    """A trial broke a rule (a job lost or run twice) or did not finish in time."""


@dataclass
class Options:
    jobs: int = 20_000
    processes: int = 2
    concurrency: int = 20
    timeout: float = 600.0
    """Longest wait for any one step (a drain, the workers to be ready)."""
    keep_logs: bool = False
    """Keep every trial's folder (worker logs, job records), not only those of failed trials."""


@dataclass
class Context:
    admin_dsn: str
    databases: Databases
    options: Options
    work: Path
    """Scratch folder of the whole run (trial logs are kept here when a trial fails)."""
    server_log: Path | None = None
    """The server's log file (the idle-pods scenario counts statements per session in it)."""


@dataclass
class Trial:
    ctx: Context
    system: System
    title: str
    dsn: str = ""
    folder: Path = field(default_factory=Path)
    workers: list[processes.Running] = field(default_factory=list)
    expected: set[int] = field(default_factory=set)
    worker_processes: int = 0
    _db: AbstractAsyncContextManager[str] | None = None
    _conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> Trial:
        self.folder = Path(tempfile.mkdtemp(prefix=f"{self.system.key}-", dir=self.ctx.work))
        (self.folder / "records").mkdir()
        self._db = self.ctx.databases.fresh(f"{self.system.key}_{self.title}")
        self.dsn = await self._db.__aenter__()
        self._conn = await asyncpg.connect(self.dsn)
        await self.driver("setup")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.stop_workers()
        finally:
            if self._conn is not None:
                await self._conn.close()
            if self._db is not None:
                await self._db.__aexit__(exc_type, exc, tb)
            if exc is None and not self.ctx.options.keep_logs:
                shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def conn(self) -> asyncpg.Connection:
        assert self._conn is not None
        return self._conn

    @property
    def record_dir(self) -> Path:
        return self.folder / "records"

    def env(self) -> dict[str, str]:
        extra = {"BENCH_RECORD_DIR": str(self.record_dir)}
        if self.system.python == MAIN.python:
            # This tree's pg_scheduler, even when bench/.venv's editable install points at
            # another checkout (a git worktree that links the main checkout's virtualenv).
            extra["PYTHONPATH"] = str(ROOT)
        return processes.child_env(extra)

    # ------------------------------------------------------------------ processes

    async def driver(self, command: str, *args: str, timeout: float | None = None) -> dict[str, object]:
        cmd = self.system.driver_cmd(command, self.dsn, *args)
        return await processes.run_json(
            cmd, env=self.env(), cwd=self.folder, timeout=timeout or self.ctx.options.timeout
        )

    async def start_workers(self, processes_: int, concurrency: int, pods: int = 0) -> None:
        for launch in self.system.launches(self.dsn, processes_, concurrency, pods):
            log = self.folder / f"{launch.name}.log"
            self.workers.append(
                await processes.start(launch.name, launch.cmd, env=self.env(), log=log, cwd=self.folder)
            )
            self.worker_processes += launch.worker_processes

    async def stop_workers(self) -> None:
        pids = {s.pid for s in records.read(self.record_dir)} if self.record_dir.exists() else set()
        await asyncio.gather(*(processes.stop(w, term_grace=self.system.stop_grace) for w in self.workers))
        for pid in pids - {w.pid for w in self.workers}:
            processes.kill_if_alive(pid)  # a pod's worker process that outlived its supervisor
        self.workers.clear()

    def check_workers_alive(self) -> None:
        for w in self.workers:
            if w.proc.returncode is not None:
                raise TrialError(f"{w.name} exited with {w.proc.returncode}:\n{w.log_tail()}")

    # ------------------------------------------------------------------ workload

    async def warm_up(self, batch: int | None = None) -> None:
        """Until every worker process has run a job: all of them are connected, listening and
        claiming before anything is timed."""
        size = batch or max(20, 10 * self.worker_processes)
        deadline = time.monotonic() + self.ctx.options.timeout
        while True:
            self.check_workers_alive()
            first = next(WARMUP_KEYS)
            for _ in range(size - 1):
                next(WARMUP_KEYS)
            await self.enqueue(size, first_key=first)
            await self.wait_drained()
            await self.wait_recorded()
            pids = {s.pid for s in records.read(self.record_dir)}
            if len(pids) >= self.worker_processes:
                return
            if time.monotonic() > deadline:
                raise TrialError(
                    f"only {len(pids)} of {self.worker_processes} worker processes "
                    f"ran a job within {self.ctx.options.timeout:.0f} s"
                )
            await asyncio.sleep(0.5)

    async def enqueue(self, n: int, *, first_key: int = 0, sleep: float | None = None) -> dict[str, Any]:
        """The system's batch API; the keys become expected (each must run exactly once)."""
        args = ["--first-key", str(first_key), "--n", str(n)]
        if sleep is not None:
            args += ["--sleep", str(sleep)]
        result = await self.driver("enqueue", *args)
        self.expected.update(range(first_key, first_key + n))
        return result

    async def trickle(self, *, rate: float, duration: float, first_key: int = 0) -> dict[str, Any]:
        result = await self.driver(
            "trickle", "--first-key", str(first_key), "--rate", str(rate), "--duration", str(duration)
        )
        self.expected.update(range(first_key, first_key + int(result["count"])))  # type: ignore[call-overload]
        return result

    async def steady(
        self, *, rate: float, duration: float, producers: int, first_key: int = 0
    ) -> dict[str, Any]:
        result = await self.driver(
            "steady",
            "--first-key",
            str(first_key),
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--producers",
            str(producers),
            timeout=duration + self.ctx.options.timeout,
        )
        self.expected.update(range(first_key, first_key + int(result["count"])))  # type: ignore[call-overload]
        return result

    async def wait_drained(self) -> float:
        """Poll the system's own tables until no job is left; returns that moment (wall clock)."""
        deadline = time.monotonic() + self.ctx.options.timeout
        while True:
            if not await self.conn.fetchval(self.system.any_unfinished_sql):
                return time.time()
            if time.monotonic() > deadline:
                remaining = len(await self.conn.fetch(self.system.unfinished_sql))
                raise TrialError(
                    f"{remaining} job(s) still unfinished after {self.ctx.options.timeout:.0f} s"
                )
            self.check_workers_alive()
            await asyncio.sleep(POLL_SECONDS)

    async def last_finished(self, noticed_at: float) -> float:
        """When the last job finished (wall clock): the system's own timestamp where it keeps
        one, never later than ``noticed_at`` (when wait_drained saw none left), else that."""
        if self.system.finished_at_sql is None:
            return noticed_at
        return min(noticed_at, float(await self.conn.fetchval(self.system.finished_at_sql)))

    async def wait_recorded(
        self, keys: set[int] | None = None, within: float = FLUSH_GRACE
    ) -> list[records.Start]:
        """The jobs' own records, once they cover ``keys`` (default: every expected key) or
        ``within`` seconds have passed."""
        want = self.expected if keys is None else keys
        deadline = time.monotonic() + within
        while True:
            starts = records.read(self.record_dir)
            if want <= {s.key for s in starts} or time.monotonic() > deadline:
                return starts
            await asyncio.sleep(POLL_SECONDS)

    async def verify(self) -> None:
        """Exactly once, by the system's own tables and by the jobs' records; raises if not."""
        row = await self.conn.fetchrow(self.system.outcome_sql)
        assert row is not None
        n = len(self.expected)
        problems = []
        if not (row["done"] == row["total"] == n):
            problems.append(f"database: {row['done']} of {row['total']} jobs finished, {n} enqueued")
        if row["first_attempt"] != row["done"]:
            problems.append(
                f"database: {row['done'] - row['first_attempt']} job(s) needed more than one attempt"
            )
        problems += records.exactly_once_problems(await self.wait_recorded(), self.expected)
        if problems:
            raise TrialError("; ".join(problems) + f" (logs in {self.folder})")
