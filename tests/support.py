"""Helpers for tests: polling with a deadline (never a bare sleep), fast timings, and the
``pg-scheduler`` command run as a subprocess."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m pg_scheduler ARGS`` from the repository root (so ``tests.apps`` imports), with
    ``env`` added to this process's environment."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pg_scheduler", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        cwd=str(ROOT),
    )


FAST: dict[str, Any] = {
    "lease_seconds": 2.0,
    "heartbeat_seconds": 0.4,
    "leader_ttl_seconds": 3.0,
    "elect_interval_seconds": 0.3,
    "rescue_interval_seconds": 0.3,
    "worker_stale_seconds": 2.0,
    "periodic_interval_seconds": 0.2,
    "retry_delay_seconds": 0.1,
    "retry_max_delay_seconds": 1.0,
    "poll_interval_seconds": 1.0,
    "shutdown_timeout_seconds": 5.0,
}
"""Timings that make crash recovery and elections take seconds in tests, not minutes."""


async def wait_for(
    check: Callable[[], Any | Awaitable[Any]],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``message`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")
        await asyncio.sleep(interval)


@contextmanager
def isolated_registries() -> Iterator[None]:
    """Within it, no periodic definitions and no queue declarations but those made inside, and
    after it, the ones from before again and none of the tasks registered inside: one module's
    periodic jobs or queue limits (the chaos workload's, imported at collection, say) never
    reach another test's database."""
    from pg_scheduler.shared import queues
    from pg_scheduler.shared.periodic import periodic_registry
    from pg_scheduler.shared.tasks import registry

    tasks_before = set(registry.names())
    saved_periodic = periodic_registry.all()
    for key in saved_periodic:
        periodic_registry.remove(key)
    saved_queues = dict(queues._declared)
    queues._declared.clear()
    try:
        yield
    finally:
        queues._declared.clear()
        queues._declared.update(saved_queues)
        for name in set(registry.names()) - tasks_before:
            registry.unregister(name)
        for key in periodic_registry.all():
            periodic_registry.remove(key)
        for definition in saved_periodic.values():
            periodic_registry.add(definition)
