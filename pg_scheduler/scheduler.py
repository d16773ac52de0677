"""The in-process :class:`Scheduler`: the API of the 0.1 README, a facade over its parts.

Its parts run, in the caller's event loop, what ``pg-scheduler run`` spreads over processes, on
the same tables: ``runtime`` (start, shutdown), ``job_writer`` (scheduling), ``job_admin``
(cancel, read, maintenance by hand) and ``periodic_admin``. Never started, it is a producer.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, Unpack, overload

import asyncpg

from .awaitable import AwaitableDict, AwaitableList, AwaitableOptional
from .database_gate import DatabaseGate
from .job_admin import JobAdmin
from .job_writer import JobWriter
from .periodic_admin import PeriodicAdmin
from .runtime import Lifecycle, Runtime
from .shared.config import KNOB_DEFAULTS, SCHEDULER_KNOBS, SchedulerConfig, SchedulerKnobs
from .shared.errors import ConfigurationError
from .shared.job_filter import JobCursor, JobFilter, JobPage
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
from .shared.periodic import PeriodicJobInfo
from .shared.queue_limits import (
    QueueInfo,
    QueueLimitChanges,
    list_queues,
    publish_declared,
    reset_limits,
    set_limits,
    set_paused,
)
from .shared.queues import QueueLimits
from .shared.tasks import TaskRegistry, registry
from .worker.worker import OutcomeHook

# 0.2.3's ``pg_scheduler.scheduler`` also offered the models: programs import them from here.
__all__ = ["Scheduler", "ConflictResolution", "JobPriority", "JobSpec", "PollingConfig"]
__all__ += ["VacuumConfig", "VacuumPolicy", "VacuumTrigger"]


class Scheduler(Lifecycle):
    """Schedule and run async jobs on PostgreSQL.

    The positional parameters are those of pg-scheduler 0.2.3. The keyword-only knobs are the
    timings it hard-coded, in seconds, and the queues to claim from (``queues=["emails"]``;
    default every queue): :class:`~pg_scheduler.shared.config.SchedulerKnobs` names and
    documents them, and ``KNOB_DEFAULTS`` holds their defaults.

    :param db_pool: the application's asyncpg pool; jobs are written and claimed through it.
    :param max_concurrent_jobs: jobs this scheduler runs at once (env ``MAX_CONCURRENT_JOBS``).
    :param misfire_grace_time: seconds a job may start after its due time before it is
        ``expired`` instead of run; ``None`` never expires (env ``MISFIRE_GRACE_TIME``).
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
            max_concurrent_jobs=max_concurrent_jobs,
            misfire_grace_time=misfire_grace_time,
            vacuum_enabled=vacuum_enabled,
            vacuum_config=vacuum_config,
            batch_claim_limit=batch_claim_limit,
            polling_config=polling_config,
            **knobs,
        )
        self.registry: TaskRegistry = registry
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._gate = DatabaseGate(db_pool, dsn, self._publish)
        self._ready = self._gate.ready
        self._periodic = PeriodicAdmin(
            db_pool,
            ready=self._ready,
            registrar=lambda: self.periodic_registrar,
            spawn=lambda coro: self._runtime.spawn(coro),
        )
        self._writer = JobWriter(db_pool, self.registry, self.config, self._ready)
        self._runtime = Runtime(
            db_pool,
            self.registry,
            self.config,
            worker_id=self.worker_id,
            gate=self._gate,
            periodic=self._periodic,
            on_outcome=on_outcome,
            flush_writes=self._writer.flush,
        )
        self._jobs = JobAdmin(
            db_pool,
            self.config,
            ready=self._ready,
            worker=lambda: self.worker,
            connect_params=self._gate.connect_params,
        )

    async def _publish(self, conn: asyncpg.Connection) -> None:
        """What this process's code declares: periodic definitions and queue limits."""
        await publish_declared(conn)
        await self._periodic.publish(conn)

    def register(self, func: Callable[..., Any], name: str | None = None) -> str:
        """Register a task without decorating it (same as ``@job``); returns its name. A started
        scheduler looks for its due jobs at once."""
        task_name = self.registry.register(func, name).name
        if self.worker is not None:
            self.worker.wake()
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
        queue: str | None = None,
        concurrency_key: str | None = None,
    ) -> str:
        """Schedule ``func(*args, **kwargs)`` at ``execution_time`` (timezone-aware).

        ``func`` is an ``async def`` (registered under ``module:qualname`` if ``@job`` did not
        already) or the name of a task registered elsewhere. ``connection`` writes inside the
        caller's transaction: the job exists only if that transaction commits. One round trip.
        ``queue`` defaults to the task's (``@job(queue=...)``), else ``"default"``;
        ``concurrency_key`` (e.g. ``f"customer:{id}"``) is stored with the job (docs/queues.md).
        """
        return await self._writer.schedule(
            func,
            execution_time=execution_time,
            args=args,
            kwargs=kwargs,
            priority=priority,
            max_retries=max_retries,
            job_id=job_id,
            conflict_resolution=conflict_resolution,
            misfire_grace_time=misfire_grace_time,
            timeout_seconds=timeout_seconds,
            queue=queue,
            concurrency_key=concurrency_key,
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
            jobs,
            conflict_resolution=conflict_resolution,
            batch_size=batch_size,
            connection=connection,
            per_spec=per_spec,
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
        args, kwargs = data.get("args", ()), data.get("kwargs")
        return await self.schedule(
            job_name,
            execution_time=execution_time,
            args=args,
            kwargs=kwargs,
            priority=priority,
            max_retries=max_retries,
            job_id=job_id,
            conflict_resolution=conflict_resolution,
            misfire_grace_time=misfire_grace_time,
        )

    async def cancel_job(self, job_id: str, *, reason: str | None = None) -> bool:
        """Cancel a pending or running job; a running one has its coroutine cancelled."""
        return await self._jobs.cancel_job(job_id, reason=reason)

    async def retry_job(self, job_id: str) -> bool:
        """Run a failed, cancelled or expired job again: it becomes pending and due now, with its
        retry count back to 0 (it gets its ``max_retries`` again); its ``attempt`` keeps counting
        up and its last error stays until the new attempt ends. Workers are woken at once.
        False, changing nothing, for a pending, running or completed job or an unknown id."""
        return await self._jobs.retry_job(job_id)

    async def run_job_now(self, job_id: str) -> bool:
        """Make a pending job due now, so the next free worker runs it (one already due keeps its
        due time, and its place). Workers are woken at once. False for a job in any other state
        or an unknown id."""
        return await self._jobs.run_job_now(job_id)

    async def delete_job(self, job_id: str) -> bool:
        """Delete a finished job (completed, failed, cancelled or expired). A pending or running
        job is not deleted (cancel it first): False, as for an unknown id."""
        return await self._jobs.delete_job(job_id)

    async def cancel_jobs(
        self, job_filter: JobFilter, *, reason: str | None = None, batch_size: int = 500
    ) -> int:
        """Cancel every pending or running job that ``job_filter`` matches, as :meth:`cancel_job`
        does each (a running one's worker is told to stop it); the number cancelled.

        Done in batches of ``batch_size`` jobs, each its own transaction, until a batch comes
        back short. A job locked at that moment by another transaction (a worker claiming it) is
        skipped; a job that starts to match meanwhile may or may not be cancelled.

        :raises ConfigurationError: for a bad filter or ``batch_size``, before anything changes.
        """
        return await self._jobs.cancel_jobs(job_filter, reason=reason, batch_size=batch_size)

    async def retry_jobs(self, job_filter: JobFilter, *, batch_size: int = 500) -> int:
        """:meth:`retry_job` on every failed, cancelled or expired job that ``job_filter``
        matches, in batches as :meth:`cancel_jobs`; the number retried."""
        return await self._jobs.retry_jobs(job_filter, batch_size=batch_size)

    async def run_jobs_now(self, job_filter: JobFilter, *, batch_size: int = 500) -> int:
        """:meth:`run_job_now` on every pending job that ``job_filter`` matches and that is due
        later, in batches as :meth:`cancel_jobs`; the number made due now (jobs already due are
        not counted)."""
        return await self._jobs.run_jobs_now(job_filter, batch_size=batch_size)

    async def delete_jobs(self, job_filter: JobFilter, *, batch_size: int = 500) -> int:
        """Delete every finished job (completed, failed, cancelled, expired) that ``job_filter``
        matches, in batches as :meth:`cancel_jobs`; the number deleted. Pending and running
        jobs are never deleted."""
        return await self._jobs.delete_jobs(job_filter, batch_size=batch_size)

    async def list_jobs(
        self,
        job_filter: JobFilter,
        *,
        after: JobCursor | None = None,
        limit: int = 50,
        statement_timeout: float | None = None,
    ) -> JobPage:
        """One page of at most ``limit`` jobs that ``job_filter`` matches, in the order of its
        state: finished jobs by finish time, newest first; pending ones by due time, the first
        due first; running ones by start time, the last started first (ties by job id). Pass
        the page's ``next`` as ``after`` for the following page (None: this was the last);
        pages follow one another without gap or repeat while rows keep their sort key.

        The filter needs a ``state``, or a ``job_id`` (which finds the job in any state).
        ``statement_timeout`` (seconds) bounds the page's query on the server, in its own
        transaction, leaving the pool's sessions as they are: an argument search over millions
        of rows then ends with ``asyncpg.QueryCanceledError`` instead of running on.

        :raises ConfigurationError: for a bad filter, ``after``, ``limit`` or
            ``statement_timeout``.
        """
        return await self._jobs.list_jobs(
            job_filter, after=after, limit=limit, statement_timeout=statement_timeout
        )

    async def get_job(self, job_id: str) -> Job | None:
        """The job as stored now, or None if there is no such job (or it was vacuumed)."""
        return await self._jobs.get_job(job_id)

    async def wait_for(self, job_id: str, *, timeout: float | None = None) -> Job:
        """The job once it has finished (completed, failed, cancelled or expired), with its
        ``result``; through retries until a final state. Woken by a notification of the job's
        end, not by polling, on a database session of its own while it waits (not one of the
        pool's).

        :raises JobNotFoundError: if no job has this id.
        :raises TimeoutError: if it has not finished after ``timeout`` seconds.
        :raises ValueError: if ``timeout`` is negative or not a number.
        """
        return await self._jobs.wait_for(job_id, timeout=timeout)

    async def run_vacuum(self) -> dict[str, int]:
        """Run one vacuum pass now, with this scheduler's policies."""
        return await self._jobs.run_vacuum()

    async def recover_orphaned_jobs(self) -> int:
        """Run one orphan-rescue pass now (the leader also runs it on its own)."""
        return await self._jobs.recover_orphaned_jobs()

    async def get_vacuum_stats(self, days: int = 7) -> list[dict[str, Any]]:
        """Rows vacuum deleted per day over the last ``days`` days, by status, newest first."""
        return await self._jobs.get_vacuum_stats(days)

    async def get_total_vacuum_stats(self) -> dict[str, Any]:
        """Rows vacuum deleted in all, by status, and the days it kept statistics for."""
        return await self._jobs.get_total_vacuum_stats()

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

    # ------------------------------------------------------------------ queues

    async def get_queues(self) -> list[QueueInfo]:
        """Every queue with a row or with unfinished jobs: its limits in force, the code's,
        whether it is paused, and its running (live leases), pending and due jobs."""
        await self._ready()
        return await list_queues(self.db_pool)

    async def set_queue_limits(self, name: str, **changes: Unpack[QueueLimitChanges]) -> QueueLimits:
        """Change a queue's limits for the whole cluster; they win over the code's declaration,
        across restarts, until :meth:`reset_queue`. A limit not given is kept; ``None`` clears
        it. Creates the queue's row if there is none. Binds every claim that begins after it
        returns. Raises ``ConfigurationError`` on a bad value, before writing anything::

            await scheduler.set_queue_limits("partner_api", concurrency=5, rate="100/1m")
            await scheduler.set_queue_limits("partner_api", rate=None)  # no rate limit
        """
        await self._ready()
        return await set_limits(self.db_pool, name, changes)

    async def reset_queue(self, name: str) -> bool:
        """Go back to the limits the code declares (none if no code declares the queue); a pause
        stays. False if the queue has no row."""
        await self._ready()
        return await reset_limits(self.db_pool, name)

    async def pause_queue(self, name: str) -> bool:
        """Start nothing more from the queue, on any pod, until :meth:`resume_queue`; running
        jobs finish. Windows of its periodic jobs wait like other jobs (their misfire grace
        still applies). False if the queue has no row (declare it or set a limit first)."""
        await self._ready()
        return await set_paused(self.db_pool, name, True)

    async def resume_queue(self, name: str) -> bool:
        """Let the queue's jobs start again. False if the queue has no row."""
        await self._ready()
        return await set_paused(self.db_pool, name, False)
