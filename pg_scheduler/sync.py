"""A blocking producer for synchronous code: Django views, Flask handlers, scripts, notebooks.

:class:`SyncScheduler` schedules and reads jobs from code that has no event loop. It owns one
private event loop, run by a daemon thread it starts, and an asyncpg pool on that loop; each
method hands a coroutine of a :class:`~pg_scheduler.scheduler.Scheduler` that is never started
to that loop and blocks the calling thread until it is done. It runs no jobs: they run in
``pg-scheduler run`` pods (or any started Scheduler) on the same database.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import asyncpg

from .scheduler import Scheduler
from .shared.errors import SchedulerStateError
from .shared.models import UNSET, ConflictResolution, Job, JobPriority, _Unset

__all__ = ["SyncScheduler"]

T = TypeVar("T")


class SyncScheduler:
    """Schedule jobs and read them from synchronous code, on the database at ``dsn``.

    Rules:

    * **Its own loop.** The pool and every coroutine live on a private event loop in a daemon
      thread named ``pg-scheduler-sync``, started by the constructor; no call touches the
      caller's event loop, if it has one (async code should use :class:`Scheduler` instead:
      a blocking call would stall its loop).
    * **Thread-safe.** Any number of threads may call one instance at once; each call blocks
      its own thread only. At most ``max_size`` calls use the database at a time, the others
      wait for a connection. One instance per process is enough.
    * **Errors** are those of :class:`Scheduler`, of the same types (``InvalidJobError``,
      ``JobAlreadyExistsError``, ``JobNotFoundError``, ``TimeoutError``...).
    * **No transactions of yours.** It writes through its own pool, so a job scheduled here is
      committed at once, whatever the caller's own database transaction does. To tie a job to
      a transaction, schedule it after the commit (Django: ``transaction.on_commit``) or use
      ``Scheduler.schedule(..., connection=conn)`` from async code.
    * **Close it.** :meth:`close` (or leaving a ``with`` block) closes the pool and stops the
      thread; it may be called more than once, and later calls of the other methods raise
      :class:`~pg_scheduler.SchedulerStateError`. A process that exits without closing only
      drops its connections.
    * **Fork before, not after.** A thread does not survive ``fork()``: create it in the
      process that uses it (lazily, on first use, under a pre-forking server such as gunicorn).

    :param dsn: where the jobs table is (``postgresql://...``); the schema is created or
        upgraded on first use, as by any Scheduler.
    :param min_size: connections the pool opens at once (asyncpg's ``min_size``).
    :param max_size: connections it may hold at most: the calls that run at the same time.
    :param connect_timeout: seconds the constructor waits for the first connections before
        it raises (and stops its thread).
    :param close_timeout: seconds :meth:`close` waits for calls in flight to release their
        connections before it terminates them.
    :param scheduler_options: keyword arguments of :class:`Scheduler` (``misfire_grace_time``,
        for instance: the default of the jobs scheduled here).
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout: float = 30.0,
        close_timeout: float = 10.0,
        **scheduler_options: Any,
    ) -> None:
        self._close_timeout = close_timeout
        self._lock = threading.Lock()
        self._closed = False
        # Touched on the loop's thread only: the calls running there, and whether close() cut
        # them off.
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._cut_off = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="pg-scheduler-sync", daemon=True)
        self._thread.start()

        async def open_pool() -> tuple[asyncpg.Pool, Scheduler]:
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
            try:
                return pool, Scheduler(pool, **scheduler_options)
            except BaseException:
                await pool.close()
                raise

        opening = asyncio.run_coroutine_threadsafe(asyncio.wait_for(open_pool(), connect_timeout), self._loop)
        try:
            self._pool, self._scheduler = opening.result()
        except BaseException:
            self._stop_loop()
            raise

    # ------------------------------------------------------------------ the API

    def schedule(
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
        queue: str | None = None,
        concurrency_key: str | None = None,
    ) -> str:
        """:meth:`Scheduler.schedule`, blocking: writes the job, committed, and returns its id.

        ``func`` is a task (``@job``, ``async def`` or plain ``def``) or a task's name; the
        process that runs the job must import the module that registers it under that name.
        """
        return self._call(
            lambda: self._scheduler.schedule(
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
            )
        )

    def get_job(self, job_id: str) -> Job | None:
        """:meth:`Scheduler.get_job`, blocking: the job as stored now, or None."""
        return self._call(lambda: self._scheduler.get_job(job_id))

    def wait_for(self, job_id: str, *, timeout: float | None = None) -> Job:
        """:meth:`Scheduler.wait_for`, blocking: the job once it has finished, with its result.

        Opens a database session of its own while it waits (woken by the job's notification),
        not one of the pool's.

        :raises JobNotFoundError: if no job has this id.
        :raises TimeoutError: if it has not finished after ``timeout`` seconds.
        """
        return self._call(lambda: self._scheduler.wait_for(job_id, timeout=timeout))

    def close(self) -> None:
        """Close the pool and stop the loop's thread. Idempotent. The first call waits up to
        ``close_timeout`` seconds for calls in flight (a ``wait_for`` without a timeout, say),
        then terminates their connections: those calls raise ``SchedulerStateError``."""
        if threading.current_thread() is self._thread:
            raise SchedulerStateError("a SyncScheduler cannot be closed from its own event loop")
        with self._lock:
            if self._closed:
                return
            self._closed = True
        closing = asyncio.run_coroutine_threadsafe(self._close_pool(), self._loop)
        try:
            closing.result()
        finally:
            self._stop_loop()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ the loop

    def _call(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run the coroutine ``make()`` builds on the private loop; block until its result.

        ``make`` is called on the loop's thread, so the coroutine is created where it runs.
        The check and the submission are one step under the lock: a call that passed the check
        is on the loop before ``close`` can stop it, and ``close`` then waits for it.
        """
        if threading.current_thread() is self._thread:
            raise SchedulerStateError("a SyncScheduler cannot be called from its own event loop")

        async def run() -> T:
            task = asyncio.current_task()
            assert task is not None
            self._in_flight.add(task)
            try:
                return await make()
            except BaseException as exc:
                if self._cut_off:
                    # close() cancelled it; what the cancelled call raised on its way out (an
                    # asyncpg error on a released connection, say) says nothing useful.
                    raise SchedulerStateError("this SyncScheduler was closed while the call ran") from exc
                raise
            finally:
                self._in_flight.discard(task)

        with self._lock:
            if self._closed:
                raise SchedulerStateError("this SyncScheduler is closed")
            future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            # Only close() cancels what runs on the loop: it stops the calls still in flight
            # after close_timeout.
            raise SchedulerStateError("this SyncScheduler was closed while the call ran") from None
        except BaseException:
            # The caller was interrupted (KeyboardInterrupt in a wait_for, say): stop its call
            # on the loop too, so that it gives its connection back now, not at close().
            future.cancel()
            raise

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _close_pool(self) -> None:
        """Let the calls in flight finish for ``close_timeout`` seconds, cancel the rest, then
        close the pool. Every call submitted before ``close`` set ``_closed`` has started by
        now: the loop runs callbacks in the order they were submitted."""
        in_flight = set(self._in_flight)
        if in_flight:
            _, late = await asyncio.wait(in_flight, timeout=self._close_timeout)
            if late:
                self._cut_off = True
                for task in late:
                    task.cancel()
                await asyncio.wait(late)  # their cleanup gives their connections back
        try:
            await asyncio.wait_for(self._pool.close(), self._close_timeout)
        except TimeoutError:
            self._pool.terminate()

    def _stop_loop(self) -> None:
        """Cancel what is left on the loop and let it finish, on the loop's own thread (the
        caller's thread may run a loop of its own), then stop the loop, wait for its thread,
        and close it."""

        async def wind_down() -> None:
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await asyncio.get_running_loop().shutdown_asyncgens()

        if self._loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(wind_down(), self._loop).result(self._close_timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
