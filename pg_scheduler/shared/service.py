"""One small start/stop interface for every background service (River's maintenance services).

A :class:`PeriodicService` runs :meth:`run_once` at once and then every ``interval_seconds``;
tests call ``run_once()`` directly instead of waiting on timers, and wait on :meth:`wait_for_passes`
instead of sleeping. An error in one pass is logged and the next pass runs: a maintenance service
must outlive a database blip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Any, Protocol

from .errors import LeadershipLostError
from .metrics import metrics

log = logging.getLogger(__name__)


class Service(Protocol):
    """What the service helpers need of a background service: a name, start and stop."""

    name: str

    async def start(self) -> None:
        """Start the service's work in the background and return."""
        ...

    async def stop(self) -> None:
        """Stop the service's work and wait until it has ended."""
        ...


class PeriodicService:
    """Runs :meth:`run_once` at once, then every ``interval_seconds``; a failed pass is logged."""

    name = "service"

    def __init__(self, interval_seconds: float, *, jitter: bool = False) -> None:
        if interval_seconds <= 0:
            raise ValueError(f"{self.name}: interval must be > 0")
        self.interval_seconds = interval_seconds
        self._jitter = jitter
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._passes = 0
        self._passed = asyncio.Condition()
        self.last_error: BaseException | None = None

    @property
    def running(self) -> bool:
        """Whether the service's loop task is alive."""
        return self._task is not None and not self._task.done()

    async def run_once(self) -> Any:
        """One pass of the service's work; subclasses implement it."""
        raise NotImplementedError

    async def start(self) -> None:
        """Start the loop in a task of its own, first pass at once; does nothing if it runs."""
        if self.running:
            return
        self._task = asyncio.create_task(self._run(), name=f"pg_scheduler:{self.name}")

    async def stop(self) -> None:
        """Cancel the loop and wait until it has ended."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def wake(self) -> None:
        """Run a pass now instead of at the end of the interval."""
        self._wake.set()

    async def wait_for_passes(self, count: int, timeout: float) -> None:
        """Wait until ``count`` passes have finished since the service was created."""
        async with asyncio.timeout(timeout):
            async with self._passed:
                await self._passed.wait_for(lambda: self._passes >= count)

    @property
    def passes(self) -> int:
        """Passes finished since the service was created, failed ones included."""
        return self._passes

    async def _run(self) -> None:
        log.debug("%s: started", self.name)
        try:
            while True:
                try:
                    await self.run_once()
                    self.last_error = None
                except asyncio.CancelledError:
                    raise
                except LeadershipLostError as exc:
                    log.info("%s: pass refused, leadership lost (%s)", self.name, exc)
                    self.last_error = exc
                except Exception as exc:
                    metrics().db_errors.inc()
                    if self.last_error is None:  # the traceback once per outage, then one line
                        log.exception("%s: pass failed; next pass in %.1fs", self.name, self.interval_seconds)
                    else:
                        log.warning("%s: pass failed again: %r", self.name, exc)
                    self.last_error = exc
                async with self._passed:
                    self._passes += 1
                    self._passed.notify_all()
                delay = self.interval_seconds
                if self._jitter:
                    delay *= random.uniform(0.9, 1.1)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            log.debug("%s: stopped", self.name)


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has really finished."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        # The task's own cancellation ends here; a cancellation aimed at the caller (a timeout
        # around shutdown(), say) must go on.
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


async def start_all(services: Sequence[Service]) -> None:
    """Start every service; if one fails to start, stop those already started and re-raise."""
    started: list[Service] = []
    try:
        for service in services:
            await service.start()
            started.append(service)
    except BaseException:
        await stop_all(started)
        raise


async def stop_all(services: Sequence[Service]) -> None:
    """Stop every service at once; an error while stopping one is logged, not raised."""
    results = await asyncio.gather(*(s.stop() for s in services), return_exceptions=True)
    for service, result in zip(services, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            log.error("%s: error while stopping: %r", service.name, result)
