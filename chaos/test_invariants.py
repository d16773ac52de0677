"""The checker on hand-made histories: each invariant it reports must catch the breach it names,
and a rescue must be held to the target of the fault that caused it. The checker is a pure
function of the history (no database here); the short profile in ``test_chaos.py`` runs it on a
real one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from .history import FinalRow, Term, Transition
from .invariants import Check, Effect, Fault, Targets

WORKER = "pod-c-w1"
PID = 4242
TARGETS = Targets(dead_worker_rescue=2.0, lost_lease_rescue=7.67)


def _transition(
    job: str, old: str | None, new: str, attempt: int, t: float, worker: str = WORKER
) -> Transition:
    return Transition(
        job_id=job,
        op="UPDATE",
        old_status=old,
        new_status=new,
        attempt=attempt,
        worker_id=worker,
        old_worker_id=worker,
        dedup_key=None,
        window_start=None,
        old_lease_until=None,
        epoch=1,
        t=t,
    )


def _row(job: str, status: str = "completed", attempt: int = 2) -> FinalRow:
    return FinalRow(
        job_id=job,
        job_name="chaos.work",
        status=status,
        attempt=attempt,
        retry_count=0,
        max_retries=0,
        dedup_key=None,
        window_start=None,
        error_message=None,
    )


def _killed_then_rerun(kill_at: float, rerun_at: float) -> tuple[list[Effect], list[Transition]]:
    """Attempt 1 of job ``a`` starts in PID at 10 s and never ends (its worker is killed at
    ``kill_at``); attempt 2 runs elsewhere at ``rerun_at`` and completes."""
    effects = [
        Effect("start", "a", 1, WORKER, PID, 10.0),
        Effect("start", "a", 2, "pod-a-w1", 777, rerun_at),
        Effect("end", "a", 2, "pod-a-w1", 777, rerun_at + 0.01, ok=True),
    ]
    transitions = [
        _transition("a", "pending", "running", 1, 10.0),
        _transition("a", "running", "pending", 1, rerun_at - 0.1),
        _transition("a", "pending", "running", 2, rerun_at, worker="pod-a-w1"),
        _transition("a", "running", "completed", 2, rerun_at + 0.02, worker="pod-a-w1"),
    ]
    return effects, transitions


def _check(
    effects: list[Effect],
    transitions: list[Transition],
    faults: list[Fault],
    rows: list[FinalRow] | None = None,
) -> dict[str, Any]:
    return Check(
        expected_jobs={"a": {"fail_attempts": 0, "max_retries": 0}},
        effects=effects,
        transitions=transitions,
        terms=[Term(epoch=1, leader_id="pod-a", pid=1, t=0.0)],
        rows=rows if rows is not None else [_row("a")],
        faults=faults,
        t_start=0.0,
        t_end=60.0,
        targets=TARGETS,
        quiet_before=5.0,
    ).run()


def _kill(t: float) -> Fault:
    return Fault(kind="worker_kill", pod="c", t=t, t_end=t, pids=(PID,))


def _partition(pod: str, t: float, t_end: float) -> Fault:
    return Fault(kind="partition", pod=pod, t=t, t_end=t_end, mode="drop-from-db")


def test_a_worker_killed_alone_is_held_to_the_dead_worker_target() -> None:
    effects, transitions = _killed_then_rerun(kill_at=12.0, rerun_at=12.3)
    times = _check(effects, transitions, [_kill(12.0)])["times"]
    assert times["rescue_dead_worker"]["samples"] == [0.3]
    assert times["rescue_dead_worker"]["met"] is True
    assert "rescue_lost_lease" not in times


def test_a_slow_rescue_of_a_worker_killed_alone_misses_its_target() -> None:
    effects, transitions = _killed_then_rerun(kill_at=12.0, rerun_at=17.1)
    times = _check(effects, transitions, [_kill(12.0)])["times"]
    assert times["rescue_dead_worker"]["max"] == pytest.approx(5.1)
    assert times["rescue_dead_worker"]["met"] is False


def test_a_job_of_a_limited_queue_is_rescued_when_handed_back_not_when_it_runs_again() -> None:
    """Its next run waits for room in its queue, which is no part of the rescue."""
    effects, transitions = _killed_then_rerun(kill_at=12.0, rerun_at=17.1)
    transitions[1] = replace(transitions[1], t=12.05)  # handed back at once; room 5 s later
    for queue, expected in (("capped", 0.05), ("default", 5.1)):
        rows = [replace(_row("a"), queue=queue)]
        times = _check(effects, transitions, [_kill(12.0)], rows=rows)["times"]
        assert times["rescue_dead_worker"]["max"] == pytest.approx(expected)


@pytest.mark.parametrize("cut_at", [11.0, 12.004, 13.5], ids=["before", "just-after", "within-deadline"])
def test_a_kill_whose_pod_is_cut_off_before_the_requeue_deadline_counts_as_a_lost_lease(
    cut_at: float,
) -> None:
    # The CI run's case: the kill and a one-way partition of the same pod in the same second.
    # The supervisor cannot re-queue through the partition; the job waits for its lease.
    effects, transitions = _killed_then_rerun(kill_at=12.0, rerun_at=17.1)
    times = _check(effects, transitions, [_kill(12.0), _partition("c", cut_at, 20.0)])["times"]
    assert "rescue_dead_worker" not in times
    assert times["rescue_lost_lease"]["max"] == pytest.approx(5.1)
    assert times["rescue_lost_lease"]["met"] is True


@pytest.mark.parametrize(
    "fault",
    [
        _partition("c", 14.5, 20.0),  # begins after the 2-s re-queue deadline
        _partition("b", 12.0, 20.0),  # another pod
        _partition("c", 5.0, 10.0),  # over (with its 1-s settling) before the kill
    ],
    ids=["after-deadline", "other-pod", "already-over"],
)
def test_a_partition_that_could_not_stop_the_requeue_leaves_the_dead_worker_target(
    fault: Fault,
) -> None:
    effects, transitions = _killed_then_rerun(kill_at=12.0, rerun_at=17.1)
    times = _check(effects, transitions, [_kill(12.0), fault])["times"]
    assert "rescue_lost_lease" not in times
    assert times["rescue_dead_worker"]["met"] is False


def _handed_back_then_claimed_by(claimer: str, rerun_at: float) -> tuple[list[Effect], list[Transition]]:
    """The CI run's case: attempt 1's worker is killed at 12.0 and its supervisor hands the job
    back at once; ``claimer`` claims attempt 2 at 12.03 and never starts it; the rescuer takes
    it back when its lease lapses, and attempt 3 runs at ``rerun_at``."""
    effects = [
        Effect("start", "a", 1, WORKER, PID, 10.0),
        Effect("start", "a", 3, "vm:900:w1:cccccc", 901, rerun_at),
        Effect("end", "a", 3, "vm:900:w1:cccccc", 901, rerun_at + 0.01, ok=True),
    ]
    transitions = [
        _transition("a", "pending", "running", 1, 10.0),
        _transition("a", "running", "pending", 1, 12.02),
        replace(_transition("a", "pending", "running", 2, 12.03), worker_id=claimer),
        replace(
            _transition("a", "running", "pending", 2, rerun_at - 0.01), worker_id=None, old_worker_id=claimer
        ),
        _transition("a", "pending", "running", 3, rerun_at, worker="vm:900:w1:cccccc"),
        _transition("a", "running", "completed", 3, rerun_at + 0.02, worker="vm:900:w1:cccccc"),
    ]
    return effects, transitions


def test_a_job_handed_back_on_time_then_claimed_by_a_pod_cut_off_as_it_claimed_is_a_compound_case() -> None:
    # The pod whose supervisor is PID 500 is cut off 20 ms before its claim commits: the reply
    # never reaches it, and attempt 2 waits for its lease. The kill's own rescue took 20 ms.
    effects, transitions = _handed_back_then_claimed_by("vm:500:w2:bbbbbb", rerun_at=16.7)
    cut = Fault(kind="partition", pod="b", t=12.01, t_end=20.0, pids=(500, 501, 502), mode="drop-from-db")
    times = _check(effects, transitions, [_kill(12.0), cut], rows=[_row("a", attempt=3)])["times"]
    assert set(times) == {"rescue_dead_worker_after_a_second_fault"}
    assert times["rescue_dead_worker_after_a_second_fault"]["max"] == pytest.approx(4.7)


@pytest.mark.parametrize("claimer", ["vm:600:w2:bbbbbb", "pod-b-w2"], ids=["healthy-pod", "no-pid"])
def test_a_claim_that_no_fault_explains_keeps_the_dead_worker_target(claimer: str) -> None:
    # The same wait with the partition on another pod: nothing but pg-scheduler held the job.
    effects, transitions = _handed_back_then_claimed_by(claimer, rerun_at=16.7)
    cut = Fault(kind="partition", pod="b", t=12.01, t_end=20.0, pids=(500, 501, 502), mode="drop-from-db")
    times = _check(effects, transitions, [_kill(12.0), cut], rows=[_row("a", attempt=3)])["times"]
    assert set(times) == {"rescue_dead_worker"}
    assert times["rescue_dead_worker"]["met"] is False


def test_a_restart_of_the_server_right_after_a_kill_is_a_compound_case() -> None:
    # The supervisor cannot re-queue while the server restarts, so the dead-worker target does
    # not apply; the restart also stops the leader's rescuer, so the case is measured apart,
    # held to no single-fault target.
    effects, transitions = _killed_then_rerun(kill_at=12.0, rerun_at=17.1)
    restart = Fault(kind="pg_restart", pod=None, t=12.5, t_end=14.0)
    times = _check(effects, transitions, [_kill(12.0), restart])["times"]
    assert set(times) == {"rescue_lost_lease_after_a_second_fault"}
    assert times["rescue_lost_lease_after_a_second_fault"]["target"] is None


def test_a_clean_history_breaks_no_invariant() -> None:
    effects, transitions = _killed_then_rerun(kill_at=12.0, rerun_at=12.3)
    result = _check(effects, transitions, [_kill(12.0)])
    assert {name: v.count for name, v in result["invariants"].items()} == dict.fromkeys(
        result["invariants"], 0
    )


def test_a_job_left_running_is_reported_lost() -> None:
    effects, transitions = _killed_then_rerun(kill_at=12.0, rerun_at=12.3)
    result = _check(effects, transitions[:-1], [_kill(12.0)], rows=[_row("a", status="running")])
    lost = result["invariants"]["lost_jobs"]
    assert lost.count == 1 and lost.examples == ["a: still running (attempt 2)"]


def test_a_second_completion_and_a_completion_without_a_run_are_reported() -> None:
    effects, transitions = _killed_then_rerun(kill_at=12.0, rerun_at=12.3)
    # Attempt 1 (whose body never finished: its worker was killed) completes as well.
    transitions.append(_transition("a", "running", "completed", 1, 13.0))
    result = _check(effects, transitions, [_kill(12.0)])
    assert result["invariants"]["duplicate_completions"].count == 1
    assert result["invariants"]["completions_without_a_run"].examples == [
        "a: attempt 1 completed, no finished run of it"
    ]


def test_a_run_that_starts_after_its_attempt_was_taken_back_is_reported() -> None:
    # The CI run's frozen worker: claimed at 10 s, frozen before the body started, its attempt
    # taken back at 14.5 s and run again elsewhere; thawed at 18 s, it started attempt 1 anyway.
    effects = [
        Effect("start", "a", 2, "pod-a-w1", 777, 14.6),
        Effect("end", "a", 2, "pod-a-w1", 777, 16.6, ok=True),
        Effect("start", "a", 1, WORKER, PID, 18.0),
        Effect("end", "a", 1, WORKER, PID, 18.01, ok=None),
    ]
    transitions = [
        _transition("a", "pending", "running", 1, 10.0),
        _transition("a", "running", "pending", 1, 14.5),
        _transition("a", "pending", "running", 2, 14.55, worker="pod-a-w1"),
        _transition("a", "running", "completed", 2, 16.62, worker="pod-a-w1"),
    ]
    result = _check(effects, transitions, [])
    late = result["invariants"]["runs_started_after_being_taken_back"]
    assert late.count == 1 and late.examples[0].startswith("a: attempt 1 (pid 4242) started 3.500 s")
    # Not an overlap: the two runs did not run at the same time.
    assert result["invariants"]["unproven_overlaps"].count == 0


def _window(key: str, start: float, claimed_at: float | None) -> tuple[FinalRow, list[Transition]]:
    """The row of window ``start`` of periodic job ``key``, claimed at ``claimed_at`` (or never)."""
    job = f"periodic:{key}:{int(start * 1000)}"
    row = FinalRow(
        job_id=job,
        job_name=key,
        status="completed" if claimed_at else "cancelled",
        attempt=1 if claimed_at else 0,
        retry_count=0,
        max_retries=10,
        dedup_key=key,
        window_start=start,
        error_message=None,
    )
    if claimed_at is None:
        return row, []
    return row, [
        replace(_transition(job, "pending", "running", 1, claimed_at), dedup_key=key, window_start=start),
        replace(
            _transition(job, "running", "completed", 1, claimed_at + 0.06), dedup_key=key, window_start=start
        ),
    ]


def _misfire_check(
    windows: list[tuple[str, float, float | None]],
    passes: list[float],
    new_term_at: float | None = 29.9,
) -> Any:
    """The check of ``windows`` over ``passes``: by the leader of term 1, and from
    ``new_term_at`` on (None: never) by the leader of term 2."""
    rows, transitions = [_row("a")], []
    for key, start, claimed_at in windows:
        row, trs = _window(key, start, claimed_at)
        rows.append(row)
        transitions += trs
    effects = [
        Effect("start", tr.job_id, 1, WORKER, PID, tr.t + 0.01)
        for tr in transitions
        if tr.new_status == "running"
    ]
    effects += [
        Effect("end", tr.job_id, 1, WORKER, PID, tr.t - 0.01, ok=True)
        for tr in transitions
        if tr.new_status == "completed"
    ]
    return Check(
        expected_jobs={},
        effects=effects,
        transitions=transitions,
        terms=[Term(epoch=1, leader_id="pod-a", pid=1, t=0.0)],
        rows=rows,
        faults=[],
        t_start=0.0,
        t_end=60.0,
        targets=TARGETS,
        quiet_before=5.0,
        passes=passes,
        pass_epochs=[1 if new_term_at is None or t < new_term_at else 2 for t in passes],
        pass_gap=2.0,
    ).run()


# Passes every second, then none from 20 to 30 (a leaderless gap: the passes from 30 on are by a
# leader elected at 29.9), then every second again.
PASSES = [float(t) for t in range(0, 21)] + [float(t) for t in range(30, 41)]


@pytest.mark.parametrize(
    ("windows", "breached"),
    [
        # skip: a window of the gap that ran late breaks the policy...
        ([("chaos.tick_skip", 24.0, 30.05)], True),
        # ... not one that ran on time in the gap (another pod's worker picked up its row)...
        ([("chaos.tick_skip", 24.0, 24.3)], False),
        # ... nor one that ran late while the leader passed (busy workers), nor one in the last
        # second before the pass that ended the gap (late, not missed).
        ([("chaos.tick_skip", 12.0, 15.0), ("chaos.tick_skip", 29.5, 30.9)], False),
        # coalesce: one late run for the gap, not two.
        ([("chaos.tick_cron", 24.0, None), ("chaos.tick_cron", 28.0, 30.05)], False),
        ([("chaos.tick_cron", 24.0, 30.05), ("chaos.tick_cron", 28.0, 30.06)], True),
        # all: each window runs, late or not.
        ([("chaos.tick_every", float(w), 30.05) for w in range(21, 29)], False),
    ],
)
def test_windows_of_a_leaderless_gap_follow_each_jobs_misfire_policy(
    windows: list[tuple[str, float, float | None]], breached: bool
) -> None:
    result = _misfire_check(windows, PASSES)
    assert result["counts"]["leaderless_gaps"] == 1
    assert (result["invariants"]["misfire_policy_broken_after_a_gap"].count > 0) is breached


def test_passes_far_apart_by_one_term_are_no_gap() -> None:
    """The same leader passing late never stopped: its late windows may run."""
    result = _misfire_check([("chaos.tick_skip", 24.0, 30.05)], PASSES, new_term_at=None)
    assert result["counts"]["leaderless_gaps"] == 0
    assert result["invariants"]["misfire_policy_broken_after_a_gap"].count == 0


def test_a_history_without_pass_stamps_has_no_gap_to_check() -> None:
    result = _misfire_check([("chaos.tick_skip", 24.0, 30.05)], [])
    assert result["counts"]["leaderless_gaps"] == 0
    assert result["invariants"]["misfire_policy_broken_after_a_gap"].count == 0


STRAY = "otherhost:31000:w0:ffffff"
"""A worker of another run, whose effects file landed in this run's folder."""


