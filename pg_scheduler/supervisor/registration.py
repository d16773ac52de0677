"""The supervisor's own row in the process registry, touched every heartbeat period.

The row is in ``scheduler_workers``, of kind ``supervisor``.

Workers keep their rows from their heartbeat threads; the supervisor's event loop never runs a
job, so a plain periodic service is enough. ``pg-scheduler status`` reads these rows, and the
leader prunes those whose heartbeat went stale (a pod that died without deregistering).
"""

from __future__ import annotations

import logging
import os
import socket

import asyncpg

from ..shared import queries
from ..shared.service import PeriodicService

log = logging.getLogger(__name__)

DEREGISTER_TIMEOUT_SECONDS = 5.0


class Registration(PeriodicService):
    """Periodic service: keeps the supervisor's own row in ``scheduler_workers`` fresh."""

    name = "registration"

    def __init__(self, pool: asyncpg.Pool, *, process_id: str, interval_seconds: float) -> None:
        super().__init__(interval_seconds)
        self._pool = pool
        self.process_id = process_id

    async def run_once(self) -> None:
        """Insert the supervisor's row, or touch its heartbeat if it is there."""
        await self._pool.execute(
            queries.WORKER_REGISTER,
            self.process_id,
            "supervisor",
            socket.gethostname(),
            os.getpid(),
            [],
            None,
            None,
            timeout=self.interval_seconds,
        )

    async def deregister(self) -> None:
        """Stop the service and delete the row; on failure log it (the leader prunes the row)."""
        await self.stop()
        try:
            await self._pool.execute(
                queries.WORKER_DEREGISTER, self.process_id, timeout=DEREGISTER_TIMEOUT_SECONDS
            )
        except Exception as exc:
            log.warning(
                "supervisor: could not deregister %s (%r); the leader prunes it when its "
                "heartbeat goes stale",
                self.process_id,
                exc,
            )
