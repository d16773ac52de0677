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
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import asyncpg

from . import queries
from .errors import InvalidScheduleError, TaskNameConflictError
from .models import JobPriority
from .queues import DEFAULT_QUEUE, check_queue
from .tasks import (
    TaskFunc,
    default_task_name,
    ensure_task_function,
    is_redefinition,
    registry,
)
from .triggers import (
    CronTrigger,
    IntervalTrigger,
    Trigger,
    trigger_for,
    validate_cron,
    window_at_or_after,
    zone,
)

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
    on_dst_gap: str = "shift"
    on_dst_fold: str = "first"
    misfire: str = "coalesce"
    catch_up: timedelta | None = None
    overlap: str = "allow"
    queue: str | None = None
    """The queue given to ``@periodic``; None: the task's (see :attr:`queue_name`)."""

    @property
    def queue_name(self) -> str:
        """The queue its windows are written in: the one given to ``@periodic``, else the
        task's as registered now (``@job(queue=...)`` may decorate the function before or after
        ``@periodic``), else ``"default"``."""
        return self.queue if self.queue is not None else registry.queue_of(self.task_name)

    @property
    def trigger(self) -> Trigger:
        """The trigger that computes this definition's windows."""
        if self.interval is not None:
            return IntervalTrigger(self.interval)
        assert self.cron is not None
        return CronTrigger(self.cron, self.timezone or "UTC", self.on_dst_gap, self.on_dst_fold)

    @property
    def catch_up_seconds(self) -> float | None:
        """``catch_up`` in seconds, or ``None`` when unbounded."""
        return self.catch_up.total_seconds() if self.catch_up is not None else None

    @property
    def every_seconds(self) -> float | None:
        """The interval in seconds, or ``None`` for a cron schedule."""
        return self.interval.total_seconds() if self.interval is not None else None

    def describe(self) -> str:
        """A one-line human description of the schedule."""
        return self.trigger.describe()


class PeriodicRegistry:
    """The periodic definitions declared in this process, by dedup key (thread-safe)."""

    def __init__(self) -> None:
        self._defs: dict[str, PeriodicDefinition] = {}
        self._lock = threading.Lock()

    def add(self, definition: PeriodicDefinition) -> None:
        """Add a definition, or replace the one with its dedup key if it is of the same task or
        the same function defined again (see ``tasks.is_redefinition``); a dedup key held by
        another task raises :class:`TaskNameConflictError`. A definition of another schedule
        (another default dedup key) is one more schedule of the task: stacked ``@periodic``
        decorators, or 0.2.3's loops that declare one job per cron expression."""
        with self._lock:
            existing = self._defs.get(definition.dedup_key)
            if (
                existing is not None
                and existing.task_name != definition.task_name
                and not is_redefinition(existing.func, definition.func)
            ):
                raise TaskNameConflictError(
                    f"dedup_key {definition.dedup_key!r} is already used by "
                    f"{existing.task_name}; give @periodic(dedup_key=...) a unique value"
                )
            self._defs[definition.dedup_key] = definition
            # Every schedule of a task runs the function the registry holds for it now.
            for key, other in self._defs.items():
                if other.task_name == definition.task_name and other.func is not definition.func:
                    self._defs[key] = replace(other, func=definition.func)

    def all(self) -> dict[str, PeriodicDefinition]:
        """A snapshot of every definition, by dedup key."""
        with self._lock:
            return dict(self._defs)

    def get(self, dedup_key: str) -> PeriodicDefinition | None:
        """The definition under ``dedup_key``, or ``None``."""
        return self._defs.get(dedup_key)

    def remove(self, dedup_key: str) -> None:
        """Forget the definition under ``dedup_key``, if any."""
        with self._lock:
            self._defs.pop(dedup_key, None)


periodic_registry = PeriodicRegistry()


