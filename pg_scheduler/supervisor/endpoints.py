"""The pod's HTTP endpoints (``--metrics-port``): ``/metrics``, ``/healthz``, ``/readyz``.

A few lines of asyncio rather than a web framework: the server runs on the supervisor's event
loop, so an answer to ``/healthz`` proves that loop is responsive (a stuck loop times the probe
out and Kubernetes restarts the pod). ``/readyz`` says whether this pod can do work: the database
answered within the last few seconds and at least one worker process is alive. It does not
depend on leadership: a follower is as ready as the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from ..shared import queries

log = logging.getLogger(__name__)

PROBE_FRESH_SECONDS = 1.0
"""/readyz asks the database only when it last asked more than this long ago: at most one probe
a second however often /readyz is asked (during an outage too), and none while nobody asks (an
idle pod's statements are its workers' and its leader's)."""
PROBE_TIMEOUT_SECONDS = 2.0
"""The longest a probe waits for a connection and the answer, together, and the longest a
/readyz request waits for a probe (under the chart's readiness timeout of 3 s)."""
DATABASE_STALE_SECONDS = 3.0
"""/readyz turns unready when the database has not answered for this long (so within
``DATABASE_STALE_SECONDS + PROBE_TIMEOUT_SECONDS`` of it going away)."""
REQUEST_TIMEOUT_SECONDS = 5.0
MAX_REQUEST_BYTES = 8192


class DatabaseProbe:
    """When /readyz asks, on the supervisor's pool: does the database answer, and how many of
    this pod's worker processes are registered with a fresh heartbeat (a worker process that is
    alive but could not connect does not count)."""

    def __init__(self, pool: asyncpg.Pool, *, supervisor_id: str, stale_seconds: float) -> None:
        self._pool = pool
        self.supervisor_id = supervisor_id
        self.stale_seconds = stale_seconds
        self.last_ok: float | None = None
        self.workers_registered = 0
        self._last_try: float | None = None
        self._probing: asyncio.Task[None] | None = None
        self._stopped = False
        self._failing = False

    def reachable(self) -> bool:
        """Whether the database answered a probe within the last ``DATABASE_STALE_SECONDS``."""
        return self.last_ok is not None and time.monotonic() - self.last_ok < DATABASE_STALE_SECONDS

    async def refresh(self) -> None:
        """Probe now, unless a probe began within ``PROBE_FRESH_SECONDS``; wait for the probe in
        flight, if any, for at most ``PROBE_TIMEOUT_SECONDS``. Requests at the same time wait for
        the same probe; neither a request that goes away nor the end of the wait cancels it
        (releasing a connection whose query was cut short may take longer), and a probe
        cancelled by stop() ends the wait without an error."""
        if self._stopped:
            return
        if self._probing is None or self._probing.done():
            now = time.monotonic()
            if self._last_try is not None and now - self._last_try < PROBE_FRESH_SECONDS:
                return
            self._last_try = now
            self._probing = asyncio.create_task(self._probe(), name="pg_scheduler:database_probe")
        await asyncio.wait({self._probing}, timeout=PROBE_TIMEOUT_SECONDS)

    async def stop(self) -> None:
        """Cancel a probe in flight and wait until it has ended; no probe starts after."""
        self._stopped = True
        task, self._probing = self._probing, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _probe(self) -> None:
        try:
            # One deadline for the connection and the answer: a pool busy with leader work is
            # not a database that does not answer, but a probe must not wait for it forever.
            async with (
                asyncio.timeout(PROBE_TIMEOUT_SECONDS),
                self._pool.acquire(timeout=PROBE_TIMEOUT_SECONDS) as conn,  # also bounds the release
            ):
                self.workers_registered = int(
                    await conn.fetchval(queries.WORKER_COUNT_LIVE, self.supervisor_id, self.stale_seconds)
                )
            self.last_ok = time.monotonic()
            if self._failing:
                log.info("supervisor: the database answers again")
                self._failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._failing:  # once per outage, not at every probe
                log.warning(
                    "supervisor: the database does not answer (%r): /readyz is unready until it does", exc
                )
                self._failing = True


class Endpoints:
    """The pod's HTTP server (``/metrics``, ``/healthz``, ``/readyz``) on the supervisor's loop."""

    def __init__(
        self,
        host: str | None,
        port: int,
        *,
        metrics_text: Callable[[], tuple[bytes, str]],
        readiness: Callable[[], Awaitable[str | None]],
    ) -> None:
        """``metrics_text()`` returns the exposition and its content type; ``readiness()``,
        awaited at each ``/readyz``, None when ready, else the reason it is not."""
        self.host = host
        self.port = port
        self._metrics_text = metrics_text
        self._readiness = readiness
        self._server: asyncio.Server | None = None

    @property
    def bound_port(self) -> int | None:
        """The port listened on (the one picked for port 0), or None when not serving."""
        if self._server is None or not self._server.sockets:
            return None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, *, any_port_if_taken: bool = False) -> None:
        """Listen on ``host`` (None: every interface) and ``port``; with ``any_port_if_taken``,
        on a free port when that one is taken (the default port, which a second ``run`` on
        one machine finds taken by the first)."""
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            if not any_port_if_taken or exc.errno != errno.EADDRINUSE:
                raise
            self._server = await asyncio.start_server(self._handle, self.host, 0)
            log.warning(
                "supervisor: port %s is taken (another pg-scheduler run on this machine?): "
                "serving /metrics on port %s instead; --metrics-port chooses it",
                self.port,
                self.bound_port,
            )
        log.info(
            "supervisor: serving /metrics, /healthz and /readyz on %s:%s", self.host or "*", self.bound_port
        )

    async def stop(self) -> None:
        """Stop listening; waits up to 2 s for the server to close."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = "GET"
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path = _request_line(head)
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ConnectionError,
            ValueError,
        ):
            status, content_type, body = 400, "text/plain", b"bad request\n"
        else:
            try:
                status, content_type, body = await self._route(method, path)
            except Exception as exc:  # e.g. a sample file caught mid-creation: answer, say why
                log.warning("supervisor: %s %s failed: %r", method, path, exc)
                status, content_type, body = 500, "text/plain", b"internal error\n"
        try:
            # A client that does not read its answer must not hold the handler and socket.
            async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                writer.write(
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\nContent-Type: "
                    f"{content_type}\r\nContent-Length: {len(body)}\r\nConnection: close"
                    f"\r\n\r\n".encode()
                    + (body if method != "HEAD" else b"")
                )
                await writer.drain()
        except (ConnectionError, TimeoutError):
            writer.transport.abort()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        route = path.split("?", 1)[0]
        if route == "/metrics":
            body, content_type = await asyncio.to_thread(self._metrics_text)
            return 200, content_type, body
        if route == "/healthz":
            return 200, "text/plain", b"ok\n"
        if route == "/readyz":
            reason = await self._readiness()
            if reason is None:
                return 200, "text/plain", b"ready\n"
            return 503, "text/plain", f"unready: {reason}\n".encode()
        return 404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n"


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _request_line(head: bytes) -> tuple[str, str]:
    if len(head) > MAX_REQUEST_BYTES:
        raise ValueError("request head too large")
    first = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = first.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError(f"bad request line {first!r}")
    return parts[0], parts[1]


def exposition(registry: Any) -> tuple[bytes, str]:
    """The text exposition of ``registry`` and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST
