"""Connections: the pool the application gives us, and dedicated sessions we open ourselves.

Leadership (a session advisory lock) and LISTEN need a connection of their own: a pooled
connection drops its session state (locks, listeners) when it goes back to the pool, which is
why 0.2.3's advisory lock locked nothing. Those sessions also get TCP keepalives on both ends
and ``idle_session_timeout``, so a frozen or cut-off holder loses them in seconds, not after
Linux's two-hour keepalive default.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

import asyncpg

from .errors import ConfigurationError

KEEPALIVE_IDLE_SECONDS = 2
KEEPALIVE_INTERVAL_SECONDS = 1
KEEPALIVE_COUNT = 3


def connect_params_from_pool(pool: asyncpg.Pool) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments the application's pool connects with, to open dedicated sessions alike."""
    args = getattr(pool, "_connect_args", None)
    kwargs = getattr(pool, "_connect_kwargs", None)
    if args is None or kwargs is None:
        raise ConfigurationError(
            "cannot read connection parameters from this pool; pass dsn= to Scheduler"
        )
    kwargs = {k: v for k, v in kwargs.items() if k not in ("init", "setup", "reset")}
    return tuple(args), kwargs


def server_settings_for_session(
    base: Mapping[str, str] | None, *, application_name: str, idle_timeout_ms: int | None = None,
    user_timeout_ms: int = 5000,
) -> dict[str, str]:
    settings = dict(base or {})
    settings.update(
        {
            "application_name": application_name[:63],
            "tcp_keepalives_idle": str(KEEPALIVE_IDLE_SECONDS),
            "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL_SECONDS),
            "tcp_keepalives_count": str(KEEPALIVE_COUNT),
            "tcp_user_timeout": str(user_timeout_ms),
        }
    )
    if idle_timeout_ms is not None:
        settings["idle_session_timeout"] = str(idle_timeout_ms)
    return settings


async def connect_dedicated(
    connect_args: tuple[Any, ...],
    connect_kwargs: Mapping[str, Any],
    *,
    application_name: str,
    idle_timeout_ms: int | None = None,
    timeout: float = 10.0,
) -> asyncpg.Connection:
    kwargs = dict(connect_kwargs)
    kwargs["server_settings"] = server_settings_for_session(
        kwargs.get("server_settings"),
        application_name=application_name,
        idle_timeout_ms=idle_timeout_ms,
    )
    kwargs.setdefault("timeout", timeout)
    kwargs.setdefault("command_timeout", timeout)
    conn: asyncpg.Connection = await asyncpg.connect(*connect_args, **kwargs)
    set_client_keepalive(conn)
    return conn


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
