"""Wakes the workers for the jobs ``Scheduler.schedule()`` writes, with as few NOTIFYs as it can.

Idle workers LISTEN and claim when notified. A transaction that sends a NOTIFY takes a
cluster-wide lock at commit and holds it through its commit's WAL flush, so concurrent inserts
that each notify commit one at a time: under load, that lock, not the insert, bounds how many
jobs a second producers can write (bench/README.md, steady load).

The rules, per Scheduler (one process's calls on one pool):

- An insert sent while no NOTIFY of this announcer is in flight notifies in its own commit: a
  job scheduled alone wakes the workers with no extra round trip. That NOTIFY also announces
  the jobs owed when the insert began.
- An insert sent while one is in flight leaves its wake-up for later (JOB_INSERT_LATER). When
  its call ends, however it ends (a call cancelled or timed out may have committed), a NOTIFY
  is owed. A background task of the announcer sends it (JOB_NOTIFY_OWED) once nothing else of
  the announcer is in flight: every such job is announced by a NOTIFY begun after its commit,
  and no caller waits for another's.
- One JOB_NOTIFY_OWED covers every insert owed when it begins: under load, the notifying commits
  go from one per job to about one per round trip of that NOTIFY.

A NOTIFY that fails (the database went away) stays owed: the next insert's own NOTIFY, or the
next task, sends it. Until then, and when the program ends before the task has sent it (it
did not call ``Scheduler.shutdown()``, which waits for it), the workers find the jobs by their
poll (``poll_interval_seconds``), as they find any job whose notification was lost. Inserts in
the caller's transaction (``connection=``) and ``schedule_bulk`` notify in their own commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from .shared import queries

log = logging.getLogger("pg_scheduler")

T = TypeVar("T")

NOTIFY_TIMEOUT_SECONDS = 10.0
"""The longest JOB_NOTIFY_OWED waits on a database that stopped answering."""


class Announcer:
    """The wake-ups of one Scheduler's inserts on its pool (the module's rules)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._in_flight = False
        """An insert that notifies in its own commit, or the sender, is in flight."""
        self._owed = False
        """Inserts have committed (or may have) that no NOTIFY begun since announces."""
        self._sender: asyncio.Task[None] | None = None

    async def write(self, insert: Callable[[bool], Awaitable[T]]) -> T:
        """Run ``insert(later)``, an autocommitted insert that leaves its wake-up to this
        announcer when ``later`` is true, and see that its job is announced."""
        if self._in_flight:
            try:
                return await insert(True)
            finally:
                self._owed = True
                self._send_owed()
        self._in_flight = True
        owed, self._owed = self._owed, False  # this insert's NOTIFY announces them
        try:
            return await insert(False)
        except BaseException:
            self._owed = self._owed or owed  # it may not have committed
            raise
        finally:
            self._in_flight = False
            self._send_owed()

    async def flush(self, timeout: float = NOTIFY_TIMEOUT_SECONDS) -> None:
        """Wait (up to ``timeout``) for the NOTIFY owed to be sent, if the sender is at work."""
        sender = self._sender
        if sender is not None and not sender.done():
            await asyncio.wait({sender}, timeout=timeout)

    def _send_owed(self) -> None:
        """Start the sender if a NOTIFY is owed and nothing of this announcer is in flight."""
        if self._owed and not self._in_flight:
            self._in_flight = True
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        try:
            while self._owed:
                self._owed = False
                try:
                    await self._pool.execute(queries.JOB_NOTIFY_OWED, timeout=NOTIFY_TIMEOUT_SECONDS)
                except Exception as exc:
                    self._owed = True
                    log.warning("schedule: could not notify the workers of new jobs (%r)", exc)
                    return
        finally:
            self._in_flight = False
