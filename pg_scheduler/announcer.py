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

A NOTIFY that fails (the database went away) stays owed: the next insert's own NOTIFY, the
next task, or ``Scheduler.shutdown()`` (which waits for what is owed, up to 5 s, and tries a
failed NOTIFY once more) sends it. Until then, and when the program ends without a shutdown,
the workers find the jobs by their poll (``poll_interval_seconds``), as they find any job
whose notification was lost. Inserts in the caller's transaction (``connection=``) and
``schedule_bulk`` notify in their own commit.
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

FLUSH_TIMEOUT_SECONDS = 5.0
"""The longest ``Scheduler.shutdown()`` waits for the wake-ups still owed."""


class Announcer:
    """The wake-ups of one Scheduler's inserts on its pool (the module's rules)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._inserting = False
        """An insert that notifies in its own commit is in flight."""
        self._owed = False
        """Inserts have committed (or may have) that no NOTIFY begun since announces."""
        self._failed = False
        """The sender's last NOTIFY failed, leaving what it was to announce owed."""
        self._sender: asyncio.Task[None] | None = None
        """The task that sends what is owed; in flight until it is done (a task cancelled before
        it ran is done too)."""

    def _busy(self) -> bool:
        """Whether something of this announcer that notifies is in flight."""
        return self._inserting or (self._sender is not None and not self._sender.done())

    async def write(self, insert: Callable[[bool], Awaitable[T]]) -> T:
        """Run ``insert(later)``, an autocommitted insert that leaves its wake-up to this
        announcer when ``later`` is true, and see that its job is announced."""
        if self._busy():
            try:
                return await insert(True)
            finally:
                self._owed = True
                self._send_owed()
        self._inserting = True
        owed, self._owed = self._owed, False  # this insert's NOTIFY announces them
        try:
            return await insert(False)
        except BaseException:
            self._owed = self._owed or owed  # it may not have committed
            raise
        finally:
            self._inserting = False
            self._send_owed()

    async def flush(self, timeout: float = FLUSH_TIMEOUT_SECONDS) -> None:
        """Wait up to ``timeout`` until nothing is owed and nothing is in flight, sending again
        once what a failed NOTIFY left owed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        retried = False
        while loop.time() < deadline:
            sender = self._sender
            if sender is not None and not sender.done():
                await asyncio.wait({sender}, timeout=deadline - loop.time())
            elif self._inserting:  # its end starts the sender if something is owed
                await asyncio.sleep(0.005)
            elif self._owed and self._failed and not retried:
                retried = True
                self._send_owed()
            else:
                break
        if self._owed or self._busy():
            log.warning("schedule: the workers' last wake-up is still owed after %.1f s", timeout)

    def _send_owed(self) -> None:
        """Start the sender if a NOTIFY is owed and nothing of this announcer is in flight."""
        if self._owed and not self._busy():
            try:
                self._sender = asyncio.get_running_loop().create_task(
                    self._send(), name="pg_scheduler: notify owed jobs"
                )
            except RuntimeError as exc:  # no running loop, or a closed one: left to the poll
                log.warning("schedule: could not notify the workers of new jobs (%r)", exc)

    async def _send(self) -> None:
        # No await between the last test of _owed and the end: a call that finds this task done
        # finds nothing owed that it did not add itself.
        while self._owed:
            self._owed = False
            try:
                await self._pool.execute(queries.JOB_NOTIFY_OWED, timeout=NOTIFY_TIMEOUT_SECONDS)
            except BaseException as exc:
                self._owed = True
                if not isinstance(exc, Exception):
                    raise
                self._failed = True
                log.warning("schedule: could not notify the workers of new jobs (%r)", exc)
                return
            self._failed = False
