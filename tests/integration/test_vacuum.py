"""Vacuum: finished jobs are deleted as each final state's policy says, and only then.

What 0.2.3 got wrong, and what is proven here instead:

- it aged rows from ``created_at``: a job created two days ago and finished a minute ago was
  deleted at once; ours ages from ``finished_at``;
- ``expired`` rows had no policy and were never deleted; ours default to ``after_days(7)``;
- ``immediate()`` kept rows for a 5-minute safety window; ours deletes right after completion;
- every replica vacuumed on its own; ours runs on the leader only, through the epoch fence.

Rows are made by running real jobs where the path that writes ``finished_at`` matters, and by
plain SQL inserts otherwise; ages are set by back-dating ``created_at``/``finished_at`` in SQL.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from pg_scheduler import JobState, Scheduler, VacuumConfig, VacuumPolicy, job
from pg_scheduler.shared.errors import LeadershipLostError
from pg_scheduler.supervisor.fence import Fence, Term, Unfenced
from pg_scheduler.supervisor.maintenance.vacuum import Vacuum
from tests.rows import ago, insert_job, update_job, wait_for_status
from tests.support import FAST, wait_for

FINAL_STATES = ("completed", "failed", "cancelled", "expired")
ZEROS = {state: 0 for state in FINAL_STATES}
TASK = "tests.integration.test_vacuum:sql_row"  # rows inserted by SQL name a task nobody runs


async def insert_row(
    pool: asyncpg.Pool,
    job_id: str,
    status: str,
    *,
    created_ago: timedelta = timedelta(0),
    finished_ago: timedelta | None = None,
) -> None:
    """A row in ``status``, created ``created_ago`` and finished ``finished_ago`` before now."""
    await insert_job(
        pool,
        job_id,
        job_name=TASK,
        status=status,
        execution_time=ago(created_ago),
        created_at=ago(created_ago),
        finished_at=None if finished_ago is None else ago(finished_ago),
    )


async def backdate(
    pool: asyncpg.Pool, job_id: str, *, created_ago: timedelta, finished_ago: timedelta
) -> None:
    await update_job(pool, job_id, created_at=ago(created_ago), finished_at=ago(finished_ago))


async def ids(pool: asyncpg.Pool) -> set[str]:
    return {r["job_id"] for r in await pool.fetch("SELECT job_id FROM scheduled_jobs")}


async def status_of(pool: asyncpg.Pool, job_id: str) -> str | None:
    value: str | None = await pool.fetchval("SELECT status FROM scheduled_jobs WHERE job_id = $1", job_id)
    return value


async def test_age_counts_from_finish_not_from_creation(pool: asyncpg.Pool) -> None:
    @job
    async def report(n: int) -> None:
        return None

    async with Scheduler(pool, vacuum_enabled=False, **FAST) as scheduler:
        now = datetime.now(UTC)
        recent = await scheduler.schedule(report, execution_time=now, args=(1,))
        old = await scheduler.schedule(report, execution_time=now, args=(2,))
        await wait_for(lambda: _all_completed(pool, [recent, old]), message="both jobs done")
    # Created two days ago, finished a minute ago: 0.2.3 deleted this one at once.
    await backdate(pool, recent, created_ago=timedelta(days=2), finished_ago=timedelta(minutes=1))
    await backdate(pool, old, created_ago=timedelta(days=3), finished_ago=timedelta(days=2))

    producer = Scheduler(
        pool, vacuum_config=VacuumConfig(completed=VacuumPolicy.after_days(1)), vacuum_enabled=True
    )
    deleted = await producer.run_vacuum()

    assert deleted == {**ZEROS, "completed": 1}
    assert await ids(pool) == {recent}


@pytest.mark.parametrize(
    "config",
    [
        None,
        # None for a policy means the default one, as in 0.2.3 (not "no policy").
        VacuumConfig(completed=None, failed=None, cancelled=None, expired=None),  # type: ignore[arg-type]
    ],
    ids=["VacuumConfig()", "VacuumConfig(None, ...)"],
)
async def test_default_policies_cover_every_final_state_from_finish_time(
    pool: asyncpg.Pool, config: VacuumConfig | None
) -> None:
    # Defaults: completed 1 day, failed 7, cancelled 3, expired 7 (0.2.3 had no expired policy).
    # Every row was created 30 days ago, so only the finish time can tell them apart.
    defaults = {"completed": 1, "failed": 7, "cancelled": 3, "expired": 7}
    if config is not None:
        assert {state: policy.days for state, policy in config.policies().items()} == {
            JobState(state): days for state, days in defaults.items()
        }
    await Scheduler(pool).initialize_db()
    for state, days in defaults.items():
        await insert_row(
            pool,
            f"{state}-old",
            state,
            created_ago=timedelta(days=30),
            finished_ago=timedelta(days=days, hours=1),
        )
        await insert_row(
            pool,
            f"{state}-young",
            state,
            created_ago=timedelta(days=30),
            finished_ago=timedelta(days=days) - timedelta(hours=1),
        )

    deleted = await Scheduler(pool, vacuum_enabled=True, vacuum_config=config).run_vacuum()

    assert deleted == {state: 1 for state in FINAL_STATES}
    assert await ids(pool) == {f"{state}-young" for state in FINAL_STATES}


async def test_a_real_expired_job_is_vacuumed_after_7_days_by_default(
    pool: asyncpg.Pool,
) -> None:
    @job
    async def too_late() -> None:
        raise AssertionError("a misfired job must not run")

    async with Scheduler(pool, vacuum_enabled=False, **FAST) as scheduler:
        expired = await scheduler.schedule(
            too_late,
            execution_time=datetime.now(UTC) - timedelta(minutes=5),
            misfire_grace_time=1,
        )
        await wait_for_status(pool, expired, "expired")
    # The claim that expired it must have stamped finished_at, or it would never age out.
    assert await pool.fetchval(
        "SELECT finished_at IS NOT NULL FROM scheduled_jobs WHERE job_id = $1", expired
    )
    producer = Scheduler(pool, vacuum_enabled=True)  # default VacuumConfig()

    await backdate(pool, expired, created_ago=timedelta(days=9), finished_ago=timedelta(days=6))
    assert await producer.run_vacuum() == ZEROS, "an expired row 6 days old must stay"

    await backdate(pool, expired, created_ago=timedelta(days=9), finished_ago=timedelta(days=8))
    assert await producer.run_vacuum() == {**ZEROS, "expired": 1}
    assert await ids(pool) == set()


async def test_immediate_deletes_right_after_completion(pool: asyncpg.Pool) -> None:
    @job
    async def quick() -> None:
        return None

    async with Scheduler(pool, vacuum_enabled=False, **FAST) as scheduler:
        done = await scheduler.schedule(quick, execution_time=datetime.now(UTC))
        await wait_for_status(pool, done, "completed")
        waiting = await scheduler.schedule(quick, execution_time=datetime.now(UTC) + timedelta(hours=1))
        # No back-dating: 0.2.3 kept rows whose heartbeat was under 5 minutes old.
        deleted = await Scheduler(
            pool,
            vacuum_config=VacuumConfig(completed=VacuumPolicy.immediate()),
            vacuum_enabled=True,
        ).run_vacuum()

    assert deleted == {**ZEROS, "completed": 1}
    assert await ids(pool) == {waiting}


async def test_keep_last_keeps_only_the_newest_finished_rows(pool: asyncpg.Pool) -> None:
    await Scheduler(pool).initialize_db()
    # Created in the opposite order to finishing: the newest *finished* row is the one kept.
    for n, finished_hours in enumerate((1, 5, 3)):
        await insert_row(
            pool,
            f"failed-{finished_hours}h",
            "failed",
            created_ago=timedelta(days=10 - n),
            finished_ago=timedelta(hours=finished_hours),
        )
    await insert_row(pool, "completed-1h", "completed", finished_ago=timedelta(hours=1))

    config = VacuumConfig(completed=VacuumPolicy.never(), failed=VacuumPolicy.keep_last(1))
    deleted = await Scheduler(pool, vacuum_config=config, vacuum_enabled=True).run_vacuum()

    assert deleted == {**ZEROS, "failed": 2}
    assert await ids(pool) == {"failed-1h", "completed-1h"}


@pytest.mark.parametrize(
    "policy",
    [VacuumPolicy.immediate(), VacuumPolicy.keep_last(0), VacuumPolicy.after_days(0), VacuumPolicy.never()],
    ids=lambda p: p.trigger.value,
)
async def test_no_policy_touches_pending_or_running_rows(pool: asyncpg.Pool, policy: VacuumPolicy) -> None:
    await Scheduler(pool).initialize_db()
    # Old unfinished rows: a pending job whose earlier attempt finished (retry), a running one.
    await insert_row(pool, "pending-old", "pending", created_ago=timedelta(days=60))
    await insert_row(
        pool, "pending-retried", "pending", created_ago=timedelta(days=60), finished_ago=timedelta(days=59)
    )
    await insert_row(pool, "running-old", "running", created_ago=timedelta(days=60))
    for state in FINAL_STATES:
        await insert_row(
            pool, f"{state}-old", state, created_ago=timedelta(days=60), finished_ago=timedelta(days=30)
        )

    config = VacuumConfig(completed=policy, failed=policy, cancelled=policy, expired=policy)
    deleted = await Scheduler(pool, vacuum_config=config, vacuum_enabled=True).run_vacuum()

    unfinished = {"pending-old", "pending-retried", "running-old"}
    if policy.trigger.value == "never":
        assert deleted == ZEROS
        assert await ids(pool) == unfinished | {f"{s}-old" for s in FINAL_STATES}
    else:
        assert deleted == {state: 1 for state in FINAL_STATES}
        assert await ids(pool) == unfinished
    assert await status_of(pool, "running-old") == "running"


async def test_vacuum_disabled_returns_zeros_and_deletes_nothing(pool: asyncpg.Pool) -> None:
    await Scheduler(pool).initialize_db()
    for state in FINAL_STATES:
        await insert_row(
            pool, f"{state}-ancient", state, created_ago=timedelta(days=400), finished_ago=timedelta(days=365)
        )
    everything_immediate = VacuumConfig(
        completed=VacuumPolicy.immediate(),
        failed=VacuumPolicy.immediate(),
        cancelled=VacuumPolicy.immediate(),
        expired=VacuumPolicy.immediate(),
        interval_minutes=0.01,
    )

    disabled = Scheduler(pool, vacuum_config=everything_immediate, vacuum_enabled=False, **FAST)
    assert await disabled.run_vacuum() == ZEROS
    # Started and leading, it has no vacuum service at all.
    async with disabled:
        await wait_for(lambda: disabled.is_leader, message="leadership")
        await wait_for(
            lambda: disabled.orphan_rescuer is not None and disabled.orphan_rescuer.passes >= 3,
            message="leader services running",
        )
        assert disabled.vacuum is None
        assert await ids(pool) == {f"{s}-ancient" for s in FINAL_STATES}


async def test_track_metrics_records_daily_and_total_counts_that_add_up(
    pool: asyncpg.Pool,
) -> None:
    config = VacuumConfig(
        completed=VacuumPolicy.immediate(),
        failed=VacuumPolicy.immediate(),
        cancelled=VacuumPolicy.immediate(),
        expired=VacuumPolicy.immediate(),
        track_metrics=True,
    )
    scheduler = Scheduler(pool, vacuum_config=config, vacuum_enabled=True)
    await scheduler.initialize_db()
    assert await scheduler.get_vacuum_stats() == []

    first = {"completed": 2, "failed": 1, "cancelled": 0, "expired": 3}
    await _insert_finished(pool, first, tag="a")
    assert await scheduler.run_vacuum() == first
    today = await pool.fetchval("SELECT current_date")

    stats = await scheduler.get_vacuum_stats()
    assert len(stats) == 1
    assert stats[0]["stat_date"] == today
    assert {s: stats[0][f"deleted_{s}"] for s in FINAL_STATES} == first
    assert stats[0]["last_run"] is not None
    totals = await scheduler.get_total_vacuum_stats()
    assert {s: totals[f"total_{s}"] for s in FINAL_STATES} == first
    assert totals["days_tracked"] == 1

    second = {"completed": 1, "failed": 0, "cancelled": 2, "expired": 1}
    await _insert_finished(pool, second, tag="b")
    assert await scheduler.run_vacuum() == second

    both = {s: first[s] + second[s] for s in FINAL_STATES}
    stats = await scheduler.get_vacuum_stats()
    assert len(stats) == 1 and stats[0]["stat_date"] == today
    assert {s: stats[0][f"deleted_{s}"] for s in FINAL_STATES} == both
    totals = await scheduler.get_total_vacuum_stats()
    assert {s: totals[f"total_{s}"] for s in FINAL_STATES} == both
    assert totals["days_tracked"] == 1


async def test_stats_are_not_recorded_without_track_metrics(pool: asyncpg.Pool) -> None:
    scheduler = Scheduler(
        pool, vacuum_config=VacuumConfig(completed=VacuumPolicy.immediate()), vacuum_enabled=True
    )
    await scheduler.initialize_db()
    await _insert_finished(pool, {"completed": 2}, tag="x")
    assert await scheduler.run_vacuum() == {**ZEROS, "completed": 2}
    assert await scheduler.get_vacuum_stats() == []


async def test_one_pass_deletes_a_backlog_larger_than_a_batch(pool: asyncpg.Pool) -> None:
    await Scheduler(pool).initialize_db()
    await pool.execute(
        """
        INSERT INTO scheduled_jobs (job_id, job_name, execution_time, status, created_at,
                                    finished_at)
        SELECT 'bulk-' || i, $1, now() - interval '3 days', 'completed',
               now() - interval '3 days', now() - interval '2 days'
          FROM generate_series(1, 1000) AS i
        """,
        TASK,
    )
    await insert_row(pool, "young", "completed", finished_ago=timedelta(hours=1))

    vacuum = Vacuum(Unfenced(pool), VacuumConfig(), batch_size=100)
    deleted = await vacuum.run_once()

    assert deleted == {**ZEROS, "completed": 1000}
    assert await ids(pool) == {"young"}


async def test_the_leader_vacuums_on_its_own_and_a_follower_does_not(pool: asyncpg.Pool) -> None:
    ran: list[int] = []

    @job
    async def tick(n: int) -> None:
        ran.append(n)

    config = VacuumConfig(interval_minutes=0.01, completed=VacuumPolicy.immediate())
    first = Scheduler(pool, vacuum_config=config, vacuum_enabled=True, **FAST)
    second = Scheduler(pool, vacuum_config=config, vacuum_enabled=True, **FAST)
    async with first, second:
        await wait_for(lambda: first.is_leader or second.is_leader, message="a leader")
        leader, follower = (first, second) if first.is_leader else (second, first)
        assert leader.vacuum is not None and follower.vacuum is not None
        await wait_for(
            lambda: leader.vacuum is not None and leader.vacuum.running, message="leader's vacuum running"
        )

        job_id = await leader.schedule(tick, execution_time=datetime.now(UTC), args=(1,))
        await wait_for(lambda: ran == [1], message="job ran")
        # Nobody calls run_vacuum(): the leader's service deletes the completed row by itself.
        await wait_for(lambda: _gone(pool, job_id), timeout=10, message="row vacuumed")
        await leader.vacuum.wait_for_passes(leader.vacuum.passes + 2, timeout=10)

        assert not follower.is_leader
        assert not follower.vacuum.running
        assert follower.vacuum.passes == 0

        # When the leader leaves, the follower takes over, vacuum included.
        await leader.shutdown()
        await wait_for(lambda: follower.is_leader, timeout=10, message="takeover")
        await wait_for(
            lambda: follower.vacuum is not None and follower.vacuum.running,
            message="new leader's vacuum running",
        )
        await follower.vacuum.wait_for_passes(1, timeout=10)


async def test_a_stale_epoch_cannot_vacuum(pool: asyncpg.Pool) -> None:
    await Scheduler(pool).initialize_db()
    for n in range(3):
        await insert_row(pool, f"done-{n}", "completed", finished_ago=timedelta(days=2))
    old_epoch = await pool.fetchval("SELECT epoch FROM scheduler_leader")
    # A new leader was elected meanwhile (what the elector does on winning the lock).
    new_epoch = await pool.fetchval("UPDATE scheduler_leader SET epoch = epoch + 1 RETURNING epoch")
    config = VacuumConfig(completed=VacuumPolicy.immediate())

    def term(epoch: int) -> Term:
        return Term(epoch=epoch, trusted_until=time.monotonic() + 60)

    stale = Vacuum(Fence(pool, lambda: term(old_epoch)), config)
    with pytest.raises(LeadershipLostError):
        await stale.run_once()
    assert await ids(pool) == {f"done-{n}" for n in range(3)}

    # The same vacuum under the current epoch does delete: the refusal above was the fence.
    current = Vacuum(Fence(pool, lambda: term(new_epoch)), config)
    assert await current.run_once() == {**ZEROS, "completed": 3}
    assert await ids(pool) == set()


async def test_an_untrusted_term_cannot_vacuum(pool: asyncpg.Pool) -> None:
    await Scheduler(pool).initialize_db()
    await insert_row(pool, "done", "completed", finished_ago=timedelta(days=2))
    epoch = await pool.fetchval("SELECT epoch FROM scheduler_leader")
    # The right epoch, but its last leadership check is too old to act on.
    lapsed = Fence(pool, lambda: Term(epoch=epoch, trusted_until=time.monotonic() - 1))
    with pytest.raises(LeadershipLostError):
        await Vacuum(lapsed, VacuumConfig(completed=VacuumPolicy.immediate())).run_once()
    assert await ids(pool) == {"done"}


async def _insert_finished(pool: asyncpg.Pool, counts: dict[str, int], *, tag: str) -> None:
    for state, count in counts.items():
        for n in range(count):
            await insert_row(pool, f"{tag}-{state}-{n}", state, finished_ago=timedelta(0))


async def _all_completed(pool: asyncpg.Pool, job_ids: list[str]) -> bool:
    done: int = await pool.fetchval(
        "SELECT count(*) FROM scheduled_jobs WHERE job_id = ANY($1::text[]) AND status = 'completed'",
        job_ids,
    )
    return done == len(job_ids)


async def _gone(pool: asyncpg.Pool, job_id: str) -> bool:
    return not await pool.fetchval("SELECT count(*) FROM scheduled_jobs WHERE job_id = $1", job_id)
