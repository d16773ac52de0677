"""``pg-scheduler periodic list / enable / disable / trigger / set / next``.

The periodic management API of ``Scheduler``, from the shell. It acts on the whole cluster: the
state lives in the database."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import click

from ..scheduler import Scheduler
from ..shared.periodic import PeriodicJobInfo
from .common import database_option, fail, run, with_producer
from .output import table, to_json, utc


async def _known(scheduler: Scheduler, key: str) -> PeriodicJobInfo:
    info = (await scheduler.get_periodic_jobs()).get(key)
    if info is None:
        fail(f"no periodic job {key!r} (`pg-scheduler periodic list` shows the keys)")
    return info


def _schedule(info: PeriodicJobInfo) -> str:
    text = info.trigger.describe()
    return f"{text} (set from the CLI)" if info.overridden else text


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90``, ``30s``, ``5m``, ``2h``, ``1d`` (or combined: ``1h30m``)."""
    raw = text.strip().lower()
    if not raw:
        raise ValueError("empty duration")
    try:
        return timedelta(seconds=float(raw))
    except ValueError:
        pass
    total, number = 0.0, ""
    for ch in raw:
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in _UNITS and number:
            total += float(number) * _UNITS[ch]
            number = ""
        else:
            raise ValueError(f"{text!r} is not a duration like 90, 30s, 5m, 2h, 1d")
    if number:
        raise ValueError(f"{text!r}: a number without a unit at the end")
    return timedelta(seconds=total)


@click.group("periodic")
def periodic_group() -> None:
    """List and manage periodic jobs for the whole cluster.

    KEY is a periodic job's dedup key (the first column of `periodic list`). Definitions come
    from the code of running processes; what these commands change (enabled or not) is shared
    by every replica.
    """


@periodic_group.command("list")
@database_option()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of status objects.")
def list_command(database_url: str, as_json: bool) -> None:
    """List periodic jobs: schedule, enabled, next and last run."""

    async def read(scheduler: Scheduler) -> list[dict[str, Any]]:
        jobs = await scheduler.get_periodic_jobs()
        found = []
        for key in sorted(jobs):
            status = await scheduler.get_periodic_job_status(key)
            if status is not None:
                found.append({**status, "schedule": _schedule(jobs[key])})
        return found

    rows = run("list periodic jobs", database_url, lambda: with_producer(database_url, read))
    if as_json:
        click.echo(to_json(rows))
        return
    if not rows:
        click.echo("no periodic jobs (a process publishes them when it starts or schedules)")
        return
    click.echo(
        table(
            ["KEY", "JOB NAME", "SCHEDULE", "ENABLED", "NEXT RUN", "LAST RUN", "LAST STATUS"],
            [
                [
                    r["dedup_key"],
                    r["job_name"],
                    r["schedule"],
                    r["enabled"],
                    r["next_run"],
                    r["last_run"],
                    r["last_status"],
                ]
                for r in rows
            ],
        )
    )


@periodic_group.command("enable")
@click.argument("key")
@database_option()
def enable_command(key: str, database_url: str) -> None:
    """Enable a periodic job in the whole cluster; its next window runs."""
    _set_enabled(key, database_url, enabled=True)


@periodic_group.command("disable")
@click.argument("key")
@database_option()
def disable_command(key: str, database_url: str) -> None:
    """Disable a periodic job in the whole cluster; windows already written ahead are
    cancelled (a run in progress finishes)."""
    _set_enabled(key, database_url, enabled=False)


def _set_enabled(key: str, database_url: str, *, enabled: bool) -> None:
    word = "enabled" if enabled else "disabled"

    async def toggle(scheduler: Scheduler) -> bool:
        info = await _known(scheduler, key)
        if info.enabled == enabled:
            return False
        call = scheduler.enable_periodic_job if enabled else scheduler.disable_periodic_job
        if not await call(key):
            fail(f"no periodic job {key!r}")  # removed since it was read
        return True

    changed = run(
        f"{'enable' if enabled else 'disable'} the periodic job",
        database_url,
        lambda: with_producer(database_url, toggle),
    )
    if changed:
        click.echo(f"periodic job {key} {word} for the whole cluster")
    else:
        click.echo(f"periodic job {key} was already {word}")


@periodic_group.command("trigger")
@click.argument("key")
@database_option()
def trigger_command(key: str, database_url: str) -> None:
    """Run a periodic job once now, outside its schedule (its windows are not affected)."""

    async def trigger(scheduler: Scheduler) -> str:
        await _known(scheduler, key)
        job_id = await scheduler.trigger_periodic_job(key)
        if job_id is None:
            fail(f"no periodic job {key!r}")
        return job_id

    job_id = run("trigger the periodic job", database_url, lambda: with_producer(database_url, trigger))
    click.echo(f"triggered periodic job {key}: job {job_id} is due now")


@periodic_group.command("set")
@click.argument("key")
@database_option()
@click.option("--every", metavar="DURATION", help="New interval: 90, 30s, 5m, 2h, 1d, 1h30m.")
@click.option(
    "--cron", metavar="EXPR", help="New cron expression (5 fields, 6 with seconds last, or @hourly...)."
)
@click.option("--timezone", metavar="TZ", help="Time zone of --cron (IANA name; default UTC).")
@click.option("--reset", is_flag=True, help="Go back to the schedule the code declares.")
def set_command(
    key: str, database_url: str, every: str | None, cron: str | None, timezone: str | None, reset: bool
) -> None:
    """Change a periodic job's schedule for the whole cluster, at run time.

    The new schedule is stored in the database and wins over the code's, also after restarts,
    until `--reset`. Windows written ahead under the old schedule are cancelled; the new one
    starts at its next window. The job's policies (DST, misfire, overlap) stay the code's.
    """
    if sum(x is not None for x in (every, cron)) + reset != 1:
        fail("give exactly one of --every, --cron or --reset")
    if timezone is not None and cron is None:
        fail("--timezone goes with --cron")
    try:
        interval = parse_duration(every) if every is not None else None
    except ValueError as exc:
        fail(f"--every: {exc}")

    async def change(scheduler: Scheduler) -> tuple[str, list[datetime]]:
        await _known(scheduler, key)
        if reset:
            done = await scheduler.reset_periodic_schedule(key)
        else:
            done = await scheduler.set_periodic_schedule(key, every=interval, cron=cron, timezone=timezone)
        if not done:
            fail(f"no periodic job {key!r}")
        info = await _known(scheduler, key)
        return _schedule(info), list(await scheduler.get_periodic_next_runs(key, 3))

    described, upcoming = run(
        "change the schedule", database_url, lambda: with_producer(database_url, change)
    )
    click.echo(f"periodic job {key}: {described}")
    click.echo("next runs: " + ", ".join(utc(m, timespec="auto") for m in upcoming))


@periodic_group.command("next")
@click.argument("key")
@database_option()
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    metavar="N",
    help="How many fire times to print.",
)
def next_command(key: str, database_url: str, count: int) -> None:
    """Print the next fire times of a periodic job, in UTC (ISO 8601), one per line.

    They follow its schedule and policies whether or not the job is enabled.
    """

    async def upcoming(scheduler: Scheduler) -> list[datetime]:
        await _known(scheduler, key)
        return list(await scheduler.get_periodic_next_runs(key, count))

    for moment in run("compute the next runs", database_url, lambda: with_producer(database_url, upcoming)):
        click.echo(utc(moment, timespec="auto"))
