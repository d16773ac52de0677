"""Leadership: one leader at a time, the advisory lock is real, takeover is fast, stale leaders
cannot write (docs/leadership.md; guarantee 5 of docs/guarantees.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from pg_scheduler import LeadershipLostError, Scheduler
from pg_scheduler.shared.locks import LEADER_LOCK
from pg_scheduler.shared.schema import migrate
from pg_scheduler.supervisor.fence import Fence, Term
from tests.support import FAST, wait_for

LOCK_ROWS = """
SELECT pid FROM pg_locks
 WHERE locktype = 'advisory' AND classid = $1::int8::oid AND objid = $2::int8::oid
   AND objsubid = 2 AND granted
"""


@pytest.fixture
async def three(dsn: str) -> AsyncIterator[list[Scheduler]]:
    pools = [await asyncpg.create_pool(dsn, min_size=1, max_size=4) for _ in range(3)]
    schedulers = [Scheduler(p, **FAST) for p in pools]
    for s in schedulers:
        await s.start()
    yield schedulers
    for s in schedulers:
        await s.shutdown()
    for p in pools:
        await p.close()


def leaders(schedulers: list[Scheduler]) -> list[Scheduler]:
    return [s for s in schedulers if s.is_leader]


async def test_exactly_one_leader_and_the_lock_shows_in_pg_locks(
    three: list[Scheduler], pool: asyncpg.Pool
) -> None:
    await wait_for(lambda: len(leaders(three)) == 1, message="one leader")
    rows = await pool.fetch(LOCK_ROWS, *LEADER_LOCK)
    assert len(rows) == 1, "the leader lock must be held by exactly one backend"
    # The lock excludes: another session cannot take it.
    assert await pool.fetchval("SELECT pg_try_advisory_lock($1, $2)", *LEADER_LOCK) is False
    # Held on a dedicated session, not a pooled one: its application_name says so.
    app = await pool.fetchval("SELECT application_name FROM pg_stat_activity WHERE pid = $1", rows[0]["pid"])
    assert app.startswith("pg_scheduler:leader:")
    # For a while, never a second leader.
    for _ in range(20):
        assert len(leaders(three)) <= 1
        await asyncio.sleep(0.05)  # sampling the invariant over time, not synchronising


async def test_graceful_shutdown_hands_leadership_over_within_a_second(
    three: list[Scheduler], pool: asyncpg.Pool
) -> None:
    [leader] = await wait_for(lambda: leaders(three) or None, message="a leader")
    epoch_before = await pool.fetchval("SELECT epoch FROM scheduler_leader")
    started = time.monotonic()
    await leader.shutdown()
    others = [s for s in three if s is not leader]
    await wait_for(lambda: len(leaders(others)) == 1, timeout=3, interval=0.01, message="a new leader")
    took = time.monotonic() - started
    print(f"measured: leadership handed over {took:.3f}s after a clean shutdown began")
    assert took < 1.0, f"takeover after a clean shutdown took {took:.2f}s"
    assert await pool.fetchval("SELECT epoch FROM scheduler_leader") == epoch_before + 1


async def test_leader_steps_down_when_its_lock_session_is_terminated(
    three: list[Scheduler], pool: asyncpg.Pool
) -> None:
    [leader] = await wait_for(lambda: leaders(three) or None, message="a leader")
    epoch_before = await pool.fetchval("SELECT epoch FROM scheduler_leader")
    [row] = await pool.fetch(LOCK_ROWS, *LEADER_LOCK)
    assert leader.elector is not None
    elections_before = leader.elector.elections
    await pool.execute("SELECT pg_terminate_backend($1)", row["pid"])

    async def new_term() -> bool:
        epoch = await pool.fetchval("SELECT epoch FROM scheduler_leader")
        return bool(epoch > epoch_before) and len(leaders(three)) == 1

    # The old leader steps down at once; someone (often the same process, on a new session)
    # wins a new term with a new epoch.
    await wait_for(new_term, timeout=5, message="a new term")
    holders = await pool.fetch(LOCK_ROWS, *LEADER_LOCK)
    assert [h["pid"] for h in holders] != [row["pid"]]
    [new_leader] = leaders(three)
    if new_leader is leader:
        assert leader.elector.elections == elections_before + 1


async def test_stale_epoch_write_is_rejected(pool: asyncpg.Pool) -> None:
    async with Scheduler(pool, **FAST) as scheduler:
        await wait_for(lambda: scheduler.is_leader, message="leader")
        current = await pool.fetchval("SELECT epoch FROM scheduler_leader")
        # A deposed leader that still believes it leads: its term is "trusted" locally.
        stale = Fence(pool, lambda: Term(epoch=current - 1, trusted_until=time.monotonic() + 60))
        with pytest.raises(LeadershipLostError):
            async with stale.transaction() as conn:
                await conn.execute("DELETE FROM scheduler_workers")
        assert await pool.fetchval("SELECT count(*) FROM scheduler_workers") >= 1
        # The live term still writes.
        live = Fence(pool, lambda: scheduler.elector.term if scheduler.elector else None)
        async with live.transaction() as conn:
            assert await conn.fetchval("SELECT 1") == 1


async def test_epoch_bump_waits_for_a_fenced_transaction_in_flight(pool: asyncpg.Pool) -> None:
    async with Scheduler(pool, **FAST) as scheduler:
        await wait_for(lambda: scheduler.is_leader, message="leader")
        assert scheduler.elector is not None
        fence = Fence(pool, lambda: scheduler.elector.term if scheduler.elector else None)
        bump_done = asyncio.Event()

        async def bump() -> None:
            await pool.execute("UPDATE scheduler_leader SET epoch = epoch + 1")
            bump_done.set()

        async with fence.transaction():
            bumper = asyncio.create_task(bump())
            # The bump must block on our FOR SHARE row lock while we are inside.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(asyncio.shield(bump_done.wait()), timeout=0.5)
        await asyncio.wait_for(bumper, timeout=5)
        # After the bump the old term can no longer write.
        with pytest.raises(LeadershipLostError):
            async with fence.transaction():
                pass


async def test_a_leader_frozen_inside_a_fenced_transaction_blocks_no_bump_past_its_ttl(
    pool: asyncpg.Pool,
) -> None:
    # A SIGSTOPped leader's kernel still answers keepalives, so only the transaction's own
    # idle-in-transaction timeout (the lock's TTL) lets the next leader's epoch bump through.
    async with pool.acquire() as conn:
        await migrate(conn)
    epoch = await pool.fetchval("SELECT epoch FROM scheduler_leader")
    fence = Fence(
        pool,
        lambda: Term(epoch=epoch, trusted_until=time.monotonic() + 60),
        ttl_seconds=1,
    )
    # Frozen inside a statement (asyncpg's Parse and Flush sent, Execute not yet): the
    # statement's timer, capped at the TTL, ends it.
    async with fence.transaction(statement_timeout_ms=30_000) as conn:
        timeouts = await conn.fetchrow(
            "SELECT current_setting('statement_timeout') AS s,"
            " current_setting('idle_in_transaction_session_timeout') AS i"
        )
    assert (timeouts["s"], timeouts["i"]) == ("1s", "1s")
    # The thawed side learns it at its next statement (asyncpg reports the server's FATAL
    # message as a client error on a connection already gone).
    ended = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, ConnectionError)
    with pytest.raises(ended):
        async with fence.transaction():
            # "Frozen": no further statement from this session while the next leader bumps.
            t0 = time.monotonic()
            bumped = await asyncio.wait_for(
                pool.fetchval("UPDATE scheduler_leader SET epoch = epoch + 1 RETURNING epoch"), timeout=10
            )
            waited = time.monotonic() - t0
    print(f"measured: epoch bump waited {waited:.2f}s behind a frozen fenced transaction (ttl 1 s)")
    assert bumped == epoch + 1
    assert 0.5 < waited < 3, waited
    assert await pool.fetchval("SELECT 1") == 1, "the pool replaces the ended session"


async def test_leader_stops_trusting_itself_after_the_trust_window(pool: asyncpg.Pool) -> None:
    async with Scheduler(pool, **FAST) as scheduler:
        await wait_for(lambda: scheduler.is_leader, message="leader")
        elector = scheduler.elector
        assert elector is not None and elector.term is not None
        # Pretend the last good check was long ago (a pause, a stuck loop).
        term = elector.term
        elector._term = Term(term.epoch, time.monotonic() - 0.01)
        assert elector.term is None and not elector.is_leader
        fence = Fence(pool, lambda: elector.term)
        with pytest.raises(LeadershipLostError):
            async with fence.transaction():
                pass
        assert await elector.attempt_renew() is False
        assert scheduler.leader_services is not None
        assert not scheduler.leader_services.running, "services stop with the term"
        # It closed its lock session, so it (or another) can be elected again.
        await wait_for(lambda: scheduler.is_leader, timeout=5, message="re-elected")


async def test_leader_services_run_only_on_the_leader(three: list[Scheduler]) -> None:
    [leader] = await wait_for(lambda: leaders(three) or None, message="a leader")
    await wait_for(
        lambda: leader.leader_services is not None and leader.leader_services.running,
        message="leader services up",
    )
    for s in three:
        assert s.orphan_rescuer is not None and s.periodic_registrar is not None
        assert s.orphan_rescuer.running == (s is leader)
        assert s.periodic_registrar.running == (s is leader)


@pytest.mark.parametrize("ttl", [1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 30.0, 60.0])
def test_trust_window_ends_before_the_server_can_free_the_lock(ttl: float) -> None:
    from pg_scheduler.supervisor.elector import Elector

    async def noop(*_: object) -> None:
        return None

    elector = Elector(
        (), {}, node_id="n", ttl_seconds=ttl, elect_interval_seconds=ttl / 4, on_elected=noop, on_deposed=noop
    )
    frees_after = elector._liveness.server_frees_after_seconds
    # Never trust past the moment a silent session could be ended and the lock taken over...
    assert elector.trust_seconds < frees_after <= ttl
    # ...and leave room for at least two renewals inside the window, so a healthy leader is
    # never deposed by its own schedule.
    assert elector.trust_seconds > 2 * elector.renew_interval_seconds
