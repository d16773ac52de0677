"""The APP of ``pg-scheduler run`` in the benchmark: the harness's jobs as pg-scheduler tasks.

Loaded by path, so its module name is ``ours_app`` and ``recorder`` (same folder) is importable.
The names are explicit so the producer (``ours_driver.py``) and the workers agree whatever the
module is called.
"""

from __future__ import annotations

import recorder

from pg_scheduler import job

NOOP = "bench.noop"
SLEEP = "bench.sleep"
FILLER = "bench.filler"


@job(name=NOOP)
async def noop(key: int, enqueued_at: float) -> None:
    recorder.record(key, enqueued_at)


@job(name=SLEEP)
async def sleep(key: int, enqueued_at: float, seconds: float) -> None:
    await recorder.sleep(key, enqueued_at, seconds)


@job(name=FILLER)
async def filler() -> None:
    """The task of the idle scenario's million future rows: registered, so workers take those
    rows into account when they look for the next due job, as they would in production."""
