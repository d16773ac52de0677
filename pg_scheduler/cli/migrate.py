"""``pg-scheduler migrate``."""

from __future__ import annotations

import click

from ..shared.schema import latest_version, migrate
from .common import connect, database_option, run


@click.command("migrate")
@database_option(create=True)
def migrate_command(database_url: str) -> None:
    """Create or upgrade the schema, then exit.

    Safe to run from many pods at once (migrations apply once, under a lock); `run` also
    migrates at start.
    """

    async def apply() -> list[int]:
        conn = await connect(database_url)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    applied = run("migrate", database_url, apply)
    if applied:
        click.echo(f"applied migrations {applied}; schema is at version {latest_version()}")
    else:
        click.echo(f"schema is up to date (version {latest_version()})")
