"""``python -m bench``: every system, every scenario, interleaved over rounds, one server."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import postgres, report
from .arguments import split_choices
from .environment import ROOT, baseline
from .scenarios import io, pods, slots, steady
from .scenarios.drain import drain
from .scenarios.enqueue import enqueue
from .scenarios.idle import finished_rows, idle
from .scenarios.latency import latency
from .scenarios.limits import KINDS, limited
from .scenarios.memory import memory
from .scenarios.scale import PODS, scale
from .systems import ALL, BY_KEY, OURS, System
from .systems.ours import baseline_system
from .trial import Context, Options

SCENARIOS = (
    "enqueue",
    "drain",
    "latency",
    "scale",
    "limits",
    "slots",
    "io",
    "steady",
    "memory",
    "idle",
    "pods",
)
PER_ROUND = ("enqueue", "drain", "latency", "scale", "limits", "slots", "io", "steady", "idle")
"""Throughput and latency are interleaved over rounds (for "idle": the drain with and without a
million finished rows); memory, the idle window's counters and the idle pods are measured once."""


@dataclass
class Plan:
    rounds: int
    systems: list[System]
    scenarios: list[str]
    options: Options
    latency_seconds: float
    idle_rows: int
    idle_window: float
    json_path: Path | None
    slots: list[int]
    io_jobs: int
    io_sleep: float
    steady_rates: list[float]
    steady_seconds: float
    pods: list[int]
    pods_window: float
    quick: bool
    report_path: Path | None = None


def parse(argv: list[str]) -> Plan:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--rounds", type=int, default=None, help="rounds of the interleaved scenarios (3)")
    p.add_argument("--jobs", type=int, default=None, help="jobs per drain and per batch enqueue (20000)")
    p.add_argument(
        "--only",
        default=",".join(s.key for s in ALL),
        help=f"systems, comma-separated: {','.join(s.key for s in ALL)}",
    )
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated: {','.join(SCENARIOS)}")
    p.add_argument("--concurrency", type=int, default=20, help="jobs at once per worker process")
    p.add_argument("--processes", type=int, default=2, help="worker processes per system")
    p.add_argument("--latency-seconds", type=float, default=None, help="length of the 20 jobs/s trickle (10)")
    p.add_argument("--idle-rows", type=int, default=None, help="future / finished rows (1000000)")
    p.add_argument("--idle-window", type=float, default=None, help="seconds of idle observed (30)")
    p.add_argument("--slots", default=None, help="slots per worker process of the slots sweep (20,100,500)")
    p.add_argument("--io-jobs", type=int, default=None, help="jobs of the I/O-bound drain (200000)")
    p.add_argument(
        "--io-sleep-ms", type=float, default=50.0, help="what each I/O-bound job awaits, in ms (50)"
    )
    p.add_argument("--steady-rates", default=None, help="total jobs/s of the steady load (2000,5000)")
    p.add_argument("--steady-seconds", type=float, default=None, help="length of each steady load (20)")
    p.add_argument("--pods", default=None, help="idle pods of 2 worker processes, per trial (1,4,8)")
    p.add_argument("--pods-window", type=float, default=None, help="seconds of idle pods observed (30)")
    p.add_argument("--timeout", type=float, default=600.0, help="longest wait for any one step")
    p.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep every trial's worker logs and job records (failed trials' are always kept)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write every trial and the summary here")
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="JSON",
        help="print the tables of an earlier --json file and stop",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 round, 2000 jobs, 100000 idle rows, short windows, small new scenarios",
    )
    p.add_argument(
        "--baseline",
        metavar="COMMIT",
        default=None,
        help="also drain, enqueue and time the latency with this repository at COMMIT (its own "
        "virtualenv), interleaved, and report ours / it",
    )
    p.add_argument("--rebuild-venvs", action="store_true", help="rebuild bench/.venv and .venv-seed")
    p.add_argument("--setup-only", action="store_true", help="build the virtualenvs and stop")
    a = p.parse_args(argv)
    quick = a.quick

    def pick(value: Any, default: Any, quick_default: Any) -> Any:
        return value if value is not None else (quick_default if quick else default)

    systems = [BY_KEY[k] for k in split_choices(a.only, BY_KEY, p)]
    if a.baseline is not None:
        try:
            venv = baseline(a.baseline)
        except subprocess.CalledProcessError as exc:
            p.error(f"--baseline {a.baseline}: {exc.stderr.strip() if exc.stderr else exc}")
        systems.append(baseline_system(venv.commit, venv.python))
    scenarios = split_choices(a.scenarios, SCENARIOS, p)
    return Plan(
        rounds=pick(a.rounds, 3, 1),
        systems=systems,
        scenarios=[s for s in SCENARIOS if s in scenarios],
        options=Options(
            jobs=pick(a.jobs, 20_000, 2_000),
            processes=a.processes,
            concurrency=a.concurrency,
            timeout=a.timeout,
            keep_logs=a.keep_logs,
        ),
        latency_seconds=pick(a.latency_seconds, 10.0, 5.0),
        idle_rows=pick(a.idle_rows, 1_000_000, 100_000),
        idle_window=pick(a.idle_window, 30.0, 15.0),
        json_path=a.json,
        slots=_numbers(pick(a.slots, slots.SLOTS, slots.QUICK_SLOTS), int, p, "--slots"),
        io_jobs=pick(a.io_jobs, 200_000, 5_000),
        io_sleep=a.io_sleep_ms / 1000,
        steady_rates=_numbers(
            pick(a.steady_rates, steady.RATES, steady.QUICK_RATES), float, p, "--steady-rates"
        ),
        steady_seconds=pick(a.steady_seconds, 20.0, 5.0),
        pods=_numbers(pick(a.pods, pods.PODS, pods.QUICK_PODS), int, p, "--pods"),
        pods_window=pick(a.pods_window, 30.0, 10.0),
        quick=quick,
        report_path=a.report,
    )