def test_a_stray_run_of_another_worker_is_reported_as_never_assigned_not_as_an_overlap() -> None:
    # The long run's case: attempt 1 of job a is this run's worker's (killed at 12 s, rescued,
    # rerun as attempt 2); a record of another run says its worker ran "attempt 1 of a" from
    # 11 s and never ended. Judged as a run of this history, it overlapped attempt 2 with its
    # process alive: an unproven overlap.
    effects, transitions = _killed_then_rerun(kill_at=12.0, rerun_at=12.3)
    effects.append(Effect("start", "a", 1, STRAY, 31001, 11.0))
    result = _check(effects, transitions, [_kill(12.0)])
    inv = result["invariants"]
    assert inv["executions_never_assigned"].examples == [
        f"a: attempt 1 run by {STRAY} (pid 31001) at 11.000: the database assigned it to {WORKER}"
    ]
    assert {name: v.count for name, v in inv.items() if v.count} == {"executions_never_assigned": 1}
    assert result["counts"]["executions"] == 3
    assert result["times"]["rescue_dead_worker"]["samples"] == [0.3]


def test_a_completion_whose_only_finished_run_is_a_stray_one_has_no_run() -> None:
    # Attempt 2 completed, but no run of it by its worker is on record; another run's finished
    # "attempt 2 of a" must not stand in for it.
    effects, transitions = _killed_then_rerun(kill_at=12.0, rerun_at=12.3)
    effects = [e for e in effects if e.attempt != 2]
    effects += [
        Effect("start", "a", 2, STRAY, 31001, 12.25),
        Effect("end", "a", 2, STRAY, 31001, 12.3, ok=True),
    ]
    inv = _check(effects, transitions, [_kill(12.0)])["invariants"]
    assert inv["executions_never_assigned"].count == 1
    assert inv["completions_without_a_run"].examples == ["a: attempt 2 completed, no finished run of it"]