def default_dedup_key(
    func: Callable[..., Any], interval: timedelta | None, cron: str | None, tz: str | None
) -> str:
    """The dedup key of a periodic job declared without ``dedup_key=``."""
    # pg-scheduler 0.2.3's formula, with the qualified name where 0.2.3 took the bare one: the
    # same key for a module-level function, so keys users stored from 0.2.3 stay valid, and a
    # key of its own for each function nested in a class or another function, so two such
    # functions of one name and schedule never share one.
    base = f"{func.__module__}.{func.__qualname__}"
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
    *,
    on_dst_gap: str | None = None,
    on_dst_fold: str | None = None,
    misfire: str = "coalesce",
    catch_up: timedelta | None = None,
    overlap: str = "allow",
    queue: str | None = None,
) -> Callable[[F], F]:
    """Run an ``async def`` on fixed windows: ``every=timedelta(...)`` or ``cron="..."``.

    Exactly one of ``every`` and ``cron``. ``timezone`` (an IANA name) applies to ``cron``.
    ``use_advisory_lock=True`` holds a PostgreSQL advisory lock while a run executes, so two runs
    of this job never overlap anywhere in the cluster. ``enabled`` is the initial state only:
    once the job exists in the database, ``enable``/``disable`` from any process decide.
    The function is registered as a task and returned unchanged.

    Policies (docs/periodic-schedules.md):

    - ``on_dst_gap`` (cron only): a local fire time that does not exist on a spring-forward day
      runs at the shifted instant (``"shift"``, default) or not at all (``"skip"``);
    - ``on_dst_fold`` (cron only): a local fire time that happens twice on a fall-back day runs
      once, at the first (``"first"``, default), or at both (``"both"``);
    - ``misfire``: windows missed while no leader ran (downtime) run once for all
      (``"coalesce"``, default), not at all (``"skip"``), or each (``"all"``, reaching back
      ``catch_up`` at most, and the newest 1000 windows at most);
    - ``overlap``: a window that comes while the previous run still runs runs anyway
      (``"allow"``, default), is skipped (``"skip"``), or waits for it, one at most (``"queue"``).

    ``queue``: the queue its windows are written in (default: the task's, from
    ``@job(queue=...)``, else ``"default"``).
    """
    declared_cron = cron  # the dedup key hashes what the code says, as 0.2.3 did
    cron, tz_name = check_schedule(every, cron, timezone)
    if every is not None and (on_dst_gap is not None or on_dst_fold is not None):
        raise InvalidScheduleError(
            "on_dst_gap/on_dst_fold apply to cron= schedules: every= windows are fixed UTC "
            "intervals that daylight saving time does not move"
        )
    gap, fold = on_dst_gap or "shift", on_dst_fold or "first"
    if cron is not None:
        CronTrigger(cron, tz_name or "UTC", gap, fold)  # validates the policies
    _check_policies(misfire, catch_up, overlap)
    prio = JobPriority.coerce(priority)
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise InvalidScheduleError(f"max_retries must be an int >= 0, got {max_retries!r}")
    if queue is not None:
        check_queue(queue, InvalidScheduleError)

    def decorate(func: F) -> F:
        ensure_task_function(func)
        task = registry.register(func)
        key = dedup_key or default_dedup_key(func, every, declared_cron, tz_name)
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
                on_dst_gap=gap,
                on_dst_fold=fold,
                misfire=misfire,
                catch_up=catch_up,
                overlap=overlap,
                queue=queue,
            )
        )
        return func

    return decorate


def check_schedule(
    every: timedelta | None, cron: str | None, timezone: str | ZoneInfo | None
) -> tuple[str | None, str | None]:
    """Validate a schedule (exactly one of ``every`` and ``cron``; ``timezone`` for cron only);
    returns the normalised cron expression and the time zone name."""
    # "both" and "Either": 0.2.3's words, which programs and tests match on.
    if every is not None and cron is not None:
        raise InvalidScheduleError(
            "every= and cron= were both given: a periodic schedule needs exactly one of them"
        )
    if every is None and cron is None:
        raise InvalidScheduleError(
            "Either every= or cron= is needed: a periodic schedule needs exactly one of them"
        )
    tz_name: str | None = None
    if timezone is not None:
        if cron is None:
            raise InvalidScheduleError("timezone= applies to cron= schedules only")
        tz_name = timezone.key if isinstance(timezone, ZoneInfo) else timezone
    if every is not None:
        IntervalTrigger(every)  # validates the type
        if every < timedelta(seconds=1):
            raise InvalidScheduleError("every= must be at least 1 second")
        return None, None
    assert cron is not None
    cron = validate_cron(cron)
    CronTrigger(cron, tz_name or "UTC")  # validates the zone
    return cron, tz_name


MISFIRE_POLICIES = ("coalesce", "skip", "all")
OVERLAP_POLICIES = ("allow", "skip", "queue")


def _check_policies(misfire: str, catch_up: timedelta | None, overlap: str) -> None:
    if misfire not in MISFIRE_POLICIES:
        raise InvalidScheduleError(
            f"misfire must be one of {', '.join(map(repr, MISFIRE_POLICIES))}, got {misfire!r}"
        )
    if overlap not in OVERLAP_POLICIES:
        raise InvalidScheduleError(
            f"overlap must be one of {', '.join(map(repr, OVERLAP_POLICIES))}, got {overlap!r}"
        )
    if catch_up is not None:
        if misfire != "all":
            raise InvalidScheduleError('catch_up= applies to misfire="all" only')
        if not isinstance(catch_up, timedelta) or catch_up <= timedelta(0):
            raise InvalidScheduleError(f"catch_up must be a positive timedelta, got {catch_up!r}")