def _numbers(
    value: str | tuple[float, ...], kind: type[int] | type[float], p: argparse.ArgumentParser, name: str
) -> list[Any]:
    """A comma-separated option (or its default tuple) as a list of positive numbers."""
    try:
        numbers = [kind(x) for x in value.split(",") if x.strip()] if isinstance(value, str) else list(value)
    except ValueError:
        p.error(f"{name}: comma-separated numbers, got {value!r}")
    if not numbers or any(x <= 0 for x in numbers):
        p.error(f"{name}: positive numbers, got {value!r}")
    return numbers


Step = tuple[str, str, Callable[[], Awaitable[dict[str, Any]]]]


def steps_for_round(plan: Plan, ctx: Context, rnd: int) -> list[Step]:
    """Each scenario once per system, the systems' order rotated by the round number."""
    steps: list[Step] = []
    for scenario in plan.scenarios:
        if scenario not in PER_ROUND:
            continue
        if scenario == "idle":
            if OURS in plan.systems:
                steps.append(("finished_rows", "ours", _bind(finished_rows, ctx, rows=plan.idle_rows)))
            continue
        if scenario == "scale":
            if OURS in plan.systems:
                pods = _rotate(list(PODS), rnd)
                steps += [("scale", f"ours x{n}", _bind(scale, ctx, n)) for n in pods]
            continue
        if scenario == "limits":
            if OURS in plan.systems:
                steps += [("limits", f"ours {k}", _bind(limited, ctx, k)) for k in _rotate(list(KINDS), rnd)]
            continue
        systems = _rotate([s for s in plan.systems if scenario in s.scenarios], rnd)
        if scenario == "slots":
            for n in _rotate(list(plan.slots), rnd):
                steps += [("slots", f"{s.key}/{n}", _bind(slots.slots, ctx, s, n)) for s in systems]
            continue
        if scenario == "steady":
            for rate in _rotate(list(plan.steady_rates), rnd):
                steps += [
                    (
                        "steady",
                        f"{s.key}/{rate:g}",
                        _bind(steady.steady, ctx, s, rate=rate, duration=plan.steady_seconds),
                    )
                    for s in systems
                ]
            continue
        for system in systems:
            if scenario == "enqueue":
                steps.append((scenario, system.key, _bind(enqueue, ctx, system)))
            elif scenario == "drain":
                steps.append((scenario, system.key, _bind(drain, ctx, system)))
            elif scenario == "latency":
                steps.append(
                    (scenario, system.key, _bind(latency, ctx, system, duration=plan.latency_seconds))
                )
            elif scenario == "io":
                steps.append(
                    (scenario, system.key, _bind(io.io, ctx, system, jobs=plan.io_jobs, sleep=plan.io_sleep))
                )
    return steps


def steps_once(plan: Plan, ctx: Context) -> list[Step]:
    steps: list[Step] = []
    if "memory" in plan.scenarios:
        steps += [("memory", s.key, _bind(memory, ctx, s)) for s in plan.systems if "memory" in s.scenarios]
    if "idle" in plan.scenarios and OURS in plan.systems:
        steps.append(("idle", "ours", _bind(idle, ctx, rows=plan.idle_rows, window=plan.idle_window)))
    if "pods" in plan.scenarios and OURS in plan.systems:
        steps += [
            (
                "pods",
                f"ours x{n}",
                _bind(
                    pods.pods,
                    ctx,
                    n,
                    window=plan.pods_window,
                    settle=pods.QUICK_SETTLE_SECONDS if plan.quick else pods.SETTLE_SECONDS,
                ),
            )
            for n in plan.pods
        ]
    return steps


def _rotate(items: list[Any], n: int) -> list[Any]:
    if not items:
        return items
    n %= len(items)
    return items[n:] + items[:n]


def _bind(
    fn: Callable[..., Awaitable[dict[str, Any]]], *args: Any, **kwargs: Any
) -> Callable[[], Awaitable[dict[str, Any]]]:
    return lambda: fn(*args, **kwargs)


