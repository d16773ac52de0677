"""Turning database values into what the pages show: truncated text, ages, the chart.

Nothing here marks text safe: every value reaches the page through Jinja's autoescape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from .reads import MinuteBar

ARGS_SHOWN = 10_000
"""Characters of a job's arguments (or result) shown on its page; the rest is in the raw JSON."""

ERROR_SHOWN = 20_000
"""Characters of a job's error and traceback shown on its page."""


@dataclass(frozen=True)
class Shown:
    """A text cut to what a page shows, and how many characters were left out."""

    text: str
    more: int


def shown(text: str, limit: int) -> Shown:
    """``text`` cut to ``limit`` characters."""
    if len(text) <= limit:
        return Shown(text, 0)
    return Shown(text[:limit], len(text) - limit)


def pretty_json(value: Any) -> str:
    """``value`` as indented JSON (non-ASCII kept as it is)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def age(seconds: float | None) -> str:
    """``42s``, ``3m 05s``, ``2h 10m``, ``4d 3h``."""
    if seconds is None:
        return "–"
    s = max(float(seconds), 0.0)
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{s:.0f}s"
    minutes, sec = divmod(int(s), 60)
    if minutes < 60:
        return f"{minutes}m {sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def pathpart(value: Any) -> str:
    """``value`` quoted for one segment of a URL path (``/`` included)."""
    return quote(str(value), safe="")


@dataclass(frozen=True)
class Bar:
    """One minute's stacked bar: completed below, failed on top, in SVG units."""

    x: float
    label: str
    completed: int
    failed: int
    completed_y: float
    completed_h: float
    failed_y: float
    failed_h: float


@dataclass(frozen=True)
class Chart:
    """The last hour's bar chart, laid out for an inline SVG."""

    width: int
    height: int
    bar_width: float
    bars: list[Bar]
    max: int
    first: str
    last: str


def chart(minutes: list[MinuteBar], *, width: int = 600, height: int = 80) -> Chart:
    """Stacked bars of completed and failed jobs per minute, scaled to the busiest minute."""
    peak = max((m.completed + m.failed for m in minutes), default=0)
    slot = width / max(len(minutes), 1)
    bar_width = max(slot - 1.0, 1.0)
    bars = []
    for i, m in enumerate(minutes):
        ch = height * m.completed / peak if peak else 0.0
        fh = height * m.failed / peak if peak else 0.0
        bars.append(
            Bar(
                x=round(i * slot, 2),
                label=_hhmm(m.minute),
                completed=m.completed,
                failed=m.failed,
                completed_y=round(height - ch, 2),
                completed_h=round(ch, 2),
                failed_y=round(height - ch - fh, 2),
                failed_h=round(fh, 2),
            )
        )
    return Chart(
        width=width,
        height=height,
        bar_width=round(bar_width, 2),
        bars=bars,
        max=peak,
        first=_hhmm(minutes[0].minute) if minutes else "",
        last=_hhmm(minutes[-1].minute) if minutes else "",
    )


def _hhmm(t: datetime) -> str:
    return t.strftime("%H:%M")