@dataclass(frozen=True)
class PeriodicJobInfo:
    """A periodic job as the cluster knows it: its definition and its shared state."""

    dedup_key: str
    job_name: str
    task_name: str
    interval: timedelta | None
    cron: str | None
    timezone_name: str | None
    """The IANA name of the cron schedule's time zone, as stored; ``None`` for UTC."""
    priority: JobPriority
    max_retries: int
    use_advisory_lock: bool
    enabled: bool
    next_run: datetime | None
    func: Callable[..., Any] | None = None
    on_dst_gap: str = "shift"
    on_dst_fold: str = "first"
    misfire: str = "coalesce"
    catch_up: timedelta | None = None
    overlap: str = "allow"
    overridden: bool = False
    """The schedule in force was set from the CLI (``periodic set``), not by the code."""
    queue: str = DEFAULT_QUEUE
    """The queue its windows are written in."""

    @property
    def timezone(self) -> ZoneInfo | None:
        """The cron schedule's time zone as a ``ZoneInfo`` (as 0.2.3's ``PeriodicJobConfig``);
        ``None`` for UTC. Resolved when read, so a listing never fails on a zone that another
        process's tz database knows and this one does not."""
        return None if self.timezone_name is None else zone(self.timezone_name)

    @property
    def trigger(self) -> Trigger:
        """The schedule in force, with its DST policies."""
        return trigger_for(
            self.interval.total_seconds() if self.interval else None,
            self.cron,
            self.timezone_name,
            self.on_dst_gap,
            self.on_dst_fold,
        )

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def status(self, last_run: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """This job's state as the JSON-ready dict that status calls return."""
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
            "on_dst_gap": self.on_dst_gap,
            "on_dst_fold": self.on_dst_fold,
            "misfire": self.misfire,
            "catch_up": self.catch_up.total_seconds() if self.catch_up is not None else None,
            "overlap": self.overlap,
            "schedule_overridden": self.overridden,
            "queue": self.queue,
        }
        if self.interval is not None:
            status["interval"] = self.interval.total_seconds()
        else:
            status["cron"] = self.cron
            status["timezone"] = self.timezone_name
        if last_run:
            started = last_run.get("started_at") or last_run.get("finished_at")
            status["last_run"] = datetime.fromisoformat(started) if isinstance(started, str) else started
            status["last_status"] = last_run.get("status")
            status["last_error"] = last_run.get("error_message")
        return status


def info_from_definition(d: PeriodicDefinition) -> PeriodicJobInfo:
    """The local view of a definition before the database has told us its state."""
    return PeriodicJobInfo(
        dedup_key=d.dedup_key,
        job_name=d.job_name,
        task_name=d.task_name,
        interval=d.interval,
        cron=d.cron,
        timezone_name=d.timezone,
        priority=d.priority,
        max_retries=d.max_retries,
        use_advisory_lock=d.use_advisory_lock,
        enabled=d.enabled,
        next_run=None,
        func=d.func,
        on_dst_gap=d.on_dst_gap,
        on_dst_fold=d.on_dst_fold,
        misfire=d.misfire,
        catch_up=d.catch_up,
        overlap=d.overlap,
        queue=d.queue_name,
    )


def info_from_row(row: Mapping[str, Any], func: Callable[..., Any] | None = None) -> PeriodicJobInfo:
    """A periodic job as ``scheduler_periodic`` holds it (the schedule in force)."""
    return PeriodicJobInfo(
        dedup_key=row["dedup_key"],
        job_name=row["job_name"],
        task_name=row["task_name"],
        interval=timedelta(seconds=row["every_seconds"]) if row["every_seconds"] else None,
        cron=row["cron"],
        timezone_name=row["timezone"],
        priority=JobPriority.from_db_value(row["priority"]),
        max_retries=row["max_retries"],
        use_advisory_lock=row["use_advisory_lock"],
        enabled=row["enabled"],
        next_run=row["next_run_at"],
        func=func,
        on_dst_gap=row["on_dst_gap"],
        on_dst_fold=row["on_dst_fold"],
        misfire=row["misfire"],
        catch_up=(
            timedelta(seconds=row["catch_up_seconds"]) if row["catch_up_seconds"] is not None else None
        ),
        overlap=row["overlap"],
        overridden=row["overridden_at"] is not None,
        queue=row["queue"],
    )


def next_runs(info: PeriodicJobInfo | None, count: int, after: datetime | None) -> list[datetime]:
    """The next ``count`` window starts at or after ``after`` (default now), in UTC."""
    if info is None:
        return []
    trigger = info.trigger
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
            await queries.periodic_upsert(
                conn,
                dedup_key=d.dedup_key,
                task_name=d.task_name,
                job_name=d.job_name,
                every_seconds=d.every_seconds,
                cron=d.cron,
                timezone=d.timezone,
                priority=d.priority.db_value,
                max_retries=d.max_retries,
                use_advisory_lock=d.use_advisory_lock,
                enabled=d.enabled,
                on_dst_gap=d.on_dst_gap,
                on_dst_fold=d.on_dst_fold,
                misfire=d.misfire,
                catch_up_seconds=d.catch_up_seconds,
                overlap=d.overlap,
                queue=d.queue_name,
            )
