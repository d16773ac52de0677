"""Scaling out: the drain with 1, 2 and 3 pods of pg-scheduler (``pg-scheduler run`` with 2
worker processes each) on this one machine."""

from __future__ import annotations

from typing import Any

from ..systems import OURS
from ..systems.ours import PROCESSES_PER_POD
from ..trial import Context
from .drain import drain

PODS = (1, 2, 3)


async def scale(ctx: Context, pods: int) -> dict[str, Any]:
    return await drain(ctx, OURS, processes=pods * PROCESSES_PER_POD, pods=pods, title=f"scale{pods}")
