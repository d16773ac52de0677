"""The supervisor of ``pg-scheduler run``: one per pod.

It holds or waits for leadership (and runs the maintenance services only while it leads), keeps
N worker processes alive, and registers itself in the process registry. It never runs a job: a
job that blocks, burns CPU or crashes its process takes down one worker, not leadership or the
pod.

Shutdown (SIGTERM or SIGINT), in the order that hands work over fastest:

1. resign leadership with a notification, so another pod leads within a second;
2. SIGTERM the workers: they stop claiming, let running jobs finish for the shutdown timeout and
   give the leases of the rest back (no attempt lost); a worker still alive after its grace is
   killed and its jobs handed back;
3. deregister, close the pool, exit 0.

A second signal hurries step 2: workers give their jobs back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import uuid
from typing import Any

import asyncpg

from ..shared.config import SchedulerConfig
from ..shared.db import create_pool_waiting
from ..shared.metrics import MULTIPROC_ENV, default_registry, metrics, multiprocess_registry
from ..shared.periodic import periodic_registry
from ..shared.periodic import publish as publish_periodic
from ..shared.queue_limits import publish_declared
from ..shared.schema import ensure_schema
from .elector import Elector
from .endpoints import DatabaseProbe, Endpoints, exposition
from .leader_services import LeaderServices
from .leadership import Leadership
from .pool import SpecFactory, WorkerPool, WorkerTarget
from .registration import Registration

log = logging.getLogger(__name__)

POOL_SIZE = 4
"""The supervisor's own connections: registration, fenced leader transactions, releases."""
WAIT_FOR_DATABASE_SECONDS_DEFAULT = 30.0
"""How long the supervisor waits at start for a database that does not answer yet."""
DRAIN_MARGIN_SECONDS = 10.0
"""Beyond the shutdown timeout, what a worker needs to cancel leftovers, give them back and close."""


