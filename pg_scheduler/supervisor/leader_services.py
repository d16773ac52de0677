"""The group of leader-only services, started when this process wins leadership and stopped
when it loses it (River's QueueMaintainer). The elector drives it through two callbacks."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..shared.service import Service, start_all, stop_all
from .fence import Term

log = logging.getLogger(__name__)


class LeaderServices:
    def __init__(self, services: Sequence[Service]) -> None:
        self.services = list(services)
        self.running = False

    async def on_elected(self, term: Term) -> None:
        await start_all(self.services)
        self.running = True
        log.info("leader services started for epoch %s: %s", term.epoch,
                 ", ".join(s.name for s in self.services))

    async def on_deposed(self) -> None:
        if not self.running:
            return
        self.running = False
        await stop_all(self.services)
        log.info("leader services stopped")
