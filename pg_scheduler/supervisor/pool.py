"""WorkerPool: N worker processes, kept alive (Solid Queue's supervisor, in asyncio).

Workers are started with the standard library's ``multiprocessing`` in the ``spawn`` context: a
fresh interpreter each, so nothing of the supervisor's event loop, connections or threads leaks
into them. The pool watches each process's sentinel on the event loop; when one dies:

1. its running jobs are released at once, the attempt counted (``JOB_RESCUE_DEAD_WORKER``),
   instead of waiting for their leases to expire: the supervisor saw the process die, so nothing
   can still be running them;
2. it is replaced, at once the first time and then with a doubling delay while replacements keep
   dying young, so a crash loop does not spin.

The pool knows nothing of what a worker runs: it is given the process target and a factory for
the target's argument (the CLI wires in ``pg_scheduler.worker.process``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

import asyncpg

from ..shared import queries
from ..shared.metrics import mark_process_dead, metrics

log = logging.getLogger(__name__)

RESTART_DELAY_SECONDS = 0.5
RESTART_MAX_DELAY_SECONDS = 30.0
HEALTHY_AFTER_SECONDS = 10.0
"""A worker that lived this long resets the restart backoff: a crash loop dies at start (import,
connect) or on its first claim, within seconds, while a worker killed after serving a while is
replaced at once, so that workers killed often do not leave their slots in backoff."""
KILL_WAIT_SECONDS = 5.0
RESCUE_RETRY_DELAYS_SECONDS = (0.5, 1.0, 2.0, 4.0)

WorkerTarget = Callable[[Any], None]
SpecFactory = Callable[[int, str, str], Any]
"""(slot, worker_id, supervisor_id) -> the argument of the process target."""


@dataclass
class Slot:
    """One place in the pool: its current process and its restart bookkeeping."""

    index: int
    process: BaseProcess | None = None
    worker_id: str | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    killed_at_shutdown: bool = False
    restart: asyncio.Task[None] | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)


def describe_exit(code: int | None) -> str:
    """An exit code in words (``exit status 1``, ``killed by SIGKILL``, ``still running``)."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class WorkerPool:
    """Keeps ``size`` worker processes alive and hands back the jobs of each one that dies."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        size: int,
        target: WorkerTarget,
        spec_for: SpecFactory,
        supervisor_id: str,
    ) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self._db = pool
        self.size = size
        self._target = target
        self._spec_for = spec_for
        self.supervisor_id = supervisor_id
        self._ctx = multiprocessing.get_context("spawn")
        self._slots = [Slot(i + 1) for i in range(size)]
        self._stopping = False
        self._background: set[asyncio.Task[Any]] = set()
        self.restarts = 0

    # ------------------------------------------------------------------ views

    @property
    def live(self) -> int:
        """Worker processes alive now."""
        return sum(1 for s in self._slots if s.process is not None and s.process.is_alive())

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start one worker process per slot."""
        for slot in self._slots:
            self._spawn(slot)

    def begin_stop(self) -> None:
        """From now on a worker that exits is not replaced (called as soon as a stop is asked,
        before leadership is resigned, so no worker is restarted in the middle of shutdown)."""
        self._stopping = True
        for slot in self._slots:
            if slot.restart is not None:
                slot.restart.cancel()

    def hurry(self) -> None:
        """Tell every worker to give its jobs back now (the second SIGTERM of the supervisor)."""
        self.begin_stop()
        self._signal_all(signal.SIGUSR1)

    async def stop(self, timeout: float) -> None:
        """SIGTERM every worker (they drain for their own shutdown timeout and give back the
        rest); after ``timeout``, SIGKILL what is left and hand its jobs back."""
        self.begin_stop()
        self._signal_all(signal.SIGTERM)
        alive = [s for s in self._slots if s.process is not None and s.process.is_alive()]
        if alive:
            log.info("supervisor: waiting up to %.1fs for %d worker(s) to drain", timeout, len(alive))
            await self._wait_exited(alive, timeout)
        stuck = [s for s in alive if s.process is not None and s.process.is_alive()]
        for slot in stuck:
            assert slot.process is not None
            log.error(
                "supervisor: worker %s (pid %s) did not stop in %.1fs: killing it",
                slot.worker_id,
                slot.process.pid,
                timeout,
            )
            slot.killed_at_shutdown = True
            with contextlib.suppress(ProcessLookupError):
                slot.process.kill()
        if stuck:
            await self._wait_exited(stuck, KILL_WAIT_SECONDS)
        # Exit handlers (releases) run as background tasks: let them finish.
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _wait_exited(self, slots: list[Slot], timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(s.exited.wait() for s in slots))

    def _signal_all(self, sig: signal.Signals) -> None:
        for slot in self._slots:
            if slot.process is not None and slot.process.pid is not None and slot.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.process.pid, sig)

    # ------------------------------------------------------------------ processes

    def _spawn(self, slot: Slot) -> None:
        worker_id = f"{socket.gethostname()}:{os.getpid()}:w{slot.index}:{uuid.uuid4().hex[:6]}"
        process = self._ctx.Process(
            target=self._target,
            args=(self._spec_for(slot.index, worker_id, self.supervisor_id),),
            name=f"pg_scheduler-worker-{slot.index}",
            daemon=False,
        )
        process.start()
        slot.process, slot.worker_id, slot.started_at = process, worker_id, time.monotonic()
        slot.exited.clear()
        sentinel = process.sentinel
        asyncio.get_running_loop().add_reader(sentinel, self._on_exit, slot, process, sentinel)
        log.info("supervisor: started worker %s as pid %s", worker_id, process.pid)

    def _on_exit(self, slot: Slot, process: BaseProcess, sentinel: int) -> None:
        asyncio.get_running_loop().remove_reader(sentinel)
        self._in_background(self._exited(slot, process))

    async def _exited(self, slot: Slot, process: BaseProcess) -> None:
        # The sentinel closes while the kernel tears the process down, a moment before it can
        # be reaped: join in a thread rather than read an exit code that is not there yet.
        await asyncio.to_thread(process.join, KILL_WAIT_SECONDS)
        code = process.exitcode
        if process.pid is not None:
            mark_process_dead(process.pid)
        worker_id = slot.worker_id
        lived = time.monotonic() - slot.started_at
        how = describe_exit(code)
        slot.process = None
        slot.exited.set()
        if self._stopping and code == 0:
            log.info("supervisor: worker %s stopped", worker_id)
        else:
            log.warning(
                "supervisor: worker %s (pid %s) died after %.1fs: %s", worker_id, process.pid, lived, how
            )
        assert worker_id is not None
        # Killed by us at the end of shutdown, or by the stop signals we sent: its jobs are
        # handed back like a drained worker's, not counted as a crash (no lost attempt at
        # shutdown). Any other death counts, during shutdown too.
        stop_signals = (-signal.SIGTERM, -signal.SIGUSR1)
        crashed = code != 0 and not slot.killed_at_shutdown and not (self._stopping and code in stop_signals)
        self._in_background(self._released(worker_id, crashed, how))
        if self._stopping:
            return
        slot.quick_deaths = slot.quick_deaths + 1 if lived < HEALTHY_AFTER_SECONDS else 1
        delay = (
            0.0
            if slot.quick_deaths <= 1
            else min(RESTART_DELAY_SECONDS * 2 ** (slot.quick_deaths - 2), RESTART_MAX_DELAY_SECONDS)
        )
        slot.restart = self._in_background(self._replace(slot, delay))

    async def _replace(self, slot: Slot, delay: float) -> None:
        if delay:
            log.warning("supervisor: worker slot %d keeps dying; replacing it in %.1fs", slot.index, delay)
            await asyncio.sleep(delay)
        if self._stopping:
            return
        self.restarts += 1
        metrics().worker_restarts.inc()
        self._spawn(slot)

    async def _released(self, worker_id: str, crashed: bool, how: str) -> None:
        """Hand the dead worker's jobs back. After a crash the attempt counts, so a job that
        kills its process ends ``failed`` once its retries are spent. A worker that stopped (it
        gave its jobs back itself, unless the database was away) or that shutdown had to kill
        returns them without counting."""
        for delay in (*RESCUE_RETRY_DELAYS_SECONDS, None):
            try:
                if crashed:
                    rows = await self._db.fetch(queries.JOB_RESCUE_DEAD_WORKER, worker_id, how)
                else:
                    rows = await self._db.fetch(
                        queries.JOB_RELEASE_WORKER, worker_id, f"worker {worker_id} stopped ({how})"
                    )
                break
            except Exception as exc:
                if delay is None:
                    log.error(
                        "supervisor: could not release the jobs of worker %s (%r); the "
                        "leader re-runs them when their leases expire",
                        worker_id,
                        exc,
                    )
                    return
                await asyncio.sleep(delay)
        if crashed and rows:
            metrics().orphans_rescued.inc(len(rows))
        for r in rows:
            if not crashed:
                log.warning("supervisor: handed back job %s of stopped worker %s", r["job_id"], worker_id)
            elif r["status"] == "pending":
                log.warning(
                    "supervisor: job %s (%s) was running on worker %s, which died (%s): it runs again now",
                    r["job_id"],
                    r["job_name"],
                    worker_id,
                    how,
                )
            else:
                log.error(
                    "supervisor: job %s (%s) was running on worker %s, which died (%s): "
                    "no retries left, failed",
                    r["job_id"],
                    r["job_name"],
                    worker_id,
                    how,
                )

    def _in_background(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task
