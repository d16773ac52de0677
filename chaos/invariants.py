"""The checker: the whole history of a run against the scheduler's guarantees.

Inputs are three independent records: what job bodies did (effects files, written by the
worker processes), what the database committed (the trigger logs of ``history.py``), and what
the harness did and when (faults). Every invariant is a count of violations with examples, so a
report says exactly which job or window broke which rule.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pg_scheduler.shared.queries import MISSED_AFTER_SECONDS

from .history import FinalRow, Term, Transition
from .workload import LIMITS, MISFIRE, TICK_CRON, TICK_EVERY, TICK_LONG, TICK_SKIP

FINAL = frozenset({"completed", "failed", "cancelled", "expired"})
EXAMPLES = 5  # per invariant, in the report
START_AFTER_TAKE_BACK_SLACK = 0.05
"""Seconds: a start effect (the worker's clock) and the database's transition time
(``clock_timestamp()``) come from one host's clock, but are taken in different processes."""
LATE_CLAIM_SLACK = 0.5
"""Seconds: a claim's transition is stamped (``clock_timestamp()``) after the claim's own
``now()``, which the tolerance of a late window is judged by; under load by up to this much."""
CLAIM_BEFORE_FAULT_SLACK = 0.5
"""Seconds: a claim committed this long before a fault hit the claiming pod may still have had
its reply lost to it (the claim's time is the commit's, in the database)."""


def _supervisor_pid(worker_id: str) -> int | None:
    """The pod's supervisor PID in a worker id, ``host:supervisor-pid:wSLOT:random``
    (pg_scheduler/supervisor/pool.py)."""
    parts = worker_id.split(":")
    return int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else None


@dataclass(frozen=True)
class Effect:
    ev: str
    job: str
    attempt: int
    worker: str
    pid: int
    t: float
    ok: bool | None = None
    claims: str | None = None
    """The queues the recording process claimed (comma-separated); None: every queue."""


@dataclass
class Execution:
    """One run of one attempt in one process, from its effects."""

    job: str
    attempt: int
    worker: str
    pid: int
    start: float
    end: float | None = None
    ok: bool | None = None
    claims: str | None = None

    def finish(self, deaths: Deaths) -> float:
        """When the run stopped: its end event, else its process's death, else never."""
        if self.end is not None:
            return self.end
        return deaths.after(self.pid, self.start)


class Deaths:
    """When the harness killed each PID. A long run outlives the PID space, so a PID names
    several processes over time: a death belongs to the process that was running then."""

    def __init__(self, faults: Iterable[Fault]) -> None:
        self._times: dict[int, list[float]] = defaultdict(list)
        for f in faults:
            if f.kind in ("worker_kill", "leader_crash", "cluster_crash"):
                for pid in f.pids:
                    self._times[pid].append(f.t)
        for times in self._times.values():
            times.sort()

    def after(self, pid: int, t: float) -> float:
        """The first kill of ``pid`` at or after ``t`` (a process that started at ``t``)."""
        return next((d for d in self._times.get(pid, ()) if d >= t), math.inf)

    def before(self, pid: int, t: float) -> float:
        """The last kill of ``pid`` strictly before ``t``."""
        return max((d for d in self._times.get(pid, ()) if d < t), default=-math.inf)


@dataclass(frozen=True)
class Fault:
    kind: str
    """worker_kill, worker_freeze, leader_crash, leader_stop, leader_freeze, partition, pg_restart,
    cluster_crash."""
    pod: str | None
    t: float
    t_end: float
    pids: tuple[int, ...] = ()
    """Processes the fault hit (a supervisor's workers too, for leader faults on its pod)."""
    mode: str | None = None
    was_leader: bool = False
    epoch_before: int | None = None


@dataclass(frozen=True)
class Targets:
    """Bounds the measured times must meet (docs/leadership.md; guarantee 3 of docs/guarantees.md)."""

    graceful_failover: float = 1.0
    crash_failover: float = 6.0
    partition_failover: float = 25.0
    freeze_failover: float = 25.0
    dead_worker_rescue: float = 2.0
    lost_lease_rescue: float = 0.0
    """Set from the run's settings: lease + 1.25 x the rescuer's period + 2 s (run.py)."""


@dataclass
class Violations:
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)


