"""``pg-scheduler dashboard``: the web dashboard on its own port, served by uvicorn.

The dashboard's packages are an extra: this module imports them only when the command runs, so
``--help`` works without them and a missing extra is one line saying what to install. It binds
to the loopback interface unless told otherwise, and refuses any other address unless basic
auth credentials are set (``PG_SCHEDULER_DASHBOARD_USER`` / ``PG_SCHEDULER_DASHBOARD_PASSWORD``):
a page that can retry, cancel and delete jobs is never open to a network by accident. Neither
the DSN nor the password is ever printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import ipaddress
import logging
import os
from collections.abc import Iterator

import click

from ..shared.logs import configure as configure_logging
from .common import connect, database_option, embedded_database, fail, require_schema, run

log = logging.getLogger("pg_scheduler.dashboard")

USER_ENV = "PG_SCHEDULER_DASHBOARD_USER"
PASSWORD_ENV = "PG_SCHEDULER_DASHBOARD_PASSWORD"
EXTRA_MODULES = ("starlette", "jinja2", "uvicorn")
MISSING_EXTRA = "the dashboard needs its extra: pip install 'pg-scheduler[dashboard]'"


def missing_extra() -> str | None:
    """The one-line message for a missing ``dashboard`` extra, or None when it is installed."""
    missing = [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return f"{MISSING_EXTRA} ({', '.join(missing)} not installed)"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def credentials() -> tuple[str, str] | None:
    """The basic-auth credentials from the environment; both or neither must be set."""
    user, password = os.environ.get(USER_ENV, ""), os.environ.get(PASSWORD_ENV, "")
    if bool(user) != bool(password):
        fail(f"set both {USER_ENV} and {PASSWORD_ENV}, or neither")
    return (user, password) if user else None


@click.command("dashboard")
@database_option(
    embedded=False,
    help_suffix=" Unset: the embedded PostgreSQL of ./.pg-scheduler/pgdata, joined if it runs, "
    "else started for as long as the dashboard runs.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="PG_SCHEDULER_DASHBOARD_HOST",
    show_envvar=True,
    help=f"Address to bind. Any but a loopback address needs {USER_ENV} and {PASSWORD_ENV} "
    "(HTTP basic auth, then required on every page).",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8080,
    show_default=True,
    envvar="PG_SCHEDULER_DASHBOARD_PORT",
    show_envvar=True,
    help="Port to listen on.",
)
@click.option(
    "--read-only",
    is_flag=True,
    envvar="PG_SCHEDULER_DASHBOARD_READ_ONLY",
    show_envvar=True,
    help="Show no action (cancel, retry, run now, delete, enable, disable, trigger, pause, resume) "
    "and refuse every POST.",
)
@click.option(
    "--statement-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    show_default=True,
    envvar="PG_SCHEDULER_DASHBOARD_STATEMENT_TIMEOUT",
    show_envvar=True,
    metavar="SECONDS",
    help="Longest time any query of the dashboard may run; a page whose query runs out says so.",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    envvar="PG_SCHEDULER_LOG_LEVEL",
    show_envvar=True,
    help="Level of pg_scheduler's log (every action is logged at INFO).",
)
@click.pass_context
def dashboard_command(
    ctx: click.Context,
    database_url: str | None,
    host: str,
    port: int,
    read_only: bool,
    statement_timeout: float,
    log_level: str,
) -> None:
    """Serve the web dashboard: overview, jobs, periodic jobs and queues, with their actions.

    Needs the 'dashboard' extra (pip install 'pg-scheduler[dashboard]'). Binds to 127.0.0.1:8080
    by default. With PG_SCHEDULER_DASHBOARD_USER and PG_SCHEDULER_DASHBOARD_PASSWORD set, every
    page asks for them (HTTP basic auth); binding any other address than loopback requires them.
    Every action is logged with who did it.
    """
    auth = check_serving(host)
    try:
        configure_logging(log_level, "dashboard")
    except ValueError as exc:
        fail(str(exc))
    dsn = database_url or ctx.with_resource(embedded_database())

    async def serve_checked() -> None:
        conn = await connect(dsn)
        try:
            await require_schema(conn)
        finally:
            await conn.close()
        await serve(dsn, host, port, read_only=read_only, statement_timeout=statement_timeout, auth=auth)

    run("serve the dashboard", dsn, serve_checked)


def check_serving(host: str) -> tuple[str, str] | None:
    """Fail in one line unless the dashboard may be served on ``host``: its extra installed,
    the credentials set both or neither, and set for any address but loopback. Returns them."""
    problem = missing_extra()
    if problem is not None:
        fail(problem)
    auth = credentials()
    if auth is None and not is_loopback(host):
        fail(
            f"refusing to serve the dashboard on {host} without authentication: set {USER_ENV} and "
            f"{PASSWORD_ENV}, or bind to 127.0.0.1"
        )
    return auth


async def serve(
    dsn: str,
    host: str,
    port: int,
    *,
    read_only: bool,
    statement_timeout: float,
    auth: tuple[str, str] | None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the dashboard (checked by :func:`check_serving`) until SIGINT or SIGTERM; with
    ``stop``, until it is set instead, leaving the signals to the process that owns them (a
    pod's supervisor, whose shutdown they drive)."""
    import uvicorn

    from ..dashboard import create_app

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if stop is None:
                with super().capture_signals():
                    yield
            else:
                yield

    app = create_app(dsn, read_only=read_only, auth=auth, statement_timeout=statement_timeout)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,  # requests in flight get 5 s at shutdown, not forever
    )
    server = Server(config)
    shown_host = f"[{host}]" if ":" in host else host
    log.info(
        "serving the dashboard on http://%s:%d/ (%s; %s)",
        shown_host,
        port,
        "read-only" if read_only else "actions enabled",
        "basic auth required" if auth else "no authentication: loopback only",
    )
    if stop is None:
        await server.serve()
        return

    async def stop_when_told() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(stop_when_told())
    try:
        await server.serve()
    finally:
        watcher.cancel()
