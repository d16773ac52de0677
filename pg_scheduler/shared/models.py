"""The job model: priorities, states, conflict strategies, and 0.2.3's config dataclasses.

The config dataclasses are kept field for field, so old programs construct them unchanged."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import ConfigurationError, InvalidJobError


class JobPriority(enum.Enum):
    """Smaller stored value runs first. Stored values are those of 0.2.3 (1, 3, 5, 8)."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def db_value(self) -> int:
        """The integer stored in the ``priority`` column (lower runs first)."""
        return _PRIORITY_DB[self]

    def __str__(self) -> str:
        return self.value  # "high", as in 0.2.3

    def __repr__(self) -> str:
        return f"<JobPriority.{self.name}: {self.value} (db_value={self.db_value})>"  # 0.2.3's

    @classmethod
    def from_db_value(cls, value: int) -> JobPriority:
        """The priority stored as ``value``; ``NORMAL`` for an unknown integer."""
        for priority, stored in _PRIORITY_DB.items():
            if stored == value:
                return priority
        return cls.NORMAL

    @classmethod
    def coerce(cls, value: JobPriority | str | int) -> JobPriority:
        """Accept the enum, its name or value (``"high"``), or its stored number."""
        if isinstance(value, JobPriority):
            return value
        if isinstance(value, bool):
            raise InvalidJobError(f"invalid priority {value!r}")
        if isinstance(value, int):
            for priority, stored in _PRIORITY_DB.items():
                if stored == value:
                    return priority
        if isinstance(value, str):
            for priority in cls:
                if value.lower() in (priority.value, priority.name.lower()):
                    return priority
        choices = ", ".join(p.name for p in cls)
        raise InvalidJobError(f"invalid priority {value!r}: use JobPriority.{{{choices}}}")


_PRIORITY_DB = {
    JobPriority.CRITICAL: 1,
    JobPriority.HIGH: 3,
    JobPriority.NORMAL: 5,
    JobPriority.LOW: 8,
}


class JobState(enum.StrEnum):
    """A job row's status; the last four are final."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        """True for a state a job never leaves."""
        return self not in (JobState.PENDING, JobState.RUNNING)


FINAL_STATES: tuple[JobState, ...] = tuple(s for s in JobState if s.is_final)


class ConflictResolution(enum.Enum):
    """What ``schedule`` does when a job with the given id exists."""

    RAISE = "raise"
    IGNORE = "ignore"
    REPLACE = "replace"


class _Unset(enum.Enum):
    UNSET = "unset"

    def __repr__(self) -> str:
        return "<unset>"


UNSET = _Unset.UNSET
"""Marks "not given" where ``None`` is itself a meaningful value (``misfire_grace_time=None``
means "never expires")."""


@dataclass
class JobSpec:
    """One job for :meth:`Scheduler.schedule_bulk`."""

    func: Callable[..., Any]
    execution_time: datetime
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    priority: JobPriority = JobPriority.NORMAL
    max_retries: int = 0
    job_id: str | None = None
    misfire_grace_time: int | float | None | _Unset = UNSET
    timeout_seconds: float | None = None
    queue: str | None = None
    """The job's queue; None: the task's (``@job(queue=...)``), else ``"default"``."""
    concurrency_key: str | None = None
    """A key stored with the job (e.g. ``f"customer:{id}"``), for per-key limits (docs/queues.md)."""


@dataclass
class PollingConfig:
    """Fallback polling, used only when no notification arrives.

    Workers wake on LISTEN/NOTIFY and on a timer set to the next due job, so these intervals no
    longer decide pickup latency as they did in 0.2.3; ``max_interval`` is the longest a worker
    waits between two looks at the table when notifications are lost.
    """

    min_interval: float = 0.05
    max_interval: float = 2.0
    backoff_multiplier: float = 1.5
    idle_start_interval: float = 0.5
    semaphore_full_interval: float = 1.0
    jitter: bool = True


class VacuumTrigger(enum.Enum):
    """When a vacuum policy deletes a final state's rows."""

    IMMEDIATE = "immediate"
    TIME_BASED = "time_based"
    COUNT_BASED = "count_based"
    NEVER = "never"


