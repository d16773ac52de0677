"""Turning trial outcomes into the tables: medians with min–max, and the issue's targets as
ratios measured in the same run as the peers, each marked met or not met."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .systems import ALL


@dataclass
class Outcome:
    scenario: str
    system: str
    round: int
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    goal: str
    met: bool | None  # None: not measured in this run


def spread(outcomes: Iterable[Outcome], scenario: str, system: str, metric: str) -> Spread | None:
    values = [
        float(o.metrics[metric])
        for o in outcomes
        if o.scenario == scenario
        and o.system == system
        and o.error is None
        and o.metrics.get(metric) is not None
    ]
    if not values:
        return None
    return Spread(statistics.median(values), min(values), max(values), len(values))


def _num(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _count(x: float) -> str:
    return f"{x:.0f}" if x == int(x) else f"{x:.2f}"


def _cell(s: Spread | None, unit: str = "") -> str:
    if s is None:
        return "—"
    if s.n == 1:
        return f"{_num(s.median)}{unit}"
    return f"{_num(s.median)}{unit} ({_num(s.low)}–{_num(s.high)})"


def _failed(outcomes: list[Outcome], scenario: str, system: str) -> int:
    return sum(1 for o in outcomes if o.scenario == scenario and o.system == system and o.error)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def main_table(outcomes: list[Outcome]) -> list[str]:
    head = [
        "system",
        "drain, jobs/s",
        "enqueue, batch API, jobs/s",
        "schedule one job: ms; statements",
        "start latency p50 / p99, ms",
        "worker RSS at 50 jobs, MB",
    ]
    rows = []
    # The systems of ALL, then a --baseline commit's (``ours@<commit>``, labelled by its key).
    baselines = sorted({o.system for o in outcomes if o.system.startswith("ours@")})
    for k, label in [(s.key, s.label) for s in ALL] + [(k, k) for k in baselines]:
        if not any(o.system == k for o in outcomes):
            continue
        one = spread(outcomes, "enqueue", k, "one_ms")
        statements = spread(outcomes, "enqueue", k, "one_statements")
        resets = spread(outcomes, "enqueue", k, "one_pool_resets")
        one_cell = _cell(one)
        if statements is not None:
            extra = f", {_count(resets.median)} a pool reset" if resets and resets.median else ""
            one_cell += f"; {_count(statements.median)} stmt{extra}"
        p50 = spread(outcomes, "latency", k, "p50_ms")
        p99 = spread(outcomes, "latency", k, "p99_ms")
        latency = "—" if p50 is None or p99 is None else f"{_cell(p50)} / {_cell(p99)}"
        cells = {
            "drain": _cell(spread(outcomes, "drain", k, "jobs_per_s")),
            "enqueue": _cell(spread(outcomes, "enqueue", k, "jobs_per_s")),
            "latency": latency,
            "memory": _cell(spread(outcomes, "memory", k, "rss_mb")),
        }
        for scenario in cells:
            failed = _failed(outcomes, scenario, k)
            if failed:
                cells[scenario] += f" **{failed} FAILED**"
        rows.append(
            [
                label,
                cells["drain"],
                cells["enqueue"],
                one_cell if one else "—",
                cells["latency"],
                cells["memory"],
            ]
        )
    return _table(head, rows)


def scale_table(outcomes: list[Outcome]) -> list[str]:
    rows = []
    for pods in (1, 2, 3):
        s = spread(outcomes, "scale", f"ours x{pods}", "jobs_per_s")
        failed = _failed(outcomes, "scale", f"ours x{pods}")
        if s is None and not failed:
            continue
        cell = _cell(s) + (f" **{failed} FAILED**" if failed else "")
        rows.append([str(pods), str(pods * 2), cell])
    return _table(["pods", "worker processes", "drain, jobs/s"], rows) if rows else []


def limits_table(outcomes: list[Outcome]) -> list[str]:
    plain = spread(outcomes, "drain", "ours", "jobs_per_s")
    rows = []
    kinds = (("capped", "concurrency = the cluster's slots"), ("keyed", "key_concurrency=1, 1,000 keys"))
    for kind, what in kinds:
        s = spread(outcomes, "limits", f"ours {kind}", "jobs_per_s")
        failed = _failed(outcomes, "limits", f"ours {kind}")
        if s is None and not failed:
            continue
        ratio = "—" if s is None or plain is None else f"{s.median / plain.median:.2f}×"
        rows.append([what, _cell(s) + (f" **{failed} FAILED**" if failed else ""), ratio])
    if not rows:
        return []
    return _table(["queue default limited by", "drain, jobs/s", "of the unlimited drain"], rows)


def idle_table(outcomes: list[Outcome]) -> list[str]:
    rows = []
    for o in outcomes:
        if o.scenario == "idle" and o.error is None:
            m = o.metrics
            others = ", ".join(
                f"{name} {d['seq_scan']} seq / {d['writes']} written"
                for name, d in sorted(m["tables"].items())
                if name != "scheduled_jobs" and (d["seq_scan"] or d["writes"])
            )
            rows.append(
                [
                    f"{m['rows']:,} future jobs, {m['window_s']:.0f} s idle",
                    f"seq scans {m['jobs_seq_scans']}, index scans {m['jobs_idx_scans']}, "
                    f"rows written {m['jobs_writes']}",
                    others or "none",
                ]
            )
    filled = [o.metrics["rows"] for o in outcomes if o.scenario == "finished_rows" and o.error is None]
    ratio = spread(outcomes, "finished_rows", "ours", "ratio")
    if filled and ratio is not None:
        full = spread(outcomes, "finished_rows", "ours", "full_jobs_per_s")
        empty = spread(outcomes, "finished_rows", "ours", "empty_jobs_per_s")
        spans = "" if ratio.n == 1 else f" ({ratio.low:.0%}–{ratio.high:.0%})"
        rows.append(
            [
                f"drain with {filled[-1]:,} finished rows",
                f"{_cell(full)} jobs/s vs {_cell(empty)} on an empty table: {ratio.median:.0%}{spans}",
                "",
            ]
        )
    head = ["pg-scheduler (this repo)", "scheduled_jobs", "scheduler_* tables"]
    return _table(head, rows) if rows else []


def _ratio_target(name: str, goal: float, num: Spread | None, den: Spread | None) -> Target:
    if num is None or den is None:
        return Target(name, "not measured", f"≥ {goal:g}×", None)
    ratio = num.median / den.median
    return Target(
        name, f"{ratio:.2f}× ({_num(num.median)} / {_num(den.median)})", f"≥ {goal:g}×", ratio >= goal
    )


def _context_ratio(name: str, num: Spread | None, den: Spread | None) -> Target:
    """A ratio that explains a target rather than being one: marked neither met nor not."""
    if num is None or den is None:
        return Target(name, "not measured", "—", None)
    return Target(
        name, f"{num.median / den.median:.2f}× ({_num(num.median)} / {_num(den.median)})", "—", None
    )


def _limit_target(
    name: str, value: Spread | None, goal: float, unit: str, ok: Callable[[float, float], bool]
) -> Target:
    if value is None:
        return Target(name, "not measured", f"{goal:g}{unit}", None)
    return Target(name, f"{_num(value.median)}{unit}", f"{goal:g}{unit}", ok(value.median, goal))


def targets(outcomes: list[Outcome]) -> list[Target]:
    def s(scenario: str, system: str, metric: str) -> Spread | None:
        return spread(outcomes, scenario, system, metric)

    base = next((o.system for o in outcomes if o.system.startswith("ours@")), None)
    found = [
        _ratio_target(
            f"drain: ours / {base or 'the previous commit (--baseline)'}",
            0.97,
            s("drain", "ours", "jobs_per_s"),
            None if base is None else s("drain", base, "jobs_per_s"),
        ),
        _ratio_target(
            "drain: ours / pgqueuer",
            2.0,
            s("drain", "ours", "jobs_per_s"),
            s("drain", "pgqueuer", "jobs_per_s"),
        ),
        _ratio_target(
            "drain: ours / raw batched ceiling",
            0.5,
            s("drain", "ours", "jobs_per_s"),
            s("drain", "raw-batch", "jobs_per_s"),
        ),
        _context_ratio(
            "drain: ours / raw SQL at the same slots (context, no goal)",
            s("drain", "ours", "jobs_per_s"),
            s("drain", "raw-slots", "jobs_per_s"),
        ),
        _ratio_target(
            "drain: concurrency limit that never binds / unlimited",
            0.85,
            s("limits", "ours capped", "jobs_per_s"),
            s("drain", "ours", "jobs_per_s"),
        ),
        _ratio_target(
            "drain: key_concurrency=1 over 1,000 keys / unlimited",
            0.5,
            s("limits", "ours keyed", "jobs_per_s"),
            s("drain", "ours", "jobs_per_s"),
        ),
        _limit_target(
            "start latency p50 (light load)", s("latency", "ours", "p50_ms"), 4, " ms", lambda v, g: v <= g
        ),
        _limit_target(
            "start latency p99 (light load)", s("latency", "ours", "p99_ms"), 10, " ms", lambda v, g: v <= g
        ),
        _ratio_target(
            "schedule_bulk / raw INSERT … unnest",
            0.5,
            s("enqueue", "ours", "jobs_per_s"),
            s("enqueue", "raw-batch", "jobs_per_s"),
        ),
    ]
    statements = s("enqueue", "ours", "one_statements")
    resets = s("enqueue", "ours", "one_pool_resets")
    if statements is None:
        found.append(Target("schedule() of one job: round trips", "not measured", "1", None))
    else:
        why = ""
        if resets is not None and resets.median:
            why = f" ({_count(resets.median)} of them the asyncpg pool's reset)"
        found.append(
            Target(
                "schedule() of one job: round trips",
                f"{_count(statements.median)}{why}",
                "1",
                statements.median <= 1,
            )
        )
    idles = [o for o in outcomes if o.scenario == "idle" and o.error is None]
    if idles:
        m = idles[-1].metrics
        found.append(
            Target(
                f"idle with {m['rows']:,} future jobs: seq scans / writes on scheduled_jobs",
                f"{m['jobs_seq_scans']} / {m['jobs_writes']} in {m['window_s']:.0f} s",
                "0 / 0",
                m["jobs_seq_scans"] == 0 and m["jobs_writes"] == 0,
            )
        )
    else:
        found.append(Target("idle: seq scans / writes on scheduled_jobs", "not measured", "0 / 0", None))
    full = s("finished_rows", "ours", "ratio")
    filled = [o.metrics["rows"] for o in outcomes if o.scenario == "finished_rows" and o.error is None]
    found.append(
        Target(
            f"drain with {filled[-1] if filled else 1_000_000:,} finished rows / empty table",
            "not measured" if full is None else f"{full.median:.0%}",
            "≥ 80%",
            None if full is None else full.median >= 0.8,
        )
    )
    found.append(
        _limit_target(
            "worker RSS at 50 concurrent jobs", s("memory", "ours", "rss_mb"), 80, " MB", lambda v, g: v < g
        )
    )
    return found


def targets_table(found: list[Target]) -> list[str]:
    mark = {True: "met", False: "**not met**", None: "—"}
    return _table(
        ["target", "measured", "goal", ""], [[t.name, t.measured, t.goal, mark[t.met]] for t in found]
    )


def render(outcomes: list[Outcome], header: str) -> str:
    parts = [header, "", *main_table(outcomes)]
    for title, table in (
        ("Scaling out (pg-scheduler pods of 2 worker processes)", scale_table(outcomes)),
        ("Idle cost and table size", idle_table(outcomes)),
        ("Queue limits (the drain, in a limited queue)", limits_table(outcomes)),
    ):
        if table:
            parts += ["", title, "", *table]
    parts += ["", "Targets (medians of this run)", "", *targets_table(targets(outcomes))]
    errors = [o for o in outcomes if o.error]
    if errors:
        parts += ["", f"FAILED TRIALS ({len(errors)}):"]
        parts += [f"- round {o.round} {o.scenario} {o.system}: {o.error}" for o in errors]
    return "\n".join(parts)
