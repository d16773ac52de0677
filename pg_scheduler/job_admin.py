"""Acts by hand on jobs already written: cancel, read, one vacuum or rescue pass, vacuum statistics.

The :class:`~pg_scheduler.scheduler.Scheduler` delegates its ``cancel_job``, ``get_job``,
``run_vacuum``, ``recover_orphaned_jobs`` and vacuum statistics here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from .shared import queries
from .shared.config import SchedulerConfig
from .shared.db import connect_params_from_pool
from .shared.errors import JobNotFoundError
from .shared.models import Job
from .supervisor.fence import Unfenced
from .supervisor.maintenance.orphan_rescuer import OrphanRescuer
from .supervisor.maintenance.vacuum import Vacuum
from .worker.worker import Worker

WAIT_RECHECK_SECONDS = 5.0
"""How often ``wait_for`` reads its job without a notification."""


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
