"""Heartbeats on a thread of their own: the worker's registry row, and the leases of its jobs.

Why a thread: a job that blocks the event loop (``time.sleep``, CPU work, a sync driver) must not
stop its own lease from being renewed, or the lease lapses and another replica runs the job a
second time while the first is still inside it (0.2.3's split brain). The thread has its own
event loop and its own connection, so it renews while the main loop is stuck.

Each beat:

1. touches the worker's row in ``scheduler_workers`` (re-inserting it if the leader pruned it);
2. renews the lease of every tracked job, fenced by ``(job, worker, attempt)``. A job the update
   does not return has lost its lease (cancelled, replaced, rescued after a freeze, or its lease
   ended before the renewal): the worker is told and stops it.

Between beats, a watch on the same thread stops every job whose lease was last known good more
than ``lease - stop margin`` ago, by this process's clock (which started before the claim or the
renewal was sent, so it runs ahead of the database's): a worker that cannot renew stops its jobs
before their leases end, and a partitioned worker does not run a job beside its replacement, nor
beside a job its slot of a limited queue went to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from ..shared import queries
from ..shared.db import connect_dedicated
from ..shared.metrics import metrics

log = logging.getLogger(__name__)


class Heartbeat:
    """A thread, with its own loop and connection, keeping the worker's row and job leases fresh."""

    def __init__(
        self,
        connect_args: tuple[Any, ...],
        connect_kwargs: dict[str, Any],
        *,
        worker_id: str,
        kind: str,
        supervisor_id: str | None = None,
        lease_seconds: float,
        interval_seconds: float,
        tasks: Callable[[], list[str]],
        on_lost: Callable[[list[tuple[str, int]]], None],
        queues: Sequence[str] | None = None,
    ) -> None:
        self._connect_args = connect_args
        self._connect_kwargs = connect_kwargs
        self.worker_id = worker_id
        self.kind = kind
        self.supervisor_id = supervisor_id
        self.lease_seconds = lease_seconds
        self.interval_seconds = interval_seconds
        self._tasks = tasks
        self._queues = None if queues is None else list(queues)
        self._on_lost = on_lost
        self._tracked: dict[str, tuple[int, float]] = {}  # job_id -> (attempt, last renewed)
        self._reported: set[tuple[str, int]] = set()  # told the worker they are lost
        self.stop_margin = min(0.5, lease_seconds / 8)
        """How long before its lease ends (by this process's clock) a job not renewed is stopped."""
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._sent_tasks: list[str] | None = None

    def track(self, job_id: str, attempt: int, since: float | None = None) -> None:
        """Renew ``job_id``'s lease from now on. ``since`` (``time.monotonic()``) is when its
        lease began at the earliest: when the claim was sent."""
        with self._lock:
            self._tracked[job_id] = (attempt, time.monotonic() if since is None else since)
            self._reported.discard((job_id, attempt))

    def lease_may_have_lapsed(self, job_id: str, attempt: int) -> bool:
        """Whether more than a lease has passed since this attempt's lease was last known good
        (its claim was sent, or a renewal was), so that the leader may have taken it back. A
        process paused between its claim and a job's start must not start the job then: it may
        have run elsewhere meanwhile."""
        with self._lock:
            tracked = self._tracked.get(job_id)
        return tracked is None or tracked[0] != attempt or time.monotonic() - tracked[1] > self.lease_seconds

    def untrack(self, job_id: str, attempt: int | None = None) -> None:
        """Stop renewing ``job_id``; with ``attempt``, only if that attempt is still the tracked
        one (a replaced job's old run must not drop the lease of its new run)."""
        with self._lock:
            if attempt is None or self._tracked.get(job_id, (None,))[0] == attempt:
                dropped = self._tracked.pop(job_id, None)
                if dropped is not None:
                    self._reported.discard((job_id, dropped[0]))

    def start(self) -> None:
        """Start the thread; waits up to 5 s for its event loop to run."""
        self._thread = threading.Thread(
            target=self._thread_main, name=f"pg_scheduler-heartbeat-{self.worker_id}", daemon=True
        )
        self._thread.start()
        self._started.wait(timeout=5)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait up to ``timeout`` for it."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _thread_main(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started.set()
        conn: asyncpg.Connection | None = None
        watch = asyncio.create_task(self._watch_leases())
        try:
            while not self._stop.is_set():
                try:
                    if conn is None or conn.is_closed():
                        conn = await connect_dedicated(
                            self._connect_args,
                            self._connect_kwargs,
                            application_name=f"pg_scheduler:heartbeat:{self.worker_id}",
                            timeout=max(self.interval_seconds, 2.0),
                        )
                        if self._stop.is_set():  # stopped while connecting: the worker is gone
                            break
                    await self._beat(conn)
                except Exception as exc:
                    metrics().db_errors.inc()
                    log.warning("heartbeat: %s: beat failed: %r", self.worker_id, exc)
                    if conn is not None:
                        conn.terminate()
                        conn = None
                    self._report_stale()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval_seconds):
                        await self._stop.wait()
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            if conn is not None and not conn.is_closed():
                conn.terminate()

    async def _watch_leases(self) -> None:
        """Stop the jobs whose lease may end before a renewal lands (see the module's doc)."""
        assert self._stop is not None
        while not self._stop.is_set():
            now = time.monotonic()
            ending = self.lease_seconds - self.stop_margin
            with self._lock:
                deadlines = [renewed + ending for _, renewed in self._tracked.values()]
            self._report_older_than(ending)
            wait = min([self.interval_seconds, *(d - now for d in deadlines if d > now)])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.01)):
                    await self._stop.wait()

    async def _beat(self, conn: asyncpg.Connection) -> None:
        timeout = max(self.interval_seconds, 2.0)
        tasks = self._tasks()
        status = await conn.execute(queries.WORKER_HEARTBEAT, self.worker_id, timeout=timeout)
        if status.endswith(" 0") or tasks != self._sent_tasks:
            if status.endswith(" 0"):
                log.warning("heartbeat: %s was pruned from the registry; registering again", self.worker_id)
            await conn.execute(
                queries.WORKER_REGISTER,
                self.worker_id,
                self.kind,
                socket.gethostname(),
                os.getpid(),
                tasks,
                self.supervisor_id,
                self._queues,
                timeout=timeout,
            )
            self._sent_tasks = tasks
        with self._lock:
            snapshot = dict(self._tracked)
        if snapshot:
            ids = list(snapshot)
            attempts = [snapshot[i][0] for i in ids]
            sent = time.monotonic()  # the renewed leases run from no earlier than this
            rows = await conn.fetch(
                queries.JOB_RENEW_LEASES,
                self.worker_id,
                self.lease_seconds,
                ids,
                attempts,
                timeout=timeout,
            )
            renewed = {r["job_id"] for r in rows}
            lost: list[tuple[str, int]] = []
            with self._lock:
                for job_id, (attempt, _) in snapshot.items():
                    if self._tracked.get(job_id, (None,))[0] != attempt:
                        continue  # finished meanwhile
                    if job_id in renewed:
                        self._tracked[job_id] = (attempt, sent)
                    elif (job_id, attempt) not in self._reported:
                        lost.append((job_id, attempt))
                self._reported.update(lost)
            if lost:
                self._on_lost(lost)

    def _report_stale(self) -> None:
        self._report_older_than(self.lease_seconds)

    def _report_older_than(self, seconds: float) -> None:
        """Tell the worker (once) of the tracked jobs last known good more than ``seconds`` ago."""
        now = time.monotonic()
        with self._lock:
            stale = [
                (job_id, attempt)
                for job_id, (attempt, renewed) in self._tracked.items()
                if now - renewed > seconds and (job_id, attempt) not in self._reported
            ]
            self._reported.update(stale)
        if stale:
            self._on_lost(stale)
