"""The misfire policy after an outage of the only replica, with real processes.

One replica runs three periodic jobs on the same 6-second windows, one per misfire policy. It is
killed with SIGKILL 2 s into a window, after that window's runs, when the leader has already
written the next window ahead; nothing runs for three windows; a new replica starts 2.5 s into a
window. The missed windows are the three that passed (the one written ahead and the two after).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import defaultdict
from datetime import UTC, datetime

import asyncpg
import pytest

from tests.replicas import ensure_events_table, start_replica
from tests.support import wait_for

pytestmark = pytest.mark.slow

PERIOD = 6.0
POLICIES = ("skip", "coalesce", "all")


async def runs_by_key(pool: asyncpg.Pool) -> dict[str, list[datetime]]:
    """The window of every recorded run, by periodic key, in the order they ran."""
    rows = await pool.fetch(
        "SELECT j.dedup_key, j.window_start FROM test_events AS e "
        "JOIN scheduled_jobs AS j ON j.job_id = e.tag WHERE e.kind = 'outage' ORDER BY e.id"
    )
    found: dict[str, list[datetime]] = defaultdict(list)
    for r in rows:
        found[r["dedup_key"]].append(r["window_start"])
    return found


async def sleep_until(moment: float) -> None:
    """The scenario's clock (a kill or a restart at a given point of a window), not a wait for
    something to happen."""
    await asyncio.sleep(max(0.0, moment - time.time()))


async def test_only_replica_killed_then_restarted_after_three_windows_follows_each_policy(
    pool: asyncpg.Pool, dsn: str
) -> None:
    await ensure_events_table(pool)
    first = await start_replica(dsn, APP_PERIODIC="outage")
    try:

        async def fresh_window() -> float | None:
            """A window all three jobs ran, seen early enough to kill 2 s into it."""
            runs = await runs_by_key(pool)
            common = set.intersection(*(set(runs.get(f"outage.{p}", [])) for p in POLICIES))
            newest = max(common).timestamp() if common else None
            return newest if newest is not None and time.time() < newest + 1.5 else None

        window = await wait_for(fresh_window, timeout=30, message="a window run by all three jobs")
        await sleep_until(window + 2.0)
        written = await pool.fetch(
            "SELECT dedup_key FROM scheduled_jobs WHERE window_start = to_timestamp($1) "
            "AND status = 'pending'",
            window + PERIOD,
        )
        assert sorted(r["dedup_key"] for r in written) == [f"outage.{p}" for p in sorted(POLICIES)]
        first.signal(signal.SIGKILL)
        await first.wait(10)
    finally:
        await first.stop()

    missed = {datetime.fromtimestamp(window + k * PERIOD, UTC) for k in (1, 2, 3)}
    resume = datetime.fromtimestamp(window + 4 * PERIOD, UTC)
    await sleep_until(window + 3 * PERIOD + 2.5)
    second = await start_replica(dsn, APP_PERIODIC="outage")
    try:

        async def ran_next_window() -> bool:
            runs = await runs_by_key(pool)
            return all(resume in runs.get(f"outage.{p}", []) for p in POLICIES)

        await wait_for(ran_next_window, timeout=20, message="every job ran the window after")
    finally:
        await second.stop()

    runs = await runs_by_key(pool)
    for policy in POLICIES:
        mine = runs[f"outage.{policy}"]
        assert len(mine) == len(set(mine)), f"{policy}: a window ran twice: {mine}"
    assert [w for w in runs["outage.skip"] if w in missed] == []
    assert [w for w in runs["outage.coalesce"] if w in missed] == [max(missed)]
    assert sorted(w for w in runs["outage.all"] if w in missed) == sorted(missed)
    # The run after the outage is on its window, for every policy.
    started = await pool.fetch(
        "SELECT dedup_key, extract(epoch FROM started_at - window_start)::float8 AS lag "
        "FROM scheduled_jobs WHERE window_start = $1",
        resume,
    )
    assert len(started) == 3 and all(r["lag"] < 1.0 for r in started), [tuple(r) for r in started]
