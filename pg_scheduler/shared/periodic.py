"""``@periodic``: periodic definitions, registered at import time.

A definition is code (the task and its schedule). Its *state* (enabled, the cursor of the next
window, last run) lives in the database table ``scheduler_periodic`` and is shared by the whole
cluster; only the leader turns windows into job rows, one row per (dedup key, window), so a window
runs once however many replicas import the definition.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import asyncpg

from . import queries
from .errors import InvalidScheduleError, TaskNameConflictError
from .models import JobPriority
from .tasks import TaskFunc, default_task_name, ensure_coroutine_function, registry
from .triggers import CronTrigger, IntervalTrigger, Trigger, trigger_for, window_at_or_after

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class PeriodicDefinition:
    """What ``@periodic`` declared. Field names follow 0.2.3's ``PeriodicJobConfig``."""

    func: TaskFunc
    task_name: str
    dedup_key: str
    job_name: str
    interval: timedelta | None
    cron: str | None
    timezone: str | None
    use_advisory_lock: bool
    priority: JobPriority
    max_retries: int
    enabled: bool

    @property
    def trigger(self) -> Trigger:
        if self.interval is not None:
            return IntervalTrigger(self.interval)
        assert self.cron is not None
        return CronTrigger(self.cron, self.timezone or "UTC")

    @property
    def every_seconds(self) -> float | None:
        return self.interval.total_seconds() if self.interval is not None else None

    def describe(self) -> str:
        return self.trigger.describe()


class PeriodicRegistry:
    def __init__(self) -> None:
        self._defs: dict[str, PeriodicDefinition] = {}
        self._lock = threading.Lock()

    def add(self, definition: PeriodicDefinition) -> None:
        with self._lock:
            existing = self._defs.get(definition.dedup_key)
            if existing is not None and existing.task_name != definition.task_name:
                raise TaskNameConflictError(
                    f"dedup_key {definition.dedup_key!r} is already used by "
                    f"{existing.task_name}; give @periodic(dedup_key=...) a unique value"
                )
            self._defs[definition.dedup_key] = definition

    def all(self) -> dict[str, PeriodicDefinition]:
        with self._lock:
            return dict(self._defs)

    def get(self, dedup_key: str) -> PeriodicDefinition | None:
        return self._defs.get(dedup_key)

    def remove(self, dedup_key: str) -> None:
        with self._lock:
            self._defs.pop(dedup_key, None)


periodic_registry = PeriodicRegistry()


def default_dedup_key(
    func: Callable[..., Any], interval: timedelta | None, cron: str | None, tz: str | None
) -> str:
    # The same formula as pg-scheduler 0.2.3, so keys users stored from it stay valid.
    base = f"{func.__module__}.{func.__name__}"
    if interval is not None:
        raw = f"{base}:interval:{int(interval.total_seconds())}"
    else:
        raw = f"{base}:cron:{cron}:tz:{tz}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def periodic(
    every: timedelta | None = None,
    cron: str | None = None,
    timezone: str | ZoneInfo | None = None,
    use_advisory_lock: bool = False,
    priority: JobPriority | str | int = JobPriority.NORMAL,
    max_retries: int = 0,
    job_name: str | None = None,
    dedup_key: str | None = None,
    enabled: bool = True,
) -> Callable[[F], F]:
    """Run an ``async def`` on fixed windows: ``every=timedelta(...)`` or ``cron="..."``.

    Exactly one of ``every`` and ``cron``. ``timezone`` (an IANA name) applies to ``cron``.
    ``use_advisory_lock=True`` holds a PostgreSQL advisory lock while a run executes, so two runs
    of this job never overlap anywhere in the cluster. ``enabled`` is the initial state only:
    once the job exists in the database, ``enable``/``disable`` from any process decide.
    The function is registered as a task and returned unchanged.
    """
    if (every is None) == (cron is None):
        raise InvalidScheduleError("@periodic needs exactly one of every= or cron=")
    tz_name: str | None = None
    if timezone is not None:
        if cron is None:
            raise InvalidScheduleError("timezone= applies to cron= schedules only")
        tz_name = timezone.key if isinstance(timezone, ZoneInfo) else timezone
    if every is not None:
        IntervalTrigger(every)  # validates
        if every < timedelta(seconds=1):
            raise InvalidScheduleError("every= must be at least 1 second")
    else:
        assert cron is not None
        CronTrigger(cron, tz_name or "UTC")  # validates expression and zone
    prio = JobPriority.coerce(priority)
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise InvalidScheduleError(f"max_retries must be an int >= 0, got {max_retries!r}")

    def decorate(func: F) -> F:
        ensure_coroutine_function(func)
        task = registry.register(func)
        key = dedup_key or default_dedup_key(func, every, cron, tz_name)
        periodic_registry.add(
            PeriodicDefinition(
                func=task.func,
                task_name=task.name,
                dedup_key=key,
                job_name=job_name or default_task_name(func),
                interval=every,
                cron=cron,
                timezone=tz_name if cron is not None else None,
                use_advisory_lock=use_advisory_lock,
                priority=prio,
                max_retries=max_retries,
                enabled=enabled,
            )
        )
        return func

    return decorate


