"""What ``pg-scheduler status`` and ``jobs list/show`` read: plain values, no side effects.

The leader and the process registry are read by ``shared.cluster`` (the dashboard shows them
too); its names are re-exported here for the programs that imported them from this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from ..shared import queries
from ..shared.cluster import SUPERVISOR, WORKER, LeaderInfo, ProcessInfo, read_membership
from ..shared.models import JobState
from ..shared.queue_limits import list_queues
from ..shared.queues import QueueLimits

__all__ = ["SUPERVISOR", "WORKER", "LeaderInfo", "ProcessInfo", "ClusterStatus", "cluster_status"]
__all__ += ["UnrunnableTask", "QueueCounts", "job_record", "list_jobs", "get_job_record"]


@dataclass(frozen=True)
class UnrunnableTask:
    """Pending jobs of one task and queue that no live process can claim: none registered the
    task, or none of those claims the queue."""

    task: str
    pending: int
    oldest_execution_time: datetime
    queue: str = "default"


@dataclass(frozen=True)
class QueueCounts:
    """One queue's state, limits and unfinished jobs, and how many live processes claim from
    it."""

    queue: str
    pending: int
    due: int
    running: int
    """Running with a live lease: what counts against the queue's limits."""
    claimed_by: int
    """Live worker processes and in-process Schedulers that claim jobs of this queue."""
    state: str = "open"
    """``open``, ``limited`` or ``paused``."""
    limits: QueueLimits = field(default_factory=QueueLimits)


@dataclass(frozen=True)
class ClusterStatus:
    """What ``pg-scheduler status`` reports: leader, live processes, job counts, lag, unrun tasks."""

    checked_at: datetime
    stale_seconds: float
    leader: LeaderInfo | None
    supervisors: list[ProcessInfo]
    workers: list[ProcessInfo]
    schedulers: list[ProcessInfo]
    """In-process Schedulers (and any process of a kind this version does not know)."""
    stale_processes: int
    jobs: dict[str, int]
    oldest_due_lag_seconds: float | None
    unrunnable_tasks: list[UnrunnableTask]
    queues: list[QueueCounts] = field(default_factory=list)
    """Every queue with a row (limits, a pause) or with unfinished jobs."""
    unaware_of_limits: list[str] = field(default_factory=list)
    """Live claiming processes of a version before queue limits, while a queue is limited: they
    would claim it past its limits."""

    def to_dict(self) -> dict[str, Any]:
        """The ``status --json`` object (datetimes left as they are for the caller to encode)."""
        leader = None
        if self.leader is not None:
            leader = {
                "id": self.leader.id,
                "pid": self.leader.pid,
                "host": self.leader.host,
                "epoch": self.leader.epoch,
                "elected_at": self.leader.elected_at,
                "kind": self.leader.kind,
            }
        return {
            "checked_at": self.checked_at,
            "stale_seconds": self.stale_seconds,
            "leader": leader,
            "supervisors": [
                {
                    "id": p.id,
                    "pid": p.pid,
                    "host": p.host,
                    "is_leader": p.is_leader,
                    "started_at": p.started_at,
                    "heartbeat_age_seconds": p.heartbeat_age_seconds,
                    "workers": sum(1 for w in self.workers if w.supervisor_id == p.id),
                }
                for p in self.supervisors
            ],
            "workers": [p.to_dict() for p in self.workers],
            "schedulers": [{**p.to_dict(), "is_leader": p.is_leader} for p in self.schedulers],
            "stale_processes": self.stale_processes,
            "jobs": dict(self.jobs),
            "oldest_due_lag_seconds": self.oldest_due_lag_seconds,
            "unrunnable_tasks": [
                {
                    "task": t.task,
                    "queue": t.queue,
                    "pending": t.pending,
                    "oldest_execution_time": t.oldest_execution_time,
                }
                for t in self.unrunnable_tasks
            ],
            "queues": [
                {
                    "queue": q.queue,
                    "state": q.state,
                    "concurrency": q.limits.concurrency,
                    "key_concurrency": q.limits.key_concurrency,
                    "rate": None if q.limits.rate is None else str(q.limits.rate),
                    "pending": q.pending,
                    "due": q.due,
                    "running": q.running,
                    "claimed_by": q.claimed_by,
                }
                for q in self.queues
            ],
            "unaware_of_limits": list(self.unaware_of_limits),
        }


async def cluster_status(conn: asyncpg.Connection, *, stale_seconds: float) -> ClusterStatus:
    """Leader, live processes, job counts, lag and unrunnable tasks, from one snapshot. A process
    whose heartbeat is older than ``stale_seconds`` is counted as stale, not listed."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        checked_at = await conn.fetchval(queries.DB_GET_NOW)
        membership = await read_membership(conn, stale_seconds=stale_seconds)
        count_rows = await conn.fetch(queries.JOB_COUNT_BY_STATUS)
        lag = await conn.fetchval(queries.JOB_GET_OLDEST_DUE_LAG)
        unrunnable_rows = await conn.fetch(queries.JOB_COUNT_UNRUNNABLE, float(stale_seconds))
        queue_infos = await list_queues(conn)
        unaware = await conn.fetch(queries.QUEUE_LIST_UNAWARE_WORKERS, float(stale_seconds))

    leader, processes = membership.leader, membership.processes
    claimers = [p for p in processes if p.kind != SUPERVISOR]
    jobs = {state.value: 0 for state in JobState}
    for r in count_rows:
        jobs[r["status"] if r["status"] is not None else "null"] = r["n"]
    return ClusterStatus(
        checked_at=checked_at,
        stale_seconds=stale_seconds,
        leader=leader,
        supervisors=[p for p in processes if p.kind == SUPERVISOR],
        workers=[p for p in processes if p.kind == WORKER],
        schedulers=[p for p in processes if p.kind not in (SUPERVISOR, WORKER)],
        stale_processes=membership.stale,
        jobs=jobs,
        oldest_due_lag_seconds=None if lag is None else round(lag, 3),
        unrunnable_tasks=[
            UnrunnableTask(r["task"], r["pending"], r["oldest_execution_time"], r["queue"])
            for r in unrunnable_rows
        ],
        queues=[
            QueueCounts(
                queue=q.name,
                pending=q.pending,
                due=q.due,
                running=q.running,
                claimed_by=sum(1 for p in claimers if p.claims(q.name)),
                state=q.state,
                limits=q.limits,
            )
            for q in queue_infos
        ],
        unaware_of_limits=[r["worker_id"] for r in unaware],
    )


def job_record(row: asyncpg.Record) -> dict[str, Any]:
    """Every column of a ``scheduled_jobs`` row, ``task_data`` and ``result`` decoded from
    JSON (``awaited``, a flag of Scheduler.wait_for's, left out)."""
    data = dict(row)
    data.pop("awaited", None)
    for key in ("task_data", "result"):
        if isinstance(data.get(key), str):
            data[key] = json.loads(data[key])
    return data


async def list_jobs(
    conn: asyncpg.Connection,
    *,
    states: list[str] | None = None,
    task: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Jobs, newest due time first; ``task`` matches a full task name or the part after the
    module (``send_email`` matches ``app.mail:send_email``)."""
    rows = await conn.fetch(queries.JOB_LIST, states or None, task, limit)
    return [job_record(r) for r in rows]


async def get_job_record(conn: asyncpg.Connection, job_id: str) -> dict[str, Any] | None:
    """One job's row as a JSON-ready dict, or ``None`` when no job has that id."""
    row = await conn.fetchrow(queries.JOB_GET, job_id)
    return job_record(row) if row is not None else None
