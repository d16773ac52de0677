"""Who is in the cluster: the leader and the registered processes, as the CLI's ``status`` and
the dashboard's overview both show them.

The process registry (``scheduler_workers``) holds supervisors, their worker processes and
in-process Schedulers, each with a heartbeat. The leader is the one the ``scheduler_leader`` row
names, but only while some session holds the leader lock: the row outlives its leader.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from . import queries
from .locks import LEADER_LOCK

SUPERVISOR = "supervisor"
WORKER = "worker"


@dataclass(frozen=True)
class LeaderInfo:
    """The process holding leadership, as the leader row records it (``None`` fields when vacant)."""

    id: str | None
    host: str | None
    pid: int | None
    epoch: int
    elected_at: datetime | None
    kind: str | None
    """The registry kind of the leading process (``supervisor`` or ``scheduler``), if it is
    registered."""


@dataclass(frozen=True)
class ProcessInfo:
    """One registered supervisor, worker or scheduler process, with the tasks it can run."""

    id: str
    kind: str
    host: str
    pid: int
    tasks: list[str]
    supervisor_id: str | None
    started_at: datetime
    heartbeat_age_seconds: float
    is_leader: bool
    queues: list[str] | None = None
    """The queues it claims from; None: every queue."""

    def claims(self, queue: str) -> bool:
        """Whether this process claims jobs of ``queue``."""
        return self.queues is None or queue in self.queues

    def to_dict(self) -> dict[str, Any]:
        """The ``status --json`` entry of a worker process or an in-process Scheduler."""
        return {
            "id": self.id,
            "pid": self.pid,
            "host": self.host,
            "supervisor_id": self.supervisor_id,
            "tasks": self.tasks,
            "queues": self.queues,
            "started_at": self.started_at,
            "heartbeat_age_seconds": self.heartbeat_age_seconds,
        }


@dataclass(frozen=True)
class Membership:
    """The leader (None when no session holds the leader lock), the live processes, and how
    many registered processes are stale (no heartbeat for longer than the threshold)."""

    leader: LeaderInfo | None
    processes: list[ProcessInfo]
    stale: int


async def read_membership(conn: asyncpg.Connection, *, stale_seconds: float) -> Membership:
    """The leader and the live processes, read on ``conn`` (inside the caller's transaction, if
    any, so that they come from its snapshot). A process whose heartbeat is older than
    ``stale_seconds`` is counted as stale, not listed. Two small tables: cheap at any job count."""
    leader_row = await conn.fetchrow(queries.LEADER_GET, *LEADER_LOCK)
    process_rows = await conn.fetch(queries.WORKER_LIST)
    live = [r for r in process_rows if r["heartbeat_age_seconds"] <= stale_seconds]
    leader: LeaderInfo | None = None
    if leader_row is not None and leader_row["lock_held"]:
        kinds = {r["worker_id"]: r["kind"] for r in process_rows}
        leader = LeaderInfo(
            id=leader_row["leader_id"],
            host=leader_row["host"],
            pid=leader_row["pid"],
            epoch=leader_row["epoch"],
            elected_at=leader_row["elected_at"],
            kind=kinds.get(leader_row["leader_id"]),
        )
    processes = [
        ProcessInfo(
            id=r["worker_id"],
            kind=r["kind"],
            host=r["host"],
            pid=r["pid"],
            tasks=list(r["tasks"] or []),
            supervisor_id=r["supervisor_id"],
            started_at=r["started_at"],
            heartbeat_age_seconds=round(r["heartbeat_age_seconds"], 3),
            is_leader=leader is not None and r["worker_id"] == leader.id,
            queues=None if r["queues"] is None else list(r["queues"]),
        )
        for r in live
    ]
    return Membership(leader=leader, processes=processes, stale=len(process_rows) - len(live))
