"""What the browser tests run against: the seeded tasks and jobs, and :class:`Site`."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")

QUEUE = "browser"
"""The queue of the flaky task: a test pauses it to hold a retried job in ``pending``."""
PERIODIC_KEY = "browser.hourly_report"
XSS_SCRIPT = "<script>window.__xss=1</script>"
XSS_ATTRIBUTE = '"><img src=x onerror="window.__xss=2">'


FLAKY_SEEN: set[str] = set()
"""Tags the flaky task has failed for: it fails the first time for a tag, succeeds after."""


async def flaky(tag: str) -> str:
    if tag not in FLAKY_SEEN:
        FLAKY_SEEN.add(tag)
        raise RuntimeError(f"flaky failure for {tag}: the first attempt always fails")
    return f"done {tag}"


async def reject(note: str, label: str = "") -> None:
    """Always fails, with its arguments in the error: the escaping test renders both."""
    raise ValueError(f"rejected note: {note} {label}")


async def hourly_report() -> None:
    pass


@dataclass
class Site:
    """The dashboard under test and the scheduler next to it, on a background event loop."""

    url: str
    dsn: str
    loop: asyncio.AbstractEventLoop
    scheduler: Any
    pool: asyncpg.Pool
    jobs: dict[str, str] = field(default_factory=dict)
    """Job ids the fixture seeded, by role: ``failed``, ``retry``, ``xss``."""

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def status(self, job_id: str) -> str | None:
        return self.run(self.pool.fetchval("SELECT status FROM scheduled_jobs WHERE job_id = $1", job_id))

    def page(self, path: str) -> str:
        return self.url + path
