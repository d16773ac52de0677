"""Prepares the database once for a Scheduler: the schema, then what its code declares.

Every call that touches the database goes through :meth:`DatabaseGate.ready` first, so a
Scheduler that is never started (a producer) creates the schema on first use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from .shared.db import connect_params_from_pool
from .shared.schema import ensure_schema


class DatabaseGate:
    """Creates or upgrades the schema and publishes what the code declares (queue limits,
    periodic definitions), once."""

    def __init__(
        self,
        db_pool: asyncpg.Pool,
        dsn: str | None,
        publish: Callable[[asyncpg.Connection], Awaitable[None]],
    ) -> None:
        """``dsn``: where dedicated sessions connect (default: the pool's own parameters);
        ``publish`` writes the declarations on the connection it is given."""
        self.db_pool = db_pool
        self._dsn = dsn
        self._publish = publish
        self._ready = False
        self._lock = asyncio.Lock()

    def connect_params(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments of ``asyncpg.connect`` for a session of its own."""
        if self._dsn is not None:
            return (self._dsn,), {}
        return connect_params_from_pool(self.db_pool)

    async def ready(self, *, dedicated: bool = False) -> None:
        """Create or upgrade the schema and publish the declarations, once.

        ``dedicated``: do it on a connection of its own, not the pool's. ``schedule(...,
        connection=conn)`` uses that: the caller may hold the pool's last connection, and the
        caller's transaction must not carry our DDL.
        """
        if self._ready:
            return
        async with self._lock:
            if self._ready:
                return
            if dedicated:
                args, kwargs = self.connect_params()
                conn = await asyncpg.connect(*args, **kwargs)
                try:
                    await self._prepare(conn)
                finally:
                    await conn.close()
            else:
                async with self.db_pool.acquire() as conn:
                    await self._prepare(conn)
            self._ready = True

    async def _prepare(self, conn: asyncpg.Connection) -> None:
        await ensure_schema(conn)
        await self._publish(conn)