@dataclass(frozen=True)
class PeriodicJobInfo:
    """A periodic job as the cluster knows it: its definition and its shared state."""

    dedup_key: str
    job_name: str
    task_name: str
    interval: timedelta | None
    cron: str | None
    timezone: str | None
    priority: JobPriority
    max_retries: int
    use_advisory_lock: bool
    enabled: bool
    next_run: datetime | None
    func: Callable[..., Any] | None = None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def status(self, last_run: Mapping[str, Any] | None = None) -> dict[str, Any]:
        status: dict[str, Any] = {
            "job_name": self.job_name,
            "task_name": self.task_name,
            "enabled": self.enabled,
            "priority": self.priority.value,
            "max_retries": self.max_retries,
            "dedup_key": self.dedup_key,
            "use_advisory_lock": self.use_advisory_lock,
            "function_name": getattr(self.func, "__name__", self.task_name.rpartition(":")[2]),
            "function_module": getattr(self.func, "__module__", self.task_name.partition(":")[0]),
            "next_run": self.next_run,
            "last_run": None,
            "last_status": None,
        }
        if self.interval is not None:
            status["interval"] = self.interval.total_seconds()
        else:
            status["cron"] = self.cron
            status["timezone"] = self.timezone
        if last_run:
            started = last_run.get("started_at") or last_run.get("finished_at")
            status["last_run"] = datetime.fromisoformat(started) if isinstance(started, str) else started
            status["last_status"] = last_run.get("status")
            status["last_error"] = last_run.get("error_message")
        return status


def info_from_definition(d: PeriodicDefinition) -> PeriodicJobInfo:
    """The local view of a definition before the database has told us its state."""
    return PeriodicJobInfo(
        dedup_key=d.dedup_key, job_name=d.job_name, task_name=d.task_name, interval=d.interval,
        cron=d.cron, timezone=d.timezone, priority=d.priority, max_retries=d.max_retries,
        use_advisory_lock=d.use_advisory_lock, enabled=d.enabled, next_run=None, func=d.func,
    )


def next_runs(info: PeriodicJobInfo | None, count: int, after: datetime | None) -> list[datetime]:
    """The next ``count`` window starts at or after ``after`` (default now), in UTC."""
    if info is None:
        return []
    trigger = trigger_for(
        info.interval.total_seconds() if info.interval else None, info.cron, info.timezone
    )
    moment = after or datetime.now(UTC)
    runs = [window_at_or_after(trigger, moment)]
    while len(runs) < count:
        runs.append(trigger.next_fire(runs[-1]))
    return runs[:count]


async def publish(conn: asyncpg.Connection, definitions: Sequence[PeriodicDefinition]) -> None:
    """Upsert definitions into ``scheduler_periodic`` (a row is written only when it changed).

    Each under its row lock first: see ``queries.PERIODIC_LOCK``."""
    for d in definitions:
        async with conn.transaction():
            await conn.execute(queries.PERIODIC_LOCK, d.dedup_key)
            await conn.execute(
                queries.PERIODIC_UPSERT, d.dedup_key, d.task_name, d.job_name, d.every_seconds,
                d.cron, d.timezone, d.priority.db_value, d.max_retries, d.use_advisory_lock,
                d.enabled,
            )