@dataclass
class VacuumPolicy:
    """When finished jobs of one state are deleted. Age counts from when the job finished."""

    trigger: VacuumTrigger
    days: float | None = None
    keep_count: int | None = None

    def __post_init__(self) -> None:
        # A missing days/keep_count constructs (as in 0.2.3) and deletes nothing; a negative
        # one is a mistake.
        if self.days is not None and self.days < 0:
            raise ConfigurationError("VacuumPolicy.after_days needs days >= 0")
        if self.keep_count is not None and self.keep_count < 0:
            raise ConfigurationError("VacuumPolicy.keep_last needs a count >= 0")

    @classmethod
    def immediate(cls) -> VacuumPolicy:
        """Delete rows as soon as they reach the state."""
        return cls(VacuumTrigger.IMMEDIATE)

    @classmethod
    def after_days(cls, days: float) -> VacuumPolicy:
        """Delete rows ``days`` after they reached the state."""
        return cls(VacuumTrigger.TIME_BASED, days=days)

    @classmethod
    def keep_last(cls, count: int) -> VacuumPolicy:
        """Keep only the newest ``count`` rows of the state."""
        return cls(VacuumTrigger.COUNT_BASED, keep_count=count)

    @classmethod
    def never(cls) -> VacuumPolicy:
        """Never delete rows of the state."""
        return cls(VacuumTrigger.NEVER)


VACUUM_DEFAULT_DAYS: dict[str, float] = {"completed": 1, "failed": 7, "cancelled": 3, "expired": 7}
"""Days after which each final state's rows are deleted when ``VacuumConfig`` is given no policy
for it (0.2.3's defaults, and 7 for ``expired``)."""


def _default_policy(state: str) -> Callable[[], VacuumPolicy]:
    return lambda: VacuumPolicy.after_days(VACUUM_DEFAULT_DAYS[state])


@dataclass
class VacuumConfig:
    """A policy for every final state, ``expired`` included."""

    completed: VacuumPolicy = field(default_factory=_default_policy("completed"))
    failed: VacuumPolicy = field(default_factory=_default_policy("failed"))
    cancelled: VacuumPolicy = field(default_factory=_default_policy("cancelled"))
    interval_minutes: float = 60
    track_metrics: bool = False
    expired: VacuumPolicy = field(default_factory=_default_policy("expired"))

    def __post_init__(self) -> None:
        # None means the default policy, as in 0.2.3 (VacuumPolicy.never() keeps rows forever).
        for state in VACUUM_DEFAULT_DAYS:
            if getattr(self, state) is None:
                setattr(self, state, _default_policy(state)())

    def policies(self) -> dict[JobState, VacuumPolicy]:
        """Each final state with the policy that governs its rows."""
        return {
            JobState.COMPLETED: self.completed,
            JobState.FAILED: self.failed,
            JobState.CANCELLED: self.cancelled,
            JobState.EXPIRED: self.expired,
        }


@dataclass(frozen=True)
class Job:
    """A row of ``scheduled_jobs`` as :meth:`Scheduler.get_job` returns it."""

    job_id: str
    job_name: str
    execution_time: datetime
    status: JobState
    args: list[Any]
    kwargs: dict[str, Any]
    priority: JobPriority
    retry_count: int
    max_retries: int
    attempt: int
    worker_id: str | None
    error_message: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    lease_until: datetime | None
    misfire_grace_time: float | None
    timeout_seconds: float | None
    dedup_key: str | None
    queue: str = "default"
    concurrency_key: str | None = None
    result: Any = None
    """What the job's function returned (decoded JSON; None until it completed, or if it
    returned None)."""

    @property
    def finished(self) -> bool:
        """True in a final state: completed, failed, cancelled or expired."""
        return self.status.is_final

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> Job:
        """Build a ``Job`` from a ``scheduler_jobs`` row."""
        data = row["task_data"] or {}
        return cls(
            job_id=row["job_id"],
            job_name=row["job_name"],
            execution_time=row["execution_time"],
            status=JobState(row["status"]),
            args=list(data.get("args", [])),
            kwargs=dict(data.get("kwargs", {})),
            priority=JobPriority.from_db_value(row["priority"]),
            retry_count=row["retry_count"],
            max_retries=row["max_retries"],
            attempt=row["attempt"],
            worker_id=row["worker_id"],
            error_message=row["error_message"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            lease_until=row["lease_until"],
            misfire_grace_time=row["misfire_grace_time"],
            timeout_seconds=row["timeout_seconds"],
            dedup_key=row["dedup_key"],
            queue=row["queue"],
            concurrency_key=row["concurrency_key"],
            result=_decoded(row.get("result")),
        )

    def __getitem__(self, key: str) -> Any:
        # 0.2.3 users read rows dict-style; keep ``job["status"]`` working.
        value = getattr(self, key)
        return value.value if isinstance(value, enum.Enum) else value


def _decoded(value: Any) -> Any:
    """A jsonb column as asyncpg returns it without a codec (text), decoded."""
    return json.loads(value) if isinstance(value, str) else value
