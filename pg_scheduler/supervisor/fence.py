"""Epoch-fenced leader transactions.

A leader's term is the epoch it bumped when it won the advisory lock. Every leader write runs in
a transaction that first reads the epoch row ``FOR SHARE``: a new leader's epoch bump waits for
such transactions to commit, and once bumped the old epoch matches nothing, so a deposed leader
(frozen, partitioned, slow) cannot write even if its other connections still work.

A leader frozen *inside* such a transaction would hold the share lock, and so the next leader's
bump, until it thaws: its kernel still answers TCP keepalives. So the server ends the transaction
itself within the lock's TTL, as it ends the frozen leader's lock session: each transaction
carries ``idle_in_transaction_session_timeout`` equal to the TTL (frozen between statements) and
a ``statement_timeout`` of at most the TTL (frozen inside one: asyncpg prepares a new statement
with Parse and Flush, then waits for the answer before it sends Execute and Sync, and the server
keeps the statement's timer running across those messages).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from ..shared import queries
from ..shared.config import LEADER_TTL_SECONDS_DEFAULT
from ..shared.errors import LeadershipLostError


@dataclass(frozen=True)
class Term:
    """A leader's term: the epoch it bumped, and when (``time.monotonic()``) its trust ends."""

    epoch: int
    trusted_until: float
    """``time.monotonic()`` after which this process must not act as leader without a new check."""

    @property
    def trusted(self) -> bool:
        """Whether the trust window is still open."""
        return time.monotonic() < self.trusted_until


class Fence:
    """Opens leader transactions for whoever holds the current term."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        current_term: Callable[[], Term | None],
        *,
        ttl_seconds: float = LEADER_TTL_SECONDS_DEFAULT,
    ) -> None:
        """``ttl_seconds``: the leader lock's TTL, the longest the server lets a transaction of
        a frozen leader hold the epoch row."""
        self._pool = pool
        self._current_term = current_term
        self._ttl_ms = max(1, round(ttl_seconds * 1000))

    def term(self) -> Term:
        """The current term; LeadershipLostError when not leading or past the trust window."""
        term = self._current_term()
        if term is None:
            raise LeadershipLostError("not the leader")
        if not term.trusted:
            raise LeadershipLostError(f"term of epoch {term.epoch} is past its trust window")
        return term

    @asynccontextmanager
    async def transaction(self, statement_timeout_ms: int = 30_000) -> AsyncIterator[asyncpg.Connection]:
        """A pool transaction that first holds the term's epoch row ``FOR SHARE``, its statements
        under ``statement_timeout_ms`` or the TTL, whichever is shorter; raises
        LeadershipLostError without a trusted term or once the epoch has moved on."""
        term = self.term()
        async with self._pool.acquire() as conn, conn.transaction():
            statement_ms = min(int(statement_timeout_ms), self._ttl_ms)
            fenced = await conn.fetchrow(
                queries.LEADER_FENCE, term.epoch, str(statement_ms), str(self._ttl_ms)
            )
            if fenced is None:
                raise LeadershipLostError(f"epoch {term.epoch} is no longer current")
            yield conn


class Unfenced:
    """For maintenance run by hand (``Scheduler.run_vacuum()``): same interface, no epoch."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(self, statement_timeout_ms: int = 30_000) -> AsyncIterator[asyncpg.Connection]:
        """A pool transaction under a local statement timeout, with no epoch check."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(queries.DB_SET_STATEMENT_TIMEOUT, str(int(statement_timeout_ms)))
            yield conn