async def run_step(step: Step, rnd: int, label: str) -> report.Outcome:
    scenario, system, fn = step
    started = time.monotonic()
    outcome = report.Outcome(scenario, system, rnd)
    try:
        outcome.metrics = await fn()
    except Exception as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
        print(f"!!! {label} {scenario} {system} FAILED: {outcome.error}", flush=True)
        traceback.print_exc()
    outcome.seconds = time.monotonic() - started
    if outcome.error is None:
        shown = ", ".join(
            f"{k}={_short(v)}" for k, v in outcome.metrics.items() if not isinstance(v, dict | list)
        )
        print(f"{label} {scenario:<13} {system:<14} {shown}  [{outcome.seconds:.0f} s]", flush=True)
    return outcome


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


async def run(plan: Plan) -> int:
    work = Path(tempfile.mkdtemp(prefix="pg-scheduler-bench-"))
    print(
        f"bench: {plan.rounds} round(s), {plan.options.jobs:,} jobs, systems "
        f"{', '.join(s.key for s in plan.systems)}, scenarios {', '.join(plan.scenarios)}; "
        f"logs in {work}",
        flush=True,
    )
    server = await asyncio.to_thread(postgres.start_server)
    outcomes: list[report.Outcome] = []
    began = time.monotonic()
    commit_at_start = git_commit()
    try:
        admin = server.dsn()
        settings = await postgres.check_durability(admin)
        ctx = Context(admin, postgres.Databases(admin), plan.options, work, server.logfile)
        for rnd in range(1, plan.rounds + 1):
            for step in steps_for_round(plan, ctx, rnd - 1):
                outcomes.append(await run_step(step, rnd, f"[round {rnd}/{plan.rounds}]"))
        for step in steps_once(plan, ctx):
            outcomes.append(await run_step(step, 1, "[once]"))
        version = await postgres.server_version(admin)
    finally:
        await asyncio.to_thread(server.close)
        if not any(o.error for o in outcomes) and not plan.options.keep_logs:
            shutil.rmtree(work, ignore_errors=True)
    meta = _meta(plan, version, settings, time.monotonic() - began, commit_at_start)
    header = _header(meta)
    print("\n" + report.render(outcomes, header), flush=True)
    if plan.json_path is not None:
        plan.json_path.write_text(
            json.dumps(
                {
                    "meta": meta,
                    "outcomes": [o.to_json() for o in outcomes],
                    "targets": [t.__dict__ for t in report.targets(outcomes)],
                },
                indent=2,
            )
        )
        print(f"\nbench: wrote {plan.json_path}")
    return 1 if any(o.error for o in outcomes) else 0


def _header(meta: dict[str, Any]) -> str:
    settings = meta["settings"]
    return (
        f"{'QUICK RUN (smoke check, not for comparison): ' if meta['quick'] else ''}"
        f"{meta['date']}, {meta['cpus']} cores, PostgreSQL {meta['postgres']} "
        f"(fsync {settings['fsync']}, synchronous_commit {settings['synchronous_commit']}), "
        f"{meta['rounds']} round(s), {meta['jobs']:,} jobs, {meta['processes']} worker "
        f"processes × {meta['concurrency']}, commit {meta['commit']}; "
        f"{meta['seconds'] / 60:.1f} min"
    )


def rerender(path: Path) -> int:
    """``--report PATH``: the tables of an earlier run's ``--json`` file, without running."""
    data = json.loads(path.read_text())
    outcomes = [report.Outcome(**o) for o in data["outcomes"]]
    print(report.render(outcomes, _header(data["meta"])))
    return 0


def git_commit() -> str:
    """``git describe --always --dirty`` of the repository: pg-scheduler runs from its working
    tree, as it is when each trial starts."""
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            text=True,
            capture_output=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _meta(
    plan: Plan, version: str, settings: dict[str, str], seconds: float, commit_at_start: str
) -> dict[str, Any]:
    commit = git_commit()
    if commit != commit_at_start or commit.endswith("-dirty"):
        # The tree may have changed under the run: say so rather than name one commit.
        commit = commit if commit == commit_at_start else f"{commit_at_start} → {commit}"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "python": sys.version.split()[0],
        "postgres": version,
        "settings": settings,
        "commit": commit,
        "rounds": plan.rounds,
        "jobs": plan.options.jobs,
        "processes": plan.options.processes,
        "concurrency": plan.options.concurrency,
        "slots": plan.slots,
        "io_jobs": plan.io_jobs,
        "io_sleep_ms": plan.io_sleep * 1000,
        "steady_rates": plan.steady_rates,
        "steady_seconds": plan.steady_seconds,
        "pods": plan.pods,
        "pods_window": plan.pods_window,
        "quick": plan.quick,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    plan = parse(sys.argv[1:] if argv is None else argv)
    if plan.report_path is not None:
        return rerender(plan.report_path)
    return asyncio.run(run(plan))
