"""LISTEN for new jobs and cancellations on a dedicated session.

Notifications only make a worker look sooner; nothing depends on them. If the session drops, the
worker falls back to its poll interval until the listener reconnects (with backoff).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from ..shared.db import close_quietly, connect_dedicated
from ..shared.service import cancel_and_wait

log = logging.getLogger(__name__)

JOBS_CHANNEL = "pg_scheduler_jobs"
CANCEL_CHANNEL = "pg_scheduler_cancel"


class Listener:
    """Keeps a LISTEN session (jobs, cancel) up, with backoff; calls ``on_jobs``/``on_cancel``."""

    name = "listener"

    def __init__(
        self,
        connect_args: tuple[Any, ...],
        connect_kwargs: dict[str, Any],
        *,
        worker_id: str,
        on_jobs: Callable[[], None],
        on_cancel: Callable[[str], None],
    ) -> None:
        self._connect_args = connect_args
        self._connect_kwargs = connect_kwargs
        self.worker_id = worker_id
        self._on_jobs = on_jobs
        self._on_cancel = on_cancel
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        """Start listening in a task of its own."""
        self._task = asyncio.create_task(self._run(), name="pg_scheduler:listener")

    async def stop(self) -> None:
        """Cancel the task and close the session."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self.connected.clear()
        conn, self._conn = self._conn, None
        await close_quietly(conn)

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                self._lost.clear()
                conn = await connect_dedicated(
                    self._connect_args,
                    self._connect_kwargs,
                    application_name=f"pg_scheduler:listen:{self.worker_id}",
                )
                self._conn = conn
                conn.add_termination_listener(lambda _c: self._lost.set())
                await conn.add_listener(JOBS_CHANNEL, self._jobs)
                await conn.add_listener(CANCEL_CHANNEL, self._cancel)
                self.connected.set()
                delay = 0.5
                # A (re)connect may have missed notifications: look now.
                self._on_jobs()
                await self._lost.wait()
                log.warning("listener: session lost; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listener: cannot listen (%s); retrying in %.1fs", exc, delay)
            self.connected.clear()
            conn, self._conn = self._conn, None
            await close_quietly(conn)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _jobs(self, _conn: Any, _pid: int, _channel: str, _payload: str) -> None:
        self._on_jobs()

    def _cancel(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._on_cancel(payload)
