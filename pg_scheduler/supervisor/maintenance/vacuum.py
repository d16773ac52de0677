"""Vacuum: deletes finished jobs as each final state's policy says.

Age counts from ``finished_at`` (0.2.3 counted from ``created_at``, so a job created two days ago
and finished a minute ago was deleted at once). Every final state has a policy, ``expired``
included. Deletes run in bounded batches, each in its own short fenced transaction, so a large
backlog never holds locks for long and never delays a new leader for long.
"""

from __future__ import annotations

import logging

from ...shared import queries
from ...shared.metrics import metrics
from ...shared.models import JobState, VacuumConfig, VacuumPolicy, VacuumTrigger
from ...shared.service import PeriodicService
from . import Transactions

log = logging.getLogger(__name__)

BATCH_SIZE_DEFAULT = 5000


class Vacuum(PeriodicService):
    """Leader service: deletes finished jobs per final-state policy every ``interval_minutes``."""

    name = "vacuum"

    def __init__(
        self,
        transactions: Transactions,
        config: VacuumConfig,
        *,
        batch_size: int = BATCH_SIZE_DEFAULT,
    ) -> None:
        super().__init__(max(config.interval_minutes * 60.0, 0.01))
        self._tx = transactions
        self.config = config
        self.batch_size = batch_size

    async def run_once(self) -> dict[str, int]:
        """Delete in fenced batches; returns the count per state (stored if ``track_metrics``)."""
        deleted: dict[str, int] = {}
        for state, policy in self.config.policies().items():
            deleted[state.value] = await self._vacuum_state(state, policy)
        if self.config.track_metrics:
            async with self._tx.transaction() as conn:
                for state_name, count in deleted.items():
                    if count:
                        await conn.execute(queries.VACUUM_RECORD, state_name, count)
        for state_name, count in deleted.items():
            if count:
                metrics().vacuumed_jobs.labels(state_name).inc(count)
        if any(deleted.values()):
            log.info("vacuum: deleted %s", {k: v for k, v in deleted.items() if v})
        return deleted

    async def _vacuum_state(self, state: JobState, policy: VacuumPolicy) -> int:
        trigger = policy.trigger
        if (
            trigger is VacuumTrigger.NEVER
            or (trigger is VacuumTrigger.TIME_BASED and policy.days is None)
            or (trigger is VacuumTrigger.COUNT_BASED and policy.keep_count is None)
        ):
            return 0
        total = 0
        while True:
            async with self._tx.transaction() as conn:
                if trigger is VacuumTrigger.IMMEDIATE:
                    status = await conn.execute(queries.VACUUM_DELETE_ALL, state.value, self.batch_size)
                elif trigger is VacuumTrigger.TIME_BASED:
                    days = float(policy.days or 0)
                    status = await conn.execute(
                        queries.VACUUM_DELETE_OLD, state.value, days * 86400.0, self.batch_size
                    )
                else:
                    keep = int(policy.keep_count or 0)
                    status = await conn.execute(
                        queries.VACUUM_DELETE_BEYOND_LAST, state.value, keep, self.batch_size
                    )
            count = int(status.split()[-1])
            total += count
            if count < self.batch_size:
                return total
