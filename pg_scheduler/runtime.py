"""Starts and stops a Scheduler's running parts in the caller's event loop.

The parts: one worker that claims and runs jobs, this process's part in leader election (the
leader runs the maintenance services), the periodic sync loop and, if asked, signal handlers.
It also keeps the background tasks that ``shutdown()`` waits for.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Self, TypeVar

import asyncpg

from .database_gate import DatabaseGate
from .periodic_admin import PeriodicAdmin
from .shared.config import SchedulerConfig
from .shared.errors import SchedulerStateError
from .shared.periodic import periodic_registry
from .shared.tasks import TaskRegistry
from .supervisor.elector import Elector
from .supervisor.leader_services import LeaderServices
from .supervisor.leadership import Leadership
from .supervisor.maintenance.orphan_rescuer import OrphanRescuer
from .supervisor.maintenance.periodic_registrar import PeriodicRegistrar
from .supervisor.maintenance.vacuum import Vacuum
from .worker.worker import OutcomeHook, Worker

log = logging.getLogger("pg_scheduler")

T = TypeVar("T")


class Runtime:
    """A Scheduler's lifecycle: ``start()`` once, ``shutdown()`` once, in that order."""

    def __init__(
        self,
        db_pool: asyncpg.Pool,
        registry: TaskRegistry,
        config: SchedulerConfig,
        *,
        worker_id: str,
        gate: DatabaseGate,
        periodic: PeriodicAdmin,
        on_outcome: OutcomeHook | None,
        flush_writes: Callable[[], Awaitable[None]],
    ) -> None:
        self.db_pool = db_pool
        self._flush_writes = flush_writes
        self.registry = registry
        self.config = config
        self.worker_id = worker_id
        self._gate = gate
        self._periodic = periodic
        self._on_outcome = on_outcome
        self.started = False
        self._stopped = False
        self.worker: Worker | None = None
        self.elector: Elector | None = None
        self.leader_services: LeaderServices | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._signals_installed: list[signal.Signals] = []
        self.closed = asyncio.Event()

    async def start(self) -> None:
        """``Scheduler.start``."""
        if self.started:
            raise SchedulerStateError("this Scheduler was already started")
        if self._stopped:
            raise SchedulerStateError("a Scheduler cannot be restarted after shutdown()")
        self.started = True
        try:
            await self._start()
        except BaseException:
            # Leave nothing half-started, and let a later start() try again (the database may
            # simply not have been up yet).
            await self._stop_parts(timeout=0.0)
            self.worker = self.elector = None
            self.started = False
            raise
        log.info(
            "scheduler %s started: %d task(s), %d periodic job(s), %d slot(s)",
            self.worker_id,
            len(self.registry),
            len(periodic_registry.all()),
            self.config.max_concurrent_jobs,
        )

    async def _start(self) -> None:
        await self._gate.ready()
        # Definitions registered after this scheduler's first database call (a module imported
        # late) are published now; the sync loop publishes any that come later still.
        await self._periodic.publish()
        connect_args, connect_kwargs = self._gate.connect_params()
        cfg = self.config
        self.worker = Worker(
            self.db_pool,
            self.registry,
            connect_args,
            connect_kwargs,
            cfg,
            worker_id=self.worker_id,
            kind="scheduler",
            on_outcome=self._on_outcome,
        )
        await self.worker.start()

        leadership = Leadership.build(
            self.db_pool, connect_args, connect_kwargs, node_id=self.worker_id, config=cfg
        )
        self.leader_services, self.elector = leadership.services, leadership.elector
        await self.elector.start()
        self._periodic.start_sync()
        if cfg.install_signal_handlers:
            self._install_signal_handlers()

    async def shutdown(self, timeout: float | None = None) -> None:
        """``Scheduler.shutdown``."""
        if self._stopped:
            return
        self._stopped = True
        try:
            wait = self.config.shutdown_timeout_seconds if timeout is None else timeout
            await self._stop_parts(wait)
            # The signal handler runs shutdown() as a background task: do not wait on ourselves.
            pending = [t for t in self._background if t is not asyncio.current_task()]
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            try:
                await self._flush_writes()  # the wake-ups schedule() still owes
            finally:
                self.closed.set()
        log.info("scheduler %s stopped", self.worker_id)

    async def _stop_parts(self, timeout: float) -> None:
        """Stop whatever was started, in order: leadership first (so another replica leads at
        once), then the worker (drain, hand back, deregister). Each part stops even if an
        earlier one failed."""
        self._remove_signal_handlers()
        elector, worker = self.elector, self.worker
        try:
            await self._periodic.stop_sync()
            if elector is not None:
                await elector.stop()
        finally:
            if worker is not None:
                await worker.stop(timeout)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` in the background; shutdown() waits for it, and a failure is logged."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("pg_scheduler background call failed: %r", task.exception())

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                self._signals_installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                log.warning("cannot install a handler for %s here", sig.name)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals_installed:
            loop.remove_signal_handler(sig)
        self._signals_installed.clear()

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("received %s: shutting down", sig.name)
        self.spawn(self.shutdown())


class Lifecycle:
    """The lifecycle half of the ``Scheduler``'s API: start, shutdown and what runs meanwhile,
    read from its :class:`Runtime`."""

    _runtime: Runtime
    _ready: Callable[..., Awaitable[None]]

    @property
    def is_leader(self) -> bool:
        """Whether this scheduler holds a trusted leader term now."""
        return self.elector is not None and self.elector.is_leader

    @property
    def started(self) -> bool:
        """True once ``start()`` has succeeded (and still after ``shutdown()``)."""
        return self._runtime.started

    @property
    def closed(self) -> bool:
        """True once ``shutdown()`` has finished."""
        return self._runtime.closed.is_set()

    @property
    def leader_services(self) -> LeaderServices | None:
        """The leader-only services once started (running only while this scheduler leads)."""
        return self._runtime.leader_services

    @property
    def periodic_registrar(self) -> PeriodicRegistrar | None:
        """The leader services' periodic registrar, once started."""
        return self.leader_services.periodic_registrar if self.leader_services else None

    @property
    def orphan_rescuer(self) -> OrphanRescuer | None:
        """The leader services' orphan rescuer, once started."""
        return self.leader_services.orphan_rescuer if self.leader_services else None

    @property
    def vacuum(self) -> Vacuum | None:
        """The leader services' vacuum, once started with vacuum enabled."""
        return self.leader_services.vacuum if self.leader_services else None

    @property
    def elector(self) -> Elector | None:
        """The elector once started, else None."""
        return self._runtime.elector

    @property
    def worker(self) -> Worker | None:
        """The worker that claims and runs jobs once started, else None."""
        return self._runtime.worker

    async def initialize_db(self) -> None:
        """Create or upgrade the schema (0.2.3's name; ``start()`` and producers call it too)."""
        await self._ready()

    async def start(self) -> None:
        """Create the schema if needed, publish periodic definitions, start claiming jobs, and
        take part in leader election."""
        await self._runtime.start()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop claiming; let running jobs finish for up to ``shutdown_timeout_seconds`` (or
        ``timeout``); hand the leases of the rest back so another replica runs them at once;
        resign leadership so another replica leads within a second; send the workers the
        wake-up still owed to the last jobs ``schedule()`` wrote, if any."""
        await self._runtime.shutdown(timeout)

    async def wait_closed(self) -> None:
        """Wait until ``shutdown()`` has finished (e.g. after a signal, with
        ``install_signal_handlers=True``)."""
        await self._runtime.closed.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()
