"""The group of leader-only services, started on winning leadership and stopped on losing it.

It is River's QueueMaintainer. The elector drives it through two callbacks.

:class:`~pg_scheduler.supervisor.leadership.Leadership` builds the group, with
:meth:`LeaderServices.for_config`, for the in-process ``Scheduler`` and the supervisor alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..shared.config import SchedulerConfig
from ..shared.metrics import metrics
from ..shared.service import Service, start_all, stop_all
from .fence import Fence, Term
from .maintenance.orphan_rescuer import OrphanRescuer
from .maintenance.periodic_registrar import PeriodicRegistrar
from .maintenance.queue_sampler import SAMPLE_INTERVAL_SECONDS, QueueSampler
from .maintenance.vacuum import Vacuum

log = logging.getLogger(__name__)


class LeaderServices:
    """The leader-only services: started on winning leadership, stopped on losing it."""

    def __init__(self, services: Sequence[Service]) -> None:
        self.services = list(services)
        self.running = False
        self.periodic_registrar: PeriodicRegistrar | None = None
        self.orphan_rescuer: OrphanRescuer | None = None
        self.vacuum: Vacuum | None = None

    @classmethod
    def for_config(cls, fence: Fence, config: SchedulerConfig) -> LeaderServices:
        """Periodic registrar, orphan rescuer and (if enabled) vacuum, all writing through
        ``fence``."""
        registrar = PeriodicRegistrar(
            fence,
            interval_seconds=config.periodic_interval_seconds,
            misfire_grace_time=config.misfire_grace_time,
        )
        rescuer = OrphanRescuer(
            fence,
            interval_seconds=config.rescue_interval_seconds,
            worker_stale_seconds=config.worker_stale_seconds,
        )
        vacuum = Vacuum(fence, config.vacuum_config) if config.vacuum_enabled else None
        sampler = QueueSampler(
            fence, interval_seconds=SAMPLE_INTERVAL_SECONDS, worker_stale_seconds=config.worker_stale_seconds
        )
        group = cls([s for s in (registrar, rescuer, vacuum, sampler) if s is not None])
        group.periodic_registrar, group.orphan_rescuer, group.vacuum = registrar, rescuer, vacuum
        return group

    async def on_elected(self, term: Term) -> None:
        """Elector callback on winning: start every service (all or none), set the leader gauges."""
        await start_all(self.services)
        self.running = True
        m = metrics()
        m.is_leader.set(1)
        m.leader_epoch.set(term.epoch)
        m.leader_elections.inc()
        log.info(
            "leader services started for epoch %s: %s", term.epoch, ", ".join(s.name for s in self.services)
        )

    async def on_deposed(self) -> None:
        """Elector callback on losing: zero the leader gauge and stop the services if they run."""
        metrics().is_leader.set(0)
        if not self.running:
            return
        self.running = False
        await stop_all(self.services)
        log.info("leader services stopped")
