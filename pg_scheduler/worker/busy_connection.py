"""A pool connection kept while a busy worker's statements come back to back.

Each borrow from asyncpg's pool costs the worker CPU: the acquire, then a release that runs in a
task of its own under a timeout. A busy worker's completion-and-claim statements come one after
another, a millisecond or so apart, each moving up to a batch of jobs, so it would pay that per
statement. They keep one connection while they come, and give it back once none came for
``IDLE_SECONDS``: an application's own pool (the in-process ``Scheduler``) lends it for no
longer than that after the work stops.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

IDLE_SECONDS = 0.05


class BusyConnection:
    """Holds one pool connection across back-to-back statements; returns it when idle."""

    def __init__(self, pool: asyncpg.Pool, idle_seconds: float = IDLE_SECONDS) -> None:
        self._pool = pool
        self._idle_seconds = idle_seconds
        self._conn: Any = None  # the pool's connection proxy while held
        self._in_use = False
        self._last_used = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._releases: set[asyncio.Future[None]] = set()
        self._closed = False

    async def fetch(self, query: str, *args: Any, timeout: float) -> list[asyncpg.Record]:
        """``Pool.fetch`` on the held connection (acquired if none is held)."""
        if self._in_use or self._closed:  # callers take turns; a second one at once gets the pool
            rows: list[asyncpg.Record] = await self._pool.fetch(query, *args, timeout=timeout)
            return rows
        self._in_use = True
        try:
            if self._conn is None:
                self._conn = await self._pool.acquire()
            conn = self._conn
            try:
                rows = await conn.fetch(query, *args, timeout=timeout)
                return rows
            except BaseException:
                # A failed or interrupted statement may leave the connection broken or still
                # busy: close it; the pool opens another when one is next needed.
                self._conn = None
                conn.terminate()
                self._give_back(conn)
                raise
        finally:
            self._in_use = False
            loop = asyncio.get_running_loop()
            self._last_used = loop.time()
            if self._closed and self._conn is not None:  # closed while this statement ran
                self._give_back_held()
            elif self._timer is None and self._conn is not None:
                self._timer = loop.call_later(self._idle_seconds, self._check_idle)

    def _check_idle(self) -> None:
        """One timer per idle period, not one per statement: it looks again later while the
        connection keeps being used."""
        self._timer = None
        if self._conn is None:
            return
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last_used
        if self._in_use or idle < self._idle_seconds:
            self._timer = loop.call_later(max(self._idle_seconds - idle, 0.001), self._check_idle)
            return
        self._give_back_held()

    def _give_back_held(self) -> None:
        conn, self._conn = self._conn, None
        self._give_back(conn)

    def _give_back(self, conn: Any) -> None:
        release = asyncio.ensure_future(self._pool.release(conn))
        self._releases.add(release)
        release.add_done_callback(self._releases.discard)

    async def close(self) -> None:
        """Give the connection back now (before the pool closes: it waits for every
        connection); later statements use the pool."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._conn is not None and not self._in_use:
            self._give_back_held()
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
