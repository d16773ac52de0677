"""Claiming: which jobs this worker takes, and when to look again.

- Only names this process registered are ever claimed, so a replica that cannot run a task leaves
  it for one that can (0.2.3's replicas took such jobs and failed them); a worker given queues
  claims only jobs of those queues.
- ``FOR UPDATE SKIP LOCKED``, priority then due time, never more rows than free slots.
- Queues with a limit or paused are claimed by a second statement (``claim_limited``) that
  counts under each queue's lock; the plain claim leaves them alone. It is sent only while some
  queue is limited, as the replies of both statements tell.
- Idle waiting costs reads only: the next due time per task name is one index probe each, and the
  worker sleeps until then (or a notification). It writes nothing while nothing is due.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ..shared import queries
from ..shared.serialization import decode_task_data
from .busy_connection import BusyConnection
from .plans import generation

_LimitedStatement = Callable[..., Awaitable[tuple[list[asyncpg.Record], list[asyncpg.Record], bool]]]
"""queries.job_claim_limited or queries.job_complete_and_hand_over: the same parameters."""

HAND_OVER_RECHECK_SECONDS = 1.0
"""A worker whose completions were of no queue limited by a concurrency alone sends them through
the claim of limited queues (completions and claims in one round trip) for this long before it
tries the hand-over alone again."""


@dataclass(slots=True, eq=False)
class ClaimedJob:
    """One claim of one job: what the worker runs and what ``on_outcome`` hooks receive.

    Not frozen: a frozen dataclass sets each of these fields through ``object.__setattr__``,
    several times slower per claimed job; nothing changes one after its claim anyway."""

    job_id: str
    job_name: str
    args: list[Any]
    kwargs: dict[str, Any]
    attempt: int
    expired: bool
    execution_time: datetime
    timeout_seconds: float | None
    retry_count: int
    max_retries: int
    use_advisory_lock: bool
    dedup_key: str | None
    lag_seconds: float
    overlap: str | None = None
    started_at: datetime | None = None
    window_lag_seconds: float | None = None
    """Start minus window start, for a periodic window."""
    claimed_at: float | None = None
    """``time.monotonic()`` when the claim was sent: the lease began no earlier. A process paused
    after its claim (SIGSTOP, a VM pause) learns of it only from this clock."""

    @property
    def one_at_a_time(self) -> bool:
        """Runs of this job must not overlap: 0.1's use_advisory_lock, or overlap skip/queue."""
        return bool(self.dedup_key) and (self.use_advisory_lock or self.overlap in ("skip", "queue"))


