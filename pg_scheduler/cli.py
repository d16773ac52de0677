"""The ``pg-scheduler`` command. This module and ``scheduler.py`` are the only ones that may
import both supervisor and worker pieces."""

from __future__ import annotations

import asyncio
import sys

import asyncpg
import click

from .shared.schema import latest_version, migrate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pg-scheduler")
def main() -> None:
    """pg-scheduler: one-off and periodic async jobs on PostgreSQL."""


@main.command("migrate")
@click.option("--database-url", envvar="DATABASE_URL", required=True,
              help="PostgreSQL DSN (env DATABASE_URL).")
def migrate_command(database_url: str) -> None:
    """Create or upgrade the schema, then exit."""

    async def run() -> list[int]:
        conn = await asyncpg.connect(database_url, timeout=10)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    try:
        applied = asyncio.run(run())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        click.echo(f"pg-scheduler: cannot migrate: {exc}", err=True)
        sys.exit(1)
    if applied:
        click.echo(f"applied migrations {applied}; schema is at version {latest_version()}")
    else:
        click.echo(f"schema is up to date (version {latest_version()})")


if __name__ == "__main__":
    main()
