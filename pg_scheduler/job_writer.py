"""Writes job rows: checks and builds them, and inserts one (``schedule``) or many (COPY or batches).

The :class:`~pg_scheduler.scheduler.Scheduler` delegates ``schedule`` and ``schedule_bulk`` here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypedDict

import asyncpg

from .announcer import Announcer
from .ids import new_job_id, new_job_ids
from .shared import queries
from .shared.config import SchedulerConfig
from .shared.errors import InvalidJobError, JobAlreadyExistsError
from .shared.models import UNSET, ConflictResolution, JobPriority, JobSpec, _Unset
from .shared.queues import check_concurrency_key, check_queue
from .shared.serialization import encode_task_data
from .shared.tasks import TaskRegistry, ensure_task_function

log = logging.getLogger("pg_scheduler")

ANALYZE_AFTER_BULK_ROWS = 5000


async def _refresh_stale_statistics(conn: asyncpg.Connection, added: int) -> None:
    """ANALYZE the jobs table when a bulk insert outgrew what the planner believes is in it.

    With statistics from when the queue was nearly empty, PostgreSQL estimates one due row and
    claims through the wrong index, sorting every pending row at each claim, until autovacuum
    next analyzes the table.

    Run in the insert's transaction, before its commit: ANALYZE counts the transaction's own new
    rows, and the statistics become visible with the jobs, so the workers' first claims (woken by
    the commit's notification) are planned on them. A savepoint keeps the jobs if the refresh
    fails. Best effort: a role that may not ANALYZE the table leaves it to autovacuum."""
    try:
        async with conn.transaction():
            believed = await conn.fetchval(queries.JOB_GET_PLANNER_ROWS)
            if believed is not None and believed < added:
                await conn.execute(queries.JOB_ANALYZE)
    except asyncpg.PostgresError as exc:
        log.debug("schedule_bulk: could not refresh statistics: %r", exc)


_Options = tuple[str, int, int, float | None, float | None, str]
"""Checked per-job options: task name, stored priority, max_retries, misfire grace, timeout,
queue."""


class _JobValues(TypedDict):
    """One job's values, by name: the keywords of ``queries.job_insert``."""

    job_id: str | None
    job_name: str
    execution_time: datetime
    task_data: str
    priority: int
    max_retries: int
    misfire_grace_time: float | None
    timeout_seconds: float | None
    queue: str
    concurrency_key: str | None


def _columns(
    job_id: str | None,
    execution_time: datetime,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    options: _Options,
    concurrency_key: str | None,
) -> tuple[Any, ...]:
    """The row in JOB_COPY_COLUMNS' order (COPY's and job_insert_bulk's), its values already
    checked."""
    name, priority, max_retries, grace, timeout, queue = options
    return (
        job_id,
        name,
        execution_time,
        encode_task_data(args, kwargs),
        priority,
        max_retries,
        grace,
        timeout,
        queue,
        concurrency_key,
    )


def _check_job_id(job_id: str | None) -> None:
    if job_id is not None and (not isinstance(job_id, str) or not job_id):
        raise InvalidJobError(f"job_id must be a non-empty string, got {job_id!r}")


def _check_due_time(execution_time: datetime) -> None:
    if not isinstance(execution_time, datetime):
        raise InvalidJobError(f"execution_time must be a datetime, not {type(execution_time).__name__}")
    if execution_time.tzinfo is None or execution_time.utcoffset() is None:
        raise InvalidJobError(
            "execution_time is a naive datetime; pass an aware one, e.g. "
            "datetime.now(UTC) + timedelta(minutes=5)"
        )


class EnsureReady(Protocol):
    """The Scheduler's once-only schema preparation, on a connection of its own if
    ``dedicated``."""

    async def __call__(self, *, dedicated: bool = False) -> None: ...


