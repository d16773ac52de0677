"""When periodic windows fall: fixed interval slots or cron fire times.

Windows are fixed points in time that every replica computes alike, never "last finish plus
interval", so runs do not drift and two replicas cannot disagree on which window is next.

- :class:`IntervalTrigger`: window *k* starts at ``k * every`` after the Unix epoch (UTC), as the
  window number of pg-scheduler 0.2.3 did (``floor(epoch / interval)``).
- :class:`CronTrigger`: the cron expression's fire times on the wall clock of its time zone,
  returned in UTC. cronsim finds the wall-clock (naive) times; turning them into instants is
  done here, so the daylight-saving rules are ours (``on_dst_gap``, ``on_dst_fold``), not the
  library's. See docs/periodic-schedules.md.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .errors import InvalidScheduleError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TICK = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)
_DAY = timedelta(days=1)

DST_GAP_POLICIES = ("shift", "skip")
DST_FOLD_POLICIES = ("first", "both")

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_FIVE = ("minute", "hour", "day-of-month", "month", "day-of-week")
_SIX = ("second", *_FIVE)
_RANGES = {
    "second": (0, 59),
    "minute": (0, 59),
    "hour": (0, 23),
    "day-of-month": (1, 31),
    "month": (1, 12),
    "day-of-week": (0, 7),
}
_SYNTAX = "*, a,b lists, a-b ranges, */n or a-b/n steps"
_ALLOWED = {
    "second": f"0-59, {_SYNTAX}",
    "minute": f"0-59, {_SYNTAX}",
    "hour": f"0-23, {_SYNTAX}",
    "day-of-month": f"1-31, L (last day), LW (last weekday), {_SYNTAX}",
    "month": f"1-12 or JAN-DEC, {_SYNTAX}",
    "day-of-week": f"0-7 or SUN-SAT (0 and 7 are Sunday), MON#2 (2nd Monday), 5L (last Friday), {_SYNTAX}",
}
_REFERENCE = datetime(2000, 1, 1)  # a fixed start for "does this expression ever fire?"


class Trigger(Protocol):
    """What computes a periodic job's windows: an interval or a cron expression."""

    def next_fire(self, after: datetime) -> datetime:
        """The first window start strictly after ``after`` (aware, UTC)."""
        ...

    def describe(self) -> str:
        """A one-line human description of the schedule."""
        ...


def window_at_or_after(trigger: Trigger, moment: datetime) -> datetime:
    """The first window start at or after ``moment``."""
    return trigger.next_fire(moment - _TICK)


def latest_window_at_or_before(trigger: Trigger, moment: datetime, start: datetime) -> datetime:
    """The last window start in ``[start, moment]``; ``start`` must itself be a window start.

    A cron trigger cannot step backwards, so the search widens a span back from ``moment`` (one
    minute, then doubling) until it holds a window, and walks only that span: a per-second
    schedule after a month of downtime takes a few dozen steps, not millions."""
    if isinstance(trigger, IntervalTrigger):
        return trigger.window_floor(moment)
    span = timedelta(minutes=1)
    while True:
        probe = max(start, moment - span)
        latest = window_at_or_after(trigger, probe)
        if latest <= moment or probe == start:
            break
        span *= 2
    if latest > moment:
        return start
    nxt = trigger.next_fire(latest)
    while nxt <= moment:
        latest, nxt = nxt, trigger.next_fire(nxt)
    return latest


def newest_windows(
    trigger: Trigger, start: datetime, before: datetime, limit: int
) -> tuple[list[datetime], bool]:
    """The newest ``limit`` window starts in ``[start, before)``, oldest first, and whether older
    ones were left out. Like :func:`latest_window_at_or_before`, it widens a span back from
    ``before`` (by 4x) instead of walking everything since ``start``."""
    span = timedelta(minutes=1)
    while True:
        probe = max(start, before - span)
        found: deque[datetime] = deque()
        window = window_at_or_after(trigger, probe)
        while window < before:
            found.append(window)
            window = trigger.next_fire(window)
        if len(found) >= limit or probe == start:
            break
        span *= 4
    truncated = len(found) > limit or (probe > start and len(found) >= limit)
    while len(found) > limit:
        found.popleft()
    return list(found), truncated


