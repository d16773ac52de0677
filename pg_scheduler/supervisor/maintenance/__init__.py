"""Leader-only maintenance services.

They receive a fence, never the elector: whoever holds the
current term may write through it, and nobody else can."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

import asyncpg


class Transactions(Protocol):
    """A :class:`~pg_scheduler.supervisor.fence.Fence` (leader) or ``Unfenced`` (by hand)."""

    def transaction(
        self, statement_timeout_ms: int = 30_000
    ) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A transaction under a local statement timeout (a Fence's also checks the term)."""
        ...