class JobWriter:
    """Checks jobs and writes their rows, through the pool or the caller's connection."""

    def __init__(
        self,
        db_pool: asyncpg.Pool,
        registry: TaskRegistry,
        config: SchedulerConfig,
        ready: EnsureReady,
    ) -> None:
        self.db_pool = db_pool
        self.registry = registry
        self.config = config
        self._ready = ready
        self._hinted: set[str] = set()
        self._announcer = Announcer(db_pool)

    async def schedule(
        self,
        func: Callable[..., Any] | str,
        *,
        execution_time: datetime,
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None,
        priority: JobPriority | str | int,
        max_retries: int,
        job_id: str | None,
        conflict_resolution: ConflictResolution,
        misfire_grace_time: float | None | _Unset,
        timeout_seconds: float | None,
        queue: str | None,
        concurrency_key: str | None,
        connection: asyncpg.Connection | None,
    ) -> str:
        """``Scheduler.schedule``: one job, in one round trip (a wake-up it leaves for later goes
        out from the announcer's own task: announcer.py)."""
        values = self._prepare(
            func,
            execution_time,
            args,
            kwargs,
            priority,
            max_retries,
            new_job_id() if job_id is None else job_id,
            misfire_grace_time,
            timeout_seconds,
            queue,
            concurrency_key,
        )
        conflict = ConflictResolution(conflict_resolution)
        await self._ready(dedicated=connection is not None)
        replace = conflict is ConflictResolution.REPLACE
        if connection is not None:  # the caller's transaction: its commit notifies
            new_id = await queries.job_insert(connection, **values, replace=replace)
        else:
            new_id = await self._announcer.write(
                lambda later: queries.job_insert(self.db_pool, **values, replace=replace, later=later)
            )
        if new_id is not None:
            return str(new_id)
        assert job_id is not None  # only an explicit id can conflict
        if conflict is ConflictResolution.IGNORE:
            return job_id
        status = await (connection or self.db_pool).fetchval(queries.JOB_GET_STATUS, job_id)
        raise JobAlreadyExistsError(f"Job ID {job_id!r} already exists with status {status!r}")

    async def flush(self) -> None:
        """Wait for the wake-ups owed to the jobs ``schedule`` wrote (announcer.py)."""
        await self._announcer.flush()

    async def schedule_bulk(
        self,
        jobs: Sequence[JobSpec],
        *,
        conflict_resolution: ConflictResolution,
        batch_size: int,
        connection: asyncpg.Connection | None,
        per_spec: bool,
    ) -> list[str] | list[str | None]:
        """``Scheduler.schedule_bulk``: a COPY when every id is generated, else batches."""
        conflict = ConflictResolution(conflict_resolution)
        if batch_size < 1:
            raise InvalidJobError("batch_size must be >= 1")
        jobs = list(jobs)
        for spec in jobs:
            if not isinstance(spec, JobSpec):
                raise InvalidJobError(f"schedule_bulk takes JobSpec items, got {type(spec).__name__}")
        if not jobs:
            return []
        generated = sum(spec.job_id is None for spec in jobs)
        fresh = iter(new_job_ids(generated))
        ids = [next(fresh) if spec.job_id is None else spec.job_id for spec in jobs]
        if generated == len(jobs) and conflict is not ConflictResolution.REPLACE:
            # Every id is a fresh UUIDv7, so no row can conflict: a binary COPY (its insert
            # trigger still notifies the workers, once) instead of an INSERT over eight arrays.
            # The rows are prepared as COPY consumes them: asyncpg sends each 512 KB as it
            # fills, so PostgreSQL stores one part while this process prepares the next. An
            # invalid spec aborts the COPY, and the transaction below writes nothing.
            records = self._bulk_rows(jobs, ids)
            await self._ready(dedicated=connection is not None)

            async def write(conn: asyncpg.Connection) -> set[str] | None:
                await conn.copy_records_to_table(
                    queries.JOBS_TABLE,
                    records=records,
                    columns=queries.JOB_COPY_COLUMNS,
                )
                return None  # every id, each once
        else:
            rows = list(self._bulk_rows(jobs, ids))
            await self._ready(dedicated=connection is not None)
            if conflict is ConflictResolution.REPLACE:
                last = {r[0]: r for r in rows}  # the last spec of a repeated id wins
                unique_rows = list(last.values())
            else:
                unique_rows = rows
            replacing = conflict is ConflictResolution.REPLACE

            async def write(conn: asyncpg.Connection) -> set[str] | None:
                inserted: set[str] = set()
                for start in range(0, len(unique_rows), batch_size):
                    chunk = unique_rows[start : start + batch_size]
                    written = await queries.job_insert_bulk(conn, rows=chunk, replace=replacing)
                    inserted.update(r["job_id"] for r in written)
                if conflict is ConflictResolution.RAISE and len(inserted) < len(rows):
                    clashing = sorted(set(ids) - inserted) or sorted({i for i in ids if ids.count(i) > 1})
                    raise JobAlreadyExistsError(
                        f"{len(rows) - len(inserted)} job id(s) already exist or repeat; nothing "
                        f"was scheduled: {clashing[:10]}"
                    )
                return inserted

        if connection is not None:
            async with connection.transaction():
                inserted = await write(connection)
        else:
            async with self.db_pool.acquire() as conn, conn.transaction():
                inserted = await write(conn)
                added = len(ids) if inserted is None else len(inserted)
                if added >= ANALYZE_AFTER_BULK_ROWS:
                    await _refresh_stale_statistics(conn, added)
        if inserted is None:
            return ids
        if conflict is ConflictResolution.REPLACE:
            return list(ids) if per_spec else list(dict.fromkeys(ids))
        seen: set[str] = set()
        result: list[str | None] = []
        for job_id in ids:
            if job_id in inserted and job_id not in seen:
                result.append(job_id)
                seen.add(job_id)
            elif per_spec:
                result.append(None)
        return result

    def _prepare(
        self,
        func: Callable[..., Any] | str,
        execution_time: datetime,
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None,
        priority: JobPriority | str | int,
        max_retries: int,
        job_id: str | None,
        misfire_grace_time: float | None | _Unset,
        timeout_seconds: float | None,
        queue: str | None,
        concurrency_key: str | None,
    ) -> _JobValues:
        """Validate everything before anything is written; returns the job's values."""
        options = self._options(func, priority, max_retries, misfire_grace_time, timeout_seconds, queue)
        _check_job_id(job_id)
        _check_due_time(execution_time)
        key = check_concurrency_key(concurrency_key)
        name, stored_priority, stored_retries, grace, timeout, stored_queue = options
        return _JobValues(
            job_id=job_id,
            job_name=name,
            execution_time=execution_time,
            task_data=encode_task_data(args, kwargs),
            priority=stored_priority,
            max_retries=stored_retries,
            misfire_grace_time=grace,
            timeout_seconds=timeout,
            queue=stored_queue,
            concurrency_key=key,
        )

    def _bulk_rows(self, jobs: Sequence[JobSpec], ids: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        """The rows of ``jobs`` under ``ids``, with _prepare's checks.

        What specs usually share (task, priority, retries, misfire grace, timeout, queue; often
        the due time) is checked once per distinct combination, and a spec whose values are the
        very objects of the spec before it takes that spec's result without building a key,
        since the checks and the key would otherwise be most of the cost of preparing a row."""
        checked: dict[tuple[Any, ...], _Options] = {}
        options: _Options | None = None
        last: tuple[Any, ...] = ()
        last_time: datetime | None = None
        for spec, job_id in zip(jobs, ids, strict=True):
            shared = (
                spec.func,
                spec.priority,
                spec.max_retries,
                spec.misfire_grace_time,
                spec.timeout_seconds,
                spec.queue,
            )
            if options is None or not (
                shared[0] is last[0]
                and shared[1] is last[1]
                and shared[2] is last[2]
                and shared[3] is last[3]
                and shared[4] is last[4]
                and shared[5] is last[5]
            ):
                # The types are part of the key: True == 1, but max_retries=True is refused.
                key = (*shared, *map(type, shared))
                try:
                    options = checked[key]
                except KeyError:
                    options = checked[key] = self._options(*shared)
                except TypeError:  # an unhashable callable: nothing to remember it by
                    options = self._options(*shared)
                last = shared
            when = spec.execution_time
            if when is not last_time:
                _check_due_time(when)
                last_time = when
            if spec.job_id is not None:
                _check_job_id(job_id)
            concurrency_key = spec.concurrency_key
            if concurrency_key is not None:
                check_concurrency_key(concurrency_key)
            yield _columns(job_id, when, spec.args, spec.kwargs, options, concurrency_key)

    def _options(
        self,
        func: Callable[..., Any] | str,
        priority: JobPriority | str | int,
        max_retries: int,
        misfire_grace_time: float | None | _Unset,
        timeout_seconds: float | None,
        queue: str | None,
    ) -> _Options:
        """The checked per-job options: task name, stored priority, retries, grace, timeout,
        queue (the task's own, from ``@job(queue=...)``, when ``queue`` is None)."""
        name = self._task_name(func)
        prio = JobPriority.coerce(priority)
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise InvalidJobError(f"max_retries must be an int >= 0, got {max_retries!r}")
        grace = self.config.misfire_grace_time if misfire_grace_time is UNSET else misfire_grace_time
        if grace is not None and (
            isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0
        ):
            raise InvalidJobError(f"misfire_grace_time must be >= 0 or None, got {grace!r}")
        if timeout_seconds is not None and (
            isinstance(timeout_seconds, bool)
            or not isinstance(timeout_seconds, (int, float))
            or timeout_seconds <= 0
        ):
            raise InvalidJobError(f"timeout_seconds must be > 0 or None, got {timeout_seconds!r}")
        return (
            name,
            prio.db_value,
            max_retries,
            None if grace is None else float(grace),
            None if timeout_seconds is None else float(timeout_seconds),
            self.registry.queue_of(name) if queue is None else check_queue(queue),
        )

    def _task_name(self, func: Callable[..., Any] | str) -> str:
        if isinstance(func, str):
            if not func.strip():
                raise InvalidJobError("task name must not be empty")
            return func
        ensure_task_function(func)
        name = self.registry.name_of(func)
        if name is not None:
            return name
        task = self.registry.register(func, explicit=False)
        if task.name not in self._hinted:
            self._hinted.add(task.name)
            log.info(
                "registered %s on first schedule(); decorate it with @job so that every "
                "process importing its module can run it, even after a restart",
                task.name,
            )
        return task.name
