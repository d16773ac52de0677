"""``@periodic``: periodic definitions, registered at import time.

A definition is code (the task and its schedule). Its *state* (enabled, the cursor of the next
window, last run) lives in the database table ``scheduler_periodic`` and is shared by the whole
cluster; only the leader turns windows into job rows, one row per (dedup key, window), so a window
runs once however many replicas import the definition.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from .errors import InvalidScheduleError, TaskNameConflictError
from .models import JobPriority
from .tasks import TaskFunc, default_task_name, ensure_coroutine_function, registry
from .triggers import CronTrigger, IntervalTrigger, Trigger

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