def read_effects(folder: Path) -> list[Effect]:
    effects = []
    for path in sorted(folder.glob("effects-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                effects.append(Effect(**json.loads(line)))
    return effects


def executions(effects: Iterable[Effect]) -> dict[str, list[Execution]]:
    # The worker id is in the key: a PID alone may name a process of another run.
    runs: dict[tuple[str, int, str, int], Execution] = {}
    for e in sorted(effects, key=lambda e: e.t):
        key = (e.job, e.attempt, e.worker, e.pid)
        if e.ev == "start":
            runs[key] = Execution(e.job, e.attempt, e.worker, e.pid, e.t, claims=e.claims)
        elif key in runs:
            runs[key].end, runs[key].ok = e.t, e.ok
    by_job: dict[str, list[Execution]] = defaultdict(list)
    for run in runs.values():
        by_job[run.job].append(run)
    for runs_of_job in by_job.values():
        runs_of_job.sort(key=lambda r: r.start)
    return by_job


@dataclass
class Check:
    """Everything the checker needs from one run."""

    expected_jobs: dict[str, dict[str, Any]]
    """One-off jobs the producer committed: id -> their arguments (fail_attempts, max_retries)."""
    effects: list[Effect]
    transitions: list[Transition]
    terms: list[Term]
    rows: list[FinalRow]
    faults: list[Fault]
    t_start: float
    t_end: float
    targets: Targets
    quiet_before: float
    """A periodic window is owed only if no leader-affecting fault was active this long before."""
    passes: list[float] = field(default_factory=list)
    """The periodic registrar's committed pass stamps (the leader's clock of each pass)."""
    pass_epochs: list[int | None] = field(default_factory=list)
    """The term of each pass in ``passes`` (empty in a history saved before terms were kept)."""
    pass_gap: float = 2.0
    """Passes further apart than this (the registrar's interval plus the pickup tolerance), of
    two terms, leave a leaderless gap whose windows follow the misfire policies."""

    def save(self, path: Path) -> None:
        """Keep the inputs (not the effects, which stay in their files), so that the checker can
        run again on this history: ``python -m chaos --recheck FOLDER``."""
        data = {
            name: getattr(self, name)
            for name in (
                "expected_jobs",
                "transitions",
                "terms",
                "rows",
                "faults",
                "t_start",
                "t_end",
                "targets",
                "quiet_before",
                "passes",
                "pass_epochs",
                "pass_gap",
            )
        }
        path.write_text(json.dumps(data, default=asdict))

    @classmethod
    def load(cls, path: Path, effects: list[Effect]) -> Check:
        data = json.loads(path.read_text())
        return cls(
            expected_jobs=data["expected_jobs"],
            effects=effects,
            transitions=[Transition(**t) for t in data["transitions"]],
            terms=[Term(**t) for t in data["terms"]],
            rows=[FinalRow(**r) for r in data["rows"]],
            faults=[Fault(**{**f, "pids": tuple(f["pids"])}) for f in data["faults"]],
            t_start=data["t_start"],
            t_end=data["t_end"],
            targets=Targets(**data["targets"]),
            quiet_before=data["quiet_before"],
            passes=data.get("passes", []),
            pass_epochs=data.get("pass_epochs", []),
            pass_gap=data.get("pass_gap", 2.0),
        )

    def run(self) -> dict[str, Any]:
        died_at = Deaths(self.faults)
        by_job = executions(self.effects)
        history: dict[str, list[Transition]] = defaultdict(list)
        for tr in self.transitions:
            history[tr.job_id].append(tr)
        rows = {r.job_id: r for r in self.rows}
        result: dict[str, Any] = {"invariants": {}, "counts": {}, "times": {}}
        inv = result["invariants"]
        recorded = sum(len(v) for v in by_job.values())
        # First: a run the database never assigned is reported once, here, and every other
        # invariant and time is judged on the runs it did assign.
        inv["executions_never_assigned"], by_job = self._never_assigned(by_job, history)
        inv["lost_jobs"] = self._lost(rows)
        inv["duplicate_completions"] = self._duplicate_completions(history)
        inv["completions_without_a_run"] = self._completions_without_run(history, by_job)
        inv["unproven_overlaps"], overlaps_lease_lost = self._overlaps(by_job, history, died_at)
        inv["runs_started_after_being_taken_back"] = self._late_starts(by_job, history)
        inv["duplicate_windows"], inv["missed_windows"], windows = self._windows(history, rows)
        inv["misfire_policy_broken_after_a_gap"], gaps = self._misfire(history, rows)
        inv["overlapping_leader_epochs"] = self._epochs()
        inv["runs_outside_their_queues"], narrow = self._outside_queues(by_job, rows)
        inv["queue_concurrency_exceeded"], inv["key_limit_exceeded"], limited = self._limits(
            by_job, rows, history, died_at
        )
        result["counts"] = {
            "one_off_jobs": len(self.expected_jobs),
            "executions": recorded,
            "overlaps_with_lease_lost_and_completion_refused": overlaps_lease_lost,
            "leader_terms": len(self.terms),
            "unexpected_failures": self._unexpected_failures(rows),
            **windows,
            **gaps,
            **narrow,
            **limited,
            **self._fault_counts(),
        }
        result["times"] = self._times(by_job, died_at, history, rows)
        return result

    # ------------------------------------------------------------------ queues
    @staticmethod
    def _outside_queues(
        by_job: dict[str, list[Execution]], rows: dict[str, FinalRow]
    ) -> tuple[Violations, dict[str, int]]:
        """Every run is in a process that claims its job's queue: a process given queues
        (``PG_SCHEDULER_QUEUES``) never runs a job of another queue."""
        bad = Violations()
        on_narrow = 0
        for job_id, runs in by_job.items():
            row = rows.get(job_id)
            if row is None:
                continue
            for run in runs:
                if run.claims is None:
                    continue
                on_narrow += 1
                if row.queue not in run.claims.split(","):
                    bad.add(
                        f"{job_id} (queue {row.queue}) attempt {run.attempt} ran in {run.worker}, "
                        f"which claims only {run.claims}"
                    )
        return bad, {"runs_on_pods_given_queues": on_narrow}

    # ------------------------------------------------------------------ queue limits
    @staticmethod
    def _limits(
        by_job: dict[str, list[Execution]],
        rows: dict[str, FinalRow],
        history: dict[str, list[Transition]],
        died_at: Deaths,
    ) -> tuple[Violations, Violations, dict[str, int]]:
        """Runs of a limited queue hold a slot while their lease is live: from their start to
        their end (or their process's death), and no later than the end of the lease they had
        when their attempt was taken back (a run past it is the lost-lease case that
        ``unproven_overlaps`` judges; its slot was free to the claims). At no moment may more
        runs hold a slot of a queue than its ``concurrency``, nor more of one key than its
        ``key_concurrency``."""
        spans: dict[str, list[tuple[float, float, str, str | None]]] = defaultdict(list)
        for job_id, runs in by_job.items():
            row = rows.get(job_id)
            if row is None or row.queue not in LIMITS:
                continue
            for run in runs:
                end = run.finish(died_at)
                taken = next(
                    (
                        tr
                        for tr in history.get(job_id, [])
                        if tr.old_status == "running"
                        and tr.attempt == run.attempt
                        and tr.new_status != "running"
                        and tr.old_lease_until is not None
                    ),
                    None,
                )
                if taken is not None and taken.old_lease_until is not None:
                    end = min(end, taken.old_lease_until)
                spans[row.queue].append(
                    (run.start, end, f"{job_id} attempt {run.attempt}", row.concurrency_key)
                )
        over_queue, over_key = Violations(), Violations()
        for queue, queue_spans in spans.items():
            limits = LIMITS[queue]
            groups: list[tuple[int, str, list[tuple[float, float, str, str | None]]]] = []
            if "concurrency" in limits:
                groups.append((limits["concurrency"], queue, queue_spans))
            if "key_concurrency" in limits:
                by_key: dict[str, list[tuple[float, float, str, str | None]]] = defaultdict(list)
                for span in queue_spans:
                    if span[3] is not None:
                        by_key[span[3]].append(span)
                groups += [(limits["key_concurrency"], f"{queue} key {k}", v) for k, v in by_key.items()]
            for limit, what, group in groups:
                bad = over_queue if what == queue else over_key
                holding: list[tuple[float, str]] = []
                for start, end, name, _ in sorted(group):
                    holding = [(e, n) for e, n in holding if e > start]
                    holding.append((end, name))
                    if len(holding) > limit:
                        bad.add(
                            f"{what}: {len(holding)} runs hold a slot at {start:.3f} (limit {limit}): "
                            + ", ".join(n for _, n in holding)
                        )
        counts = {f"runs_in_queue_{queue}": len(v) for queue, v in sorted(spans.items())}
        return over_queue, over_key, counts

    # ------------------------------------------------------------------ jobs
    def _lost(self, rows: dict[str, FinalRow]) -> Violations:
        lost = Violations()
        for job_id in sorted(self.expected_jobs):
            row = rows.get(job_id)
            if row is None:
                lost.add(f"{job_id}: no row")
            elif row.status not in FINAL:
                lost.add(f"{job_id}: still {row.status} (attempt {row.attempt})")
        return lost

    def _unexpected_failures(self, rows: dict[str, FinalRow]) -> list[str]:
        """Jobs designed to succeed that ended failed: their retries went to faults."""
        found = []
        for job_id, spec in self.expected_jobs.items():
            row = rows.get(job_id)
            if row is not None and row.status == "failed" and spec["fail_attempts"] <= spec["max_retries"]:
                found.append(f"{job_id}: {row.error_message}")
        return found[:EXAMPLES] + ([f"... {len(found)} in all"] if len(found) > EXAMPLES else [])

    @staticmethod
    def _never_assigned(
        by_job: dict[str, list[Execution]], history: dict[str, list[Transition]]
    ) -> tuple[Violations, dict[str, list[Execution]]]:
        """Every run must be of an attempt that the database assigned to its worker: a logged
        row version ``running`` with that attempt and worker id. Only a claim writes one, the
        trigger logs every claim in the claim's own transaction (a claim bumps the attempt, so
        it is never taken for a heartbeat), and a worker starts a body only once the claim's
        reply is in, after the commit; so a run of a real claim always has its record. A run
        without one (a stray record of another run's processes in the same folder, or a body
        run without a claim) is reported here, once; the runs kept are the ones the database
        assigned, which the other invariants and the times are judged on."""
        bad = Violations()
        kept: dict[str, list[Execution]] = {}
        for job_id, runs in by_job.items():
            holders: dict[int, set[str]] = defaultdict(set)
            for tr in history.get(job_id, []):
                if tr.new_status == "running" and tr.attempt is not None and tr.worker_id is not None:
                    holders[tr.attempt].add(tr.worker_id)
            for run in runs:
                if run.worker in holders.get(run.attempt, ()):
                    kept.setdefault(job_id, []).append(run)
                    continue
                held = holders.get(run.attempt)
                whose = (
                    f"the database assigned it to {', '.join(sorted(held))}"
                    if held
                    else "the database never assigned it"
                    if job_id in history
                    else "the database has no such job"
                )
                bad.add(
                    f"{job_id}: attempt {run.attempt} run by {run.worker} (pid {run.pid}) "
                    f"at {run.start:.3f}: {whose}"
                )
        return bad, kept

    def _duplicate_completions(self, history: dict[str, list[Transition]]) -> Violations:
        dup = Violations()
        for job_id, trs in history.items():
            done = [tr.attempt for tr in trs if tr.new_status == "completed" and tr.old_status != "completed"]
            if len(done) > 1:
                dup.add(f"{job_id}: completed {len(done)} times (attempts {done})")
        return dup

    def _completions_without_run(
        self, history: dict[str, list[Transition]], by_job: dict[str, list[Execution]]
    ) -> Violations:
        """A completion must be the outcome of a run of that attempt whose body finished."""
        bad = Violations()
        for job_id, trs in history.items():
            for tr in trs:
                if tr.new_status != "completed" or tr.old_status == "completed":
                    continue
                if not any(r.attempt == tr.attempt and r.ok for r in by_job.get(job_id, [])):
                    bad.add(f"{job_id}: attempt {tr.attempt} completed, no finished run of it")
        return bad

    def _overlaps(
        self,
        by_job: dict[str, list[Execution]],
        history: dict[str, list[Transition]],
        died_at: Deaths,
    ) -> tuple[Violations, int]:
        """Two runs of a job overlap only if the earlier one's lease was provably lost (expired
        when it was taken back, or its process dead) and its late completion was refused."""
        bad = Violations()
        lease_lost = 0
        for job_id, runs in by_job.items():
            for i, early in enumerate(runs):
                for late in runs[i + 1 :]:
                    if late.attempt <= early.attempt or late.start >= early.finish(died_at):
                        continue
                    taken = next(
                        (
                            tr
                            for tr in history.get(job_id, [])
                            if tr.old_status == "running"
                            and tr.attempt == early.attempt
                            and tr.new_status != "running"
                            and tr.t <= late.start
                        ),
                        None,
                    )
                    completed = any(
                        tr.new_status == "completed" and tr.attempt == early.attempt
                        for tr in history.get(job_id, [])
                    )
                    where = (
                        f"{job_id}: attempt {early.attempt} (pid {early.pid}) overlaps attempt {late.attempt}"
                    )
                    if completed:
                        bad.add(f"{where}, and the late completion of attempt {early.attempt} landed")
                    elif taken is None:
                        bad.add(f"{where} with no record of attempt {early.attempt} being taken back")
                    elif not self._justified(taken, early, died_at):
                        bad.add(
                            f"{where}: taken back at {taken.t:.3f} with lease until "
                            f"{taken.old_lease_until} and its process alive"
                        )
                    else:
                        lease_lost += 1
        return bad, lease_lost

    def _late_starts(
        self, by_job: dict[str, list[Execution]], history: dict[str, list[Transition]]
    ) -> Violations:
        """No run may start after its attempt was taken back (rescued, released, failed): the
        worker must know its lease may have lapsed (a process paused between its claim and the
        start) and leave the job to the attempt that replaced it."""
        bad = Violations()
        for job_id, runs in by_job.items():
            for run in runs:
                taken = next(
                    (
                        tr
                        for tr in history.get(job_id, [])
                        if tr.old_status == "running"
                        and tr.attempt == run.attempt
                        and tr.new_status != "running"
                        and tr.t < run.start - START_AFTER_TAKE_BACK_SLACK
                    ),
                    None,
                )
                if taken is not None:
                    bad.add(
                        f"{job_id}: attempt {run.attempt} (pid {run.pid}) started "
                        f"{run.start - taken.t:.3f} s after it was taken back "
                        f"({taken.old_status} -> {taken.new_status})"
                    )
        return bad

    @staticmethod
    def _justified(taken: Transition, early: Execution, died_at: Deaths) -> bool:
        if taken.old_lease_until is not None and taken.old_lease_until <= taken.t:
            return True
        return died_at.after(early.pid, early.start) <= taken.t

    # ------------------------------------------------------------------ periodic windows
    def _windows(
        self, history: dict[str, list[Transition]], rows: dict[str, FinalRow]
    ) -> tuple[Violations, Violations, dict[str, Any]]:
        dup, missed = Violations(), Violations()
        by_window: dict[tuple[str, float], list[FinalRow]] = defaultdict(list)
        for row in rows.values():
            if row.dedup_key and row.window_start is not None:
                by_window[(row.dedup_key, row.window_start)].append(row)
        stats: dict[str, Any] = {}
        for key, period in ((TICK_EVERY, 1.0), (TICK_CRON, 2.0), (TICK_LONG, 5.0), (TICK_SKIP, 3.0)):
            starts = sorted(w for (k, w) in by_window if k == key)
            owed = exempt = completed = 0
            if starts:
                first = starts[0]
                w = first + period * math.ceil((self.t_start + 2 * period - first) / period)
                while w <= self.t_end - 3 * period:
                    found = by_window.get((key, w), [])
                    if len(found) > 1:
                        dup.add(f"{key} window {w:.0f}: {len(found)} rows")
                    done = sum(
                        1
                        for r in found
                        for tr in history.get(r.job_id, [])
                        if tr.new_status == "completed" and tr.old_status != "completed"
                    )
                    if done > 1:
                        dup.add(f"{key} window {w:.0f}: completed {done} times")
                    if done == 1:
                        completed += 1
                    if key == TICK_EVERY or self._leader_quiet(w):
                        owed += 1
                        if done == 0:
                            status = found[0].status if found else "no row"
                            missed.add(f"{key} window {w:.0f} ({status})")
                    else:
                        exempt += 1
                    w += period
            stats[f"windows_{key}"] = {"owed": owed, "completed": completed, "not_owed_fault_nearby": exempt}
        return dup, missed, stats

    def _misfire(
        self, history: dict[str, list[Transition]], rows: dict[str, FinalRow]
    ) -> tuple[Violations, dict[str, Any]]:
        """After each leaderless gap (two committed registrar passes further apart than
        ``pass_gap``, by leaders of two terms: the same leader passing late never stopped), the
        windows that started in it and were not picked up on time (their
        first claim more than the pickup tolerance after their start) follow each job's misfire
        policy: ``skip`` runs none of them, ``coalesce`` one at most. (``all`` runs each: the
        window invariants above owe every window of that job.) A window in the last tolerance
        before the pass that ended the gap was only late, not missed."""
        bad = Violations()
        first_claim: dict[str, float] = {}
        for job_id, trs in history.items():
            claims = [tr.t for tr in trs if tr.old_status == "pending" and tr.new_status == "running"]
            if claims:
                first_claim[job_id] = min(claims)
        late: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for row in rows.values():
            claimed = first_claim.get(row.job_id)
            if (
                row.dedup_key in MISFIRE
                and row.window_start is not None
                and claimed is not None
                and claimed > row.window_start + MISSED_AFTER_SECONDS + LATE_CLAIM_SLACK
            ):
                late[row.dedup_key].append((row.window_start, row.job_id))
        stamps = sorted(
            zip(self.passes, self.pass_epochs or [None] * len(self.passes), strict=True),
            key=lambda stamp: stamp[0],
        )
        gaps = [
            (a, b)
            for (a, term_a), (b, term_b) in zip(stamps, stamps[1:], strict=False)
            if b - a > self.pass_gap and (term_a is None or term_b is None or term_a != term_b)
        ]
        late_in_gaps: dict[str, int] = defaultdict(int)
        for a, b in gaps:
            for key, policy in MISFIRE.items():
                runs = sorted(w for w, _ in late[key] if a < w <= b - MISSED_AFTER_SECONDS)
                late_in_gaps[key] += len(runs)
                allowed = {"skip": 0, "coalesce": 1}.get(policy)
                if allowed is not None and len(runs) > allowed:
                    bad.add(
                        f"{key} (misfire={policy}): {len(runs)} late runs of windows "
                        f"{[f'{w:.0f}' for w in runs]} in the gap {a:.3f} .. {b:.3f}"
                    )
        return bad, {"leaderless_gaps": len(gaps), "late_runs_in_gaps": dict(late_in_gaps)}

    def _leader_quiet(self, window: float) -> bool:
        """No fault that stops the leader writing windows near ``window``: worker faults do not
        count (other workers run the window), nor a partition of a pod that was not leading."""
        for f in self.faults:
            if f.kind in ("worker_kill", "worker_freeze"):
                continue
            if f.kind == "partition" and not f.was_leader:
                continue
            if f.t - 1 <= window and window <= f.t_end + self.quiet_before:
                return False
        return True

    # ------------------------------------------------------------------ leadership
    def _epochs(self) -> Violations:
        """Each leader write (logged with the epoch its fence checked) lies inside its term:
        after the bump that started it, before the bump that ended it."""
        bad = Violations()
        starts = {term.epoch: term.t for term in self.terms}
        for tr in self.transitions:
            if tr.epoch is None:
                continue
            began, ended = starts.get(tr.epoch), starts.get(tr.epoch + 1, math.inf)
            if began is None or not began <= tr.t < ended:
                bad.add(
                    f"{tr.job_id}: {tr.old_status}->{tr.new_status} by epoch {tr.epoch} at "
                    f"{tr.t:.3f}, term [{began}, {ended})"
                )
        return bad

    # ------------------------------------------------------------------ faults and times
    def _fault_counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for f in self.faults:
            name = f"{f.kind}_leader" if f.kind == "partition" and f.was_leader else f.kind
            counts[f"faults_{name}"] += 1
        return dict(counts)

    def _rescuer_disturbed(self, fault: Fault, rescued_at: float) -> bool:
        for g in self.faults:
            if g is fault or g.kind == "worker_kill" or g.kind == "worker_freeze":
                continue
            if g.kind == "partition" and not g.was_leader:
                continue
            if fault.t < g.t < rescued_at:  # the leader (who rescues leases) was hit meanwhile
                return True
            if (
                fault.kind == "worker_kill"
                and g.kind == "leader_freeze"
                and g.pod == fault.pod
                and g.t <= fault.t <= g.t_end
            ):  # its supervisor was frozen: saw nothing
                return True
        return False

    def _claimed_by_a_stricken_pod(self, fault: Fault, job: list[Transition], rerun: Execution) -> bool:
        """Whether the job, once taken back after ``fault``, was claimed before ``rerun`` by a
        pod that a second fault cut off or stopped as it claimed (its supervisor among the
        fault's processes, or the server restarting): that attempt never started, and the job
        waited for its lease. The rescue was on time; the second fault made the wait."""
        for tr in job:
            if (
                tr.old_status != "pending"
                or tr.new_status != "running"
                or tr.worker_id is None
                or tr.attempt is None
                or tr.attempt >= rerun.attempt
                or not fault.t < tr.t < rerun.start
            ):
                continue
            supervisor = _supervisor_pid(tr.worker_id)
            for g in self.faults:
                if (
                    g is not fault
                    and (g.kind == "pg_restart" or supervisor in g.pids)
                    and (g.t - CLAIM_BEFORE_FAULT_SLACK <= tr.t <= g.t_end)
                ):
                    return True
        return False

    def _database_unreachable(self, pod: str | None, t: float) -> bool:
        """Whether ``pod`` was cut off, or the server restarting, at some point between a
        worker's death at ``t`` and the deadline for its supervisor to re-queue the job. A
        partition that begins a few milliseconds after the kill stops the re-queue as surely as
        one already in force (a short run scheduled both at the same second), and the job then
        waits for its lease like any lost lease."""
        deadline = t + self.targets.dead_worker_rescue
        for f in self.faults:
            if f.kind == "partition" and f.pod == pod and f.t <= deadline and t <= f.t_end + 1:
                return True
            if f.kind == "pg_restart" and f.t <= deadline and t <= f.t_end + 2:
                return True
        return False

    def _times(
        self,
        by_job: dict[str, list[Execution]],
        died_at: Deaths,
        history: dict[str, list[Transition]],
        rows: dict[str, FinalRow],
    ) -> dict[str, Any]:
        failover: dict[str, list[float]] = defaultdict(list)
        for f in self.faults:
            kind = {
                "leader_stop": "graceful",
                "leader_crash": "crash",
                "leader_freeze": "freeze",
                "partition": "partition",
                "pg_restart": "pg_restart",
            }.get(f.kind)
            if kind is None or f.epoch_before is None or (f.kind == "partition" and not f.was_leader):
                continue
            if f.mode is not None and f.mode.startswith("loss:"):
                continue  # a slow link, not a partition: the leader may rightly keep its lock
            after = [t.t for t in self.terms if t.epoch > f.epoch_before]
            failover[kind].append(min(after) - f.t if after else math.inf)
        rescue: dict[str, list[float]] = defaultdict(list)
        for f in self.faults:
            # A worker killed alone is seen dying by its supervisor, which hands its jobs back
            # at once; the workers of a crashed supervisor, a frozen worker and a cut-off pod
            # (or one killed while its supervisor could not reach the database) wait for the
            # leader's rescuer and their leases.
            kind = {
                "worker_kill": "dead_worker",
                "leader_crash": "lost_lease",
                "worker_freeze": "lost_lease",
                "partition": "lost_lease",
            }.get(f.kind)
            if kind is None:
                continue
            if kind == "dead_worker" and self._database_unreachable(f.pod, f.t):
                kind = "lost_lease"
            # A worker the killer picked as its pod was crashing died with its supervisor.
            hit = {pid for pid in f.pids if f.kind != "worker_kill" or f.t - died_at.before(pid, f.t) > 1}
            for job, runs in by_job.items():
                for i, run in enumerate(runs):
                    if run.pid not in hit or run.start > f.t or run.finish(died_at) < f.t:
                        continue
                    if run.end is not None and run.end <= f.t:
                        continue
                    again = next((r for r in runs[i + 1 :] if r.attempt > run.attempt), None)
                    if again is None:
                        continue
                    # A second fault that stops the rescuer (or, for a killed worker, its
                    # supervisor) before the rescue was due, or the pod that claimed the job
                    # next, makes it a compound case: measured, reported apart, held to no
                    # single-fault target.
                    compound = self._rescuer_disturbed(f, again.start) or self._claimed_by_a_stricken_pod(
                        f, history[job], again
                    )
                    # A job of a limited queue runs again once its queue has room, which is no
                    # part of the rescue: it is rescued when its attempt is taken back.
                    back = again.start
                    row = rows.get(job)
                    if row is not None and row.queue in LIMITS:
                        back = next(
                            (
                                tr.t
                                for tr in history.get(job, [])
                                if tr.old_status == "running"
                                and tr.attempt == run.attempt
                                and tr.new_status != "running"
                            ),
                            again.start,
                        )
                    rescue[f"{kind}_after_a_second_fault" if compound else kind].append(back - f.t)
        bounds = {
            "graceful": self.targets.graceful_failover,
            "crash": self.targets.crash_failover,
            "partition": self.targets.partition_failover,
            "freeze": self.targets.freeze_failover,
            "pg_restart": None,
            "dead_worker": self.targets.dead_worker_rescue,
            "lost_lease": self.targets.lost_lease_rescue,
            "dead_worker_after_a_second_fault": None,
            "lost_lease_after_a_second_fault": None,
        }
        out: dict[str, Any] = {}
        for group, samples in (("failover", failover), ("rescue", rescue)):
            for kind, values in samples.items():
                bound = bounds[kind]
                out[f"{group}_{kind}"] = {
                    "n": len(values),
                    "median": _median(values),
                    "max": max(values),
                    "samples": [round(v, 3) for v in values],
                    "target": bound,
                    "met": bound is None or max(values) < bound,
                }
        return out


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
