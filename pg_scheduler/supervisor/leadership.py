"""Leadership wiring: an elector whose terms fence the leader-only services it starts and stops.

The in-process ``Scheduler`` and the ``pg-scheduler run`` supervisor both take part in elections
through :meth:`Leadership.build`, so they lead the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from ..shared.config import SchedulerConfig
from .elector import Elector
from .fence import Fence
from .leader_services import LeaderServices


@dataclass(frozen=True)
class Leadership:
    """The elector and the leader services it drives; start ``elector`` to take part."""

    elector: Elector
    services: LeaderServices

    @classmethod
    def build(
        cls,
        pool: asyncpg.Pool,
        connect_args: tuple[Any, ...],
        connect_kwargs: dict[str, Any],
        *,
        node_id: str,
        config: SchedulerConfig,
    ) -> Leadership:
        """Leader services writing through a fence on ``pool`` that trusts the elector's term,
        and the elector (lock session opened with ``connect_args``/``connect_kwargs``) that
        starts them on winning and stops them on losing."""
        elector: Elector | None = None
        fence = Fence(
            pool,
            lambda: elector.term if elector else None,
            ttl_seconds=config.leader_ttl_seconds,
        )
        services = LeaderServices.for_config(fence, config)
        elector = Elector(
            connect_args,
            connect_kwargs,
            node_id=node_id,
            ttl_seconds=config.leader_ttl_seconds,
            elect_interval_seconds=config.elect_interval_seconds,
            on_elected=services.on_elected,
            on_deposed=services.on_deposed,
        )
        return cls(elector, services)