def test_runs_of_jobs_the_database_never_had_or_never_assigned_are_reported() -> None:
    effects, transitions = _killed_then_rerun(kill_at=12.0, rerun_at=12.3)
    effects += [Effect("start", "zz", 1, STRAY, 31001, 11.0), Effect("start", "a", 5, WORKER, PID, 11.5)]
    inv = _check(effects, transitions, [_kill(12.0)])["invariants"]
    assert inv["executions_never_assigned"].examples == [
        f"a: attempt 5 run by {WORKER} (pid {PID}) at 11.500: the database never assigned it",
        f"zz: attempt 1 run by {STRAY} (pid 31001) at 11.000: the database has no such job",
    ]


def test_every_run_of_a_legitimate_history_was_assigned() -> None:
    # Runs in the shapes a real history has, with real worker ids (host:supervisor-pid:wSLOT:
    # random): a killed worker's job rescued and rerun; a periodic window completed by the
    # statement that also claims the next job (one statement, two logged rows, one time); a
    # designed failure retried by another worker; a claim whose reply was lost (that attempt
    # has no run, the next has); a frozen worker's run overlapping its rescued attempt.
    w0, w1, w2 = "vm:500:w0:aaaaaa", "vm:500:w1:bbbbbb", "vm:600:w0:cccccc"
    effects, transitions = _killed_then_rerun(kill_at=12.0, rerun_at=12.3)
    tick = "chaos.tick_long:20.000"
    transitions += [
        replace(
            _transition(tick, None, "pending", 0, 19.0),
            op="INSERT",
            worker_id=None,
            old_worker_id=None,
            dedup_key="chaos.tick_long",
            window_start=20.0,
        ),
        _transition(tick, "pending", "running", 1, 20.0, worker=w0),
        _transition(tick, "running", "completed", 1, 22.6, worker=w0),
        _transition("b", "pending", "running", 1, 22.6, worker=w0),  # the same statement
        replace(_transition("b", "running", "pending", 1, 22.7), worker_id=None, old_worker_id=w0),
        _transition("b", "pending", "running", 2, 23.0, worker=w2),
        _transition("b", "running", "completed", 2, 23.1, worker=w2),
        _transition("c", "pending", "running", 1, 30.0, worker=w1),  # its reply lost
        replace(
            _transition("c", "running", "pending", 1, 34.5),
            worker_id=None,
            old_worker_id=w1,
            old_lease_until=34.0,
        ),
        _transition("c", "pending", "running", 2, 34.6, worker=w2),
        _transition("c", "running", "completed", 2, 34.7, worker=w2),
        _transition("d", "pending", "running", 1, 40.0, worker=w1),  # frozen at 40.5
        replace(
            _transition("d", "running", "pending", 1, 44.6),
            worker_id=None,
            old_worker_id=w1,
            old_lease_until=44.0,
        ),
        _transition("d", "pending", "running", 2, 44.7, worker=w0),
        _transition("d", "running", "completed", 2, 46.8, worker=w0),
    ]
    effects += [
        Effect("start", tick, 1, w0, 501, 20.01),
        Effect("end", tick, 1, w0, 501, 22.5, ok=True),
        Effect("start", "b", 1, w0, 501, 22.61),
        Effect("end", "b", 1, w0, 501, 22.66, ok=False),
        Effect("start", "b", 2, w2, 601, 23.01),
        Effect("end", "b", 2, w2, 601, 23.06, ok=True),
        Effect("start", "c", 2, w2, 601, 34.61),
        Effect("end", "c", 2, w2, 601, 34.66, ok=True),
        Effect("start", "d", 1, w1, 502, 40.01),
        Effect("start", "d", 2, w0, 501, 44.71),
        Effect("end", "d", 2, w0, 501, 46.71, ok=True),
        Effect("end", "d", 1, w1, 502, 49.6, ok=None),
    ]
    rows = [_row("a"), _row(tick, attempt=1), _row("b"), _row("c"), _row("d")]
    result = _check(effects, transitions, [_kill(12.0)], rows=rows)
    assert {name: v.count for name, v in result["invariants"].items()} == dict.fromkeys(
        result["invariants"], 0
    )
    assert result["counts"]["executions"] == 8
    assert result["counts"]["overlaps_with_lease_lost_and_completion_refused"] == 1


