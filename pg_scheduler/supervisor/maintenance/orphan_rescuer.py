"""OrphanRescuer: the slow, global path of crash recovery.

Each pass, in one fenced transaction:

1. delete worker rows whose heartbeat is older than ``worker_stale_seconds``;
2. re-queue ``running`` jobs whose lease expired: pending again, due now, the crash counted as a
   retry; with no retries left they end ``failed`` with the reason (so a job that kills its
   process cannot loop forever). A lease is honoured to its end even when its worker's row is
   gone (the registry's heartbeat and the lease renewal are separate writes); only a row with no
   lease at all (written by 0.2.3) falls back to the registry.

A worker that was only slow (frozen past its lease) finds its lease renewal refused and stops the
job; its completion is fenced by ``(job, worker, attempt)`` and refused too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ...shared import queries
from ...shared.metrics import metrics
from ...shared.service import PeriodicService
from . import Transactions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RescueResult:
    """What a rescue pass did: registry rows pruned, jobs re-queued, jobs failed."""

    pruned_workers: list[str]
    requeued: list[str]
    failed: list[str]


class OrphanRescuer(PeriodicService):
    """Leader service: prunes stale registry rows, re-queues or fails jobs whose lease expired."""

    name = "orphan_rescuer"

    def __init__(
        self, transactions: Transactions, *, interval_seconds: float, worker_stale_seconds: float
    ) -> None:
        super().__init__(interval_seconds, jitter=True)
        self._tx = transactions
        self.worker_stale_seconds = worker_stale_seconds

    async def run_once(self) -> RescueResult:
        """One fenced pass: prune, rescue, notify workers if a job changed; returns what it did."""
        async with self._tx.transaction() as conn:
            pruned = await conn.fetch(queries.WORKER_PRUNE_STALE, self.worker_stale_seconds)
            rows = await conn.fetch(queries.JOB_RESCUE)
            if rows:
                await conn.execute(queries.JOB_NOTIFY)
        result = RescueResult(
            pruned_workers=[r["worker_id"] for r in pruned],
            requeued=[r["job_id"] for r in rows if r["status"] == "pending"],
            failed=[r["job_id"] for r in rows if r["status"] == "failed"],
        )
        for r in pruned:
            log.warning(
                "orphan_rescuer: pruned stale %s %s (pid %s on %s)",
                r["kind"],
                r["worker_id"],
                r["pid"],
                r["host"],
            )
        if rows:
            metrics().orphans_rescued.inc(len(rows))
            log.warning(
                "orphan_rescuer: re-queued %d job(s), failed %d with no retries left",
                len(result.requeued),
                len(result.failed),
            )
        return result
