"""``bench/.venv/bin/python -m bench.producers``: the single-job API's own speed, without workers.

The steady scenario's producers (32 tasks in one process, one call at a time each, as in
``python -m bench --scenarios steady``) share this machine's two cores with the workers that drain
what they send and with PostgreSQL, so the rate they reach there is the machine's, not the API's.
Here the same producers (pg-scheduler ``schedule()`` on one Scheduler and pool the tasks share,
pgqueuer ``enqueue``, procrastinate ``defer_async``) call as fast as they can for ``--seconds``,
with no worker running, each system in a database of its own, rounds interleaved: calls per
second, the producer process's CPU per call, and the call's p50 / p99. Runs in ``bench/.venv``
(the peers are installed there). Not a test and not part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg

from .arguments import split_choices
from .postgres import start_server

DRIVERS = Path(__file__).resolve().parent / "drivers"
SYSTEMS = {"ours": "ours_driver", "pgqueuer": "pgqueuer_driver", "procrastinate": "procrastinate_driver"}


def _from_drivers(name: str) -> ModuleType:
    """A module of the harness's drivers folder (drivers import each other by bare name)."""
    if str(DRIVERS) not in sys.path:
        sys.path.insert(0, str(DRIVERS))
    return __import__(name)


def _driver(system: str) -> ModuleType:
    """The driver module of ``system``."""
    return _from_drivers(SYSTEMS[system])


async def _trial(driver: ModuleType, dsn: str, producers: int, seconds: float) -> dict[str, float]:
    await driver.setup(dsn)
    cli = _from_drivers("driver_cli")  # producers_of, close_producers
    made: list[Any] = []
    times: list[float] = []

    async def calls(producer: Any) -> None:
        key = 0
        while time.monotonic() < until:
            began = time.perf_counter()
            await producer.one(key, time.time())
            times.append(time.perf_counter() - began)
            key += 1

    try:
        made = await cli.producers_of(driver.DRIVER, dsn, producers)  # the steady scenario's
        until = time.monotonic() + seconds
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.gather(*(calls(p) for p in made))
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    finally:
        await cli.close_producers(made)
    if not times:
        raise SystemExit(f"no call completed in {seconds} s")
    times.sort()
    return {
        "calls_per_s": len(times) / wall,
        "cpu_us_per_call": 1e6 * cpu / len(times),
        "p50_ms": 1e3 * times[len(times) // 2],
        "p99_ms": 1e3 * times[int(len(times) * 0.99)],
    }


async def run(systems: list[str], producers: int, seconds: float, rounds: int) -> None:
    server = start_server()
    try:
        dsn = server.dsn()
        admin = await asyncpg.connect(dsn)
        found: dict[str, list[dict[str, float]]] = {s: [] for s in systems}
        for rnd in range(1, rounds + 1):
            for system in systems:
                db = f"producers_{system}_{rnd}"
                await admin.execute(f'CREATE DATABASE "{db}"')  # a fixed name: nothing to escape
                result = await _trial(_driver(system), f"{dsn.rsplit('/', 1)[0]}/{db}", producers, seconds)
                found[system].append(result)
                print(
                    f"[round {rnd}/{rounds}] {system:13} {result['calls_per_s']:7,.0f} calls/s, "
                    f"{result['cpu_us_per_call']:5.0f} µs of producer CPU per call, "
                    f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms",
                    flush=True,
                )
        await admin.close()
        print(f"\n{producers} producer tasks, one process, no worker; medians of {rounds} rounds")
        print("| system | calls/s | producer CPU per call, µs | p50, ms | p99, ms |")
        print("| --- | --- | --- | --- | --- |")
        for system, results in found.items():
            med = {k: statistics.median(r[k] for r in results) for k in results[0]}
            print(
                f"| {system} | {med['calls_per_s']:,.0f} | {med['cpu_us_per_call']:.0f} | "
                f"{med['p50_ms']:.2f} | {med['p99_ms']:.2f} |"
            )
    finally:
        server.close()


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.producers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--producers", type=int, default=32, help="concurrent producer tasks (32)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each trial (5)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    p.add_argument(
        "--only", default=",".join(SYSTEMS), help=f"systems, comma-separated ({', '.join(SYSTEMS)})"
    )
    a = p.parse_args()
    systems = split_choices(a.only, SYSTEMS, p)
    if a.producers < 1 or a.seconds <= 0 or a.rounds < 1:
        p.error("--producers and --rounds must be at least 1, --seconds more than 0")
    asyncio.run(run(systems, a.producers, a.seconds, a.rounds))


if __name__ == "__main__":
    main()