@pytest.mark.parametrize(
    ("queue", "claims", "breached"),
    [
        # A pod given queues ran a job of another queue.
        ("pinned", "default", True),
        # ... of its own queue, or a pod that claims every queue: fine.
        ("default", "default", False),
        ("pinned", "default,pinned", False),
        ("pinned", None, False),
    ],
)
def test_a_run_outside_the_queues_its_pod_claims_is_a_violation(
    queue: str, claims: str | None, breached: bool
) -> None:
    effects = [
        Effect("start", "a", 1, WORKER, PID, 10.0, claims=claims),
        Effect("end", "a", 1, WORKER, PID, 10.1, ok=True, claims=claims),
    ]
    transitions = [
        _transition("a", "pending", "running", 1, 9.99),
        _transition("a", "running", "completed", 1, 10.11),
    ]
    row = replace(_row("a", attempt=1), queue=queue)
    result = _check(effects, transitions, [], rows=[row])
    assert (result["invariants"]["runs_outside_their_queues"].count > 0) is breached
    assert result["counts"]["runs_on_pods_given_queues"] == (0 if claims is None else 1)


def _limited_runs(
    runs: list[tuple[str, float, float | None]], queue: str, keys: dict[str, str] | None = None
) -> tuple[list[Effect], list[Transition], list[FinalRow]]:
    """Attempt 1 of each job (id, start, end) in ``queue``, claimed just before its start and
    completed just after its end; a run without an end was taken back at start + 1 s, its lease
    having ended at start + 0.5 s."""
    effects, transitions, rows = [], [], []
    for i, (job, start, end) in enumerate(runs):
        worker, pid = f"pod-a-w{i}", 100 + i
        effects.append(Effect("start", job, 1, worker, pid, start))
        transitions.append(_transition(job, "pending", "running", 1, start - 0.01, worker=worker))
        if end is None:
            taken = _transition(job, "running", "pending", 1, start + 1.0, worker=worker)
            transitions.append(replace(taken, old_lease_until=start + 0.5))
        else:
            effects.append(Effect("end", job, 1, worker, pid, end, ok=True))
            done = _transition(job, "running", "completed", 1, end + 0.01, worker=worker)
            transitions.append(replace(done, old_lease_until=end + 30.0))
        rows.append(replace(_row(job, attempt=1), queue=queue, concurrency_key=(keys or {}).get(job)))
    return effects, transitions, rows


