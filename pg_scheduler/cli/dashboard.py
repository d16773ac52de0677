"""``pg-scheduler dashboard``: the web dashboard on its own port, served by uvicorn.

The dashboard's packages are an extra: this module imports them only when the command runs, so
``--help`` works without them and a missing extra is one line saying what to install. It binds
to the loopback interface unless told otherwise, and refuses any other address unless basic
auth credentials are set (``PG_SCHEDULER_DASHBOARD_USER`` / ``PG_SCHEDULER_DASHBOARD_PASSWORD``):
a page that can retry, cancel and delete jobs is never open to a network by accident. Served
without credentials, it answers only requests whose ``Host`` is a loopback name (or the bound
host, or one given by ``--allowed-host``), so another site's page cannot reach it by DNS
rebinding. Neither the DSN nor the password is ever printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import ipaddress
import logging
import os
import signal
from collections.abc import Iterable, Iterator, Sequence

import click

from ..shared.logs import configure as configure_logging
from .common import connect, database_option, embedded_database, fail, require_schema, run

log = logging.getLogger("pg_scheduler.dashboard")

USER_ENV = "PG_SCHEDULER_DASHBOARD_USER"
PASSWORD_ENV = "PG_SCHEDULER_DASHBOARD_PASSWORD"
ALLOWED_HOSTS_ENV = "PG_SCHEDULER_DASHBOARD_ALLOWED_HOSTS"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
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


def split_hosts(values: Iterable[str]) -> tuple[str, ...]:
    """Host names given as options or comma-separated lists, blanks dropped."""
    return tuple(h.strip() for value in values for h in value.split(",") if h.strip())


def serving_hosts(host: str, auth: tuple[str, str] | None, extra: Sequence[str]) -> list[str] | None:
    """The ``Host`` names the served dashboard answers: without credentials, the loopback names,
    the bound host and ``extra`` (names of a proxy in front); with them, any unless ``extra``
    names some (then those, the loopback names and the bound host)."""
    if auth is not None and not extra:
        return None
    return [*LOOPBACK_NAMES, host, *extra]


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
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    envvar=ALLOWED_HOSTS_ENV,
    show_envvar=True,
    metavar="NAME",
    help="A host name the pages may be asked for (the Host header, port ignored) besides the "
    "loopback names and --host: a proxy's, e.g. jobs.example.com; repeatable, or comma-separated "
    "in the variable. Without credentials any other name is refused (400), against DNS rebinding.",
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
    allowed_hosts: tuple[str, ...],
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
        await serve(
            dsn,
            host,
            port,
            read_only=read_only,
            statement_timeout=statement_timeout,
            auth=auth,
            allowed_hosts=split_hosts(allowed_hosts),
        )

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
    allowed_hosts: Sequence[str] | None = None,
) -> None:
    """Serve the dashboard (checked by :func:`check_serving`) until SIGINT or SIGTERM; with
    ``stop``, until it is set instead, leaving the signals to the process that owns them (a
    pod's supervisor, whose shutdown they drive). ``allowed_hosts`` are the extra ``Host``
    names of :func:`serving_hosts` (None: those of ``PG_SCHEDULER_DASHBOARD_ALLOWED_HOSTS``)."""
    import uvicorn

    from ..dashboard import create_app

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn's own capture raises the signal again once the server is down, which
            # kills the process before the command's cleanup (an embedded PostgreSQL it started
            # must be stopped): the first SIGINT or SIGTERM stops serving, a second one stops
            # waiting for requests in flight, and the command then ends normally.
            if stop is not None:
                yield
                return
            loop = asyncio.get_running_loop()
            caught = (signal.SIGINT, signal.SIGTERM)

            def handle(signum: int) -> None:
                log.info("received %s: stopping the dashboard", signal.Signals(signum).name)
                if self.should_exit:
                    self.force_exit = True
                self.should_exit = True

            for signum in caught:
                loop.add_signal_handler(signum, handle, signum)
            try:
                yield
            finally:
                for signum in caught:
                    loop.remove_signal_handler(signum)

    if allowed_hosts is None:
        allowed_hosts = split_hosts([os.environ.get(ALLOWED_HOSTS_ENV, "")])
    app = create_app(
        dsn,
        read_only=read_only,
        auth=auth,
        statement_timeout=statement_timeout,
        allowed_hosts=serving_hosts(host, auth, allowed_hosts),
    )
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
        log.info("the dashboard stopped")
        return

    async def stop_when_told() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(stop_when_told())
    try:
        await server.serve()
    finally:
        watcher.cancel()
