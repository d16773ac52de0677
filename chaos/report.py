"""The run's report: ``report.json`` (everything) and a readable table (``report.txt``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GATES = (
    "executions_never_assigned",
    "lost_jobs",
    "duplicate_completions",
    "completions_without_a_run",
    "unproven_overlaps",
    "runs_started_after_being_taken_back",
    "duplicate_windows",
    "missed_windows",
    "misfire_policy_broken_after_a_gap",
    "overlapping_leader_epochs",
    "runs_outside_their_queues",
    "queue_concurrency_exceeded",
    "key_limit_exceeded",
)
"""Invariants that must be zero."""


def passed(result: dict[str, Any]) -> bool:
    invariants = result["invariants"]
    times_met = all(t["met"] for t in result["times"].values())
    return all(invariants[name].count == 0 for name in GATES) and times_met and not result["notes"]


def to_json(result: dict[str, Any]) -> str:
    def default(value: Any) -> Any:
        if hasattr(value, "count") and hasattr(value, "examples"):
            return {"count": value.count, "examples": value.examples}
        return str(value)

    return json.dumps(result, indent=2, default=default, sort_keys=True)


def table(result: dict[str, Any]) -> str:
    profile = result["profile"]
    s = profile["settings"]
    lines = [
        f"chaos run '{profile['name']}': {profile['pods']} pods x {s['workers']} workers, "
        f"{profile['fault_seconds']:.0f} s of faults, lease {s['lease_seconds']:g} s, "
        f"leader TTL {s['leader_ttl_seconds']:g} s, seed {profile['seed']}",
        "",
        f"{'invariant':<48}{'violations':>12}",
    ]
    for name in GATES:
        v = result["invariants"][name]
        lines.append(f"{name:<48}{v.count:>12}")
        lines += [f"    {example}" for example in v.examples]
    lines += ["", f"{'count':<48}{'value':>12}"]
    for name, value in sorted(result["counts"].items()):
        if isinstance(value, dict):
            value = " ".join(f"{k}={v}" for k, v in value.items())
            lines.append(f"{name:<30}{value:>30}")
        elif isinstance(value, list):
            lines.append(f"{name:<48}{len(value):>12}")
            lines += [f"    {item}" for item in value]
        else:
            lines.append(f"{name:<48}{value:>12}")
    lines += ["", f"{'time (s)':<42}{'n':>5}{'median':>9}{'max':>9}{'target':>9}  met"]
    for name, t in sorted(result["times"].items()):
        target = "-" if t["target"] is None else f"< {t['target']:.3g}"
        lines.append(
            f"{name:<42}{t['n']:>5}{t['median']:>9.2f}{t['max']:>9.2f}{target:>9}  "
            f"{'yes' if t['met'] else 'NO'}"
        )
    lines += [
        "",
        f"settle after faults: {result['settle_seconds']:.1f} s; "
        f"enqueue retries during outages: {result['enqueue_retries']}",
    ]
    for note in result["notes"]:
        lines.append(f"NOTE: {note}")
    lines.append("")
    lines.append("PASSED" if passed(result) else "FAILED")
    return "\n".join(lines)


def write(result: dict[str, Any], folder: Path) -> str:
    text = table(result)
    (folder / "report.json").write_text(to_json(result))
    (folder / "report.txt").write_text(text + "\n")
    return text
