"""``pytest chaos``: the short profile, with the issue's minimum fault counts, against every
invariant. The report (table and JSON) is kept under the pytest temp folder and printed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from . import report, workload
from .network import lab_unavailable_reason
from .run import Run, short_profile

REASON = lab_unavailable_reason()
pytestmark = pytest.mark.skipif(
    REASON is not None and not os.environ.get("CI"),
    reason=f"chaos suite needs network namespaces: {REASON}",
)

MINIMUM_FAULTS = {
    "faults_worker_kill": 20,
    "faults_leader_crash": 3,
    "faults_leader_freeze": 1,
    "faults_partition_leader": 1,
    "faults_partition": 1,
    "faults_pg_restart": 1,
    "faults_cluster_crash": 1,
}


@pytest.mark.timeout(400)
def test_short_profile_keeps_every_guarantee(tmp_path: Path) -> None:
    result = asyncio.run(Run(short_profile(), tmp_path / "run").execute())
    text = report.write(result, tmp_path / "run")
    print(text)
    counts = result["counts"]
    for name, minimum in MINIMUM_FAULTS.items():
        assert counts.get(name, 0) >= minimum, f"{name}: {counts.get(name, 0)} < {minimum}\n{text}"
    for name in report.GATES:
        assert result["invariants"][name].count == 0, f"{name} broken:\n{text}"
    for name, measured in result["times"].items():
        assert measured["met"], f"{name} over its target:\n{text}"
    assert counts["one_off_jobs"] > 500 and counts["executions"] > 500, text
    # The faults really took leases away: a frozen worker's run overlapped its rescued attempt
    # (allowed, its late outcome refused), and cut-off workers' outcomes were refused.
    assert counts["overlaps_with_lease_lost_and_completion_refused"] >= 1, text
    assert counts["late_outcomes_refused"] >= 1, text
    # The cluster crash left windows that passed while no leader ran: the misfire check saw some.
    assert counts["leaderless_gaps"] >= 1 and counts["late_runs_in_gaps"][workload.TICK_EVERY] >= 1, text
    # The pod given queues ran jobs, so runs_outside_their_queues had runs to check.
    assert counts["runs_on_pods_given_queues"] >= 50, text
    # The limited queues ran jobs under the faults, so their limits had runs to check.
    assert counts["runs_in_queue_capped"] >= 30 and counts["runs_in_queue_keyed"] >= 30, text
    assert not result["notes"], text