def count_windows(trigger: Trigger, start: datetime, before: datetime, cap: int) -> int:
    """How many window starts lie in ``[start, before)``, ``start`` a window start; a cron
    schedule is walked, so its count stops at ``cap``."""
    if before <= start:
        return 0
    if isinstance(trigger, IntervalTrigger):
        return -(-_micros(before - start) // _micros(trigger.every))
    count, window = 0, start
    while window < before and count < cap:
        count += 1
        window = trigger.next_fire(window)
    return count


@dataclass(frozen=True)
class IntervalTrigger:
    """Windows every ``every``, aligned to the Unix epoch."""

    every: timedelta

    def __post_init__(self) -> None:
        if not isinstance(self.every, timedelta):
            raise InvalidScheduleError(f"every must be a timedelta, not {type(self.every).__name__}")
        if self.every < timedelta(milliseconds=1):
            raise InvalidScheduleError(f"every must be at least 1 ms, got {self.every}")

    def window_floor(self, moment: datetime) -> datetime:
        """The window start at or before ``moment``."""
        step = _micros(self.every)
        return _EPOCH + timedelta(microseconds=(_micros(moment - _EPOCH) // step) * step)

    def next_fire(self, after: datetime) -> datetime:
        """The first window start strictly after ``after``."""
        return self.window_floor(after) + self.every

    def describe(self) -> str:
        """A one-line human description of the schedule."""
        return f"every {self.every}"


@dataclass(frozen=True)
class CronTrigger:
    """A cron expression evaluated on the wall clock of ``timezone``.

    ``on_dst_gap``: a wall-clock fire time that a spring-forward transition skips runs at the
    instant PEP 495 gives it with ``fold=0``, i.e. shifted forward by the gap (``"shift"``), or
    not at all (``"skip"``). ``on_dst_fold``: a wall-clock fire time that a fall-back transition
    repeats runs at its first occurrence only (``"first"``) or at both (``"both"``).
    """

    expression: str
    timezone: str = "UTC"
    on_dst_gap: str = "shift"
    on_dst_fold: str = "first"
    _spec: str = field(init=False, repr=False, compare=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.on_dst_gap not in DST_GAP_POLICIES:
            raise InvalidScheduleError(
                f"on_dst_gap must be one of {', '.join(DST_GAP_POLICIES)}, not {self.on_dst_gap!r}"
            )
        if self.on_dst_fold not in DST_FOLD_POLICIES:
            raise InvalidScheduleError(
                f"on_dst_fold must be one of {', '.join(DST_FOLD_POLICIES)}, not {self.on_dst_fold!r}"
            )
        if not isinstance(self.expression, str):
            raise InvalidScheduleError(
                f"a cron expression must be a str, not {type(self.expression).__name__}"
            )
        object.__setattr__(self, "_spec", _compile(self.expression))
        object.__setattr__(self, "_zone", zone(self.timezone))

    def next_fire(self, after: datetime) -> datetime:
        """The first window start strictly after ``after`` (aware, UTC)."""
        if after.tzinfo is None:
            raise ValueError(f"next_fire needs an aware datetime, got {after!r}")
        after = after.astimezone(UTC)
        local = after.astimezone(self._zone)
        best, first, second = self._first_in_wall_clock_order(local, after)
        # Instants follow wall-clock order except right at a transition, where one of these
        # can come before `best`:
        candidates: list[datetime | None] = [best]
        if first > second:  # `best` is a skipped time, shifted
            candidates.append(self._just_after_gap(second, first))
        if self.on_dst_gap == "shift":
            candidates.append(self._shifted_still_to_come(after))
        if self.on_dst_fold == "both" and local.fold == 0:
            candidates.append(self._second_pass_to_come(local))
        return min(c for c in candidates if c is not None)

    def describe(self) -> str:
        """A one-line human description of the schedule."""
        text = f"cron {self.expression!r} in {self.timezone}"
        if self.on_dst_gap != "shift":
            text += f", on_dst_gap={self.on_dst_gap}"
        if self.on_dst_fold != "first":
            text += f", on_dst_fold={self.on_dst_fold}"
        return text

    def _first_in_wall_clock_order(
        self, local: datetime, after: datetime
    ) -> tuple[datetime, datetime, datetime]:
        """Walking wall-clock fire times forward from ``local``, the earliest instant after
        ``after`` of the first one that has one, with that time's two readings."""
        start = local.replace(tzinfo=None)
        while True:
            for wall in self._walls(start):
                first, second = self._readings(wall)
                later = [moment for moment in self._instants(first, second) if moment > after]
                if later:
                    return min(later), first, second
                if first != second:
                    # The rest of a repeated hour (on_dst_fold="first", `after` in its second
                    # pass) or of a gap (on_dst_gap="skip") has nothing either: go to its end.
                    early, late = min(first, second), max(first, second)
                    change = self._transition(early, late)
                    start = (
                        max(self._wall(change, self._offset(early)), self._wall(change, self._offset(change)))
                        - _TICK
                    )
                    break
            else:
                raise InvalidScheduleError(
                    f"cron expression {self.expression!r} has no fire time in the 50 years "
                    f"after {after.isoformat()}"
                )

    def _just_after_gap(self, second: datetime, first: datetime) -> datetime | None:
        """The first real fire time after the gap that ``second`` and ``first`` straddle: it may
        come before a time shifted out of the gap (in a 02:00 -> 03:00 gap, 02:30 shifted is
        03:30, and 03:00 comes first)."""
        change = self._transition(second, first)
        offset = self._offset(change)
        wall = self._next_wall(self._wall(change, offset) - _TICK)
        return None if wall is None else _read(wall, offset)

    def _shifted_still_to_come(self, after: datetime) -> datetime | None:
        """If ``after`` is less than a gap's length past the gap, the first skipped time whose
        shifted instant is after it: its wall-clock time is before ``after``'s."""
        day_before = after - _DAY  # no gap is longer than a day
        old, new = self._offset(day_before), self._offset(after)
        if old >= new:
            return None
        change = self._transition(day_before.replace(microsecond=0), after.replace(microsecond=0) + _SECOND)
        if after >= change + (new - old):
            return None
        wall = self._next_wall(self._wall(after, old))
        if wall is None or wall >= self._wall(change, new):
            return None
        return _read(wall, old)

    def _second_pass_to_come(self, local: datetime) -> datetime | None:
        """If ``local`` is in the first pass of a repeated hour (on_dst_fold="both"), the first
        fire time of its second pass: wall-clock times before ``local`` run again."""
        early, late = self._readings(local.replace(tzinfo=None, microsecond=0))
        if early >= late:
            return None
        change = self._transition(early, late)
        offset = self._offset(change)
        wall = self._next_wall(self._wall(change, offset) - _TICK)
        if wall is None or wall >= self._wall(change, self._offset(early)):
            return None
        return _read(wall, offset)

    def _next_wall(self, start: datetime) -> datetime | None:
        return next(self._walls(start), None)

    def _walls(self, start: datetime) -> Iterator[datetime]:
        """Wall-clock fire times strictly after the naive ``start``, in order."""
        # cronsim works to the second and starts after the second `start` falls in.
        return CronSim(self._spec, start)

    def _readings(self, wall: datetime) -> tuple[datetime, datetime]:
        """The instants (UTC) PEP 495 gives a wall-clock time with fold=0 and fold=1: equal for
        most times, first < second in a repeated hour, first > second in a gap."""
        first = wall.replace(tzinfo=self._zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self._zone, fold=1).astimezone(UTC)
        return first, second

    def _instants(self, first: datetime, second: datetime) -> list[datetime]:
        """The instants a wall-clock fire time with these readings runs at, under the policies."""
        if first == second:
            return [first]
        if first < second:  # repeated (fall back): fold=0 is the earlier occurrence
            return [first, second] if self.on_dst_fold == "both" else [first]
        # skipped (spring forward): fold=0 reads it with the offset before the gap, which
        # lands it the length of the gap later on the clock
        return [first] if self.on_dst_gap == "shift" else []

    def _transition(self, before: datetime, after: datetime) -> datetime:
        """The instant the UTC offset changes, between two instants on either side of it."""
        old = self._offset(before)
        low, high = before, after
        # Transitions fall on whole seconds; so do `before` and `after` (cron times read
        # with whole-second offsets), so this ends on the transition itself.
        while high - low > _SECOND:
            middle = low + timedelta(seconds=(high - low) // _SECOND // 2)
            if self._offset(middle) == old:
                low = middle
            else:
                high = middle
        return high

    @staticmethod
    def _wall(moment: datetime, offset: timedelta) -> datetime:
        return moment.replace(tzinfo=None) + offset

    def _offset(self, moment: datetime) -> timedelta:
        offset = moment.astimezone(self._zone).utcoffset()
        assert offset is not None
        return offset


def _read(wall: datetime, offset: timedelta) -> datetime:
    """The instant (UTC) of a naive wall-clock time read with ``offset``."""
    return (wall - offset).replace(tzinfo=UTC)


def validate_cron(expression: str) -> str:
    """The expression with its whitespace normalised (an alias in lower case); raises
    :class:`InvalidScheduleError` saying what is wrong if cron cannot evaluate it."""
    if not isinstance(expression, str):
        raise InvalidScheduleError(f"a cron expression must be a str, not {type(expression).__name__}")
    normal = " ".join(expression.split())
    if normal.startswith("@"):
        normal = normal.lower()
    _compile(normal)
    return normal


@functools.lru_cache(maxsize=512)
def _compile(expression: str) -> str:
    """The expression as cronsim reads it (aliases expanded, ``?`` as ``*``), once validated."""
    normal = " ".join(expression.split())
    if normal.startswith("@"):
        spec = ALIASES.get(normal.lower())
        if spec is None:
            raise InvalidScheduleError(
                f"invalid cron expression {expression!r}: unknown alias {normal!r} "
                f"(known: {', '.join(ALIASES)})"
            )
        return spec
    fields = normal.split(" ") if normal else []
    if len(fields) not in (5, 6):
        raise InvalidScheduleError(
            f"invalid cron expression {expression!r}: {len(fields)} field(s); expected 5 "
            f"({' '.join(_FIVE)}), 6 (the five, then second) or an alias ({', '.join(ALIASES)})"
        )
    if len(fields) == 6:
        # Ours are seconds *last* (croniter's form, so 0.2.3's six-field expressions keep their
        # meaning); cronsim wants them first.
        fields = [fields[5], *fields[:5]]
    names = _FIVE if len(fields) == 5 else _SIX
    # `?` is Quartz's "no specific value" for one of the two day fields; as `*` it gets the
    # same meaning, since a day field that starts with `*` leaves the other one to decide.
    for i, name in enumerate(names):
        if fields[i] == "?" and name in ("day-of-month", "day-of-week"):
            fields[i] = "*"
    spec = " ".join(fields)
    try:
        walls = CronSim(spec, _REFERENCE)
    except CronSimError as exc:
        raise InvalidScheduleError(
            f"invalid cron expression {expression!r}: {_explain(exc, names, fields)}"
        ) from None
    try:
        next(walls)
    except StopIteration:
        raise InvalidScheduleError(
            f"invalid cron expression {expression!r}: it never fires (no day matches both "
            "day-of-month and day-of-week in 50 years)"
        ) from None
    return spec


def _explain(exc: CronSimError, names: tuple[str, ...], fields: list[str]) -> str:
    """cronsim's terse "Bad minute" as which field, what is wrong with it and what it takes."""
    message = str(exc)
    for i, name in enumerate(names):
        if message != f"Bad {name}":
            continue
        token = fields[i]
        low, high = _RANGES[name]
        for number in re.findall(r"(?<![/#\d])\d+", token):
            if not low <= int(number) <= high:
                return f"{name} {number} out of range ({low}-{high})"
        if name == "day-of-month" and _valid_alone(fields, i):
            return f"day-of-month {token!r} never occurs in month {fields[names.index('month')]!r}"
        return f"bad {name} field {token!r} (takes {_ALLOWED[name]})"
    return message


def _valid_alone(fields: list[str], index: int) -> bool:
    """Whether field ``index`` parses with every other field ``*``."""
    alone = ["*"] * len(fields)
    alone[index] = fields[index]
    try:
        CronSim(" ".join(alone), _REFERENCE)
    except CronSimError:
        return False
    return True


def zone(name: str | ZoneInfo | None) -> ZoneInfo:
    """The ``ZoneInfo`` for a name (UTC for ``None``); ``InvalidScheduleError`` when unknown."""
    if isinstance(name, ZoneInfo):
        return name
    if name is None:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        # "Invalid timezone": 0.2.3's words, which programs and tests match on.
        raise InvalidScheduleError(
            f"Invalid timezone: unknown time zone {name!r} (an IANA name, e.g. 'Europe/Lisbon')"
        ) from exc


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def trigger_for(
    every_seconds: float | None,
    cron: str | None,
    timezone: str | None,
    on_dst_gap: str | None = "shift",
    on_dst_fold: str | None = "first",
) -> Trigger:
    """The trigger of a stored definition (a row of ``scheduler_periodic``).

    The DST policies apply to cron schedules only; ``None`` means the default."""
    if every_seconds is not None:
        return IntervalTrigger(timedelta(seconds=every_seconds))
    if cron is None:
        raise InvalidScheduleError("a periodic definition needs every or cron")
    return CronTrigger(cron, timezone or "UTC", on_dst_gap or "shift", on_dst_fold or "first")
