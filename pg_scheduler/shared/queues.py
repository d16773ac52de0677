"""Queue names: the rule every queue name follows, and the parsing of a list of them.

Every job belongs to one queue (``"default"`` unless given). A queue name is short and
identifier-like, so that it is safe in a metric label, a URL, an environment variable's list
and a log line alike: a letter or digit, then letters, digits, ``_``, ``-`` or ``.``, at most 63
characters in all. Names are case-sensitive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

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
