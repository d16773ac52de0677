"""The pod's readiness probe asks the database when ``/readyz`` is asked, at most once a second.

An idle pod that nobody probes sends no statement for its readiness; one probed every 5 s (the
chart's period) sends one every 5 s; requests that come together share one statement. The
outage side (unready within ``DATABASE_STALE_SECONDS`` of the database going away, ready again
when it is back) is tests/processes/test_metrics.py's, with a real pod.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from pg_scheduler import Scheduler
from pg_scheduler.shared import queries
from pg_scheduler.supervisor.endpoints import PROBE_FRESH_SECONDS, DatabaseProbe


async def test_readiness_probe_asks_only_when_asked_and_at_most_once_a_second(dsn: str) -> None:
    probes: list[float] = []

    def logged(record: Any) -> None:
        if record.query == queries.WORKER_COUNT_LIVE:
            probes.append(time.monotonic())

    async def attach(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(logged)

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, init=attach)
    try:
        await Scheduler(pool).initialize_db()
        await pool.execute(queries.WORKER_REGISTER, "w-1", "worker", "host", 1, [], "sup-1", None, timeout=5)
        probe = DatabaseProbe(pool, supervisor_id="sup-1", stale_seconds=15)
        assert not probe.reachable()  # nothing asked yet: nothing known

        # Five requests at once: one statement, and each request sees its answer.
        await asyncio.gather(*(probe.refresh() for _ in range(5)))
        assert len(probes) == 1
        assert probe.reachable() and probe.workers_registered == 1

        # Asked again within PROBE_FRESH_SECONDS: the answer is fresh enough, no statement.
        await probe.refresh()
        assert len(probes) == 1

        # Nobody asks: nothing is sent, however long.
        await asyncio.sleep(PROBE_FRESH_SECONDS + 0.2)
        assert len(probes) == 1

        # Asked once the answer is older than PROBE_FRESH_SECONDS: one new statement.
        await probe.refresh()
        assert len(probes) == 2
        assert probes[1] - probes[0] >= PROBE_FRESH_SECONDS

        # Stopped: no statement after, even when asked.
        await probe.stop()
        await asyncio.sleep(PROBE_FRESH_SECONDS + 0.1)
        await probe.refresh()
        assert len(probes) == 2
    finally:
        await pool.close()
