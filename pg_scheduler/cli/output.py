"""How commands print: aligned tables for people, JSON for programs. Times are shown in UTC."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

NONE = "-"


def utc(moment: datetime | None, *, timespec: str = "seconds") -> str:
    """A time in UTC, ISO 8601 (``2025-01-31T09:00:00+00:00``); ``-`` for none."""
    if moment is None:
        return NONE
    return moment.astimezone(UTC).isoformat(timespec=timespec)


def seconds(value: float | None) -> str:
    """A duration as ``1.5s``; ``-`` for none."""
    return NONE if value is None else f"{value:.1f}s"


def cell(value: Any) -> str:
    """A table cell: times in UTC, booleans as yes/no, lists joined by commas, ``-`` for none."""
    if value is None:
        return NONE
    if isinstance(value, datetime):
        return utc(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or NONE
    return str(value)


def one_line(text: str | None, width: int = 60) -> str:
    """The first line of ``text``, cut to ``width`` characters; ``…`` marks what was left out."""
    lines = (text or "").strip().splitlines()
    if not lines:
        return NONE
    if len(lines) > 1 or len(lines[0]) > width:
        return lines[0][: width - 1] + "…"
    return lines[0]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "") -> str:
    """Columns aligned on the widest cell; the last column is not padded."""
    text = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        padded = [v.ljust(w) for v, w in zip(values[:-1], widths[:-1], strict=True)]
        return (indent + "  ".join([*padded, values[-1]])).rstrip()

    return "\n".join([line(list(headers)), *(line(r) for r in text)])


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc(value, timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def to_json(value: Any) -> str:
    """Times as UTC ISO 8601 strings, durations as seconds."""
    return json.dumps(value, default=_default, indent=2, sort_keys=False)
