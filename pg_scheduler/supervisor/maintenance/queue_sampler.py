"""QueueSampler: the cluster-wide gauges, sampled by the leader only (one query per interval).

Jobs by state, how long the oldest due job has waited, and the heartbeat age of the live worker
that beat longest ago; per queue, its running, pending and oldest due job, its limits and pause,
and the due jobs each kind of limit holds back. Sampled once for the whole cluster rather than
by every pod, and exported only by the leading pod
(:class:`~pg_scheduler.shared.metrics.ClusterCollector`), so the series are never double
counted. Every count goes through the partial indexes (sequential scans are
disabled for the transaction), so the sample never scans the table, but a count still reads every
index entry of its state, so its cost grows with the rows kept (mostly finished ones, which
vacuum keeps down). Windows held back behind a running run are not "due" here, as they are not
for claiming.
"""

from __future__ import annotations

import logging
from typing import Any

from ...shared import queries
from ...shared.metrics import cluster_collector
from ...shared.models import JobState
from ...shared.service import PeriodicService
from . import Transactions

SAMPLE_INTERVAL_SECONDS = 5.0
log = logging.getLogger(__name__)


class QueueSampler(PeriodicService):
    """Leader service: samples the cluster-wide gauges into ``cluster_collector``."""

    name = "queue_sampler"

    def __init__(
        self, transactions: Transactions, *, interval_seconds: float, worker_stale_seconds: float
    ) -> None:
        super().__init__(interval_seconds)
        self._tx = transactions
        self.worker_stale_seconds = worker_stale_seconds

    async def run_once(self) -> dict[str, Any]:
        """Sample job counts, oldest due wait, oldest heartbeat age and the queues; publish and
        return it. First, stamp the queues whose concurrency was set or lowered by hand (the API
        stamps its own changes): until then their hand-overs count."""
        try:
            async with self._tx.transaction() as conn:
                await conn.execute(queries.QUEUE_STAMP_CONCURRENCY, None)
        except Exception as exc:  # the sample matters more; the next pass stamps
            log.warning("queue_sampler: could not stamp the queues' concurrency time (%r)", exc)
        async with self._tx.transaction() as conn:
            await conn.execute(queries.DB_DISABLE_SEQSCAN)
            row = await conn.fetchrow(queries.CLUSTER_SAMPLE, self.worker_stale_seconds)
            queues = await conn.fetch(queries.QUEUE_SAMPLE)
        assert row is not None
        sample = {
            "jobs": {state.value: int(row[state.value]) for state in JobState},
            "oldest_due_age": float(row["oldest_due_age"] or 0.0),
            "oldest_heartbeat_age": float(row["oldest_heartbeat_age"] or 0.0),
            "queues": [dict(q) for q in queues],
        }
        cluster_collector.set(sample)
        return sample

    async def stop(self) -> None:
        """Stop, and clear the sample: a pod that does not lead exports no cluster gauges."""
        await super().stop()
        cluster_collector.set(None)  # a follower exports none of the cluster gauges
