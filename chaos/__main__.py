"""``python -m chaos --minutes 30``: a long chaos run that writes its report to a folder."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from . import report
from .cluster import PodSettings
from .folder import FolderInUse, held, leftovers
from .invariants import Check, read_effects
from .network import lab_unavailable_reason
from .run import Run, long_profile, short_profile


@click.command()
@click.option(
    "--minutes",
    type=click.FloatRange(min=2),
    default=None,
    help="Length of a long run; without it, the short CI profile (about 2 minutes).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report folder.  [default: ./chaos-runs/<time>]",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of every random choice.")
@click.option("--lease-seconds", type=click.FloatRange(min=1), default=4.0, show_default=True)
@click.option("--leader-ttl-seconds", type=click.FloatRange(min=2), default=5.0, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Worker processes per pod (3 pods).",
)
@click.option(
    "--recheck",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Run the checker again on the history a run left in FOLDER.",
)
def main(
    minutes: float | None,
    out: Path | None,
    seed: int,
    lease_seconds: float,
    leader_ttl_seconds: float,
    workers: int,
    recheck: Path | None,
) -> None:
    """Run pods under faults and check the whole history; exit 1 if an invariant broke.

    The folder is held for the whole run or recheck (chaos/folder.py): another live run's folder
    is refused, and so is, for a new run, a folder that is not empty."""
    if recheck is not None:
        with _holding(recheck):
            result = rechecked(recheck)
            click.echo(report.write(result, recheck))
        sys.exit(0 if report.passed(result) else 1)
    reason = lab_unavailable_reason()
    if reason:
        raise click.ClickException(f"cannot build the network lab: {reason}")
    settings = PodSettings(
        workers=workers,
        lease_seconds=lease_seconds,
        heartbeat_seconds=lease_seconds / 4,
        leader_ttl_seconds=leader_ttl_seconds,
    )
    profile = long_profile(minutes, settings, seed) if minutes else short_profile(settings)
    folder = out or Path("chaos-runs") / time.strftime("%Y%m%d-%H%M%S")
    with _holding(folder):
        if leftovers(folder):
            raise click.ClickException(f"{folder} is not empty: give each run its own folder")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        result = asyncio.run(Run(profile, folder).execute())
        click.echo(report.write(result, folder))
    click.echo(f"report: {folder}/report.json, {folder}/report.txt")
    sys.exit(0 if report.passed(result) else 1)


@contextlib.contextmanager
def _holding(folder: Path) -> Iterator[None]:
    """``folder`` held; another live run's folder is a one-line error (exit 1)."""
    try:
        with held(folder):
            yield
    except FolderInUse as exc:
        raise click.ClickException(str(exc)) from None


def rechecked(folder: Path) -> dict[str, Any]:
    """The checker's verdict on a finished run's saved history, with the run's other facts
    (profile, notes, exits) taken from its report."""
    check = Check.load(folder / "history.json", read_effects(folder / "effects"))
    previous = json.loads((folder / "report.json").read_text())
    result = check.run()
    result["counts"]["late_outcomes_refused"] = previous["counts"]["late_outcomes_refused"]
    for key in ("profile", "settle_seconds", "enqueue_retries", "pod_exits", "notes", "faults"):
        result[key] = previous[key]
    return result


if __name__ == "__main__":
    main()
