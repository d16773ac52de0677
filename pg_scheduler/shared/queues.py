"""Queue names: the rule every queue name follows, and the parsing of a list of them.

Every job belongs to one queue (``"default"`` unless given). A queue name is short and
identifier-like, so that it is safe in a metric label, a URL, an environment variable's list
and a log line alike: a letter or digit, then letters, digits, ``_``, ``-`` or ``.``, at most 63
characters in all. Names are case-sensitive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ConfigurationError, InvalidJobError

DEFAULT_QUEUE = "default"
"""The queue of a job, task or periodic job that names none."""

QUEUE_NAME_MAX_LENGTH = 63

_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")

CONCURRENCY_KEY_MAX_LENGTH = 200


def check_queue(name: object, error: type[Exception] = InvalidJobError) -> str:
    """``name`` if it is a valid queue name, else ``error`` (``InvalidJobError`` from a job,
    ``InvalidScheduleError`` from ``@periodic``, ``ConfigurationError`` from a list of queues to
    claim) in one line."""
    if not isinstance(name, str) or _QUEUE_NAME.fullmatch(name) is None:
        raise error(
            f"invalid queue name {name!r}: use a letter or digit, then letters, digits, '_', '-' "
            f"or '.', at most {QUEUE_NAME_MAX_LENGTH} characters (e.g. 'emails')"
        )
    return name


def check_concurrency_key(key: object) -> str | None:
    """``key`` if it is ``None`` or a non-empty string of at most 200 characters, else
    ``InvalidJobError``."""
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > CONCURRENCY_KEY_MAX_LENGTH:
        raise InvalidJobError(
            f"concurrency_key must be None or a non-empty string of at most "
            f"{CONCURRENCY_KEY_MAX_LENGTH} characters, got {key!r}"
        )
    return key


def parse_queues(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """The queues a worker claims: ``None`` (or an empty text) for every queue, else the names
    of a comma-separated text (``"emails,reports"``) or of an iterable, in order, each once.

    A bad name raises ``ConfigurationError`` in one line."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        names = [part.strip() for part in value.split(",")]
    else:
        names = list(value)
        if not names:
            raise ConfigurationError("queues must name at least one queue, or be None for every queue")
    return tuple(dict.fromkeys(check_queue(name, ConfigurationError) for name in names))


# ---------------------------------------------------------------- limits

_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h|d)\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``limit`` starts in any window of ``period_seconds``, across the cluster."""

    limit: int
    period_seconds: float

    def __str__(self) -> str:
        period = self.period_seconds
        for unit in ("d", "h", "m", "s", "ms"):
            size = _UNIT_SECONDS[unit]
            count = round(period / size, 6)
            if period >= size and count.is_integer():
                return f"{self.limit}/{int(count)}{unit}"
        return f"{self.limit}/{period:g}s"


def parse_rate(value: object, error: type[Exception] = ConfigurationError) -> Rate:
    """A rate written ``N/PERIOD``: ``100/1m``, ``10/s``, ``5/30s``, ``1000/1h``, ``50/500ms``
    (units ms, s, m, h, d), or a :class:`Rate`. Anything else, a zero count or a zero period
    raises ``error`` in one line."""
    if isinstance(value, Rate):
        return check_rate(value.limit, value.period_seconds, error)
    match = _RATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise error(
            f"invalid rate {value!r}: write N/PERIOD, e.g. '100/1m', '10/1s' or '5/30s' "
            f"(units ms, s, m, h, d)"
        )
    count, size, unit = match.groups()
    return check_rate(int(count), float(size or 1) * _UNIT_SECONDS[unit], error)


LIMIT_MAX = 2**31 - 1
"""The largest limit (the database stores limits as 32-bit integers)."""
RATE_PERIOD_MIN_SECONDS = 0.001
RATE_PERIOD_MAX_SECONDS = 366 * 86400.0


def check_rate(limit: int, period_seconds: float, error: type[Exception] = ConfigurationError) -> Rate:
    """The rate, if its count is from 1 to LIMIT_MAX and its period from 1 ms to 366 days."""
    if not 1 <= limit <= LIMIT_MAX:
        raise error(f"invalid rate: the number of starts must be from 1 to {LIMIT_MAX}, got {limit}")
    if not period_seconds > 0:
        raise error(f"invalid rate: the period must be longer than 0 s, got {period_seconds:g} s")
    if not RATE_PERIOD_MIN_SECONDS <= period_seconds <= RATE_PERIOD_MAX_SECONDS:
        raise error(f"invalid rate: the period must be from 1 ms to 366 days, got {period_seconds:g} s")
    return Rate(limit, float(period_seconds))


def check_limit(name: str, value: object, error: type[Exception] = ConfigurationError) -> int | None:
    """``value`` if it is None (no such limit) or an int of at least 1, else ``error``."""
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= LIMIT_MAX:
        raise error(
            f"invalid {name} {value!r}: give a whole number from 1 to {LIMIT_MAX}, or none for no "
            f"limit (to stop a queue, pause it)"
        )
    return value


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """A queue's limits, for the whole cluster; None: no such limit.

    - ``concurrency``: at most this many jobs of the queue running at once;
    - ``key_concurrency``: at most this many running jobs per ``concurrency_key``;
    - ``rate``: at most ``rate.limit`` starts in any window of ``rate.period_seconds``.
    """

    concurrency: int | None = None
    key_concurrency: int | None = None
    rate: Rate | None = None

    @property
    def limited(self) -> bool:
        """Whether any limit is set."""
        return self.concurrency is not None or self.key_concurrency is not None or self.rate is not None

    def describe(self) -> str:
        """``concurrency=5 key_concurrency=1 rate=100/m``, or ``no limits``."""
        parts = [
            f"{label}={value}"
            for label, value in (
                ("concurrency", self.concurrency),
                ("key_concurrency", self.key_concurrency),
                ("rate", self.rate),
            )
            if value is not None
        ]
        return " ".join(parts) or "no limits"


def queue_limits(
    concurrency: int | None = None,
    key_concurrency: int | None = None,
    rate: str | Rate | None = None,
    error: type[Exception] = ConfigurationError,
) -> QueueLimits:
    """Checked limits (each None for none); a bad value raises ``error`` in one line."""
    return QueueLimits(
        concurrency=check_limit("concurrency", concurrency, error),
        key_concurrency=check_limit("key_concurrency", key_concurrency, error),
        rate=None if rate is None else parse_rate(rate, error),
    )


_declared: dict[str, QueueLimits] = {}


def declare_queue(
    name: str,
    *,
    concurrency: int | None = None,
    key_concurrency: int | None = None,
    rate: str | Rate | None = None,
) -> QueueLimits:
    """Declare a queue's limits in code, for the whole cluster.

    Every process that imports the declaration writes it to the queue's row when it starts
    (``pg-scheduler run`` and ``Scheduler.start``); the limits in force follow it unless an
    operator set others (``pg-scheduler queues set``, ``Scheduler.set_queue_limits``), until
    ``reset``. ``rate`` is ``N/PERIOD``: ``"100/1m"``, ``"10/1s"``. Declaring a name again
    replaces its limits. Raises ``ConfigurationError`` on a bad name or value::

        declare_queue("partner_api", concurrency=5)
        declare_queue("imports", key_concurrency=1)
        declare_queue("sms", rate="100/1m")
    """
    limits = queue_limits(concurrency, key_concurrency, rate)
    _declared[check_queue(name, ConfigurationError)] = limits
    return limits


def declared_queues() -> dict[str, QueueLimits]:
    """The queues declared in this process, by name."""
    return dict(_declared)