class Claimer:
    """Claims due jobs of the given task names for a worker, under a ``lease_seconds`` lease."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        worker_id: str,
        lease_seconds: float,
        misfire_tolerance_seconds: float,
        queues: Sequence[str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._pool = pool
        self.queues = None if queues is None else list(queues)
        """The queues this worker claims from; None: every queue."""
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.misfire_tolerance_seconds = misfire_tolerance_seconds
        self.timeout = timeout
        self._busy = BusyConnection(pool)
        """For complete_and_claim: the completer sends one after another while busy."""
        self._hand_over_alone_after = 0.0
        """``time.monotonic()`` from which completions go first to the hand-over alone."""

    async def close(self) -> None:
        """Give back the connection that back-to-back statements keep."""
        await self._busy.close()

    async def seconds_until_due(self, names: Sequence[str]) -> tuple[float | None, bool]:
        """Seconds until the next pending job of these names outside limited queues is due
        (<= 0: due now; None: none), and whether any queue is limited."""
        if not names:
            return None, False
        return await queries.job_get_next_due(
            self._pool,
            names=list(names),
            queues=self.queues,
            plan_generation=generation(),
            timeout=self.timeout,
        )

    async def claim(self, names: Sequence[str], limit: int) -> list[ClaimedJob]:
        """Claim up to ``limit`` due jobs of ``names`` in one statement, in priority order."""
        if not names or limit <= 0:
            return []
        sent = time.monotonic()
        rows = await queries.job_claim(
            self._pool,
            names=list(names),
            limit=limit,
            worker_id=self.worker_id,
            lease_seconds=self.lease_seconds,
            misfire_tolerance_seconds=self.misfire_tolerance_seconds,
            queues=self.queues,
            plan_generation=generation(),
            timeout=self.timeout,
        )
        return _in_priority_order(rows, sent)

    async def claim_limited(self, names: Sequence[str], limit: int) -> tuple[list[ClaimedJob], bool]:
        """Claim up to ``limit`` due jobs of ``names`` from limited queues, within their limits;
        also whether any queue is limited."""
        if not names or limit <= 0:
            return [], True
        _, claimed, limited = await self.complete_and_claim_limited([], [], names, limit)
        return claimed, limited

    async def complete_and_claim_limited(
        self, job_ids: list[str], attempts: list[int], names: Sequence[str], limit: int
    ) -> tuple[set[tuple[str, int]], list[ClaimedJob], bool]:
        """Write completions (fenced as JOB_COMPLETE_MANY) and claim up to ``limit`` jobs of
        limited queues in one round trip: the completions that landed, the jobs claimed in
        priority order, and whether any queue is limited."""
        landed, claimed, limited, _ = await self._limited(
            queries.job_claim_limited, job_ids, attempts, names, limit
        )
        return landed, claimed, limited

    async def complete_and_hand_over(
        self, job_ids: list[str], attempts: list[int], names: Sequence[str], limit: int
    ) -> tuple[set[tuple[str, int]], list[ClaimedJob]]:
        """Write completions (fenced as JOB_COMPLETE_MANY) and, in the same statement, claim up
        to ``limit`` jobs that take over their slots in queues limited by a concurrency alone
        (job_complete_and_hand_over_sql, which costs PostgreSQL less than the same statement inside
        pg_scheduler_claim_limited): the completions that landed and the jobs claimed, in
        priority order. When none of the completions were of such a queue, hands_over_alone()
        is false for HAND_OVER_RECHECK_SECONDS."""
        landed, claimed, capped, sent = await self._limited(
            queries.job_complete_and_hand_over, job_ids, attempts, names, limit
        )
        if not capped:
            self._hand_over_alone_after = sent + HAND_OVER_RECHECK_SECONDS
        return landed, claimed

    async def _limited(
        self,
        statement: _LimitedStatement,
        job_ids: list[str],
        attempts: list[int],
        names: Sequence[str],
        limit: int,
    ) -> tuple[set[tuple[str, int]], list[ClaimedJob], bool, float]:
        """Send one of the two statements of limited queues (the same parameters): the
        completions that landed, the jobs claimed in priority order, the statement's marker,
        and when it was sent."""
        sent = time.monotonic()
        rows, refused, marker = await statement(
            self._busy,
            worker_id=self.worker_id,
            job_ids=job_ids,
            attempts=attempts,
            names=list(names),
            limit=limit,
            lease_seconds=self.lease_seconds,
            misfire_tolerance_seconds=self.misfire_tolerance_seconds,
            queues=self.queues,
            timeout=self.timeout,
        )
        return _landed(job_ids, attempts, refused), _in_priority_order(rows, sent), marker, sent

    def hands_over_alone(self) -> bool:
        """Whether completions for limited queues should go to complete_and_hand_over (the last
        ones there were of a queue limited by a concurrency alone, or it is time to look again)
        rather than to complete_and_claim_limited."""
        return time.monotonic() >= self._hand_over_alone_after

    async def seconds_until_limited(self, names: Sequence[str]) -> float | None:
        """Seconds until a claim of the limited queues could next find a job of ``names`` (<= 0:
        it may now), or None if they hold none."""
        if not names:
            return None
        value = await self._pool.fetchval(
            queries.JOB_GET_NEXT_LIMITED, list(names), self.queues, timeout=self.timeout
        )
        return None if value is None else float(value)

    async def complete_and_claim(
        self,
        job_ids: list[str],
        attempts: list[int],
        names: Sequence[str],
        limit: int,
    ) -> tuple[set[tuple[str, int]], list[ClaimedJob]]:
        """Write completions (fenced as JOB_COMPLETE_MANY) and claim up to ``limit`` jobs in one
        statement; returns the completions that landed and the jobs claimed, in priority
        order."""
        sent = time.monotonic()
        rows = await queries.job_complete_and_claim(
            self._busy,
            worker_id=self.worker_id,
            job_ids=job_ids,
            attempts=attempts,
            names=list(names),
            limit=limit,
            lease_seconds=self.lease_seconds,
            misfire_tolerance_seconds=self.misfire_tolerance_seconds,
            queues=self.queues,
            plan_generation=generation(),
            timeout=self.timeout,
        )
        claimed = [row for row in rows if row["claimed"]]
        refused = [row for row in rows if not row["claimed"]]  # by the fence: the lease moved on
        return _landed(job_ids, attempts, refused), _in_priority_order(claimed, sent)


def _landed(job_ids: list[str], attempts: list[int], refused: list[asyncpg.Record]) -> set[tuple[str, int]]:
    """The completions (job_id, attempt) sent, but those the fence refused."""
    return set(zip(job_ids, attempts, strict=True)) - {(row["job_id"], row["attempt"]) for row in refused}


def _in_priority_order(rows: list[asyncpg.Record], sent: float) -> list[ClaimedJob]:
    """The claimed jobs, to be started in priority order. The claim picks rows in that order,
    but returns them in the order its TID scan visits them (physical order)."""
    rows.sort(key=lambda r: (r["priority"], r["execution_time"]))
    return [_claimed(row, sent) for row in rows]


def _claimed(row: asyncpg.Record, sent: float) -> ClaimedJob:
    args, kwargs = decode_task_data(row["task_data"])
    return ClaimedJob(
        job_id=row["job_id"],
        job_name=row["job_name"],
        args=args,
        kwargs=kwargs,
        attempt=row["attempt"],
        expired=row["status"] == "expired",
        execution_time=row["execution_time"],
        timeout_seconds=row["timeout_seconds"],
        retry_count=row["retry_count"],
        max_retries=row["max_retries"],
        use_advisory_lock=row["use_advisory_lock"],
        dedup_key=row["dedup_key"],
        lag_seconds=row["lag_seconds"],
        overlap=row["overlap"],
        started_at=row["started_at"],
        window_lag_seconds=row["window_lag_seconds"],
        claimed_at=sent,
    )
