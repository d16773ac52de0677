"""Leader election on a PostgreSQL session advisory lock, with an epoch for fencing.

States and transitions::

        start ──► FOLLOWER ──(try-lock succeeds; epoch += 1)──► LEADER
                     ▲                                            │
                     │   check fails / errors / trust window over │
                     └──────── close the lock session ◄───────────┘
                             (the server frees the lock)

- The lock lives on a dedicated connection (never a pool's: returning a pooled connection drops
  its locks). That session has ``idle_session_timeout = ttl`` and TCP keepalives on both ends, so
  when this process freezes or is cut off the server ends the session and frees the lock within
  about ``ttl`` seconds, not after the two-hour TCP default.
- A follower tries ``pg_try_advisory_lock`` every ``elect_interval`` (+ up to 1 s of jitter), and
  at once when the leader announces ``resigned`` on ``pg_scheduler_leadership``.
- On winning, the elector bumps ``scheduler_leader.epoch`` on the same session: that number is
  the term. Leader writes check it (``FOR SHARE``) in their own transaction (see ``fence.py``).
- A leader *checks* (it never re-locks: session advisory locks stack) every ``ttl / 3`` that
  ``pg_locks`` shows its lock on its own backend and that the epoch is still its own. A check
  that fails, errors or comes after the trust window makes it step down at once.
- Trust window: ``trusted_until = start of last good check + F - margin``, where F is the
  earliest the server may end a silent session (``idle_session_timeout``, its TCP keepalives and
  ``tcp_user_timeout``, all tuned to about ``ttl``; see ``SessionLiveness.for_lock_ttl``). The
  server last heard from us no earlier than that check began, so this process stops trusting
  itself before the lock can be freed and anybody else elected.
- Graceful stop: stop the leader services, ``pg_advisory_unlock`` + NOTIFY ``resigned`` so a
  follower takes over within a second, close.

Takeover times: clean shutdown < 1 s; crash (FIN/RST frees the lock) <= elect interval + jitter;
freeze or partition <= ttl + elect interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from ..shared import queries
from ..shared.db import SessionLiveness, connect_dedicated
from ..shared.locks import LEADER_LOCK
from ..shared.service import cancel_and_wait
from .fence import Term

log = logging.getLogger(__name__)

LEADERSHIP_CHANNEL = "pg_scheduler_leadership"


class Elector:
    """Runs the election loop. ``on_elected``/``on_deposed`` are awaited in order, never
    concurrently, so the leader services see a clean start/stop sequence."""

    def __init__(
        self,
        connect_args: tuple[Any, ...],
        connect_kwargs: dict[str, Any],
        *,
        node_id: str,
        ttl_seconds: float,
        elect_interval_seconds: float,
        on_elected: Callable[[Term], Awaitable[None]],
        on_deposed: Callable[[], Awaitable[None]],
    ) -> None:
        self._connect_args = connect_args
        self._connect_kwargs = connect_kwargs
        self.node_id = node_id
        self.ttl_seconds = ttl_seconds
        self.elect_interval_seconds = elect_interval_seconds
        self.renew_interval_seconds = ttl_seconds / 3
        self._liveness = SessionLiveness.for_lock_ttl(ttl_seconds)
        # Trust lasts until shortly before the server could free the lock (its keepalives, user
        # timeout or idle timeout, counted from our last check), never longer.
        self._margin = min(ttl_seconds / 5, 2.0)
        self.trust_seconds = self._liveness.server_frees_after_seconds - self._margin
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._conn: asyncpg.Connection | None = None
        self._term: Term | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._conn_lost = asyncio.Event()
        self._changed = asyncio.Condition()
        self.elections = 0

    # ------------------------------------------------------------------ public

    @property
    def term(self) -> Term | None:
        """The current term while trusted; None when not leading or past the trust window."""
        term = self._term
        return term if term is not None and term.trusted else None

    @property
    def is_leader(self) -> bool:
        """Whether this process holds a trusted term now."""
        return self.term is not None

    async def start(self) -> None:
        """Start the election loop in a task of its own; does nothing if it runs."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="pg_scheduler:elector")

    async def stop(self) -> None:
        """Step down if leading (services first, then unlock and announce), and stop."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._step_down(resign=True, reason="stopping")
        await self._close()

    async def wait_until(self, leader: bool, timeout: float) -> None:
        """Test helper: wait until this elector leads (or does not)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.is_leader == leader)

    async def attempt_elect(self) -> bool:
        """One try at the lock. Public so that tests can force an election."""
        conn = await self._connection()
        got = await conn.fetchval(queries.LEADER_TRY_LOCK, *LEADER_LOCK, timeout=5)
        if not got:
            return False
        started = time.monotonic()
        epoch = await conn.fetchval(
            queries.LEADER_BUMP_EPOCH, self.node_id, socket.gethostname(), os.getpid(), timeout=10
        )
        self._term = Term(int(epoch), started + self.trust_seconds)
        self.elections += 1
        log.info("elector: %s became leader (epoch %s)", self.node_id, epoch)
        try:
            await self._on_elected(self._term)
        except Exception:
            log.exception("elector: leader services failed to start; resigning")
            await self._step_down(resign=True, reason="services failed to start")
            return False
        await self._notify_changed()
        return True

    async def attempt_renew(self) -> bool:
        """Check (never re-take) the lock and the epoch. Public so that tests can force it."""
        term = self._term
        if term is None:
            return False
        started = time.monotonic()
        left = term.trusted_until - started
        if left <= 0:
            await self._step_down(resign=False, reason="trust window passed before the check")
            return False
        try:
            conn = self._conn
            if conn is None or conn.is_closed():
                raise ConnectionError("lock session is gone")
            ok = await conn.fetchval(queries.LEADER_CHECK, *LEADER_LOCK, term.epoch, timeout=min(left, 5.0))
        except (TimeoutError, Exception) as exc:
            await self._step_down(resign=False, reason=f"check failed: {exc!r}")
            return False
        if not ok:
            await self._step_down(resign=False, reason="lock or epoch no longer ours")
            return False
        if time.monotonic() > term.trusted_until:
            await self._step_down(resign=False, reason="check answered after the trust window")
            return False
        self._term = Term(term.epoch, started + self.trust_seconds)
        return True

    # ------------------------------------------------------------------ internals

    async def _run(self) -> None:
        while True:
            try:
                if self._term is None:
                    await self.attempt_elect()
                else:
                    await self.attempt_renew()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("elector: %s; reconnecting", exc)
                await self._step_down(resign=False, reason=f"error: {exc!r}")
                await self._close()
            if self._term is not None:
                delay = self.renew_interval_seconds
            else:
                delay = self.elect_interval_seconds + random.uniform(0, 1.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wait_for_event()
            self._wake.clear()
            if self._conn_lost.is_set():
                self._conn_lost.clear()
                await self._step_down(resign=False, reason="lock session terminated")
                await self._close()

    async def _wait_for_event(self) -> None:
        wake = asyncio.ensure_future(self._wake.wait())
        lost = asyncio.ensure_future(self._conn_lost.wait())
        try:
            await asyncio.wait({wake, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()
            lost.cancel()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        self._conn_lost.clear()
        conn = await connect_dedicated(
            self._connect_args,
            self._connect_kwargs,
            application_name=f"pg_scheduler:leader:{self.node_id}",
            liveness=self._liveness,
        )
        conn.add_termination_listener(lambda _c: self._conn_lost.set())
        await conn.add_listener(LEADERSHIP_CHANNEL, self._on_notification)
        self._conn = conn
        return conn

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload == "resigned" and self._term is None:
            # Small jitter so that followers do not all hit the lock in the same millisecond.
            asyncio.get_running_loop().call_later(random.uniform(0, 0.05), self._wake.set)

    async def _step_down(self, *, resign: bool, reason: str) -> None:
        term, self._term = self._term, None
        if term is None:
            return
        log.info("elector: %s stepping down from epoch %s: %s", self.node_id, term.epoch, reason)
        try:
            await self._on_deposed()
        except Exception:
            log.exception("elector: error while stopping leader services")
        if resign:
            await self._resign()
        else:
            # The lock may still be ours on the server: drop the session so that it is freed.
            await self._close()
        await self._notify_changed()

    async def _resign(self) -> None:
        conn = self._conn
        if conn is None or conn.is_closed():
            return
        for _ in range(3):
            try:
                await conn.execute(queries.LEADER_RESIGN, *LEADER_LOCK, timeout=2)
                return
            except (TimeoutError, Exception) as exc:
                log.warning("elector: resign failed (%r); retrying", exc)
        await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.close(), timeout=2)
        except (TimeoutError, Exception):
            conn.terminate()

    async def _notify_changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()
