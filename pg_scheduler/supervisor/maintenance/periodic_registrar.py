"""PeriodicRegistrar: turns periodic windows into job rows, on the leader only.

Each definition in ``scheduler_periodic`` has a durable cursor, ``next_run_at``: the first window
not yet written as a row. A pass writes every window up to ``now + lookahead`` and advances the
cursor, in one fenced transaction. Rows are written ahead of time so that workers wake on their
own timers exactly at the window, not when the leader next looks.

- One row per (dedup key, window): the unique index makes a repeated insert a no-op, so a
  leader change in the middle of a pass cannot duplicate a window.
- Windows are fixed (interval slots from the epoch, or cron fire times): no drift.
- After downtime (no leader), the windows that were missed follow the
  job's misfire policy: ``coalesce`` writes one run for all of them (the latest window), ``skip``
  writes none, ``all`` writes each (back to ``catch_up`` at most, the newest
  :data:`MAX_CATCH_UP_WINDOWS` at most). Missed windows are due now: the due time, not the window,
  is what the misfire grace judges.
- Definitions whose task no live worker registered are skipped (their rows would wait forever):
  ``scheduler_workers.tasks`` shows who can run what.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ...shared import queries
from ...shared.errors import InvalidScheduleError
from ...shared.service import PeriodicService
from ...shared.triggers import (
    Trigger,
    latest_window_at_or_before,
    newest_windows,
    trigger_for,
    window_at_or_after,
)
from . import Transactions

log = logging.getLogger(__name__)

LOOKAHEAD_SECONDS_DEFAULT = 5.0
MAX_WINDOWS_PER_PASS = 1000
MAX_CATCH_UP_WINDOWS = 1000
MISSED_AFTER_SECONDS = 1.0
"""A window written later than this after its start was missed; earlier, it was only written late
(the first pass of a new leader) and runs as usual under every policy."""


@dataclass(frozen=True)
class EnqueueResult:
    inserted: dict[str, int]


class PeriodicRegistrar(PeriodicService):
    name = "periodic_registrar"

    def __init__(
        self,
        transactions: Transactions,
        *,
        interval_seconds: float,
        misfire_grace_time: float | None,
        lookahead_seconds: float = LOOKAHEAD_SECONDS_DEFAULT,
    ) -> None:
        super().__init__(interval_seconds)
        self._tx = transactions
        self.misfire_grace_time = misfire_grace_time
        self.lookahead_seconds = max(lookahead_seconds, 2 * interval_seconds)

    async def run_once(self, now: datetime | None = None) -> EnqueueResult:
        """One pass. ``now`` replaces the database clock for the window arithmetic (tests drive
        outages and DST days with it); rows are still written with the server's time."""
        inserted: dict[str, int] = {}
        async with self._tx.transaction() as conn:
            if now is None:
                now = await conn.fetchval(queries.DB_NOW)
            assert now is not None
            horizon = now + timedelta(seconds=self.lookahead_seconds)
            for row in await conn.fetch(queries.PERIODIC_LIST_DUE, self.lookahead_seconds):
                try:
                    windows, cursor = self._windows(row, now, horizon)
                except InvalidScheduleError as exc:
                    log.error("periodic_registrar: %s has a bad schedule: %s", row["dedup_key"], exc)
                    continue
                if not windows:
                    if cursor != row["next_run_at"]:
                        await conn.execute(queries.PERIODIC_ADVANCE, row["dedup_key"], cursor, None)
                    continue
                ids = await conn.fetch(
                    queries.PERIODIC_ENQUEUE, row["dedup_key"], row["task_name"], row["priority"],
                    row["max_retries"], self.misfire_grace_time, row["use_advisory_lock"], windows,
                    row["overlap"],
                )
                await conn.execute(queries.PERIODIC_ADVANCE, row["dedup_key"], cursor, windows[-1])
                inserted[row["dedup_key"]] = len(ids)
        return EnqueueResult(inserted)

    def _windows(
        self, row: Mapping[str, Any], now: datetime, horizon: datetime
    ) -> tuple[list[datetime], datetime]:
        trigger = trigger_for(row["every_seconds"], row["cron"], row["timezone"],
                              row["on_dst_gap"], row["on_dst_fold"])
        missed_before = now - timedelta(seconds=MISSED_AFTER_SECONDS)
        # A new (or re-enabled, or rescheduled) job starts at its next window. A stored cursor is
        # a window start (the registrar writes it); normalising it costs one step and keeps a
        # hand-set cursor from being taken for a window.
        cursor = window_at_or_after(trigger, row["next_run_at"] or now)
        windows: list[datetime] = []
        if cursor < missed_before:
            windows, cursor = self._missed(row, trigger, cursor, missed_before, now)
        while cursor <= horizon and len(windows) < MAX_WINDOWS_PER_PASS:
            windows.append(cursor)
            cursor = trigger.next_fire(cursor)
        return windows, cursor

    def _missed(
        self, row: Mapping[str, Any], trigger: Trigger, cursor: datetime, before: datetime,
        now: datetime,
    ) -> tuple[list[datetime], datetime]:
        """The missed windows ``[cursor, before)`` to write under the job's misfire policy, and
        the first window not dealt with. ``coalesce`` folds the current window (``<= now``) into
        its one run too, rather than running twice in a row."""
        key, policy = row["dedup_key"], row["misfire"]
        if policy == "coalesce":
            latest = latest_window_at_or_before(trigger, now, cursor)
            log.info("periodic_registrar: %s missed the windows %s .. %s: one run for all "
                     "(misfire=coalesce)", key, cursor.isoformat(), latest.isoformat())
            return [latest], trigger.next_fire(latest)
        if policy == "skip":
            resume = window_at_or_after(trigger, before)
            log.warning("periodic_registrar: %s missed the windows from %s: skipped "
                        "(misfire=skip); next window %s", key, cursor.isoformat(),
                        resume.isoformat())
            return [], resume
        # "all": each missed window, within catch_up, the newest MAX_CATCH_UP_WINDOWS at most.
        start = cursor
        if row["catch_up_seconds"] is not None:
            reach = before - timedelta(seconds=row["catch_up_seconds"])
            if reach > start:
                start = window_at_or_after(trigger, reach)
        missed, truncated = newest_windows(trigger, start, before, MAX_CATCH_UP_WINDOWS)
        skipped = "" if start == cursor else f" (windows before {start.isoformat()} are past catch_up)"
        log.info("periodic_registrar: %s missed %d window(s) from %s: running each "
                 "(misfire=all)%s%s", key, len(missed), cursor.isoformat(), skipped,
                 f"; older ones dropped over the cap of {MAX_CATCH_UP_WINDOWS}" if truncated else "")
        return missed, window_at_or_after(trigger, before)
