"""``pg-scheduler queues list / set / pause / resume / reset``.

The queue API of ``Scheduler``, from the shell. It acts on the whole cluster: limits and pauses
live in the database, and bind every claim that begins after the command returns, on every pod.
"""

from __future__ import annotations

from typing import Any

import click

from ..scheduler import Scheduler
from ..shared.errors import ConfigurationError
from ..shared.queue_limits import QueueInfo, QueueLimitChanges, check_changes
from ..shared.queues import QueueLimits, check_queue
from .common import database_option, fail, run, with_producer
from .output import table, to_json

NONE_WORDS = ("none", "off", "unlimited")


def _limit_value(value: str | None, option: str) -> int | None:
    if value is None or value.strip().lower() in NONE_WORDS:
        return None
    try:
        return int(value)
    except ValueError:
        fail(f"invalid {option} {value!r}: give a whole number of at least 1, or none")


def _limits_text(limits: QueueLimits) -> list[str]:
    return [
        "-" if limits.concurrency is None else str(limits.concurrency),
        "-" if limits.key_concurrency is None else str(limits.key_concurrency),
        "-" if limits.rate is None else str(limits.rate),
    ]


def queue_rows(queues: list[QueueInfo]) -> list[list[Any]]:
    """The rows of ``queues list``, under QUEUE_HEADERS."""
    return [
        [
            q.name,
            q.state + (" (set)" if q.overridden else ""),
            *_limits_text(q.limits),
            q.running,
            q.pending,
            q.due,
            "-" if q.oldest_due_seconds is None else f"{q.oldest_due_seconds:.1f}s",
        ]
        for q in queues
    ]


QUEUE_HEADERS = [
    "QUEUE",
    "STATE",
    "CONCURRENCY",
    "PER KEY",
    "RATE",
    "RUNNING",
    "PENDING",
    "DUE",
    "OLDEST DUE",
]


@click.group("queues")
def queues_group() -> None:
    """List queues and change their limits for the whole cluster.

    A queue is known once it has a row: from code (declare_queue) or from `queues set`. Limits
    set here win over the code's until `queues reset`. Every change binds every claim that
    begins after the command returns, on every pod.
    """


@queues_group.command("list")
@database_option()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of queue objects.")
def list_command(database_url: str, as_json: bool) -> None:
    """List queues: state, limits, running (live leases), pending, due and the oldest due age.

    STATE is open, limited or paused; "(set)" marks limits set from the CLI or the API, over
    the code's."""

    async def read(scheduler: Scheduler) -> list[QueueInfo]:
        return await scheduler.get_queues()

    queues = run("list queues", database_url, lambda: with_producer(database_url, read))
    if as_json:
        click.echo(to_json([q.to_dict() for q in queues]))
        return
    if not queues:
        click.echo("no queues yet (jobs go to 'default'; declare_queue or `queues set` adds one)")
        return
    click.echo(table(QUEUE_HEADERS, queue_rows(queues)))


@queues_group.command("set")
@click.argument("name")
@click.option("--concurrency", metavar="N|none", help="At most N jobs of the queue running at once.")
@click.option(
    "--key-concurrency",
    metavar="K|none",
    help="At most K running jobs per concurrency_key (1: one at a time).",
)
@click.option(
    "--rate",
    metavar="N/PERIOD|none",
    help="At most N starts in any PERIOD, e.g. 100/1m, 10/1s (units ms s m h d).",
)
@database_option()
def set_command(
    name: str, concurrency: str | None, key_concurrency: str | None, rate: str | None, database_url: str
) -> None:
    """Set limits of queue NAME for the whole cluster, creating its row if needed.

    Only the limits given change; `none` clears one. They win over the code's declaration until
    `queues reset NAME`.

    \b
    Examples:
      pg-scheduler queues set partner_api --concurrency 5
      pg-scheduler queues set imports --key-concurrency 1
      pg-scheduler queues set sms --rate 100/1m
      pg-scheduler queues set sms --rate none
    """
    changes: QueueLimitChanges = {}
    if concurrency is not None:
        changes["concurrency"] = _limit_value(concurrency, "--concurrency")
    if key_concurrency is not None:
        changes["key_concurrency"] = _limit_value(key_concurrency, "--key-concurrency")
    if rate is not None:
        changes["rate"] = None if rate.strip().lower() in NONE_WORDS else rate
    if not changes:
        fail("nothing to set: give --concurrency, --key-concurrency or --rate")
    _valid_name(name)
    try:  # checked before connecting: a bad value writes nothing
        check_changes(changes)
    except ConfigurationError as exc:
        fail(str(exc))

    async def write(scheduler: Scheduler) -> QueueLimits:
        return await scheduler.set_queue_limits(name, **changes)

    limits = run("set the queue's limits", database_url, lambda: with_producer(database_url, write))
    click.echo(f"queue {name}: {limits.describe()} for the whole cluster")


@queues_group.command("reset")
@click.argument("name")
@database_option()
def reset_command(name: str, database_url: str) -> None:
    """Put queue NAME back on the limits its code declares (none if no code declares it).

    A pause stays: `queues resume NAME` ends it."""
    _valid_name(name)

    async def write(scheduler: Scheduler) -> QueueInfo | None:
        if not await scheduler.reset_queue(name):
            return None
        return next((q for q in await scheduler.get_queues() if q.name == name), None)

    info = run("reset the queue", database_url, lambda: with_producer(database_url, write))
    if info is None:
        fail(f"no queue {name!r} (`pg-scheduler queues list` shows the queues)")
    click.echo(f"queue {name}: back to the code's limits: {info.limits.describe()}")


@queues_group.command("pause")
@click.argument("name")
@database_option()
def pause_command(name: str, database_url: str) -> None:
    """Start nothing more from queue NAME, on any pod; running jobs finish.

    Jobs wait (a misfire grace still applies to them) until `queues resume NAME`."""
    _pause(name, database_url, paused=True)


@queues_group.command("resume")
@click.argument("name")
@database_option()
def resume_command(name: str, database_url: str) -> None:
    """Let the jobs of queue NAME start again."""
    _pause(name, database_url, paused=False)


def _valid_name(name: str) -> None:
    """Exit with one line if ``name`` is no valid queue name (before anything connects)."""
    try:
        check_queue(name, ConfigurationError)
    except ConfigurationError as exc:
        fail(str(exc))


def _pause(name: str, database_url: str, *, paused: bool) -> None:
    _valid_name(name)

    async def write(scheduler: Scheduler) -> bool:
        call = scheduler.pause_queue if paused else scheduler.resume_queue
        return await call(name)

    verb = "pause" if paused else "resume"
    if not run(f"{verb} the queue", database_url, lambda: with_producer(database_url, write)):
        fail(
            f"no queue {name!r}: a queue has a row once its code declares it or "
            f"`pg-scheduler queues set {name} ...` sets a limit"
        )
    click.echo(f"queue {name} {verb}d for the whole cluster")
