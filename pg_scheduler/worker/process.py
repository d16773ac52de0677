"""A worker process of ``pg-scheduler run``: the entry point the supervisor's pool starts.

Each worker process imports the APP (so it knows the tasks), opens its own asyncpg pool and runs
one :class:`~pg_scheduler.worker.worker.Worker` on its own event loop. It never does maintenance.

How it stops:

- ``SIGTERM`` (from the supervisor): stop claiming, let jobs finish for the shutdown timeout,
  give the leases of the rest back, exit 0. A second ``SIGTERM`` or a ``SIGUSR1`` hurries that.
- ``SIGINT`` is ignored: Ctrl-C in a terminal reaches the whole process group, and the
  supervisor decides how its workers stop.
- The supervisor died (``kill -9``): the parent's sentinel pipe closes; the worker gives its jobs
  back at once and exits. A job blocking the event loop cannot hold it: a watchdog thread ends the
  process when the loop stops ticking for :data:`ORPHAN_STALL_SECONDS` (or handing back takes
  longer than :data:`ORPHAN_EXIT_SECONDS`), and the leader's rescuer then re-runs what it held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

from ..shared.app import load_app
from ..shared.config import SchedulerConfig
from ..shared.db import create_pool_waiting
from ..shared.errors import AppLoadError
from ..shared.logs import configure as configure_logging
from ..shared.metrics import use_cached_pid_store
from ..shared.tasks import registry
from .event_loop import new_event_loop
from .worker import Worker

log = logging.getLogger(__name__)

ORPHAN_STALL_SECONDS = 2.0
"""After the supervisor is gone: how long the event loop may stop ticking (a job blocking it)
before the watchdog ends the process."""
ORPHAN_EXIT_SECONDS = 20.0
"""After the supervisor is gone: the longest a worker may take to give its jobs back (cancel
grace plus the release query's timeout, with room)."""
TICK_SECONDS = 0.5
POOL_CLOSE_SECONDS = 5.0
EXIT_APP_ERROR = 3
EXIT_STARTUP_ERROR = 4
EXIT_ORPHANED = 70


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs, sent to it (pickled) by the supervisor."""

    app: str
    dsn: str
    worker_id: str
    supervisor_id: str
    slot: int
    config: SchedulerConfig
    log_level: int = logging.INFO
    session_dsn: str | None = None
    """For the LISTEN and heartbeat sessions (default ``dsn``): long-lived connections that a
    transaction-pooling PgBouncer would break."""
    event_loop: str = "auto"
    """``auto``, ``asyncio`` or ``uvloop`` (worker/event_loop.py)."""

    @property
    def pool_size(self) -> int:
        """The worker's pool size: one connection per slot plus one, from 2 to 20."""
        # Claims and outcome writes are short; a use_advisory_lock job holds one for its run.
        return max(2, min(self.config.max_concurrent_jobs + 1, 20))


def worker_main(spec: WorkerSpec) -> None:
    """``multiprocessing.Process`` target: never returns; the exit status says how it ended."""
    # Until the loop installs its handlers, and after it has removed them, a stop signal must
    # not kill the process: the supervisor would count that as a crash.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    configure_logging(spec.log_level, f"worker-{spec.slot}")
    use_cached_pid_store()  # before the application can record a metric
    try:
        load_app(spec.app)
    except AppLoadError as exc:
        log.error("worker %s: %s", spec.worker_id, exc)
        sys.exit(EXIT_APP_ERROR)
    finished = threading.Event()
    ticks = _Ticks()
    _watch_parent(finished, ticks)
    try:
        with asyncio.Runner(loop_factory=lambda: new_event_loop(spec.event_loop)) as runner:
            code = runner.run(_serve(spec, ticks))
    finally:
        finished.set()
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)
    sys.exit(code)


class _Ticks:
    """The event loop's heartbeat, read by the watchdog thread."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stamp the time now, and again every ``TICK_SECONDS`` on ``loop``."""
        self.last = time.monotonic()
        loop.call_later(TICK_SECONDS, self.start, loop)


def _watch_parent(finished: threading.Event, ticks: _Ticks) -> None:
    """Backstop for an orphaned worker: if the supervisor is gone and the event loop stalls (a
    job blocks it) or handing back takes too long, end the process; the leader re-runs its jobs
    when their leases expire."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        deadline = time.monotonic() + ORPHAN_EXIT_SECONDS
        while not finished.wait(TICK_SECONDS):
            now = time.monotonic()
            if now - ticks.last > ORPHAN_STALL_SECONDS or now > deadline:
                why = b"its event loop is blocked" if now <= deadline else b"handing back is too slow"
                os.write(
                    2,
                    b"pg_scheduler worker: the supervisor is gone and "
                    + why
                    + b": exiting now (the leader re-runs its jobs when their leases expire)\n",
                )
                os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="pg_scheduler-parent-watch", daemon=True).start()


async def _serve(spec: WorkerSpec, ticks: _Ticks) -> int:
    loop = asyncio.get_running_loop()
    ticks.start(loop)
    stop = asyncio.Event()
    hurry = asyncio.Event()

    def on_term() -> None:
        if stop.is_set():
            hurry.set()
        stop.set()

    def on_hurry(why: str) -> None:
        log.warning("worker %s: %s: giving running jobs back now", spec.worker_id, why)
        stop.set()
        hurry.set()

    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGUSR1, on_hurry, "told to stop at once")
    parent = multiprocessing.parent_process()
    sentinel = parent.sentinel if parent is not None else None
    if sentinel is not None:

        def on_parent_gone() -> None:
            loop.remove_reader(sentinel)  # it stays readable: fire once
            on_hurry("the supervisor is gone")

        loop.add_reader(sentinel, on_parent_gone)

    try:
        # A database that is down or restarting is waited for (the pod stays up and unready);
        # a wrong DSN, password or database is not.
        pool = await create_pool_waiting(
            spec.dsn, max_size=spec.pool_size, stop=stop, who=f"worker {spec.worker_id}"
        )
    except Exception as exc:
        log.error("worker %s: cannot connect to the database: %r", spec.worker_id, exc)
        return EXIT_STARTUP_ERROR
    if pool is None:  # told to stop while waiting
        return 0
    worker = Worker(
        pool,
        registry,
        (spec.session_dsn or spec.dsn,),
        {},
        spec.config,
        worker_id=spec.worker_id,
        kind="worker",
        supervisor_id=spec.supervisor_id,
    )
    try:
        try:
            await worker.start()
        except Exception as exc:
            log.error("worker %s: cannot start: %r", spec.worker_id, exc)
            with contextlib.suppress(Exception):
                await worker.stop(0.0)
            return EXIT_STARTUP_ERROR
        log.info(
            "worker %s: claiming %d task(s) with %d slot(s)",
            spec.worker_id,
            len(registry),
            spec.config.max_concurrent_jobs,
        )
        await stop.wait()
        hurried = asyncio.ensure_future(hurry.wait())
        hurried.add_done_callback(lambda _: worker.hurry())
        try:
            await worker.stop(0.0 if hurry.is_set() else spec.config.shutdown_timeout_seconds)
        finally:
            hurried.cancel()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), POOL_CLOSE_SECONDS)
    log.info("worker %s: stopped", spec.worker_id)
    return 0
