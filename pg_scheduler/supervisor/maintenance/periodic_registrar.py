"""PeriodicRegistrar: turns periodic windows into job rows, on the leader only.

Each definition in ``scheduler_periodic`` has a durable cursor, ``next_run_at``: the first window
not yet written as a row. A pass writes every window up to ``now + lookahead`` and advances the
cursor, in one fenced transaction. Rows are written ahead of time so that workers wake on their
own timers exactly at the window, not when the leader next looks.

- One row per (dedup key, window): the unique index makes a repeated insert a no-op, so a
  leader change in the middle of a pass cannot duplicate a window.
- Windows are fixed (interval slots from the epoch, or cron fire times): no drift.
- After downtime (no leader, or the job was disabled), the windows that were missed are
  coalesced into one run, due now (the due time, not the window, is what misfire judges).
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
from ...shared.triggers import latest_window_at_or_before, trigger_for, window_at_or_after
from . import Transactions

log = logging.getLogger(__name__)

LOOKAHEAD_SECONDS_DEFAULT = 5.0
MAX_WINDOWS_PER_PASS = 1000


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

    async def run_once(self) -> EnqueueResult:
        inserted: dict[str, int] = {}
        async with self._tx.transaction() as conn:
            now: datetime = await conn.fetchval(queries.DB_NOW)
            horizon = now + timedelta(seconds=self.lookahead_seconds)
            for row in await conn.fetch(queries.PERIODIC_LIST_DUE, self.lookahead_seconds):
                try:
                    windows, cursor = self._windows(row, now, horizon)
                except InvalidScheduleError as exc:
                    log.error("periodic_registrar: %s has a bad schedule: %s", row["dedup_key"], exc)
                    continue
                if not windows:
                    continue
                ids = await conn.fetch(
                    queries.PERIODIC_ENQUEUE, row["dedup_key"], row["task_name"], row["priority"],
                    row["max_retries"], self.misfire_grace_time, row["use_advisory_lock"], windows,
                )
                await conn.execute(queries.PERIODIC_ADVANCE, row["dedup_key"], cursor, windows[-1])
                inserted[row["dedup_key"]] = len(ids)
        return EnqueueResult(inserted)

    def _windows(
        self, row: Mapping[str, Any], now: datetime, horizon: datetime
    ) -> tuple[list[datetime], datetime]:
        trigger = trigger_for(row["every_seconds"], row["cron"], row["timezone"])
        cursor: datetime | None = row["next_run_at"]
        if cursor is None:
            cursor = window_at_or_after(trigger, now)
        windows: list[datetime] = []
        if cursor < now:
            # Missed windows (no leader, or disabled): one run for all of them, due now.
            latest = latest_window_at_or_before(trigger, now, cursor)
            windows.append(latest)
            cursor = trigger.next_fire(latest)
        while cursor <= horizon and len(windows) < MAX_WINDOWS_PER_PASS:
            windows.append(cursor)
            cursor = trigger.next_fire(cursor)
        return windows, cursor
