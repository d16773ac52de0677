"""The worker loop: claim due jobs into free slots, run them, stop cleanly.

Waking: a notification (new rows, a freed slot), a timer set to the next due job, or at the
latest the poll interval. Idle, it only reads: one due-time probe per poll interval.

Stopping has two phases (River's fetch/work contexts): stop claiming, let running jobs finish
until the shutdown timeout, then cancel what is left and give the leases back at once (pending
again, no retry consumed) so another replica picks the jobs up without waiting for a lease to
expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from ..shared import queries
from ..shared.config import SchedulerConfig
from ..shared.metrics import Batched, metrics, task_series
from ..shared.service import cancel_and_wait
from ..shared.tasks import TaskRegistry
from .claimer import ClaimedJob, Claimer
from .completer import Completer
from .executor import Executor, Outcome, StopReason
from .heartbeat import Heartbeat
from .listener import Listener

log = logging.getLogger(__name__)

OutcomeHook = Callable[[ClaimedJob, Outcome], None]

QUERY_TIMEOUT_SECONDS = 10.0
"""No claim-loop or shutdown query waits longer than this on a database that stopped answering."""

PLAIN_RECHECK_SECONDS = 0.25
"""A busy worker whose last claim of queues without limits found nothing skips that claim in
its refills for this long, unless jobs are announced: a cluster whose work is all in limited
queues then refills in one round trip. Each further claim that finds nothing, with no news
between, doubles the wait up to PLAIN_RECHECK_MAX_SECONDS: an empty claim reads past every due
row of the limited queues (no index holds the queue), so its cost grows with their backlog."""

PLAIN_RECHECK_MAX_SECONDS = 1.0
"""The longest a job due elsewhere waits, unannounced, while a busy worker's slots go to
limited queues (an announced job is claimed at once; an idle worker's probe sees it when due)."""

LIMITED_RECHECK_SECONDS = 1.0
"""A busy worker that heard no queue is limited still sends the claim of limited queues this often
(an idle one learns it from its due-time probe, once per poll interval),
so that a queue limited (or paused) since is served within about this long even while other
queues keep the worker's slots full. Limits bind at once regardless: the plain claim itself
leaves limited queues alone."""

CANCEL_GRACE_SECONDS = 5.0
RAN = frozenset({Outcome.COMPLETED, Outcome.FAILED, Outcome.RETRIED, Outcome.CANCELLED, Outcome.LEASE_LOST})
"""Outcomes of a run that executed the task: their duration is observed."""


@dataclass
class RunningJob:
    """A job running here: its task, why it was stopped, whether its outcome is being written."""

    job: ClaimedJob
    task: asyncio.Task[Outcome | None] | None = None
    reason: StopReason | None = None
    finishing: bool = False
    """The task is over and its outcome is being written: no longer cancellable."""


class Worker:
    """Claims due jobs into its slots and runs them; on stop, gives back what still runs."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        registry: TaskRegistry,
        connect_args: tuple[Any, ...],
        connect_kwargs: dict[str, Any],
        config: SchedulerConfig,
        *,
        worker_id: str,
        kind: str = "worker",
        supervisor_id: str | None = None,
        on_outcome: OutcomeHook | None = None,
    ) -> None:
        self._pool = pool
        self._registry = registry
        self.config = config
        self.worker_id = worker_id
        self.kind = kind
        self.supervisor_id = supervisor_id
        self._on_outcome = on_outcome
        self._claimer = Claimer(
            pool,
            worker_id=worker_id,
            lease_seconds=config.lease_seconds,
            misfire_tolerance_seconds=config.misfire_tolerance_seconds,
            queues=config.queues,
        )
        self._completer = Completer(pool, worker_id, write=self._complete_and_refill)
        self._executor = Executor(
            pool,
            registry,
            worker_id=worker_id,
            retry_delay_seconds=config.retry_delay_seconds,
            retry_max_delay_seconds=config.retry_max_delay_seconds,
            retry_jitter=config.retry_jitter,
            completer=self._completer,
            threads=config.max_concurrent_jobs,
            result_max_bytes=config.result_max_bytes,
        )
        self._heartbeat = Heartbeat(
            connect_args,
            connect_kwargs,
            worker_id=worker_id,
            kind=kind,
            supervisor_id=supervisor_id,
            lease_seconds=config.lease_seconds,
            interval_seconds=config.heartbeat_seconds,
            tasks=registry.names,
            queues=config.queues,
            on_lost=self._lost_from_thread,
        )
        self._listener = Listener(
            connect_args,
            connect_kwargs,
            worker_id=worker_id,
            on_jobs=self.wake,
            on_cancel=self.cancel_local,
        )
        self._running: dict[str, RunningJob] = {}
        self._wake = asyncio.Event()
        self._news = False
        """Woken by a notification (new jobs), not only by a freed slot."""
        self._quiet = False
        """The last turn claimed nothing, no queue is limited, and nothing was due before the
        poll interval: a turn that finds no news then sends the due-time probe alone (one
        statement, not the two claims and the probe) and claims only if the probe finds a job
        due. An idle worker costs the server one statement per poll interval."""
        self._promised = 0
        """Slots that claims in flight (the loop's and a refill's) may fill: no two claims count
        the same free slot."""
        self._limited = True
        """Whether some queue is limited, as the last claim or probe told: the claim of limited
        queues is sent only then, or after LIMITED_RECHECK_SECONDS without news of them."""
        self._limited_heard = -LIMITED_RECHECK_SECONDS
        self._limited_first = False
        """A busy worker's refills alternate: one claims limited queues first (so that a
        backlog elsewhere cannot starve them), the next claims other queues first."""
        self._plain_empty_at: float | None = None
        """When the last claim of queues without limits found nothing (None: it found jobs)."""
        self._plain_recheck = PLAIN_RECHECK_SECONDS
        """How long that claim is skipped after it found nothing (_plain_found)."""
        self._no_refill = asyncio.Event()
        self._no_refill.set()  # cleared while a refill claim is in flight
        self._hurry = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._counted = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batched = Batched()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Register this worker, start its heartbeat thread and listener, then its claim loop."""
        self._loop = asyncio.get_running_loop()
        # Registered before the first claim: the registry is what status, the periodic registrar
        # (which writes windows only for tasks a live worker registered) and the readiness probe
        # read; the rescuer itself goes by each job's lease.
        await self._pool.execute(
            queries.WORKER_REGISTER,
            self.worker_id,
            self.kind,
            socket.gethostname(),
            os.getpid(),
            self._registry.names(),
            self.supervisor_id,
            self._claimer.queues,
        )
        await asyncio.to_thread(self._heartbeat.start)
        await self._listener.start()
        self._loop_task = asyncio.create_task(self._run(), name=f"pg_scheduler:worker:{self.worker_id}")
        metrics().workers.inc()
        self._counted = True

    async def stop(self, timeout: float) -> None:
        """Stop claiming; wait up to ``timeout`` for running jobs; give the rest back.

        The claim loop is asked to stop, not cancelled: a cancel landing after the server
        committed a claim but before the reply arrived would strand rows as ``running`` that
        this worker never started (and the rescuer would then count a lost attempt).
        """
        self._stopping = True
        self._wake.set()
        loop_task, self._loop_task = self._loop_task, None
        if loop_task is not None:
            done, _ = await asyncio.wait({loop_task}, timeout=QUERY_TIMEOUT_SECONDS + 1)
            if not done:  # a query hung past its own timeout: give up on it
                await cancel_and_wait(loop_task)
        # A refill claim in flight launches its jobs when it lands: wait for it, so that the
        # drain below sees them (and lets them run) rather than finding them later.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(QUERY_TIMEOUT_SECONDS + 1):
                await self._no_refill.wait()
        try:
            await self._drain(timeout)
        finally:
            if self._counted:
                metrics().workers.dec()
                self._counted = False
            self._batched.flush()
            self._executor.close()
            await self._claimer.close()
            await self._listener.stop()
            await asyncio.to_thread(self._heartbeat.stop)
            try:
                await self._pool.execute(
                    queries.WORKER_DEREGISTER, self.worker_id, timeout=QUERY_TIMEOUT_SECONDS
                )
            except Exception as exc:
                log.warning(
                    "worker: %s could not deregister (%r); the leader prunes it when "
                    "its heartbeat goes stale",
                    self.worker_id,
                    exc,
                )

    def hurry(self) -> None:
        """Cut a running ``stop()`` short: stop waiting for jobs, give their leases back now."""
        self._hurry.set()

    async def _drain(self, timeout: float) -> None:
        running = [r.task for r in self._running.values() if r.task is not None]
        if running:
            log.info(
                "worker: %s waiting up to %.1fs for %d running job(s)", self.worker_id, timeout, len(running)
            )
            # Wait for all of them, the timeout, or hurry(), whichever comes first. Cancelling
            # the waiters leaves the jobs themselves alone.
            all_done = asyncio.ensure_future(asyncio.wait(running))
            hurried = asyncio.ensure_future(self._hurry.wait())
            try:
                await asyncio.wait([all_done, hurried], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                all_done.cancel()
                hurried.cancel()
        leftovers = [r for r in self._running.values() if r.task is not None and not r.task.done()]
        if not leftovers:
            return
        for r in leftovers:
            if r.finishing:  # its outcome is being written: let it land
                continue
            r.reason = StopReason.SHUTDOWN
            assert r.task is not None
            r.task.cancel()
        # A job that ignores cancellation must not hold shutdown hostage: its lease is handed
        # back regardless, and a late completion from it is refused by the attempt fence.
        await asyncio.wait([r.task for r in leftovers if r.task], timeout=CANCEL_GRACE_SECONDS)
        # A run whose outcome is being written is not handed back: if its write were slower than
        # the grace, the release could land first and a finished job would run again. Nor is a
        # plain function still running (it cannot be stopped): it is waited for, its lease still
        # renewed, and its own outcome written (the supervisor's kill bounds the wait).
        finishing = [r.task for r in leftovers if r.finishing and r.task is not None and not r.task.done()]
        leftovers = [r for r in leftovers if not r.finishing]
        if finishing:
            log.warning(
                "worker: %s waits for %d plain function(s) still running at shutdown",
                self.worker_id,
                len(finishing),
            )
        if not leftovers:
            if finishing:
                await asyncio.wait(finishing)
            return
        try:
            released = await self._pool.fetch(
                queries.JOB_RELEASE,
                self.worker_id,
                [r.job.job_id for r in leftovers],
                [r.job.attempt for r in leftovers],
                0.0,
                "released at shutdown",
                timeout=QUERY_TIMEOUT_SECONDS,
            )
        except Exception as exc:
            log.error(
                "worker: %s could not give back %d running job(s) at shutdown (%r); they "
                "run again when their leases expire",
                self.worker_id,
                len(leftovers),
                exc,
            )
            if finishing:
                await asyncio.wait(finishing)
            return
        log.warning(
            "worker: %s gave back %d job(s) still running at shutdown: %s",
            self.worker_id,
            len(released),
            [r["job_id"] for r in released],
        )
        if finishing:
            await asyncio.wait(finishing)

    # ------------------------------------------------------------------ signals in

    def wake(self) -> None:
        """Look for due jobs now (on a new-jobs notification)."""
        self._news = True
        self._plain_found(True)
        self._wake.set()

    def cancel_local(self, job_id: str) -> None:
        """Cancel ``job_id`` here unless its outcome is being written (on a cancel notification)."""
        self._stop_job(job_id, None, StopReason.CANCELLED)

    @property
    def listening(self) -> bool:
        """True while the LISTEN session is up (notifications wake this worker at once)."""
        return self._listener.connected.is_set()

    @property
    def running_job_ids(self) -> list[str]:
        """The ids of the jobs running in this worker now."""
        return list(self._running)

    def _lost_from_thread(self, lost: list[tuple[str, int]]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for job_id, attempt in lost:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._stop_job, job_id, attempt, StopReason.LEASE_LOST)

    def _stop_job(self, job_id: str, attempt: int | None, reason: StopReason) -> None:
        running = self._running.get(job_id)
        if running is None or running.task is None or running.task.done() or running.finishing:
            return
        if attempt is not None and running.job.attempt != attempt:
            return
        running.reason = reason
        running.task.cancel()

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        error_delay = 0.1
        while not self._stopping:
            self._wake.clear()
            delay = self.config.poll_interval_seconds
            free = self.config.max_concurrent_jobs - len(self._running) - self._promised
            if free > 0 and self._quiet and not self._news:
                quiet_delay = await self._look_when_quiet()
                if quiet_delay is not None:
                    await self._sleep(quiet_delay)
                # Either way a new turn: slots, news and a stop may have changed meanwhile (a
                # refill may have claimed), and _quiet is now False if something is due.
                continue
            # Slots freed by completions still being written are refilled by that write
            # (_complete_and_refill); the loop claims for them only once it is done, unless new
            # jobs were announced meanwhile (then at once, for the slots nobody claims for).
            if free > 0 and (self._news or not self._completer.busy):
                self._news = False
                wanted = min(free, self.config.batch_claim_limit)
                self._promised += wanted
                self._quiet = False
                try:
                    # Claim first: when woken there is usually something due, and a claim that
                    # finds nothing costs what the due-time probe would have. Only a short
                    # claim needs the probe, to know how long to sleep.
                    names = self._registry.names()
                    claimed = 0
                    if self._ask_limited():
                        # A failure here must not keep the other queues from being claimed.
                        claimed += await self._claim_or_log(self._claim_limited, names, wanted, wake=False)
                    if claimed < wanted:
                        claimed += await self._claim_plain(names, wanted - claimed)
                    if claimed == wanted:
                        continue
                    until, limited = await self._claimer.seconds_until_due(names)
                    self._heard(limited)
                    if limited:
                        later = await self._claimer.seconds_until_limited(names)
                        if later is not None:
                            until = later if until is None else min(until, later)
                    if until is not None and until <= 0:
                        if claimed:
                            continue
                        # Due rows exist but others hold them (or their queue's limits do):
                        # look again shortly.
                        delay = min(delay, 0.25)
                    elif until is not None:
                        delay = min(delay, until + 0.001)
                    self._quiet = not claimed and not limited and (until is None or until >= delay)
                    error_delay = 0.1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    metrics().db_errors.inc()
                    log.warning(
                        "worker: %s: claim failed (%r); retrying in %.1fs", self.worker_id, exc, error_delay
                    )
                    delay = min(delay, error_delay)
                    error_delay = min(error_delay * 2, self.config.poll_interval_seconds)
                finally:
                    self._promised -= wanted
            await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        """Until woken (news, a freed slot, a stop) or ``delay`` seconds have passed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    async def _look_when_quiet(self) -> float | None:
        """A quiet turn's one statement: the due-time probe. Returns how long to sleep on, or
        None to claim at the next turn (something is due, some queue is limited, or the probe
        failed, which is logged and counted)."""
        try:
            until, limited = await self._claimer.seconds_until_due(self._registry.names())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            metrics().db_errors.inc()
            log.warning("worker: %s: due-time probe failed (%r)", self.worker_id, exc)
            self._quiet = False
            return None
        self._heard(limited)
        if limited or (until is not None and until <= 0):
            self._quiet = False
            return None
        delay = self.config.poll_interval_seconds
        if until is not None and until < delay:
            # Woken by this timer, something is due: that turn claims first.
            self._quiet = False
            delay = until + 0.001
        return delay

    async def _complete_and_refill(self, job_ids: list[str], attempts: list[int]) -> set[tuple[str, int]]:
        """The completer's write. A busy worker's completions free slots: the claim that fills
        them rides in the same statement (job_complete_and_claim_sql, the claim of limited
        queues, or the hand-over alone) instead of following in a second round trip and
        commit. The slots of this batch count as free, since its completions land with the
        claim; runs whose completions wait for the next batch do not."""
        free = self.config.max_concurrent_jobs - len(self._running) + len(job_ids) - self._promised
        names = self._registry.names()
        if self._stopping or not names or free <= 0:
            return await self._completer.write_alone(job_ids, attempts)
        wanted = min(free, self.config.batch_claim_limit)
        self._promised += wanted
        self._no_refill.clear()
        jobs: list[ClaimedJob] = []
        try:
            # While some queue is limited, refills alternate which claim goes first, so that
            # neither kind of queue starves the other; the limited claim carries the completions
            # itself (or the hand-over alone, while completions are of queues limited by a
            # concurrency alone; a claim of limited queues follows it for more room, and tells
            # whether some queue is limited). A kind found empty is skipped until news of jobs
            # (or a short while).
            limited_first = self._limited and (self._limited_first or self._plain_known_empty())
            self._limited_first = not self._limited_first
            written = None
            alone = limited_first and self._claimer.hands_over_alone()
            if limited_first:
                try:
                    if alone:
                        done, handed = await self._claimer.complete_and_hand_over(
                            job_ids, attempts, names, wanted
                        )
                        written = done, handed, True
                    else:
                        written = await self._claimer.complete_and_claim_limited(
                            job_ids, attempts, names, wanted
                        )
                except Exception as exc:  # the statement rolled back: write as other queues do
                    metrics().db_errors.inc()
                    log.warning("worker: %s: claim of limited queues failed (%r)", self.worker_id, exc)
            if written is not None:
                done, limited_jobs, limited = written
                self._heard(limited)
                for job in limited_jobs:
                    self._launch(job)
                claimed = len(limited_jobs)
                # The hand-over claims only for the completions' slots: more room goes to the
                # claim of limited queues (on its own, as after a plain claim).
                if alone and claimed < wanted:
                    claimed += await self._claim_or_log(self._claim_limited, names, wanted - claimed)
                if claimed < wanted and not self._plain_known_empty():
                    await self._claim_or_log(self._claim_plain, names, wanted - claimed)
            else:
                done, jobs = await self._claimer.complete_and_claim(job_ids, attempts, names, wanted)
                self._plain_found(bool(jobs))
                claimed = len(jobs)
                if claimed < wanted and self._ask_limited():
                    for job in jobs:
                        self._launch(job)
                    jobs = []
                    await self._claim_or_log(self._claim_limited, names, wanted - claimed)
        finally:
            self._promised -= wanted
            self._no_refill.set()
        for job in jobs:
            self._launch(job)
        return done

    def _plain_found(self, found: bool) -> None:
        """Note what the claim of queues without limits found (``found`` also for news of
        jobs): after nothing it is skipped for a while, twice as long after nothing again."""
        if found:
            self._plain_empty_at = None
            self._plain_recheck = PLAIN_RECHECK_SECONDS
            return
        if self._plain_empty_at is not None:
            self._plain_recheck = min(2 * self._plain_recheck, PLAIN_RECHECK_MAX_SECONDS)
        self._plain_empty_at = time.monotonic()

    def _plain_known_empty(self) -> bool:
        """The last plain claim found nothing, lately and with no news of jobs since."""
        at = self._plain_empty_at
        return at is not None and time.monotonic() - at < self._plain_recheck

    async def _claim_or_log(
        self,
        claim: Callable[[list[str], int], Awaitable[int]],
        names: list[str],
        wanted: int,
        *,
        wake: bool = True,
    ) -> int:
        """``claim``, whose failure is logged and left to the loop, woken unless ``wake`` is
        false (the loop's own call: it tries again at its next turn). After the completions
        landed, a failure must not fail the write (it would be retried, and refused); in the
        loop, a failed claim of limited queues must not keep the others from being claimed."""
        try:
            return await claim(names, wanted)
        except Exception as exc:
            metrics().db_errors.inc()
            log.warning("worker: %s: claim failed (%r)", self.worker_id, exc)
            if wake:
                self._news = True
                self._wake.set()
            return 0

    def _ask_limited(self) -> bool:
        """Whether to send the claim of limited queues: some queue is limited, or nothing was
        heard of them for LIMITED_RECHECK_SECONDS (a queue may have become limited since)."""
        return self._limited or time.monotonic() - self._limited_heard >= LIMITED_RECHECK_SECONDS

    def _heard(self, limited: bool) -> None:
        self._limited = limited
        self._limited_heard = time.monotonic()

    async def _claim_plain(self, names: list[str], wanted: int) -> int:
        """Claim and launch up to ``wanted`` jobs of queues without limits; how many."""
        jobs = await self._claimer.claim(names, wanted)
        self._plain_found(bool(jobs))
        for job in jobs:
            self._launch(job)
        return len(jobs)

    async def _claim_limited(self, names: list[str], wanted: int) -> int:
        """Claim and launch up to ``wanted`` jobs of limited queues; how many were claimed."""
        jobs, limited = await self._claimer.claim_limited(names, wanted)
        self._heard(limited)
        for job in jobs:
            self._launch(job)
        return len(jobs)

    def _launch(self, job: ClaimedJob) -> None:
        self._quiet = False  # a job was claimed: the next turn claims first again
        if job.expired:
            log.warning(
                "worker: %s (%s) misfired and expired: %.3fs late", job.job_id, job.job_name, job.lag_seconds
            )
            self._report(job, Outcome.EXPIRED)
            return
        previous = self._running.get(job.job_id)
        if (
            previous is not None
            and previous.task is not None
            and not previous.task.done()
            and not previous.finishing
        ):
            # The row was claimed again while an older attempt runs here (REPLACE of a running
            # job): that attempt's lease is gone, so stop it; its completion would be refused.
            previous.reason = StopReason.LEASE_LOST
            previous.task.cancel()
        series = task_series(job.job_name)
        self._batched.inc(series.claimed)
        self._batched.observe(series.start_lag, max(job.lag_seconds, 0.0))
        if job.window_lag_seconds is not None and job.dedup_key:
            self._batched.observe(
                metrics().periodic_lag.labels(job.dedup_key), max(job.window_lag_seconds, 0.0)
            )
        running = RunningJob(job)
        self._running[job.job_id] = running
        self._heartbeat.track(job.job_id, job.attempt, since=job.claimed_at)
        running.task = asyncio.create_task(self._execute(running), name=f"pg_scheduler:job:{job.job_id}")

    async def _execute(self, running: RunningJob) -> Outcome | None:
        job = running.job
        outcome: Outcome | None = None
        started: float | None = None
        try:
            if self._heartbeat.lease_may_have_lapsed(job.job_id, job.attempt):
                # This process stood still (SIGSTOP, a VM pause) between the claim and now: the
                # leader may have taken the job back and run it elsewhere. Starting it now could
                # run it twice; its row goes back through the rescuer once the lease has lapsed.
                log.warning(
                    "worker: %s (attempt %s) not started: more than its %.0f-s lease has "
                    "passed since it was claimed; it may run elsewhere",
                    job.job_id,
                    job.attempt,
                    self.config.lease_seconds,
                )
                outcome = Outcome.LEASE_LOST
                return outcome
            started = time.monotonic()
            outcome = await self._executor.run(
                job, lambda: running.reason, lambda: setattr(running, "finishing", True)
            )
            return outcome
        except asyncio.CancelledError:
            raise
        except Exception:
            metrics().db_errors.inc()
            # The outcome could not be written (database unreachable): the lease will lapse and
            # the leader's rescuer re-queues the job, so nothing is lost; say so loudly.
            log.exception(
                "worker: %s: could not record the outcome of %s; it will be rescued when its lease expires",
                self.worker_id,
                job.job_id,
            )
            return None
        finally:
            # A newer attempt of this job may run here already: leave its slot and lease alone.
            self._heartbeat.untrack(job.job_id, job.attempt)
            if self._running.get(job.job_id) is running:
                del self._running[job.job_id]
            self._wake.set()
            if outcome is not None:
                if outcome in RAN and started is not None:
                    self._batched.observe(task_series(job.job_name).duration, time.monotonic() - started)
                self._report(job, outcome)

    def _report(self, job: ClaimedJob, outcome: Outcome) -> None:
        self._batched.inc(task_series(job.job_name).finished(outcome.value))
        if self._on_outcome is not None:
            try:
                self._on_outcome(job, outcome)
            except Exception:
                log.exception("worker: outcome hook failed")