@pytest.mark.parametrize(
    ("runs", "breached"),
    [
        # Four runs of the capped queue (limit 3) at once.
        ([("a", 10.0, 12.0), ("b", 10.1, 12.0), ("c", 10.2, 12.0), ("d", 11.0, 11.5)], True),
        # Three at once, and a fourth once one ended.
        ([("a", 10.0, 12.0), ("b", 10.1, 12.0), ("c", 10.2, 10.9), ("d", 11.0, 11.5)], False),
        # A run that never ended (a frozen worker) holds its slot only until its lease ended.
        ([("a", 10.0, 12.0), ("b", 10.1, 12.0), ("c", 10.2, None), ("d", 11.0, 11.5)], False),
    ],
)
def test_more_runs_of_a_capped_queue_than_its_limit_is_a_violation(
    runs: list[tuple[str, float, float | None]], breached: bool
) -> None:
    effects, transitions, rows = _limited_runs(runs, "capped")
    result = _check(effects, transitions, [], rows=rows)
    assert (result["invariants"]["queue_concurrency_exceeded"].count > 0) is breached
    assert result["invariants"]["key_limit_exceeded"].count == 0
    assert result["counts"]["runs_in_queue_capped"] == 4


@pytest.mark.parametrize(
    ("keys", "second_ends", "breached"),
    [
        ({"a": "k0", "b": "k0"}, 12.0, True),  # two runs of one key at once
        ({"a": "k0", "b": "k1"}, 12.0, False),  # two keys
        ({"a": "k0", "b": "k0"}, None, False),  # the first's lease ended before the second began
    ],
)
def test_two_runs_of_a_key_limited_to_one_at_once_are_a_violation(
    keys: dict[str, str], second_ends: float | None, breached: bool
) -> None:
    effects, transitions, rows = _limited_runs([("a", 10.0, second_ends), ("b", 10.8, 11.5)], "keyed", keys)
    result = _check(effects, transitions, [], rows=rows)
    assert (result["invariants"]["key_limit_exceeded"].count > 0) is breached
    assert result["invariants"]["queue_concurrency_exceeded"].count == 0
