"""PeriodicRegistrar: turns periodic windows into job rows, on the leader only.

Each definition in ``scheduler_periodic`` has a durable cursor, ``next_run_at``: the first window
not yet written as a row. A pass writes every window up to ``now + lookahead`` and advances the
cursor, in one fenced transaction. Rows are written ahead of time so that workers wake on their
own timers exactly at the window, not when the leader next looks.

- One row per (dedup key, window): the unique index makes a repeated insert a no-op, so a
  leader change in the middle of a pass cannot duplicate a window.
- Windows are fixed (interval slots from the epoch, or cron fire times): no drift.
- After downtime (no leader), the windows that were missed follow the job's misfire policy:
  ``coalesce`` keeps one run for all of them (the latest window, due now), ``skip`` none, ``all``
  each (back to ``catch_up`` at most, the newest :data:`MAX_CATCH_UP_WINDOWS` at most). Missed
  windows are due now: the due time, not the window, is what the misfire grace judges.
- The missed windows are those not yet written when the last leader stopped (before the cursor
  is dealt with below) and those written ahead whose start came after the last pass before the
  gap and which no worker picked up within the pickup tolerance. A gap is two passes further
  apart than the interval plus that tolerance, by leaders of two terms
  (:func:`is_leaderless_gap`). Each pass stamps its time in ``scheduler_periodic_pass``; until a
  pass after the gap has ruled on such a row, claims leave it alone, so the policy holds whether
  a worker or the new leader comes first.
- Definitions whose task no registered process can run, or whose queue none of those claims,
  are skipped (their rows would wait, then run all at once): ``scheduler_workers`` shows who
  can run what. Their cursor stays, so the windows missed meanwhile follow the misfire policy
  once a process that can run them appears.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from ...shared import queries
from ...shared.errors import InvalidScheduleError
from ...shared.metrics import metrics
from ...shared.service import PeriodicService
from ...shared.triggers import (
    Trigger,
    count_windows,
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
MISSED_AFTER_SECONDS = queries.MISSED_AFTER_SECONDS
"""A window written or picked up later than this after its start was missed; earlier, it was only
late (the first pass of a new leader) and runs as usual under every policy."""
COUNT_CAP = 10_000
"""Missed windows of a cron schedule are counted (for the metric) up to this many per outage."""


def is_leaderless_gap(
    previous: datetime | None,
    previous_epoch: int | None,
    epoch: int | None,
    now: datetime,
    interval_seconds: float,
) -> bool:
    """Whether the pass at ``now`` (of the term ``epoch``) ends a leaderless gap since the pass
    at ``previous`` (of ``previous_epoch``): passes further apart than the interval plus the
    pickup tolerance, of two terms. The same leader passing late never stopped: the windows it
    left waiting are late, not missed. When a term is unknown (a pass run outside leadership, as
    tests do, or stamped before migration 6) the spacing alone decides."""
    if previous is None or now - previous <= timedelta(seconds=interval_seconds + MISSED_AFTER_SECONDS):
        return False
    return previous_epoch is None or epoch is None or previous_epoch != epoch


@dataclass(frozen=True)
class EnqueueResult:
    """Rows a pass wrote per dedup key: new windows, and cancelled ones written again."""

    inserted: dict[str, int]


class PeriodicRegistrar(PeriodicService):
    """Leader service: writes periodic windows as job rows ahead of time, per misfire policy."""

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
        """One pass. ``now`` replaces the database clock for the window arithmetic and the pass
        stamp (tests drive outages and DST days with it); rows are still written with the
        server's time."""
        inserted: dict[str, int] = {}
        async with self._tx.transaction() as conn:
            stamp = await conn.fetchrow(queries.PERIODIC_STAMP_PASS, now)
            assert stamp is not None
            now = stamp["pass_at"]
            assert now is not None
            previous = stamp["previous_pass_at"]
            missed_before = now - timedelta(seconds=MISSED_AFTER_SECONDS)
            if is_leaderless_gap(
                previous, stamp["previous_epoch"], stamp["epoch"], now, self.interval_seconds
            ):
                assert previous is not None
                if await self._rule_written_ahead(conn, previous, missed_before, now):
                    await conn.execute(queries.JOB_NOTIFY)  # the windows kept are due now
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
                ids = await queries.periodic_enqueue(
                    conn,
                    dedup_key=row["dedup_key"],
                    task_name=row["task_name"],
                    priority=row["priority"],
                    max_retries=row["max_retries"],
                    misfire_grace_time=self.misfire_grace_time,
                    use_advisory_lock=row["use_advisory_lock"],
                    windows=windows,
                    overlap=row["overlap"],
                    queue=row["queue"],
                )
                await conn.execute(queries.PERIODIC_ADVANCE, row["dedup_key"], cursor, windows[-1])
                inserted[row["dedup_key"]] = len(ids)
        return EnqueueResult(inserted)

    @staticmethod
    async def _rule_written_ahead(
        conn: asyncpg.Connection, previous: datetime, missed_before: datetime, now: datetime
    ) -> bool:
        """Apply the misfire policy to the windows written ahead that passed in the gap since
        the previous pass (``previous``), before the cursor's missed windows are dealt with;
        returns whether it kept any to run."""
        ruled = await conn.fetch(queries.PERIODIC_RULE_MISSED, previous, missed_before, now)
        by_key: dict[tuple[str, str], list[datetime]] = defaultdict(list)
        for r in ruled:
            by_key[(r["dedup_key"], r["outcome"])].append(r["window_start"])
        for (key, outcome), starts in by_key.items():
            _count_missed(key, outcome, len(starts))
            log.warning(
                "periodic_registrar: %s: %d window(s) written ahead passed with no leader (%s .. %s): %s",
                key,
                len(starts),
                starts[0].isoformat(),
                starts[-1].isoformat(),
                _OUTCOME_WORDS[outcome],
            )
        return any(r["outcome"] == "run" for r in ruled)

    def _windows(
        self, row: Mapping[str, Any], now: datetime, horizon: datetime
    ) -> tuple[list[datetime], datetime]:
        trigger = trigger_for(
            row["every_seconds"], row["cron"], row["timezone"], row["on_dst_gap"], row["on_dst_fold"]
        )
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
        self,
        row: Mapping[str, Any],
        trigger: Trigger,
        cursor: datetime,
        before: datetime,
        now: datetime,
    ) -> tuple[list[datetime], datetime]:
        """The missed windows ``[cursor, before)`` to write under the job's misfire policy, and
        the first window not dealt with. ``coalesce`` folds the current window (``<= now``) into
        its one run too, rather than running twice in a row."""
        key, policy = row["dedup_key"], row["misfire"]
        if policy == "coalesce":
            latest = latest_window_at_or_before(trigger, now, cursor)
            _count_missed(key, "coalesced", count_windows(trigger, cursor, latest, COUNT_CAP))
            _count_missed(key, "run", 1)
            log.info(
                "periodic_registrar: %s missed the windows %s .. %s: one run for all (misfire=coalesce)",
                key,
                cursor.isoformat(),
                latest.isoformat(),
            )
            return [latest], trigger.next_fire(latest)
        if policy == "skip":
            resume = window_at_or_after(trigger, before)
            _count_missed(key, "skipped", count_windows(trigger, cursor, before, COUNT_CAP))
            log.warning(
                "periodic_registrar: %s missed the windows from %s: skipped (misfire=skip); next window %s",
                key,
                cursor.isoformat(),
                resume.isoformat(),
            )
            return [], resume
        # "all": each missed window, within catch_up, the newest MAX_CATCH_UP_WINDOWS at most.
        start = cursor
        if row["catch_up_seconds"] is not None:
            reach = before - timedelta(seconds=row["catch_up_seconds"])
            if reach > start:
                start = window_at_or_after(trigger, reach)
        missed, truncated = newest_windows(trigger, start, before, MAX_CATCH_UP_WINDOWS)
        _count_missed(key, "run", len(missed))
        dropped = count_windows(trigger, cursor, missed[0] if missed else before, COUNT_CAP)
        _count_missed(key, "skipped", dropped)
        skipped = "" if start == cursor else f" (windows before {start.isoformat()} are past catch_up)"
        log.info(
            "periodic_registrar: %s missed %d window(s) from %s: running each (misfire=all)%s%s",
            key,
            len(missed),
            cursor.isoformat(),
            skipped,
            f"; older ones dropped over the cap of {MAX_CATCH_UP_WINDOWS}" if truncated else "",
        )
        return missed, window_at_or_after(trigger, before)


_OUTCOME_WORDS = {
    "skipped": "skipped (misfire=skip, or past catch_up)",
    "coalesced": "folded into one run (misfire=coalesce)",
    "run": "running, due now",
}


def _count_missed(key: str, outcome: str, windows: int) -> None:
    """Count missed windows by what the policy did with them: skipped, coalesced (folded into
    another window's run) or run."""
    if windows > 0:
        metrics().periodic_missed_windows.labels(key, outcome).inc(windows)
