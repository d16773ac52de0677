"""When periodic windows fall: fixed interval slots or cron fire times.

Windows are fixed points in time that every replica computes alike, never "last finish plus
interval", so runs do not drift and two replicas cannot disagree on which window is next.

- :class:`IntervalTrigger`: window *k* starts at ``k * every`` after the Unix epoch (UTC), as the
  window number of pg-scheduler 0.2.3 did (``floor(epoch / interval)``).
- :class:`CronTrigger`: the cron expression's fire times, evaluated in its time zone and
  returned in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .errors import InvalidScheduleError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TICK = timedelta(microseconds=1)


class Trigger(Protocol):
    def next_fire(self, after: datetime) -> datetime:
        """The first window start strictly after ``after`` (aware, UTC)."""
        ...

    def describe(self) -> str: ...


def window_at_or_after(trigger: Trigger, moment: datetime) -> datetime:
    return trigger.next_fire(moment - _TICK)


def latest_window_at_or_before(trigger: Trigger, moment: datetime, start: datetime) -> datetime:
    """The last window start in ``[start, moment]``; ``start`` must itself be a window start."""
    if isinstance(trigger, IntervalTrigger):
        return trigger.window_floor(moment)
    latest = start
    nxt = trigger.next_fire(latest)
    while nxt <= moment:
        latest, nxt = nxt, trigger.next_fire(nxt)
    return latest


@dataclass(frozen=True)
class IntervalTrigger:
    every: timedelta

    def __post_init__(self) -> None:
        if not isinstance(self.every, timedelta):
            raise InvalidScheduleError(f"every must be a timedelta, not {type(self.every).__name__}")
        if self.every < timedelta(milliseconds=1):
            raise InvalidScheduleError(f"every must be at least 1 ms, got {self.every}")

    def window_floor(self, moment: datetime) -> datetime:
        step = _micros(self.every)
        return _EPOCH + timedelta(microseconds=(_micros(moment - _EPOCH) // step) * step)

    def next_fire(self, after: datetime) -> datetime:
        return self.window_floor(after) + self.every

    def describe(self) -> str:
        return f"every {self.every}"


@dataclass(frozen=True)
class CronTrigger:
    expression: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str) or not croniter.is_valid(self.expression):
            raise InvalidScheduleError(f"invalid cron expression {self.expression!r}")
        zone(self.timezone)

    def next_fire(self, after: datetime) -> datetime:
        local = after.astimezone(zone(self.timezone))
        nxt: datetime = croniter(self.expression, local).get_next(datetime)
        result = nxt.astimezone(UTC)
        if result <= after:  # croniter rounds to whole seconds; never return a past window
            nxt = croniter(self.expression, local + timedelta(seconds=1)).get_next(datetime)
            result = nxt.astimezone(UTC)
        return result

    def describe(self) -> str:
        return f"cron {self.expression!r} in {self.timezone}"


def zone(name: str | ZoneInfo | None) -> ZoneInfo:
    if isinstance(name, ZoneInfo):
        return name
    if name is None:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise InvalidScheduleError(f"unknown time zone {name!r}") from exc


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def trigger_for(every_seconds: float | None, cron: str | None, timezone: str | None) -> Trigger:
    """The trigger of a stored definition (a row of ``scheduler_periodic``)."""
    if every_seconds is not None:
        return IntervalTrigger(timedelta(seconds=every_seconds))
    if cron is None:
        raise InvalidScheduleError("a periodic definition needs every or cron")
    return CronTrigger(cron, timezone or "UTC")
