"""Acts by hand on jobs already written: cancel, retry, run now, delete (one job or every job a
filter matches), read and list, one vacuum or rescue pass, vacuum statistics.

The :class:`~pg_scheduler.scheduler.Scheduler` delegates its job actions, ``get_job``,
``list_jobs``, ``wait_for``, ``run_vacuum``, ``recover_orphaned_jobs`` and vacuum statistics
here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg

from .shared import queries
from .shared.config import SchedulerConfig
from .shared.db import connect_params_from_pool
from .shared.errors import ConfigurationError, JobNotFoundError
from .shared.job_filter import JobCursor, JobPage, check_job_filter, check_positive
from .shared.models import FINAL_STATES, Job, JobState
from .supervisor.fence import Unfenced
from .supervisor.maintenance.orphan_rescuer import OrphanRescuer
from .supervisor.maintenance.vacuum import Vacuum
from .worker.worker import Worker

WAIT_RECHECK_SECONDS = 5.0
"""How often ``wait_for`` reads its job without a notification."""

CANCELLABLE = (JobState.PENDING, JobState.RUNNING)
RETRYABLE = (JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED)

# Each listed state's keyset page, ordered by that state's own time.
_PAGES = {
    **dict.fromkeys(FINAL_STATES, queries.JOB_LIST_FINISHED_PAGE),
    JobState.PENDING: queries.JOB_LIST_PENDING_PAGE,
    JobState.RUNNING: queries.JOB_LIST_RUNNING_PAGE,
}
_PAGE_KEYS = {
    **dict.fromkeys(FINAL_STATES, "finished_at"),
    JobState.PENDING: "execution_time",
    JobState.RUNNING: "started_at",
}


class JobAdmin:
    """Cancels and reads jobs, and runs the maintenance passes outside the leader, unfenced."""

    def __init__(
        self,
        db_pool: asyncpg.Pool,
        config: SchedulerConfig,
        *,
        ready: Callable[[], Awaitable[None]],
        worker: Callable[[], Worker | None],
        connect_params: Callable[[], tuple[tuple[Any, ...], dict[str, Any]]] | None = None,
    ) -> None:
        """``worker``: this process's worker while it runs, whose copy of a cancelled job
        stops at once. ``connect_params``: the arguments of ``asyncpg.connect`` for a session
        of its own (``wait_for`` listens on one)."""
        self.db_pool = db_pool
        self.config = config
        self._ready = ready
        self._worker = worker
        self._connect_params = connect_params or (lambda: connect_params_from_pool(db_pool))

    async def cancel_job(self, job_id: str, *, reason: str | None = None) -> bool:
        """``Scheduler.cancel_job``."""
        await self._ready()
        rows = await self.db_pool.fetch(queries.JOB_CANCEL, job_id, reason)
        worker = self._worker()
        if rows and worker is not None:
            worker.cancel_local(job_id)  # no need to wait for our own notification
        return bool(rows)

    async def retry_job(self, job_id: str) -> bool:
        """``Scheduler.retry_job``."""
        await self._ready()
        return bool(await self.db_pool.fetch(queries.JOB_RETRY, job_id))

    async def run_job_now(self, job_id: str) -> bool:
        """``Scheduler.run_job_now``."""
        await self._ready()
        return bool(await self.db_pool.fetch(queries.JOB_SET_DUE_NOW, job_id))

    async def delete_job(self, job_id: str) -> bool:
        """``Scheduler.delete_job``."""
        await self._ready()
        return bool(await self.db_pool.fetch(queries.JOB_DELETE_FINISHED, job_id))

    async def cancel_jobs(self, job_filter: Mapping[str, Any], *, reason: str | None, batch_size: int) -> int:
        """``Scheduler.cancel_jobs``: JOB_CANCEL's rule and notification, batch by batch."""
        worker = self._worker()

        def cancelled(rows: list[asyncpg.Record]) -> None:
            if worker is not None:
                for row in rows:
                    worker.cancel_local(row["job_id"])

        return await self._in_batches(
            queries.JOB_CANCEL_MATCHING, job_filter, CANCELLABLE, batch_size, (reason,), cancelled
        )

    async def retry_jobs(self, job_filter: Mapping[str, Any], *, batch_size: int) -> int:
        """``Scheduler.retry_jobs``."""
        return await self._in_batches(queries.JOB_RETRY_MATCHING, job_filter, RETRYABLE, batch_size)

    async def run_jobs_now(self, job_filter: Mapping[str, Any], *, batch_size: int) -> int:
        """``Scheduler.run_jobs_now``."""
        return await self._in_batches(
            queries.JOB_SET_DUE_NOW_MATCHING, job_filter, (JobState.PENDING,), batch_size
        )

    async def delete_jobs(self, job_filter: Mapping[str, Any], *, batch_size: int) -> int:
        """``Scheduler.delete_jobs``."""
        return await self._in_batches(queries.JOB_DELETE_MATCHING, job_filter, FINAL_STATES, batch_size)

    async def _in_batches(
        self,
        sql: str,
        job_filter: Mapping[str, Any],
        states: Sequence[JobState],
        batch_size: int,
        extra: tuple[Any, ...] = (),
        after_batch: Callable[[list[asyncpg.Record]], None] | None = None,
    ) -> int:
        """Run the bulk statement ``sql`` over the jobs of ``states`` that match the filter,
        one batch of ``batch_size`` per transaction (so locks are held for one batch only),
        until a batch comes back short; the number of jobs it acted on. A filter whose state is
        not one of ``states`` matches nothing the action applies to."""
        checked = check_job_filter(job_filter)
        check_positive("batch_size", batch_size)
        if checked.state is not None:
            states = [checked.state] if checked.state in states else []
        if not states:
            return 0
        await self._ready()
        total = 0
        while True:
            async with self.db_pool.acquire() as conn, conn.transaction():
                await conn.execute(queries.DB_SET_CUSTOM_PLANS)
                rows = await conn.fetch(sql, [s.value for s in states], *checked.params, batch_size, *extra)
            total += len(rows)
            if after_batch is not None:
                after_batch(rows)
            if len(rows) < batch_size:
                return total

    async def list_jobs(
        self, job_filter: Mapping[str, Any], *, after: JobCursor | None, limit: int
    ) -> JobPage:
        """``Scheduler.list_jobs``."""
        checked = check_job_filter(job_filter)
        check_positive("limit", limit)
        if after is not None and not isinstance(after, JobCursor):
            raise ConfigurationError(f"after must be a JobCursor (a page's next), not {type(after).__name__}")
        await self._ready()
        state = checked.state
        if state is None:
            if job_filter.get("job_id") is None:
                raise ConfigurationError(
                    f"list_jobs needs a state (one of {', '.join(s.value for s in JobState)}) or a job_id"
                )
            async with self.db_pool.acquire() as conn, conn.transaction():
                await conn.execute(queries.DB_SET_CUSTOM_PLANS)
                rows = await conn.fetch(
                    queries.JOB_LIST_MATCHING, [s.value for s in JobState], *checked.params, limit
                )
            return JobPage([Job.from_record(_with_task_data(r)) for r in rows], None)
        key, after_id = (after.key, after.job_id) if after is not None else (None, None)
        async with self.db_pool.acquire() as conn, conn.transaction():
            await conn.execute(queries.DB_SET_CUSTOM_PLANS)
            rows = await conn.fetch(_PAGES[state], state.value, *checked.params, key, after_id, limit + 1)
        jobs = [Job.from_record(_with_task_data(r)) for r in rows[:limit]]
        if len(rows) <= limit:
            return JobPage(jobs, None)
        last = rows[limit - 1]
        return JobPage(jobs, JobCursor(last[_PAGE_KEYS[state]], last["job_id"]))

    async def get_job(self, job_id: str) -> Job | None:
        """``Scheduler.get_job``."""
        await self._ready()
        row = await self.db_pool.fetchrow(queries.JOB_GET, job_id)
        if row is None:
            return None
        return Job.from_record(_with_task_data(row))

    async def wait_for(self, job_id: str, *, timeout: float | None) -> Job:
        """``Scheduler.wait_for``: the job once it is in a final state.

        Woken by the notification of the job's end (migration 11's trigger, for awaited jobs),
        on a session of its own, not a pooled connection: a LISTEN must stick to its session
        (a transaction pooler would move it), and waiters must not take the connections the
        jobs they wait for need to complete. It listens from before the job is marked awaited,
        so that no end falls between the two; every wake-up, and every WAIT_RECHECK_SECONDS
        without one (a notification lost with a connection), reads the job again: a retry
        sets it pending, not final, and the wait goes on.

        :raises JobNotFoundError: if no job has this id, or it was deleted while awaited.
        :raises TimeoutError: if it is not final after ``timeout`` seconds.
        :raises ValueError: if ``timeout`` is negative or not a number.
        """
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r}")
        await self._ready()
        woken = asyncio.Event()

        def listener(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            if payload == job_id:
                woken.set()

        args, kwargs = self._connect_params()
        async with asyncio.timeout(timeout):
            conn = await asyncpg.connect(*args, **kwargs)
            try:
                await conn.add_listener(queries.JOB_FINISHED_CHANNEL, listener)
                if await conn.fetchval(queries.JOB_SET_AWAITED, job_id) is None:
                    raise JobNotFoundError(f"no job {job_id!r}")
                while True:
                    woken.clear()
                    row = await conn.fetchrow(queries.JOB_GET, job_id)
                    if row is None:
                        raise JobNotFoundError(f"job {job_id!r} was deleted while awaited")
                    job = Job.from_record(_with_task_data(row))
                    if job.finished:
                        return job
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.wait(), WAIT_RECHECK_SECONDS)
            finally:
                # A timed-out or cancelled wait still says goodbye, for at most a second.
                try:
                    await asyncio.shield(conn.close(timeout=1.0))
                except BaseException:
                    conn.terminate()

    async def run_vacuum(self) -> dict[str, int]:
        """``Scheduler.run_vacuum``."""
        await self._ready()
        if not self.config.vacuum_enabled:
            return {"completed": 0, "failed": 0, "cancelled": 0, "expired": 0}
        return await Vacuum(Unfenced(self.db_pool), self.config.vacuum_config).run_once()

    async def recover_orphaned_jobs(self) -> int:
        """``Scheduler.recover_orphaned_jobs``."""
        await self._ready()
        result = await OrphanRescuer(
            Unfenced(self.db_pool),
            interval_seconds=1.0,
            worker_stale_seconds=self.config.worker_stale_seconds,
        ).run_once()
        return len(result.requeued) + len(result.failed)

    async def get_vacuum_stats(self, days: int = 7) -> list[dict[str, Any]]:
        """``Scheduler.get_vacuum_stats``."""
        await self._ready()
        return [dict(r) for r in await self.db_pool.fetch(queries.VACUUM_LIST_STATS, days)]

    async def get_total_vacuum_stats(self) -> dict[str, Any]:
        """``Scheduler.get_total_vacuum_stats``."""
        await self._ready()
        row = await self.db_pool.fetchrow(queries.VACUUM_GET_TOTALS)
        return dict(row) if row else {}


def _with_task_data(row: asyncpg.Record) -> dict[str, Any]:
    data = dict(row)
    if isinstance(data["task_data"], str):
        data["task_data"] = json.loads(data["task_data"])
    return data
