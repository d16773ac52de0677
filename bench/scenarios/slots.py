"""Slots sweep: the drain of the drain scenario at 20, 100 and 500 slots per worker process (2
processes), for pg-scheduler, the raw statements at the same slots (``raw-slots``: one loop per
process claiming its free slots) and the peers at the same concurrency. What more slots per
process buy each system: the claim and the completions batch more jobs per statement."""

from __future__ import annotations

from typing import Any

from ..systems import System
from ..trial import Context
from .drain import drain

SLOTS = (20, 100, 500)
QUICK_SLOTS = (20, 100)


async def slots(ctx: Context, system: System, n: int) -> dict[str, Any]:
    result = await drain(ctx, system, concurrency=n, title=f"slots{n}")
    return {**result, "slots": n}
