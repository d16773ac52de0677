"""The ``pg-scheduler`` command (click): the group and its subcommands.

``cli`` and the Scheduler's modules are the only ones that may import both supervisor and
worker pieces: ``run`` hands the worker's process entry point to the supervisor's pool."""

from __future__ import annotations

import logging

import click

from .dashboard import dashboard_command
from .doctor import doctor_command
from .jobs import jobs_group
from .migrate import migrate_command
from .periodic import periodic_group
from .queues import queues_group
from .run import run_command
from .status import status_command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="pg-scheduler")
@click.option(
    "--debug",
    is_flag=True,
    envvar="PG_SCHEDULER_DEBUG",
    show_envvar=True,
    help="Show tracebacks instead of one-line errors.",
)
def main(debug: bool) -> None:
    """pg-scheduler: one-off and periodic async jobs on PostgreSQL.

    Every option can also be set from the environment variable shown in its help.
    """
    if debug:
        logging.getLogger("pg_scheduler").setLevel(logging.DEBUG)


main.add_command(run_command)
main.add_command(migrate_command)
main.add_command(status_command)
main.add_command(jobs_group)
main.add_command(periodic_group)
main.add_command(queues_group)
main.add_command(doctor_command)
main.add_command(dashboard_command)

__all__ = ["main"]
