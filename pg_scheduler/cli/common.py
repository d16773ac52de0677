"""What every command shares: the database option, errors as one line, running a coroutine.

A command that fails says why in one line on stderr, prefixed ``pg-scheduler:``, and exits 1; it
never shows a traceback for a bad DSN, an unreachable database or an unknown id (``--debug`` on
the group shows it). No message ever carries the DSN's password.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import asyncpg
import click

from ..scheduler import Scheduler
from ..shared.errors import PgSchedulerError
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


def database_option(*, required: bool = True, help_suffix: str = "") -> Callable[[F], F]:
    """The ``--database-url`` option (or ``DATABASE_URL``); ``help_suffix`` ends its help text."""
    return click.option(
        "--database-url",
        "database_url",
        envvar="DATABASE_URL",
        required=required,
        show_envvar=True,
        metavar="DSN",
        help="PostgreSQL connection string, e.g. postgresql://user:pass@host:5432/db." + help_suffix,
    )


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