class Supervisor:
    """One pod's supervisor: leadership, worker processes, its registry row, the HTTP endpoints."""

    def __init__(
        self,
        *,
        dsn: str,
        workers: int,
        config: SchedulerConfig,
        worker_target: WorkerTarget,
        spec_for: SpecFactory,
        wait_for_database_seconds: float = WAIT_FOR_DATABASE_SECONDS_DEFAULT,
        metrics_host: str | None = None,
        metrics_port: int | None = None,
        metrics_port_is_default: bool = False,
        session_dsn: str | None = None,
    ) -> None:
        """``session_dsn``: where the leader's lock session connects (default ``dsn``); it must
        reach PostgreSQL itself or a session-pooling PgBouncer, since a session advisory lock
        lives and dies with one server connection."""
        self.dsn = dsn
        self.session_dsn = session_dsn or dsn
        self.workers = workers
        self.config = config
        self.supervisor_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.wait_for_database_seconds = wait_for_database_seconds
        self._worker_target = worker_target
        self._spec_for = spec_for
        self._stop = asyncio.Event()
        self._hurried = False
        self._db: asyncpg.Pool | None = None
        self._registration: Registration | None = None
        self._elector: Elector | None = None
        self.leader_services: LeaderServices | None = None
        self.pool: WorkerPool | None = None
        self.metrics_host = metrics_host
        self.metrics_port = metrics_port
        self.metrics_port_is_default = metrics_port_is_default
        self.endpoints: Endpoints | None = None
        self._probe: DatabaseProbe | None = None

    @property
    def is_leader(self) -> bool:
        """Whether this pod holds a trusted leader term now."""
        return self._elector is not None and self._elector.is_leader

    @property
    def elector(self) -> Elector | None:
        """The elector once started, else None."""
        return self._elector

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (or :meth:`request_stop`); returns the exit status."""
        self._install_signal_handlers()
        try:
            await self._start()
            if not self._stop.is_set():
                log.info(
                    "supervisor %s: running %d worker(s) x %d slot(s); leader election on",
                    self.supervisor_id,
                    self.workers,
                    self.config.max_concurrent_jobs,
                )
            await self._stop.wait()
        finally:
            await self._shutdown()
            self._remove_signal_handlers()
        return 0

    def request_stop(self) -> None:
        """What SIGTERM does: the first call drains, the second hurries the workers."""
        if self._stop.is_set():
            if not self._hurried:
                self._hurried = True
                log.warning("supervisor: second stop request: workers give their jobs back now")
                if self.pool is not None:
                    self.pool.hurry()
            return
        log.info(
            "supervisor: stopping: draining for up to %.1fs (signal again to stop at once)",
            self.config.shutdown_timeout_seconds,
        )
        if self.pool is not None:
            self.pool.begin_stop()
        self._stop.set()

    async def _start(self) -> None:
        if self.metrics_port is not None:
            self.endpoints = Endpoints(
                self.metrics_host,
                self.metrics_port,
                metrics_text=lambda: exposition(self._registry),
                readiness=self.readiness,
            )
            await self.endpoints.start(any_port_if_taken=self.metrics_port_is_default)
        self._db = await create_pool_waiting(
            self.dsn,
            max_size=POOL_SIZE,
            stop=self._stop,
            who="supervisor",
            wait_seconds=self.wait_for_database_seconds,
        )
        if self._db is None:
            return
        metrics().is_leader.set(0)  # followers export 0, not nothing
        async with self._db.acquire() as conn:
            await ensure_schema(conn)
            await publish_declared(conn)
            definitions = list(periodic_registry.all().values())
            await publish_periodic(conn, definitions)
        if self.session_dsn != self.dsn:
            await self._check_session_dsn()
        self._probe = DatabaseProbe(
            self._db, supervisor_id=self.supervisor_id, stale_seconds=self.config.worker_stale_seconds
        )
        if definitions:
            log.info(
                "supervisor: published %d periodic definition(s): %s",
                len(definitions),
                ", ".join(sorted(d.dedup_key for d in definitions)),
            )
        self._registration = Registration(
            self._db, process_id=self.supervisor_id, interval_seconds=self.config.heartbeat_seconds
        )
        await self._registration.start()

        leadership = Leadership.build(
            self._db, (self.session_dsn,), {}, node_id=self.supervisor_id, config=self.config
        )
        self.leader_services, self._elector = leadership.services, leadership.elector
        await self._elector.start()
        if self._stop.is_set():
            return
        self.pool = WorkerPool(
            self._db,
            size=self.workers,
            target=self._worker_target,
            spec_for=self._spec_for,
            supervisor_id=self.supervisor_id,
        )
        await self.pool.start()

    async def _check_session_dsn(self) -> None:
        """A wrong leader DSN would leave every lock, LISTEN and heartbeat session failing while
        the pods look healthy: try it once now (the database itself is known to answer)."""
        conn = await asyncpg.connect(self.session_dsn, timeout=10)
        await conn.close()

    async def _shutdown(self) -> None:
        """Each step runs even if an earlier one failed."""
        try:
            if self._elector is not None:
                await self._elector.stop()
        except Exception:
            log.exception("supervisor: error while resigning leadership")
        try:
            if self.pool is not None:
                await self.pool.stop(self.config.shutdown_timeout_seconds + DRAIN_MARGIN_SECONDS)
        except Exception:
            log.exception("supervisor: error while stopping workers")
        try:
            if self._registration is not None:
                await self._registration.deregister()
            if self._probe is not None:
                await self._probe.stop()
            if self.endpoints is not None:
                await self.endpoints.stop()
        finally:
            if self._db is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._db.close(), 5)
                log.info("supervisor %s: stopped", self.supervisor_id)

    async def readiness(self) -> str | None:
        """None when this pod can do work, else why not (what ``/readyz`` says): the database is
        asked when ``/readyz`` is (DatabaseProbe.refresh)."""
        if self._stop.is_set():
            return "shutting down"
        if self._probe is not None:
            await self._probe.refresh()
        if self._stop.is_set():  # asked to stop while the probe ran
            return "shutting down"
        if self._probe is None or not self._probe.reachable():
            return "the database does not answer"
        if self.pool is None or self.pool.live < 1 or self._probe.workers_registered < 1:
            return "no worker process is up and connected"
        return None

    @functools.cached_property
    def _registry(self) -> Any:
        return multiprocess_registry() if os.environ.get(MULTIPROC_ENV) else default_registry()

    # ------------------------------------------------------------------ signals

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("supervisor: received %s", sig.name)
        self.request_stop()
