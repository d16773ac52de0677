"""Wakes the workers for the jobs ``Scheduler.schedule()`` writes, with as few NOTIFYs as it can.

Idle workers LISTEN and claim when notified. A transaction that sends a NOTIFY takes a
cluster-wide lock at commit and holds it through its commit's WAL flush, so concurrent inserts
that each notify commit one at a time: under load, that lock, not the insert, bounds how many
jobs a second producers can write (bench/README.md, steady load).

The rules, per Scheduler (one process's calls on one pool):

- An insert sent while no statement of this announcer that notifies is in flight notifies in
  its own commit, as every insert did before: a job scheduled alone wakes the workers with no
  extra round trip, whatever the program does next. Its NOTIFY also announces the jobs owed
  when it began.
- An insert sent while one is in flight leaves its wake-up for later (JOB_INSERT_LATER). Once
  it has committed, it is owed a NOTIFY, which the call in flight sends (JOB_NOTIFY_OWED) after
  its own statement, before it returns; if no call is in flight by then, the insert's own call
  sends it. So every such job is announced by a NOTIFY that begins after its commit, and once
  every ``schedule()`` call has returned, every job they wrote has been announced.
- One JOB_NOTIFY_OWED covers every insert owed when it begins: under load, the notifying commits
  go from one per job to about one per round trip of the announcement.

An announcement that fails (the database went away) stays owed, to the next call; until then,
the workers find the jobs by their poll (``poll_interval_seconds``), as they find any job whose
notification was lost. Inserts in the caller's transaction (``connection=``) and
``schedule_bulk`` notify in their own commit, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from .shared import queries

log = logging.getLogger("pg_scheduler")

T = TypeVar("T")


class Announcer:
    """The wake-ups of one Scheduler's inserts on its pool (the module's rules)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._announcing = False
        """A call is in flight whose statement notifies, or that is sending what is owed."""
        self._owed = False
        """Inserts have committed that no NOTIFY begun since has announced."""

    async def insert(self, write: Callable[[bool], Awaitable[T]]) -> T:
        """Run ``write(later)``, an autocommitted insert that leaves its wake-up for later when
        ``later`` is true, and see that its job is announced (the module's rules)."""
        if self._announcing:
            result = await write(True)
            self._owed = True
            if self._announcing:
                return result  # the call in flight announces it before it returns
        else:
            self._announcing = True
            # This insert's NOTIFY, sent at its commit, announces what is owed so far too.
            owed, self._owed = self._owed, False
            try:
                result = await write(False)
            except BaseException:
                self._owed = self._owed or owed
                await self._settle()
                raise
        await self._settle()
        return result

    async def _settle(self) -> None:
        """Send what is owed, then leave the announcing to the next call."""
        self._announcing = True
        try:
            while self._owed:
                self._owed = False
                try:
                    await self._pool.execute(queries.JOB_NOTIFY_OWED)
                except BaseException as exc:
                    self._owed = True  # the next call sends it; the workers' poll finds the jobs
                    if not isinstance(exc, Exception):
                        raise
                    log.warning("schedule: could not notify the workers of new jobs (%r)", exc)
                    return
        finally:
            self._announcing = False
