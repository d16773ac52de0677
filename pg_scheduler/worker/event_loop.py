"""The event loop a worker process runs on.

uvloop (libuv, by asyncpg's authors) where it is installed, which it is by default on Linux and
macOS: a worker's cost per job is mostly the event loop's own work (a task per job, the socket
reads and writes of its statements, futures and callbacks), and uvloop does that work in C, for
less CPU per job (bench/README.md has the figures).
``asyncio`` stays available for an application whose code needs the standard loop.
"""

from __future__ import annotations

import asyncio
import importlib.util

EVENT_LOOPS = ("auto", "asyncio", "uvloop")
"""``auto``: uvloop if installed, else asyncio."""


def uvloop_installed() -> bool:
    """Whether uvloop can be imported here."""
    return importlib.util.find_spec("uvloop") is not None


def resolve(kind: str) -> str:
    """The loop ``kind`` means here: ``asyncio`` or ``uvloop``. Raises ValueError for an unknown
    kind, or for ``uvloop`` where it is not installed."""
    if kind not in EVENT_LOOPS:
        raise ValueError(f"unknown event loop {kind!r}: choose one of {', '.join(EVENT_LOOPS)}")
    if kind == "auto":
        return "uvloop" if uvloop_installed() else "asyncio"
    if kind == "uvloop" and not uvloop_installed():
        raise ValueError("event loop 'uvloop' is not installed: pip install uvloop, or choose 'asyncio'")
    return kind


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new loop of ``kind`` (as :func:`resolve` reads it)."""
    if resolve(kind) == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()
