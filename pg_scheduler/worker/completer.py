"""Completions, committed in groups.

A no-op job costs one claim (shared by a batch) and one completion; written one by one, the
completions would be a round trip and a commit per job, the biggest cost of a drain. The
completer writes every completion
that queued up while the previous write was in flight in one fenced statement, as a database
does a group commit: at light load each completion goes out alone at once (no added latency),
under load a batch forms by itself. The fence is unchanged: a row completes only if it is still
``running`` under this worker and the same attempt, and each caller learns whether its own
completion landed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from ..shared import queries
from .plans import fresh

Write = Callable[[list[str], list[int]], Awaitable[set[tuple[str, int]]]]
"""Writes a batch of (job_id, attempt) completions; returns the ones that landed."""

MAX_BATCH = 500
"""Completions per statement: bounds one statement's locks and the size of its arrays."""


class Completer:
    """Queues a worker's completions; writes each group that gathers in one fenced statement."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        worker_id: str,
        *,
        timeout: float = 10.0,
        write: Write | None = None,
    ) -> None:
        self._pool = pool
        self.worker_id = worker_id
        self.timeout = timeout
        # The worker passes a write that also refills the slots the batch frees (worker.py).
        self._write = write or self.write_alone
        self._queue: list[tuple[str, int, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        """Completions are queued or being written."""
        return bool(self._queue) or (self._flusher is not None and not self._flusher.done())

    def complete(self, job_id: str, attempt: int) -> asyncio.Future[bool]:
        """Queue (job_id, attempt) for completion. The future says whether it landed (False:
        the lease was lost, nothing written). A write error reaches every caller of its batch,
        which may retry: the write is fenced, so a retry after a commit whose reply was lost
        matches nothing. A future, not a coroutine: cancelling a waiter cannot cancel the write,
        and shielding it costs no task per job."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((job_id, attempt, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=f"pg_scheduler:complete:{self.worker_id}")
        return future

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                done = await self._write([b[0] for b in batch], [b[1] for b in batch])
            except BaseException as exc:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                if not isinstance(exc, Exception):
                    raise
                continue
            for job_id, attempt, future in batch:
                if not future.done():
                    future.set_result((job_id, attempt) in done)

    async def write_alone(self, job_ids: list[str], attempts: list[int]) -> set[tuple[str, int]]:
        """Write fenced completions, no claim; returns the ``(job_id, attempt)`` that landed."""
        rows = await self._pool.fetch(
            fresh(queries.JOB_COMPLETE_MANY),
            self.worker_id,
            job_ids,
            attempts,
            timeout=self.timeout,
        )
        return {(r["job_id"], r["attempt"]) for r in rows}
