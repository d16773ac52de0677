"""The in-process :class:`Scheduler`: the API of the 0.1 README, kept for real.

It composes, inside the caller's event loop, the same pieces that ``pg-scheduler run`` spreads
over processes: an :class:`~pg_scheduler.supervisor.elector.Elector` whose leader runs the
maintenance services (periodic registrar, orphan rescuer, vacuum), and one
:class:`~pg_scheduler.worker.worker.Worker` that claims and runs jobs. Same tables, same
guarantees: in-process Schedulers and supervisor pods can share one database.

A Scheduler that is never started is a producer: scheduling, cancelling, inspecting and the
management API work on it, creating the schema on first use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar, Unpack, overload

import asyncpg

from .awaitable import AwaitableDict, AwaitableList, AwaitableOptional
from .job_writer import JobWriter
from .periodic_admin import PeriodicAdmin
from .shared import queries
from .shared.config import KNOB_DEFAULTS, SCHEDULER_KNOBS, SchedulerConfig, SchedulerKnobs
from .shared.db import connect_params_from_pool
from .shared.errors import (
    ConfigurationError,
    SchedulerStateError,
)
from .shared.models import (
    UNSET,
    ConflictResolution,
    Job,
    JobPriority,
    JobSpec,
    PollingConfig,
    VacuumConfig,
    VacuumPolicy,
    VacuumTrigger,
    _Unset,
)
from .shared.periodic import (
    PeriodicJobInfo,
    periodic_registry,
)
from .shared.schema import ensure_schema
from .shared.tasks import TaskRegistry, registry
from .supervisor.elector import Elector
from .supervisor.fence import Unfenced
from .supervisor.leader_services import LeaderServices
from .supervisor.leadership import Leadership
from .supervisor.maintenance.orphan_rescuer import OrphanRescuer
from .supervisor.maintenance.periodic_registrar import PeriodicRegistrar
from .supervisor.maintenance.vacuum import Vacuum
from .worker.worker import OutcomeHook, Worker

__all__ = [
    "Scheduler",
    # What 0.2.3's ``pg_scheduler.scheduler`` also offered: programs import them from here.
    "ConflictResolution",
    "JobPriority",
    "JobSpec",
    "PollingConfig",
    "VacuumConfig",
    "VacuumPolicy",
    "VacuumTrigger",
]

log = logging.getLogger("pg_scheduler")

T = TypeVar("T")




class Scheduler:
    """Schedule and run async jobs on PostgreSQL.

    The positional parameters are those of pg-scheduler 0.2.3. The keyword-only knobs are the
    timings it hard-coded, every one in seconds: ``pg_scheduler.shared.config.SchedulerKnobs``
    names them and ``KNOB_DEFAULTS`` holds their defaults.

    :param db_pool: the application's asyncpg pool; jobs are written and claimed through it.
    :param max_concurrent_jobs: jobs this scheduler runs at once (env ``MAX_CONCURRENT_JOBS``).
    :param misfire_grace_time: seconds a job may start after its due time before it is
        ``expired`` instead of run; ``None`` never expires (env ``MISFIRE_GRACE_TIME``).
    :param lease_seconds: a running job's lease; a crashed worker's job runs again after it.
    :param heartbeat_seconds: lease renewal period (default: lease / 3), from its own thread.
    :param retry_delay_seconds: first retry delay; doubles each retry, up to
        ``retry_max_delay_seconds``, with jitter unless ``retry_jitter=False``.
    :param shutdown_timeout_seconds: how long ``shutdown()`` waits for running jobs before
        handing their leases back to the cluster.
    :param install_signal_handlers: False by default: signals belong to the host program.
    :param dsn: connection string for the dedicated sessions (leader lock, LISTEN, heartbeats);
        by default they are opened with the pool's own connection parameters.
    """

    def __init__(
        self,
        db_pool: asyncpg.Pool,
        max_concurrent_jobs: int | None = None,
        misfire_grace_time: float | None | _Unset = UNSET,
        vacuum_config: VacuumConfig | None = None,
        vacuum_enabled: bool | None = None,
        batch_claim_limit: int = KNOB_DEFAULTS["batch_claim_limit"],
        polling_config: PollingConfig | None = None,
        *,
        dsn: str | None = None,
        on_outcome: OutcomeHook | None = None,
        **knobs: Unpack[SchedulerKnobs],
    ) -> None:
        unknown = knobs.keys() - SCHEDULER_KNOBS
        if unknown:  # what Python says of a keyword no parameter takes
            raise TypeError(f"Scheduler() got an unexpected keyword argument {min(unknown)!r}")
        if db_pool is None:
            raise ConfigurationError("Scheduler needs an asyncpg pool (db_pool)")
        self.db_pool = db_pool
        self.config = SchedulerConfig.build(
            max_concurrent_jobs=max_concurrent_jobs, misfire_grace_time=misfire_grace_time,
            vacuum_enabled=vacuum_enabled, vacuum_config=vacuum_config,
            batch_claim_limit=batch_claim_limit, polling_config=polling_config, **knobs,
        )
        self._dsn = dsn
        self.registry: TaskRegistry = registry
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._on_outcome = on_outcome
        self._schema_ready = False
        self._schema_lock = asyncio.Lock()
        self._started = False
        self._stopped = False
        self._worker: Worker | None = None
        self._elector: Elector | None = None
        self.leader_services: LeaderServices | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._signals_installed: list[signal.Signals] = []
        self._closed = asyncio.Event()
        self._writer = JobWriter(db_pool, self.registry, self.config, self._ready)
        self._periodic = PeriodicAdmin(
            db_pool, ready=self._ready, registrar=lambda: self.periodic_registrar,
            spawn=self._spawn,
        )

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_leader(self) -> bool:
        return self._elector is not None and self._elector.is_leader

    @property
    def started(self) -> bool:
        """True once ``start()`` has succeeded (and still after ``shutdown()``)."""
        return self._started

    @property
    def closed(self) -> bool:
        """True once ``shutdown()`` has finished."""
        return self._closed.is_set()

    @property
    def periodic_registrar(self) -> PeriodicRegistrar | None:
        return self.leader_services.periodic_registrar if self.leader_services else None

    @property
    def orphan_rescuer(self) -> OrphanRescuer | None:
        return self.leader_services.orphan_rescuer if self.leader_services else None

    @property
    def vacuum(self) -> Vacuum | None:
        return self.leader_services.vacuum if self.leader_services else None

    @property
    def elector(self) -> Elector | None:
        return self._elector

    @property
    def worker(self) -> Worker | None:
        return self._worker

    async def initialize_db(self) -> None:
        """Create or upgrade the schema (0.2.3's name; ``start()`` and producers call it too)."""
        await self._ready()

    async def start(self) -> None:
        """Create the schema if needed, publish periodic definitions, start claiming jobs, and
        take part in leader election."""
        if self._started:
            raise SchedulerStateError("this Scheduler was already started")
        if self._stopped:
            raise SchedulerStateError("a Scheduler cannot be restarted after shutdown()")
        self._started = True
        try:
            await self._start()
        except BaseException:
            # Leave nothing half-started, and let a later start() try again (the database may
            # simply not have been up yet).
            await self._stop_parts(timeout=0.0)
            self._worker = self._elector = None
            self._started = False
            raise
        log.info("scheduler %s started: %d task(s), %d periodic job(s), %d slot(s)",
                 self.worker_id, len(self.registry), len(periodic_registry.all()),
                 self.config.max_concurrent_jobs)

    async def _start(self) -> None:
        await self._ready()
        # Definitions registered after this scheduler's first database call (a module imported
        # late) are published now; the sync loop publishes any that come later still.
        await self._periodic.publish()
        connect_args, connect_kwargs = self._connect_params()
        cfg = self.config
        self._worker = Worker(
            self.db_pool, self.registry, connect_args, connect_kwargs, cfg,
            worker_id=self.worker_id, kind="scheduler", on_outcome=self._on_outcome,
        )
        await self._worker.start()

        leadership = Leadership.build(
            self.db_pool, connect_args, connect_kwargs, node_id=self.worker_id, config=cfg
        )
        self.leader_services, self._elector = leadership.services, leadership.elector
        await self._elector.start()
        self._periodic.start_sync()
        if cfg.install_signal_handlers:
            self._install_signal_handlers()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop claiming; let running jobs finish for up to ``shutdown_timeout_seconds`` (or
        ``timeout``); hand the leases of the rest back so another replica runs them at once;
        resign leadership so another replica leads within a second."""
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
            self._closed.set()
        log.info("scheduler %s stopped", self.worker_id)

    async def _stop_parts(self, timeout: float) -> None:
        """Stop whatever was started, in order: leadership first (so another replica leads at
        once), then the worker (drain, hand back, deregister). Each part stops even if an
        earlier one failed."""
        self._remove_signal_handlers()
        elector, worker = self._elector, self._worker
        try:
            await self._periodic.stop_sync()
            if elector is not None:
                await elector.stop()
        finally:
            if worker is not None:
                await worker.stop(timeout)

    async def wait_closed(self) -> None:
        """Wait until ``shutdown()`` has finished (e.g. after a signal, with
        ``install_signal_handlers=True``)."""
        await self._closed.wait()

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    # ------------------------------------------------------------------ producing

    def register(self, func: Callable[..., Any], name: str | None = None) -> str:
        """Register a task without decorating it (same as ``@job``); returns its name. A started
        scheduler looks for its due jobs at once."""
        task_name = self.registry.register(func, name).name
        if self._worker is not None:
            self._worker.wake()
        return task_name

    async def schedule(
        self,
        func: Callable[..., Any] | str,
        *,
        execution_time: datetime,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        priority: JobPriority | str | int = JobPriority.NORMAL,
        max_retries: int = 0,
        job_id: str | None = None,
        conflict_resolution: ConflictResolution = ConflictResolution.RAISE,
        misfire_grace_time: float | None | _Unset = UNSET,
        timeout_seconds: float | None = None,
        connection: asyncpg.Connection | None = None,
    ) -> str:
        """Schedule ``func(*args, **kwargs)`` at ``execution_time`` (timezone-aware).

        ``func`` is an ``async def`` (registered under ``module:qualname`` if ``@job`` did not
        already) or the name of a task registered elsewhere. ``connection`` writes inside the
        caller's transaction: the job exists only if that transaction commits. One round trip.
        """
        return await self._writer.schedule(
            func, execution_time=execution_time, args=args, kwargs=kwargs, priority=priority,
            max_retries=max_retries, job_id=job_id, conflict_resolution=conflict_resolution,
            misfire_grace_time=misfire_grace_time, timeout_seconds=timeout_seconds,
            connection=connection,
        )

    @overload
    async def schedule_bulk(
        self,
        jobs: Sequence[JobSpec],
        *,
        conflict_resolution: ConflictResolution = ...,
        batch_size: int = ...,
        connection: asyncpg.Connection | None = ...,
        per_spec: Literal[False] = ...,
    ) -> list[str]: ...
    @overload
    async def schedule_bulk(
        self,
        jobs: Sequence[JobSpec],
        *,
        conflict_resolution: ConflictResolution = ...,
        batch_size: int = ...,
        connection: asyncpg.Connection | None = ...,
        per_spec: Literal[True],
    ) -> list[str | None]: ...
    async def schedule_bulk(
        self,
        jobs: Sequence[JobSpec],
        *,
        conflict_resolution: ConflictResolution = ConflictResolution.IGNORE,
        batch_size: int = 5000,
        connection: asyncpg.Connection | None = None,
        per_spec: bool = False,
    ) -> list[str] | list[str | None]:
        """Schedule many jobs in one statement per batch (a COPY when no spec gives an id).

        Returns the ids written, in input order, each once, as 0.2.3 did: with ``IGNORE``, a
        spec whose id existed (or repeated an earlier spec's) adds none, so the list can be
        shorter than ``jobs``, and empty. ``per_spec=True`` returns one entry per spec instead,
        in input order: its id, or ``None`` where ``IGNORE`` skipped it. ``RAISE`` writes
        nothing if any id exists or repeats; ``REPLACE`` keeps the last spec of a repeated id.
        """
        return await self._writer.schedule_bulk(
            jobs, conflict_resolution=conflict_resolution, batch_size=batch_size,
            connection=connection, per_spec=per_spec,
        )

    async def schedule_job(
        self,
        job_name: str,
        execution_time: datetime,
        task_data: Mapping[str, Any] | None = None,
        priority: JobPriority = JobPriority.NORMAL,
        max_retries: int = 0,
        job_id: str | None = None,
        conflict_resolution: ConflictResolution = ConflictResolution.RAISE,
        misfire_grace_time: float | None | _Unset = UNSET,
    ) -> str:
        """0.2.3's low-level form: a job by task name, with ``{"args": [...], "kwargs": {...}}``."""
        data = dict(task_data or {})
        return await self.schedule(
            job_name, execution_time=execution_time, args=data.get("args", ()),
            kwargs=data.get("kwargs"), priority=priority, max_retries=max_retries, job_id=job_id,
            conflict_resolution=conflict_resolution, misfire_grace_time=misfire_grace_time,
        )

    async def cancel_job(self, job_id: str, *, reason: str | None = None) -> bool:
        """Cancel a pending or running job; a running one has its coroutine cancelled."""
        await self._ready()
        rows = await self.db_pool.fetch(queries.JOB_CANCEL, job_id, reason)
        if rows and self._worker is not None:
            self._worker.cancel_local(job_id)  # no need to wait for our own notification
        return bool(rows)

    async def get_job(self, job_id: str) -> Job | None:
        await self._ready()
        row = await self.db_pool.fetchrow(queries.JOB_GET, job_id)
        if row is None:
            return None
        data = dict(row)
        if isinstance(data["task_data"], str):
            data["task_data"] = json.loads(data["task_data"])
        return Job.from_record(data)

    # ------------------------------------------------------------------ maintenance by hand

    async def run_vacuum(self) -> dict[str, int]:
        """Run one vacuum pass now, with this scheduler's policies."""
        await self._ready()
        if not self.config.vacuum_enabled:
            return {"completed": 0, "failed": 0, "cancelled": 0, "expired": 0}
        return await Vacuum(Unfenced(self.db_pool), self.config.vacuum_config).run_once()

    async def recover_orphaned_jobs(self) -> int:
        """Run one orphan-rescue pass now (the leader also runs it on its own)."""
        await self._ready()
        result = await OrphanRescuer(
            Unfenced(self.db_pool), interval_seconds=1.0,
            worker_stale_seconds=self.config.worker_stale_seconds,
        ).run_once()
        return len(result.requeued) + len(result.failed)

    async def get_vacuum_stats(self, days: int = 7) -> list[dict[str, Any]]:
        await self._ready()
        return [dict(r) for r in await self.db_pool.fetch(queries.VACUUM_LIST_STATS, days)]

    async def get_total_vacuum_stats(self) -> dict[str, Any]:
        await self._ready()
        row = await self.db_pool.fetchrow(queries.VACUUM_GET_TOTALS)
        return dict(row) if row else {}

    # ------------------------------------------------------------------ periodic management

    def get_periodic_jobs(self) -> AwaitableDict[str, PeriodicJobInfo]:
        """All periodic jobs of the cluster. Plain call: what this process knows now; awaited:
        fresh from the database."""
        return self._periodic.get_periodic_jobs()

    def get_periodic_job_status(self, dedup_key: str) -> AwaitableOptional[dict[str, Any]]:
        """Definition, enabled state, last run and next run. Await it for the database's view."""
        return self._periodic.get_periodic_job_status(dedup_key)

    def enable_periodic_job(self, dedup_key: str) -> AwaitableOptional[bool]:
        """Enable it in the whole cluster; its next window runs. Await for the result."""
        return self._periodic.set_enabled(dedup_key, True)

    def disable_periodic_job(self, dedup_key: str) -> AwaitableOptional[bool]:
        """Disable it in the whole cluster; its already-written future windows are cancelled."""
        return self._periodic.set_enabled(dedup_key, False)

    async def trigger_periodic_job(self, dedup_key: str) -> str | None:
        """Run the periodic job now, once, through the normal path (advisory lock included)."""
        return await self._periodic.trigger_periodic_job(dedup_key)

    async def set_periodic_schedule(
        self,
        dedup_key: str,
        *,
        every: timedelta | None = None,
        cron: str | None = None,
        timezone: str | None = None,
    ) -> bool:
        """Change a periodic job's schedule for the whole cluster, persisted in the database: it
        wins over the schedule in the code, across restarts, until
        :meth:`reset_periodic_schedule`. Windows written ahead under the old schedule are
        cancelled; the new one starts at its next window. False if there is no such job."""
        return await self._periodic.set_periodic_schedule(
            dedup_key, every=every, cron=cron, timezone=timezone
        )

    async def reset_periodic_schedule(self, dedup_key: str) -> bool:
        """Go back to the schedule the code declares. False if there is no such job."""
        return await self._periodic.reset_periodic_schedule(dedup_key)

    def get_periodic_next_runs(
        self, dedup_key: str, count: int = 10, after: datetime | None = None
    ) -> AwaitableList[datetime]:
        """The next ``count`` window starts (UTC) after ``after`` (default now)."""
        return self._periodic.get_periodic_next_runs(dedup_key, count, after)

    # ------------------------------------------------------------------ internals

    async def _ready(self, *, dedicated: bool = False) -> None:
        """Create or upgrade the schema and publish periodic definitions, once.

        ``dedicated``: do it on a connection of its own, not the pool's. ``schedule(...,
        connection=conn)`` uses that: the caller may hold the pool's last connection, and the
        caller's transaction must not carry our DDL.
        """
        if self._schema_ready:
            return
        async with self._schema_lock:
            if self._schema_ready:
                return
            if dedicated:
                args, kwargs = self._connect_params()
                conn = await asyncpg.connect(*args, **kwargs)
                try:
                    await self._prepare_database(conn)
                finally:
                    await conn.close()
            else:
                async with self.db_pool.acquire() as conn:
                    await self._prepare_database(conn)
            self._schema_ready = True

    async def _prepare_database(self, conn: asyncpg.Connection) -> None:
        await ensure_schema(conn)
        await self._periodic.publish(conn)

    def _connect_params(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self._dsn is not None:
            return (self._dsn,), {}
        return connect_params_from_pool(self.db_pool)

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
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
        self._spawn(self.shutdown())
