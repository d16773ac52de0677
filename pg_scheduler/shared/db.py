"""Connections: the pool the application gives us, and dedicated sessions we open ourselves.

Leadership (a session advisory lock) and LISTEN need a connection of their own: a pooled
connection drops its session state (locks, listeners) when it goes back to the pool, which is
why 0.2.3's advisory lock locked nothing. Those sessions also get TCP keepalives on both ends
and ``idle_session_timeout``, so a frozen or cut-off holder loses them in seconds, not after
Linux's two-hour keepalive default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from .errors import ConfigurationError

log = logging.getLogger(__name__)

# A database that is down, restarting or full: worth waiting for. Anything else (a malformed DSN,
# a wrong password, an unknown database) is not.
RETRYABLE_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.PostgresConnectionError,
)

KEEPALIVE_IDLE_SECONDS = 2
KEEPALIVE_INTERVAL_SECONDS = 1
KEEPALIVE_COUNT = 3


CONNECT_RETRY_SECONDS = 0.5
CONNECT_RETRY_MAX_SECONDS = 5.0
POOL_IDLE_SECONDS = 60.0
"""A pod's pools close a connection left unused this long (asyncpg hands out the most recently
released one first, so a burst's extra connections go unused once it is over): an idle pod
keeps the one pooled connection per process that its loops use every few seconds, not what its
last burst opened."""


async def pool_reset(conn: asyncpg.Connection) -> None:
    """The pool's reset for pools that only pg-scheduler uses (pods' pools use it; pass it as
    ``asyncpg.create_pool(..., reset=pool_reset)`` for a pool of your own that only a
    ``Scheduler`` uses, and ``schedule()`` is one round trip). asyncpg's default costs a round
    trip at every release (unlock all advisory locks, ``UNLISTEN *``, ``RESET ALL``), as much as the claim or
    the batched completion it follows. Our pooled connections keep no session state: settings
    are ``SET LOCAL``, LISTEN has its own session, and the one session lock taken on a pooled
    connection (a periodic job's exclusive lock) is released by its holder, which closes the
    connection if it cannot. Only a transaction left open needs the full reset."""
    if conn.is_in_transaction():
        await conn.reset()


async def create_pool_waiting(
    dsn: str,
    *,
    max_size: int,
    stop: asyncio.Event,
    who: str,
    wait_seconds: float | None = None,
) -> asyncpg.Pool | None:
    """A pool on ``dsn``, waiting (a doubling delay, up to 5 s) for a database that is down,
    restarting or full, so that a pod stays up rather than crash-looping; a malformed DSN, a
    wrong password or an unknown database raises at once. After ``wait_seconds`` (None: no
    limit) the last error is raised. Returns None if ``stop`` is set meanwhile. ``who`` names
    the caller in the one warning logged per wait. Connections unused for POOL_IDLE_SECONDS
    are closed, down to one."""
    loop = asyncio.get_running_loop()
    deadline = None if wait_seconds is None else loop.time() + wait_seconds
    delay = CONNECT_RETRY_SECONDS
    warned = False
    while not stop.is_set():
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=max_size,
                max_inactive_connection_lifetime=POOL_IDLE_SECONDS,
                timeout=10,
                reset=pool_reset,
            )
            assert pool is not None
            if warned:
                log.info("%s: connected", who)
            return pool
        except RETRYABLE_CONNECT_ERRORS as exc:
            left = math.inf if deadline is None else deadline - loop.time()
            if left <= 0:
                raise
            if not warned:
                log.warning(
                    "%s: database not reachable (%s: %s); retrying%s",
                    who,
                    type(exc).__name__,
                    exc,
                    "" if deadline is None else f" for {left:.0f}s more",
                )
                warned = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(min(delay, left), 0.01)):
                await stop.wait()
        delay = min(delay * 2, CONNECT_RETRY_MAX_SECONDS)
    return None


def connect_params_from_pool(pool: asyncpg.Pool) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments the application's pool connects with, to open dedicated sessions alike."""
    args = getattr(pool, "_connect_args", None)
    kwargs = getattr(pool, "_connect_kwargs", None)
    if args is None or kwargs is None:
        raise ConfigurationError("cannot read connection parameters from this pool; pass dsn= to Scheduler")
    kwargs = {k: v for k, v in kwargs.items() if k not in ("init", "setup", "reset")}
    return tuple(args), kwargs


@dataclass(frozen=True)
class SessionLiveness:
    """How soon the *server* gives up on a silent client: TCP keepalives, TCP user timeout and,
    for the leader's lock session, ``idle_session_timeout``. The earliest of them bounds when
    the server can end the session and so free its advisory lock."""

    keepalive_idle_seconds: int = KEEPALIVE_IDLE_SECONDS
    keepalive_interval_seconds: int = KEEPALIVE_INTERVAL_SECONDS
    keepalive_count: int = KEEPALIVE_COUNT
    user_timeout_ms: int = 5000
    idle_session_timeout_ms: int | None = None

    @classmethod
    def for_lock_ttl(cls, ttl_seconds: float) -> SessionLiveness:
        """Every detector tuned to fire about ``ttl`` after the last word from the client, not
        sooner (keepalive: idle + 3 probes >= ttl), so that a leader can keep trusting itself
        for most of the ttl."""
        idle = max(1, math.ceil(ttl_seconds / 2))
        interval = max(1, math.ceil(ttl_seconds / 6))
        return cls(idle, interval, 3, int(ttl_seconds * 1000), int(ttl_seconds * 1000))

    @property
    def server_frees_after_seconds(self) -> float:
        """The earliest the server may end the session after it last heard from the client."""
        bounds = [
            self.keepalive_idle_seconds + self.keepalive_interval_seconds * self.keepalive_count,
            self.user_timeout_ms / 1000,
        ]
        if self.idle_session_timeout_ms is not None:
            bounds.append(self.idle_session_timeout_ms / 1000)
        return float(min(bounds))

    def server_settings(self) -> dict[str, str]:
        """These bounds as server settings (``tcp_keepalives_*``, ``tcp_user_timeout``, ...)."""
        settings = {
            "tcp_keepalives_idle": str(self.keepalive_idle_seconds),
            "tcp_keepalives_interval": str(self.keepalive_interval_seconds),
            "tcp_keepalives_count": str(self.keepalive_count),
            "tcp_user_timeout": str(self.user_timeout_ms),
        }
        if self.idle_session_timeout_ms is not None:
            settings["idle_session_timeout"] = str(self.idle_session_timeout_ms)
        return settings


async def connect_dedicated(
    connect_args: tuple[Any, ...],
    connect_kwargs: Mapping[str, Any],
    *,
    application_name: str,
    liveness: SessionLiveness | None = None,
    timeout: float = 10.0,
) -> asyncpg.Connection:
    """A session of our own (not a pool's): ``liveness`` on the server, keepalive on our socket."""
    kwargs = dict(connect_kwargs)
    settings = dict(kwargs.get("server_settings") or {})
    settings.update((liveness or SessionLiveness()).server_settings())
    settings["application_name"] = application_name[:63]
    kwargs["server_settings"] = settings
    kwargs.setdefault("timeout", timeout)
    kwargs.setdefault("command_timeout", timeout)
    conn: asyncpg.Connection = await asyncpg.connect(*connect_args, **kwargs)
    set_client_keepalive(conn)
    return conn


async def close_quietly(conn: asyncpg.Connection | None, timeout: float = 2.0) -> None:
    """Close a dedicated session; if the server does not answer in time, drop the socket."""
    if conn is None or conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.close(), timeout=timeout)
    except (TimeoutError, Exception):
        conn.terminate()


def set_client_keepalive(conn: asyncpg.Connection) -> None:
    """asyncpg sets only TCP_NODELAY; add keepalive and a user timeout on our side too."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 5000)
    except OSError:
        pass
