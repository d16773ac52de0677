"""Running one claimed job, and recording how it ended.

Every write about the job is fenced by ``(job_id, worker_id, attempt)`` and ``status =
'running'``: if the lease moved on (cancelled, replaced, rescued after a freeze), the write
matches nothing and the outcome is ``lease_lost``; the other run's result stands.

Writes run under ``asyncio.shield`` so that a shutdown arriving in the middle cannot leave a
finished job looking unfinished.

A plain (``def``) task runs in a thread of the executor's pool, one thread per slot, with the
job's context (``current_job()``) copied in; the event loop keeps renewing its lease meanwhile.
A thread cannot be stopped from outside, so the attempt ends when its function returns: a
cancel or a lost lease marks the attempt (the row is cancelled, or its outcome fenced out) and
the job's timeout fails it, but only once the function has returned, and until then the job
keeps its slot, its lease and its exclusive lock (``use_advisory_lock``, overlap skip/queue):
a worker never runs more functions than it has slots, and a retry or the next window never runs
beside the function still running. At shutdown a running function is waited for and its own
outcome written (the supervisor's kill is the bound: its lease then runs out as for any killed
worker). What a function returns after its attempt was cancelled, or timed out, is dropped.

What a task returns is stored with its completion (``result``), as JSON of at most
``result_max_bytes``; anything else fails the attempt with the reason.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import enum
import functools
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import asyncpg

from ..shared import queries
from ..shared.config import RESULT_MAX_BYTES_DEFAULT
from ..shared.context import JobContext, enter_job, leave_job
from ..shared.errors import SerializationError
from ..shared.locks import exclusive_job_lock
from ..shared.serialization import encode_result
from ..shared.tasks import Task, TaskRegistry
from .claimer import ClaimedJob
from .completer import Completer

log = logging.getLogger(__name__)

T = TypeVar("T")

EXCLUSIVE_RETRY_SECONDS = 1.0
EXCLUSIVE_RETRY_MAX_SECONDS = 60.0
WRITE_RETRY_DELAYS_SECONDS = (0.2, 0.5, 1.0)
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
)
ERROR_MESSAGE_LIMIT = 4000


class Outcome(enum.StrEnum):
    """How a claimed job's run ended: the ``outcome`` label of ``jobs_finished``."""

    COMPLETED = "completed"
    FAILED = "failed"
    RETRIED = "retried"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    LEASE_LOST = "lease_lost"
    DEFERRED = "deferred"
    SKIPPED = "skipped"


class StopReason(enum.StrEnum):
    """Why the worker cancelled a running job."""

    CANCELLED = "cancelled"
    LEASE_LOST = "lease_lost"
    SHUTDOWN = "shutdown"


class Executor:
    """Runs a worker's claimed jobs and writes their outcomes, fenced by worker and attempt."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        registry: TaskRegistry,
        *,
        worker_id: str,
        retry_delay_seconds: float,
        retry_max_delay_seconds: float,
        retry_jitter: bool,
        completer: Completer,
        threads: int = 1,
        result_max_bytes: int = RESULT_MAX_BYTES_DEFAULT,
    ) -> None:
        """``threads``: the worker's slots, the most plain functions that can run at once."""
        self._pool = pool
        self._registry = registry
        self._completer = completer
        self.worker_id = worker_id
        self.retry_delay_seconds = retry_delay_seconds
        self.retry_max_delay_seconds = retry_max_delay_seconds
        self.retry_jitter = retry_jitter
        self.result_max_bytes = result_max_bytes
        self._thread_count = threads
        self._thread_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._threads: dict[tuple[str, int], concurrent.futures.Future[Any]] = {}

    def close(self) -> None:
        """Let the pool's threads end once their functions return (no wait here)."""
        if self._thread_pool is not None:
            self._thread_pool.shutdown(wait=False, cancel_futures=True)

    async def run(
        self,
        job: ClaimedJob,
        stop_reason: Callable[[], StopReason | None],
        finishing: Callable[[], None] = lambda: None,
    ) -> Outcome:
        """Run the job and record its outcome. ``finishing()`` is called once the task itself is
        over, before the outcome is written: from then on the caller must not cancel this run
        (a cancel landing after the write committed would lose the outcome it just wrote; the
        write is fenced, so a lease lost meanwhile is caught there)."""
        try:
            return await self._run(job, stop_reason, finishing)
        finally:
            self._threads.pop((job.job_id, job.attempt), None)

    async def _run(
        self,
        job: ClaimedJob,
        stop_reason: Callable[[], StopReason | None],
        finishing: Callable[[], None],
    ) -> Outcome:
        task = self._registry.find(job.job_name)
        if task is None:  # unregistered after the claim: give it back for another worker
            await self._release(job, "task no longer registered in this process", 0.0)
            return Outcome.DEFERRED
        acquired = True
        value: Any = None
        try:
            if job.one_at_a_time:
                async with self._exclusive(job) as acquired:
                    if acquired:
                        value = await self._call(task, job, stop_reason, finishing)
            else:
                value = await self._call(task, job, stop_reason, finishing)
        except asyncio.CancelledError:
            reason = stop_reason()
            if reason is StopReason.CANCELLED:
                finishing()  # only this path writes something; shutdown hands the job back
                log.info("executor: %s cancelled while running", job.job_id)
                await self._settle_overlap(job)
                await self._wake_held_back(job)
                return Outcome.CANCELLED
            if reason is StopReason.LEASE_LOST:
                log.warning("executor: %s stopped: its lease was lost (attempt %s)", job.job_id, job.attempt)
                return Outcome.LEASE_LOST
            raise
        except _TimedOut:
            finishing()
            return await self._fail(job, f"timed out after {job.timeout_seconds} s")
        except Exception as exc:
            finishing()
            return await self._fail(job, _describe(exc))
        finishing()
        if not acquired:
            # Written after the lock's pooled connection went back: holding it while waiting
            # for a second one could exhaust a small pool.
            if job.overlap == "skip" and not job.use_advisory_lock:
                return await self._skip(job)
            # Another run holds the lock: look again later, backing off so that a long
            # exclusive run does not make its next window spin through claims.
            delay = min(EXCLUSIVE_RETRY_SECONDS * 2 ** min(job.attempt - 1, 6), EXCLUSIVE_RETRY_MAX_SECONDS)
            await self._release(job, "exclusive lock busy", delay)
            return Outcome.DEFERRED
        return await self._complete(job, value)

    async def _call(
        self,
        task: Task,
        job: ClaimedJob,
        stop_reason: Callable[[], StopReason | None],
        finishing: Callable[[], None],
    ) -> Any:
        """Run the task body with ``current_job()`` set, under the job's timeout if it has one
        (its expiry raises _TimedOut, told apart from a TimeoutError the body raised); return
        what it returned. A plain function's thread is waited for whatever ends the wait for
        it (the module's docstring says why); at shutdown its own outcome stands."""
        log.debug("executor: starting %s (%s) attempt %s", job.job_id, job.job_name, job.attempt)
        token = enter_job(functools.partial(self._context, job))
        try:
            if job.timeout_seconds is None:
                return await self._body(task, job)
            deadline = asyncio.timeout(job.timeout_seconds)
            try:
                async with deadline:
                    return await self._body(task, job)
            except TimeoutError:
                if deadline.expired():
                    raise _TimedOut from None
                raise
        except (asyncio.CancelledError, _TimedOut):
            thread = self._threads.get((job.job_id, job.attempt))
            if thread is None or thread.done():
                raise
            shutdown = stop_reason() is StopReason.SHUTDOWN
            if shutdown:
                finishing()  # not handed back: its outcome is written once it returns
            log.warning(
                "executor: %s (%s) %s, but a plain function cannot be stopped: waiting for it "
                "to return (its slot%s stays taken)",
                job.job_id,
                job.job_name,
                "must stop for the shutdown" if shutdown else "was stopped",
                ", lease and lock" if job.one_at_a_time else " and lease",
            )
            if not shutdown:
                with contextlib.suppress(Exception):  # the attempt already ended: drop it
                    await _outlive_cancels(thread)
                raise
            value = await _outlive_cancels(thread)
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            return value
        finally:
            leave_job(token)

    def _body(self, task: Task, job: ClaimedJob) -> Awaitable[Any]:
        """The coroutine of an ``async def`` task, or the future of a plain one in a thread."""
        if task.is_async:
            return cast(Awaitable[Any], task.func(*job.args, **job.kwargs))
        if self._thread_pool is None:
            self._thread_pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._thread_count, thread_name_prefix=f"pg_scheduler-{self.worker_id}"
            )
        call = functools.partial(task.func, *job.args, **job.kwargs)
        thread = self._thread_pool.submit(contextvars.copy_context().run, call)
        self._threads[(job.job_id, job.attempt)] = thread
        return asyncio.wrap_future(thread)

    def _context(self, job: ClaimedJob) -> JobContext:
        return JobContext(
            job_id=job.job_id,
            job_name=job.job_name,
            attempt=job.attempt,
            retry_count=job.retry_count,
            max_retries=job.max_retries,
            worker_id=self.worker_id,
            dedup_key=job.dedup_key,
        )

    @contextlib.asynccontextmanager
    async def _exclusive(self, job: ClaimedJob) -> AsyncIterator[bool]:
        """Hold a session advisory lock on a connection kept for the whole run, so that two runs
        of a ``use_advisory_lock`` (or overlap skip/queue) job never overlap anywhere (0.2.3 took
        it on a pooled connection that the pool unlocked at once)."""
        assert job.one_at_a_time and job.dedup_key is not None
        key = exclusive_job_lock(job.dedup_key)
        async with self._pool.acquire() as conn:
            acquired = bool(await conn.fetchval(queries.JOB_TRY_LOCK_EXCLUSIVE, *key))
            try:
                yield acquired
            finally:
                if acquired:
                    try:
                        await asyncio.shield(conn.execute(queries.JOB_UNLOCK_EXCLUSIVE, *key))
                    except BaseException as exc:
                        # A pool may skip the reset that would unlock it (shared/db.py):
                        # never hand back a connection that may still hold the lock.
                        conn.terminate()
                        if not isinstance(exc, Exception):
                            raise

    async def _complete(self, job: ClaimedJob, value: Any) -> Outcome:
        result = None
        if value is not None:
            try:
                result = encode_result(value)
            except SerializationError as exc:
                return await self._fail(job, str(exc))
            size = len(result.encode())
            if size > self.result_max_bytes:
                return await self._fail(
                    job,
                    f"the job's return value is {size} bytes of JSON, more than "
                    f"result_max_bytes ({self.result_max_bytes})",
                )
        held_back = job.overlap in ("skip", "queue")  # else both steps are no-ops: skip the calls
        if held_back:
            await self._settle_overlap(job)
        if result is None:
            landed = await self._write(lambda: self._completer.complete(job.job_id, job.attempt))
        else:
            try:
                landed = await self._write(lambda: self._complete_with_result(job, result))
            except asyncpg.DataError as exc:  # JSON that jsonb refuses (e.g. \u0000 in a string)
                if held_back:
                    await self._wake_held_back(job)
                return await self._fail(job, f"the job's return value cannot be stored: {exc}")
        if held_back:
            await self._wake_held_back(job)
        if not landed:
            log.warning(
                "executor: completion of %s (attempt %s) refused: lease lost", job.job_id, job.attempt
            )
            return Outcome.LEASE_LOST
        return Outcome.COMPLETED

    async def _complete_with_result(self, job: ClaimedJob, result: str) -> bool:
        rows = await self._pool.fetch(
            queries.JOB_COMPLETE_WITH_RESULT,
            self.worker_id,
            [job.job_id],
            [job.attempt],
            result,
            timeout=self._completer.timeout,
        )
        return bool(rows)

    async def _fail(self, job: ClaimedJob, message: str) -> Outcome:
        await self._settle_overlap(job)
        row = await self._write(
            lambda: queries.job_fail(
                self._pool,
                job_id=job.job_id,
                worker_id=self.worker_id,
                attempt=job.attempt,
                retry_delay_seconds=self.retry_delay_seconds,
                retry_max_delay_seconds=self.retry_max_delay_seconds,
                retry_jitter=self.retry_jitter,
                error_message=message[:ERROR_MESSAGE_LIMIT],
            )
        )
        await self._wake_held_back(job)
        if row is None:
            log.warning(
                "executor: failure of %s (attempt %s) not recorded: lease lost", job.job_id, job.attempt
            )
            return Outcome.LEASE_LOST
        if row["status"] == "pending":
            log.warning(
                "executor: %s (%s) failed attempt %s; retry %s/%s at %s: %s",
                job.job_id,
                job.job_name,
                job.attempt,
                row["retry_count"],
                job.max_retries,
                row["execution_time"].isoformat(),
                message.splitlines()[0] if message else "",
            )
            return Outcome.RETRIED
        log.error(
            "executor: %s (%s) failed after %s attempt(s): %s",
            job.job_id,
            job.job_name,
            job.attempt,
            message.splitlines()[0] if message else "",
        )
        return Outcome.FAILED

    async def _skip(self, job: ClaimedJob) -> Outcome:
        status = await self._write(
            lambda: self._pool.execute(
                queries.JOB_SKIP,
                job.job_id,
                self.worker_id,
                job.attempt,
                "skipped (overlap=skip): another run of this job was running",
            )
        )
        if status.endswith(" 0"):
            return Outcome.LEASE_LOST
        log.info(
            "executor: %s skipped: another run of %s is running (overlap=skip)", job.job_id, job.dedup_key
        )
        return Outcome.SKIPPED

    async def _settle_overlap(self, job: ClaimedJob) -> None:
        """Deal with the windows held back while this run ran (PERIODIC_SETTLE_OVERLAP), before
        its outcome is written: while the row is still ``running`` nothing can claim them. If it
        fails, they run after this one, one at a time: never lost, never overlapping, but not
        skipped."""
        if job.overlap not in ("skip", "queue") or not job.dedup_key:
            return
        try:
            row = await self._write(
                lambda: self._pool.fetchrow(
                    queries.PERIODIC_SETTLE_OVERLAP,
                    job.dedup_key,
                    job.job_id,
                )
            )
        except Exception as exc:
            log.warning("executor: could not settle the windows held back behind %s: %r", job.job_id, exc)
            return
        if row is not None and row["skipped"]:
            log.info(
                "executor: %s window(s) of %s came while %s ran: skipped (overlap=%s)",
                row["skipped"],
                job.dedup_key,
                job.job_id,
                job.overlap,
            )

    async def _wake_held_back(self, job: ClaimedJob) -> None:
        """A run of a skip/queue job ended: the window it held back (queue) is claimable now;
        idle workers only learn it from a notification."""
        if job.overlap not in ("skip", "queue"):
            return
        with contextlib.suppress(Exception):
            await self._pool.execute(queries.JOB_NOTIFY)

    async def _release(self, job: ClaimedJob, why: str, delay: float) -> None:
        await self._write(
            lambda: self._pool.execute(
                queries.JOB_RELEASE, self.worker_id, [job.job_id], [job.attempt], delay, why
            )
        )

    async def _write(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run an outcome write, shielded from cancellation, retried over a short database blip
        so that a finished job is not later taken for a crashed one. Retrying is safe: the write
        is fenced, so a retry after a commit whose reply was lost matches nothing (it is then
        reported as ``lease_lost``, while the row holds the right outcome)."""
        for delay in (*WRITE_RETRY_DELAYS_SECONDS, None):
            try:
                pending = call()
                if isinstance(pending, asyncio.Future):
                    # The completer's future: the write runs in its own task, so a cancel
                    # here cannot stop it (shield would only add a second future per job).
                    return cast(T, await pending)
                return await asyncio.shield(pending)
            except TRANSIENT_ERRORS as exc:
                if delay is None:
                    raise
                log.warning("executor: outcome write failed (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")


class _TimedOut(Exception):
    """The job's own timeout expired."""


def _describe(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc, limit=-8))
    return f"{type(exc).__name__}: {exc}\n{text}"[:ERROR_MESSAGE_LIMIT]


async def _outlive_cancels(thread: concurrent.futures.Future[Any]) -> Any:
    """What ``thread`` returns (or raises), once it has; cancels of the caller meanwhile are
    noted and raised afterwards (the thread cannot be stopped, and what holds its slot, lease
    and lock must not let them go before it ends)."""
    waiting = asyncio.wrap_future(thread)
    cancelled = False
    while not waiting.done():
        try:
            await asyncio.shield(waiting)
        except asyncio.CancelledError:
            if not waiting.done():
                cancelled = True
        except BaseException:
            break
    if cancelled:
        raise asyncio.CancelledError
    return waiting.result()
