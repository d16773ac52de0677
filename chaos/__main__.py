"""``python -m chaos --minutes 30``: a long chaos run that writes its report to a folder."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

import click

from . import report
from .cluster import PodSettings
from .network import lab_unavailable_reason
from .run import Run, long_profile, short_profile


@click.command()
@click.option("--minutes", type=click.FloatRange(min=2), default=None,
              help="Length of a long run; without it, the short CI profile (about 2 minutes).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report folder.  [default: ./chaos-runs/<time>]")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of every random choice.")
@click.option("--lease-seconds", type=click.FloatRange(min=1), default=4.0, show_default=True)
@click.option("--leader-ttl-seconds", type=click.FloatRange(min=2), default=5.0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Worker processes per pod (3 pods).")
def main(minutes: float | None, out: Path | None, seed: int, lease_seconds: float,
         leader_ttl_seconds: float, workers: int) -> None:
    """Run pods under faults and check the whole history; exit 1 if an invariant broke."""
    reason = lab_unavailable_reason()
    if reason:
        raise click.ClickException(f"cannot build the network lab: {reason}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = PodSettings(workers=workers, lease_seconds=lease_seconds,
                           heartbeat_seconds=lease_seconds / 4, leader_ttl_seconds=leader_ttl_seconds)
    profile = long_profile(minutes, settings, seed) if minutes else short_profile(settings)
    folder = out or Path("chaos-runs") / time.strftime("%Y%m%d-%H%M%S")
    result = asyncio.run(Run(profile, folder).execute())
    click.echo(report.write(result, folder))
    click.echo(f"report: {folder}/report.json, {folder}/report.txt")
    sys.exit(0 if report.passed(result) else 1)


if __name__ == "__main__":
    main()
