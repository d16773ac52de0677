"""The systems under test, in the order of the results table."""

from __future__ import annotations

from .base import Launch, System
from .ours import OURS, OURS_INPROC
from .pgqueuer_ import PGQUEUER
from .procrastinate_ import PROCRASTINATE
from .raw import RAW_BATCH, RAW_ONE, RAW_SLOTS
from .seed import SEED

ALL: tuple[System, ...] = (
    OURS,
    OURS_INPROC,
    SEED,
    PROCRASTINATE,
    PGQUEUER,
    RAW_ONE,
    RAW_SLOTS,
    RAW_BATCH,
)
BY_KEY = {s.key: s for s in ALL}

__all__ = ["ALL", "BY_KEY", "OURS", "OURS_INPROC", "Launch", "System"]
