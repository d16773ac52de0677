"""``diagnose()`` on a real PostgreSQL: each check passes on a healthy database and fails when
its condition is provoked (an index dropped or invalidated, a migration row deleted, dead rows
with autovacuum off, a transaction held open, a PgBouncer in transaction mode, workers whose
heartbeats stopped or that are too many for max_connections, a skewed host clock, an ICU
database, due jobs of a task nobody runs)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pg_scheduler.embedded import Cluster, free_port
from pg_scheduler.shared import queries
from pg_scheduler.shared.config import SchedulerConfig
from pg_scheduler.shared.diagnosis import (
    CHECK_IDS,
    CONNECTIONS_PER_PROCESS,
    CONNECTIONS_PROBLEM_SHARE,
    CONNECTIONS_WARNING_SHARE,
    LEVELS,
    Finding,
    Thresholds,
    diagnose,
    exit_status,
    expected_indexes,
)
from pg_scheduler.shared.schema import Migration, latest_version, migrate
from pg_scheduler.supervisor.supervisor import POOL_SIZE
from pg_scheduler.worker.process import WorkerSpec
from tests.conftest import quote_ident, run_isolated, with_dbname
from tests.pgbouncer import PgBouncer
from tests.pgserver import TestPostgres, default_bindir
from tests.support import wait_for

HEALTHY_ADVICE = (
    "ALTER TABLE scheduled_jobs SET (autovacuum_vacuum_scale_factor = 0.01, "
    "autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0.02)"
)


RESET_AUTOVACUUM = (
    "ALTER TABLE scheduled_jobs RESET (autovacuum_vacuum_scale_factor, "
    "autovacuum_vacuum_threshold, autovacuum_analyze_scale_factor)"
)
"""Back to the server's defaults (migration 12 sets the advised values)."""


@pytest.fixture
async def migrated(pool: asyncpg.Pool) -> asyncpg.Pool:
    """The test's database with the schema, and the jobs table's autovacuum set as advised."""
    async with pool.acquire() as conn:
        await migrate(conn)
    await pool.execute(HEALTHY_ADVICE)
    return pool


async def findings(
    db: asyncpg.Pool | asyncpg.Connection, dsn: str | None, **kwargs: Any
) -> dict[str, Finding]:
    found = await diagnose(db, dsn=dsn, **kwargs)
    assert [f.id for f in found] == list(CHECK_IDS)
    return {f.id: f for f in found}


async def check(pool: asyncpg.Pool, dsn: str, fid: str, **kwargs: Any) -> Finding:
    return (await findings(pool, dsn, **kwargs))[fid]


def assert_ok(finding: Finding) -> None:
    assert finding.level == "ok", finding
    assert finding.fix is None


async def register(
    pool: asyncpg.Pool, worker_id: str, *, kind: str = "worker", tasks: list[str] | None = None
) -> None:
    await pool.execute(queries.WORKER_REGISTER, worker_id, kind, "host-a", 4242, tasks or [], None, None)


async def test_a_healthy_database_has_every_check_ok(migrated: asyncpg.Pool, dsn: str) -> None:
    found = await diagnose(migrated, dsn=dsn)
    assert [(f.id, f.level) for f in found] == [(fid, "ok") for fid in CHECK_IDS]
    assert exit_status(found) == 0
    # A connection alone serves too, with the dsn for the pooler's two sessions; a pool alone
    # lends its connection parameters to them.
    async with migrated.acquire() as conn:
        assert exit_status(await diagnose(conn, dsn=dsn)) == 0
    assert exit_status(await diagnose(migrated)) == 0
    async with migrated.acquire() as conn:
        alone = {f.id: f for f in await diagnose(conn)}
    assert alone["pooler.transaction_mode"].level == "warning"
    assert alone["pooler.transaction_mode"].message.startswith("not checked")


# --------------------------------------------------------------------------- 1. schema


async def test_a_deleted_migration_row_is_a_pending_migration(migrated: asyncpg.Pool, dsn: str) -> None:
    assert_ok(await check(migrated, dsn, "schema.pending_migrations"))
    await migrated.execute("DELETE FROM scheduler_migrations WHERE version = 3")
    found = await check(migrated, dsn, "schema.pending_migrations")
    assert found.level == "problem" and "1 migration not applied: 3" in found.message, found
    assert found.fix is not None and "pg-scheduler migrate" in found.fix
    assert found.details["pending"] == [3]


async def test_a_database_without_the_schema_is_a_problem_and_its_table_checks_are_not_run(
    pool: asyncpg.Pool, dsn: str
) -> None:
    found = await findings(pool, dsn)
    assert found["schema.pending_migrations"].level == "problem"
    assert "no pg_scheduler schema" in found["schema.pending_migrations"].message
    for fid in ("indexes.required", "vacuum.dead_tuples", "tasks.no_live_worker"):
        assert found[fid].level == "warning" and found[fid].message.startswith("not checked"), found[fid]
    assert found["clock.skew"].level == "ok"  # checks of the server alone still run


async def test_a_schema_newer_than_this_version_is_a_warning(migrated: asyncpg.Pool, dsn: str) -> None:
    newer = latest_version() + 1
    await migrated.execute(queries.MIGRATION_RECORD, newer, "from_the_future")
    found = await check(migrated, dsn, "schema.pending_migrations")
    assert found.level == "warning" and f"version {newer}" in found.message, found


# --------------------------------------------------------------------------- 2. indexes


async def test_a_dropped_index_is_a_problem_and_its_fix_recreates_it(
    migrated: asyncpg.Pool, dsn: str
) -> None:
    assert_ok(await check(migrated, dsn, "indexes.required"))
    await migrated.execute("DROP INDEX scheduled_jobs_next_due_idx")
    found = await check(migrated, dsn, "indexes.required")
    assert found.level == "problem" and "missing: scheduled_jobs_next_due_idx" in found.message, found
    assert found.fix == (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS scheduled_jobs_next_due_idx "
        "ON scheduled_jobs (job_name, execution_time) INCLUDE (queue) WHERE status = 'pending'"
    )
    await migrated.execute(found.fix)
    assert_ok(await check(migrated, dsn, "indexes.required"))


async def test_an_invalid_index_is_a_problem_and_its_fix_rebuilds_it(
    migrated: asyncpg.Pool, dsn: str
) -> None:
    # What a CREATE INDEX CONCURRENTLY that failed half-way leaves behind.
    await migrated.execute(
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'scheduled_jobs_claim_idx'::regclass"
    )
    found = await check(migrated, dsn, "indexes.required")
    assert found.level == "problem" and "invalid" in found.message, found
    assert found.details["invalid"] == ["scheduled_jobs_claim_idx"]
    assert found.fix == "REINDEX INDEX CONCURRENTLY scheduled_jobs_claim_idx"
    await migrated.execute(found.fix)
    assert_ok(await check(migrated, dsn, "indexes.required"))


def test_the_expected_indexes_follow_the_migrations_creates_and_drops() -> None:
    shipped = [
        Migration(1, "a", "CREATE TABLE IF NOT EXISTS t (\n    id TEXT PRIMARY KEY\n);\n"
                  "CREATE INDEX IF NOT EXISTS t_a_idx ON t (a);\n-- CREATE INDEX in_a_comment ON t (x);\n"),
        Migration(2, "b", "DROP INDEX IF EXISTS t_a_idx;\n"
                  "CREATE UNIQUE INDEX t_b_key\n    ON t (b) WHERE b IS NOT NULL;"),
        Migration(3, "c", "CREATE TABLE u (\n    x INT,\n    y INT,\n    PRIMARY KEY (x, y)\n);\n"),
    ]  # fmt: skip
    every = {i.name: i for i in expected_indexes(shipped=shipped)}
    assert list(every) == ["t_pkey", "t_b_key", "u_pkey"]
    assert every["t_b_key"].create == (
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_b_key ON t (b) WHERE b IS NOT NULL"
    )
    assert every["u_pkey"].create == "ALTER TABLE u ADD PRIMARY KEY (x, y)"
    assert [i.name for i in expected_indexes({1}, shipped)] == ["t_pkey", "t_a_idx"]
    names = {i.name for i in expected_indexes()}
    assert {"scheduled_jobs_pkey", "scheduled_jobs_claim_idx", "scheduled_jobs_next_due_idx"} <= names


# --------------------------------------------------------------------------- 3. vacuum


async def test_dead_rows_with_autovacuum_off_are_reported(migrated: asyncpg.Pool, dsn: str) -> None:
    limits = Thresholds(dead_rows_min=1000)
    assert_ok(await check(migrated, dsn, "vacuum.dead_tuples", thresholds=limits))
    await migrated.execute("ALTER TABLE scheduled_jobs SET (autovacuum_enabled = off)")
    async with migrated.acquire() as conn:
        await conn.execute(
            "INSERT INTO scheduled_jobs (job_name, execution_time, status) "
            "SELECT 'dead.rows', now(), 'completed' FROM generate_series(1, 2000)"
        )
        await conn.execute("DELETE FROM scheduled_jobs WHERE job_name = 'dead.rows'")
        # The statistics reach the shared counters when the session goes idle after this.
        await conn.execute("SELECT pg_stat_force_next_flush()")

    async def reported() -> Finding | None:
        found = await check(migrated, dsn, "vacuum.dead_tuples", thresholds=limits)
        return found if found.level == "warning" else None

    found = await wait_for(reported, timeout=15, message="the dead rows in the statistics")
    assert "2,000 dead rows" in found.message and found.details["dead"] == 2000, found
    assert found.fix is not None and "VACUUM (ANALYZE) scheduled_jobs" in found.fix
    assert "autovacuum is off for the table" in found.fix
    settings = await check(migrated, dsn, "vacuum.autovacuum_settings")
    assert settings.level == "warning" and "autovacuum is off for scheduled_jobs" in settings.message


async def test_default_autovacuum_settings_are_a_warning_whose_fix_is_the_advice(
    pool: asyncpg.Pool, dsn: str
) -> None:
    async with pool.acquire() as conn:
        await migrate(conn)
    assert_ok(await check(pool, dsn, "vacuum.autovacuum_settings"))  # migration 12 set them
    await pool.execute(RESET_AUTOVACUUM)
    found = await check(pool, dsn, "vacuum.autovacuum_settings")
    assert found.level == "warning" and "20%" in found.message and "server's default" in found.message, found
    assert found.fix == HEALTHY_ADVICE
    await pool.execute(found.fix)
    assert_ok(await check(pool, dsn, "vacuum.autovacuum_settings"))


# --------------------------------------------------------------------------- 4. horizon


async def test_an_old_transaction_holding_a_snapshot_is_reported(migrated: asyncpg.Pool, dsn: str) -> None:
    holder = await asyncpg.connect(dsn, server_settings={"application_name": "doctor-test-holder"})
    try:
        tx = holder.transaction(isolation="repeatable_read")
        await tx.start()
        await holder.fetchval("SELECT count(*) FROM scheduled_jobs")  # takes the snapshot
        # Open for less than the default minute: not reported.
        assert_ok(await check(migrated, dsn, "transactions.long_running"))
        limits = Thresholds(old_transaction_seconds=0.2)

        async def reported() -> Finding | None:
            found = await check(migrated, dsn, "transactions.long_running", thresholds=limits)
            return found if found.level == "warning" else None

        found = await wait_for(reported, timeout=10, message="the transaction to be older than 0.2 s")
        pid = holder.get_server_pid()
        assert f"pid {pid}" in found.message and "doctor-test-holder" in found.message, found
        assert "1 transaction open longer than 0.2s holds vacuum's horizon back" in found.message
        assert found.fix is not None and "pg_terminate_backend" in found.fix
        await tx.rollback()
        assert_ok(await check(migrated, dsn, "transactions.long_running", thresholds=limits))
    finally:
        await holder.close()


async def test_an_old_prepared_transaction_is_reported() -> None:
    with TestPostgres(settings={"max_prepared_transactions": "2"}) as server:
        dsn = server.dsn()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE TABLE t (x int)")
            await conn.execute("BEGIN; INSERT INTO t VALUES (1); PREPARE TRANSACTION 'doctor-test'")
            limits = Thresholds(old_transaction_seconds=0.2)

            async def reported() -> Finding | None:
                found = (await findings(conn, dsn, thresholds=limits))["transactions.long_running"]
                return found if found.level == "warning" else None

            found = await wait_for(reported, timeout=10, message="the prepared transaction to age")
            assert "prepared 'doctor-test'" in found.message, found
            assert found.fix is not None and "ROLLBACK PREPARED" in found.fix
            await conn.execute("ROLLBACK PREPARED 'doctor-test'")
            assert_ok((await findings(conn, dsn, thresholds=limits))["transactions.long_running"])
        finally:
            await conn.close()


async def test_no_idle_replication_slot_is_ok(migrated: asyncpg.Pool, dsn: str) -> None:
    assert_ok(await check(migrated, dsn, "transactions.replication_slots"))


@contextlib.contextmanager
def hot_standby(primary: TestPostgres, slot: str) -> Iterator[Cluster]:
    """A hot standby of ``primary`` streaming through the physical ``slot``, with
    ``hot_standby_feedback`` on: it reports its oldest snapshot to the primary, which keeps it as
    the slot's ``xmin``. Made by ``pg_basebackup -R -S`` into a temp folder, run as the server
    user like the primary; stopped by its PID and deleted on leaving."""
    base = Path(tempfile.mkdtemp(prefix="pgsched-standby-"))
    standby = Cluster(primary.bindir, base / "data", base / "postgres.log", timeout=primary.timeout)
    pid: int | None = None
    try:
        if os.geteuid() == 0:
            standby.hand_over(base)
        backup = standby.run(
            "pg_basebackup", "-h", primary.host, "-p", str(primary.port), "-U", "postgres",
            "-D", str(standby.data_dir), "-R", "-S", slot, "-X", "stream", "--no-sync",
        )  # fmt: skip
        assert backup.returncode == 0, f"pg_basebackup failed:\n{backup.stdout}"
        # A hot standby needs max_connections and the like at least as high as its primary's.
        settings = {**primary.settings, "hot_standby_feedback": "on", "wal_receiver_status_interval": "1"}
        pid, _ = standby.start(
            primary.host, lambda: free_port(primary.host), tries=3, socket_dir=str(base), settings=settings
        )
        yield standby
    finally:
        try:
            if pid is not None:
                standby.stop(pid)
        finally:
            shutil.rmtree(base, ignore_errors=True)


async def test_an_idle_replication_slot_holding_an_xmin_is_reported() -> None:
    with TestPostgres() as primary:
        dsn = primary.dsn()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("SELECT pg_create_physical_replication_slot('doctor_standby')")
            slot = "SELECT xmin, active FROM pg_replication_slots WHERE slot_name = 'doctor_standby'"
            # A slot nobody has streamed from holds no xmin: not reported.
            assert_ok((await findings(conn, dsn))["transactions.replication_slots"])
            with hot_standby(primary, "doctor_standby") as standby:

                async def fed_back() -> bool:
                    row = await conn.fetchrow(slot)
                    return row["active"] and row["xmin"] is not None

                await wait_for(fed_back, timeout=30, message="the standby's feedback to set the slot's xmin")
                # Streaming: the slot is in use, so not reported (its consumer is there).
                assert_ok((await findings(conn, dsn))["transactions.replication_slots"])
                logfile = standby.logfile
            assert not logfile.exists()  # the standby is stopped and gone

            async def inactive() -> bool:
                row = await conn.fetchrow(slot)
                return not row["active"]

            await wait_for(inactive, timeout=15, message="the walsender to release the slot")
            for _ in range(5):  # transactions that the slot's xmin now lags behind
                await conn.execute("SELECT pg_current_xact_id()")
            found = (await findings(conn, dsn))["transactions.replication_slots"]
            assert found.level == "warning", found
            assert "1 replication slot with no consumer holds vacuum's horizon back" in found.message
            assert "doctor_standby (physical, xmin" in found.message, found
            [held] = found.details["slots"]
            assert held["slot_name"] == "doctor_standby" and held["xmin_age"] >= 5, held
            assert found.fix is not None, found
            drop = found.fix.split("drop them: ", 1)[1]
            assert drop == "SELECT pg_drop_replication_slot('doctor_standby')", found
            await conn.execute(drop)
            assert_ok((await findings(conn, dsn))["transactions.replication_slots"])
        finally:
            await conn.close()


# --------------------------------------------------------------------------- 5. pooler


@pytest.fixture
def bouncer(dsn: str, pg_server_dsn: str) -> Iterator[PgBouncer]:
    """A PgBouncer in front of the test's database: alias ``tx`` in transaction mode, ``session``
    in session mode."""
    dbname = dsn.rsplit("/", 1)[1]
    with PgBouncer(pg_server_dsn, {"tx": (dbname, "transaction"), "session": (dbname, "session")}) as b:
        yield b


@pytest.fixture
async def through_bouncer(bouncer: PgBouncer, migrated: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test's database through the transaction-mode alias."""
    conn = await asyncpg.connect(bouncer.dsn("tx"), statement_cache_size=0)
    try:
        yield conn
    finally:
        await conn.close()


async def test_a_transaction_pooler_under_the_leader_is_a_problem(
    through_bouncer: asyncpg.Connection, bouncer: PgBouncer
) -> None:
    found = (await findings(through_bouncer, bouncer.dsn("tx")))["pooler.transaction_mode"]
    assert found.level == "problem" and "transaction pooler" in found.message, found
    assert found.fix is not None and "--leader-database-url" in found.fix
    assert found.details["database_url_pooled"] is True
    # The other checks run through the pooler too.
    assert (await findings(through_bouncer, bouncer.dsn("tx")))["indexes.required"].level == "ok"


async def test_a_pooled_database_url_with_a_direct_leader_url_is_ok(
    through_bouncer: asyncpg.Connection, bouncer: PgBouncer, dsn: str
) -> None:
    found = (await findings(through_bouncer, bouncer.dsn("tx"), leader_dsn=dsn))["pooler.transaction_mode"]
    assert_ok(found)
    assert "leader URL reaches PostgreSQL itself" in found.message
    pooled_leader = await findings(through_bouncer, bouncer.dsn("tx"), leader_dsn=bouncer.dsn("tx"))
    found = pooled_leader["pooler.transaction_mode"]
    assert found.level == "problem" and "leader database URL goes through" in found.message, found


async def test_a_session_pooler_and_a_direct_server_are_ok(
    bouncer: PgBouncer, migrated: asyncpg.Pool, dsn: str
) -> None:
    assert_ok(await check(migrated, dsn, "pooler.transaction_mode"))
    conn = await asyncpg.connect(bouncer.dsn("session"), statement_cache_size=0)
    try:
        assert_ok((await findings(conn, bouncer.dsn("session")))["pooler.transaction_mode"])
    finally:
        await conn.close()


# --------------------------------------------------------------------------- 6. connections


def test_the_connections_counted_per_process_are_the_codes() -> None:
    most = WorkerSpec("app", "dsn", "w", "s", 0, SchedulerConfig.build(max_concurrent_jobs=10_000)).pool_size
    assert CONNECTIONS_PER_PROCESS["worker"] == most + 2  # pool, LISTEN and heartbeat sessions
    assert CONNECTIONS_PER_PROCESS["supervisor"] == POOL_SIZE + 1  # pool and the lock session


async def test_more_registered_workers_than_max_connections_allows_are_reported(
    migrated: asyncpg.Pool, dsn: str
) -> None:
    found = await check(migrated, dsn, "connections.max_connections")
    assert_ok(found)
    available = found.details["available"]  # 297 on the test server
    workers = available // CONNECTIONS_PER_PROCESS["worker"] + 1
    for i in range(workers):
        await register(migrated, f"worker-{i}")
    found = await check(migrated, dsn, "connections.max_connections")
    assert found.level == "warning", found
    assert found.details["registered_peak"] == workers * CONNECTIONS_PER_PROCESS["worker"] > available
    assert found.fix is not None and "max_connections" in found.fix


def _server_major(bindir: Path) -> int:
    """The major version of the ``postgres`` in ``bindir`` (``postgres (PostgreSQL) 18.6``)."""
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1].split(".")[0])


async def test_sessions_filling_the_server_are_a_problem_then_a_warning_then_ok() -> None:
    # 20 connections less 3 for superusers and (16 and later) 2 for pg_use_reserved_connections.
    settings = {"max_connections": "20", "superuser_reserved_connections": "3"}
    reserved = 3
    if _server_major(default_bindir()) >= 16:
        settings["reserved_connections"] = "2"
        reserved += 2
    available = 20 - reserved
    with TestPostgres(settings=settings) as server:
        dsn = server.dsn()
        admin = await asyncpg.connect(dsn)  # a superuser: the doctor's session, in use too
        sessions: list[asyncpg.Connection] = []
        try:
            await migrate(admin)
            await admin.execute("CREATE ROLE app LOGIN")
            app_dsn = dsn.replace("postgres@", "app@", 1)
            found = (await findings(admin, dsn))["connections.max_connections"]
            assert_ok(found)
            assert (found.details["available"], found.details["in_use"]) == (available, 1), found
            # An application role opens sessions until the server refuses it one: what the
            # scheduler's pools would meet.
            with pytest.raises(asyncpg.TooManyConnectionsError, match="reserved"):
                while len(sessions) < 20:
                    sessions.append(await asyncpg.connect(app_dsn))
            assert len(sessions) == available - 1
            found = (await findings(admin, dsn))["connections.max_connections"]
            assert found.level == "problem", found
            assert found.details["in_use"] == available, found
            assert f"leaves {available} after {reserved} reserved; {available} in use" in found.message
            assert "the server refuses new sessions to roles without a reserved slot" in found.message
            assert found.fix is not None and "raise max_connections" in found.fix, found
            # Closing sessions one by one crosses the thresholds down: 95 %, then 80 % in use.
            levels = []
            while sessions:
                await sessions.pop().close()
                in_use = len(sessions) + 1
                expected = (
                    "problem"
                    if in_use >= available * CONNECTIONS_PROBLEM_SHARE
                    else "warning"
                    if in_use >= available * CONNECTIONS_WARNING_SHARE
                    else "ok"
                )
                found = (await findings(admin, dsn))["connections.max_connections"]
                assert (found.level, found.details["in_use"]) == (expected, in_use), found
                if expected == "warning":
                    assert "few connections are left" in found.message, found
                levels.append(found.level)
            assert "warning" in levels and levels == sorted(levels, key=LEVELS.index, reverse=True)
            assert_ok(found)
        finally:
            for session in sessions:
                await session.close()
            await admin.close()


# --------------------------------------------------------------------------- 7. clock


async def test_a_skewed_host_clock_is_a_warning_then_a_problem(migrated: asyncpg.Pool, dsn: str) -> None:
    assert_ok(await check(migrated, dsn, "clock.skew"))
    ahead = await check(migrated, dsn, "clock.skew", host_clock=lambda: time.time() + 5)
    assert ahead.level == "warning" and "behind this host's" in ahead.message, ahead
    assert 4.5 < -ahead.details["offset_seconds"] < 5.5
    far = await check(migrated, dsn, "clock.skew", host_clock=lambda: time.time() - 60)
    assert far.level == "problem" and "ahead of this host's" in far.message, far
    assert far.fix is not None and "NTP" in far.fix


# --------------------------------------------------------------------------- 8. collation


async def _create_non_c_database(admin: asyncpg.Connection, name: str) -> str | None:
    """Create ``name`` with a collation that is not C, from what the server offers: ICU if the
    build has it, else a libc locale installed on the machine other than C and POSIX (such as
    ``C.UTF-8``, which goes through the C library's locale code). Returns the clause used."""
    libc = await admin.fetch(
        "SELECT collcollate FROM pg_collation WHERE collprovider = 'c' "
        "AND collcollate NOT IN ('C', 'POSIX') AND collencoding IN (-1, 6) ORDER BY collname"
    )
    clauses = ["LOCALE_PROVIDER icu ICU_LOCALE 'und' LOCALE 'C'"] + [
        f"LOCALE_PROVIDER libc LOCALE '{r['collcollate']}'" for r in libc
    ]
    for clause in clauses:
        try:
            await admin.execute(
                f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0 ENCODING 'UTF8' {clause}"
            )
            return clause
        except (
            asyncpg.FeatureNotSupportedError,
            asyncpg.InvalidParameterValueError,
            asyncpg.ObjectNotInPrerequisiteStateError,
        ):
            continue  # ICU is not in this build, or the locale is not installed
    return None


@pytest.fixture
def non_c_dsn(pg_server_dsn: str) -> Iterator[str]:
    name = f"test_collation_{secrets.token_hex(6)}"

    async def create() -> str | None:
        admin = await asyncpg.connect(pg_server_dsn)
        try:
            return await _create_non_c_database(admin, name)
        finally:
            await admin.close()

    async def drop() -> None:
        admin = await asyncpg.connect(pg_server_dsn)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        finally:
            await admin.close()

    if run_isolated(create()) is None:
        pytest.skip("the server offers neither ICU nor a libc locale other than C and POSIX")
    try:
        yield with_dbname(pg_server_dsn, name)
    finally:
        run_isolated(drop())


async def test_a_non_c_collation_is_a_warning_and_c_key_columns_are_ok(non_c_dsn: str) -> None:
    conn = await asyncpg.connect(non_c_dsn)
    try:
        await migrate(conn)
        found = (await findings(conn, non_c_dsn))["collation.jobs_database"]
        assert found.level == "warning" and "10 %" in found.message, found
        assert found.fix is not None and "LOCALE 'C'" in found.fix
        assert set(found.details["columns_not_c"]) == {
            "job_id",
            "job_name",
            "worker_id",
            "dedup_key",
            "status",
        }
        for column in found.details["columns_not_c"]:
            await conn.execute(f'ALTER TABLE scheduled_jobs ALTER COLUMN {column} TYPE text COLLATE "C"')
        found = (await findings(conn, non_c_dsn))["collation.jobs_database"]
        assert_ok(found)
        assert 'COLLATE "C"' in found.message
    finally:
        await conn.close()


async def test_the_c_database_is_ok(migrated: asyncpg.Pool, dsn: str) -> None:
    found = await check(migrated, dsn, "collation.jobs_database")
    assert_ok(found)
    assert found.details["database"]["collate"] == "C"


# --------------------------------------------------------------------------- 9. heartbeats


async def test_a_worker_with_an_old_heartbeat_is_reported(migrated: asyncpg.Pool, dsn: str) -> None:
    await register(migrated, "fresh-worker")
    assert_ok(await check(migrated, dsn, "workers.stale_heartbeats"))
    await register(migrated, "frozen-worker")
    await migrated.execute(
        "UPDATE scheduler_workers SET last_heartbeat = now() - interval '5 minutes' WHERE worker_id = $1",
        "frozen-worker",
    )
    found = await check(migrated, dsn, "workers.stale_heartbeats")
    assert found.level == "warning" and "frozen-worker" in found.message, found
    assert "fresh-worker" not in found.message
    assert [r["worker_id"] for r in found.details["stale"]] == ["frozen-worker"]


# --------------------------------------------------------------------------- 10. tasks


async def test_due_jobs_of_a_task_no_live_worker_runs_are_a_problem(migrated: asyncpg.Pool, dsn: str) -> None:
    insert = "INSERT INTO scheduled_jobs (job_name, execution_time) SELECT $1, now() + $2 * interval '1 s' FROM generate_series(1, $3)"  # noqa: E501
    await migrated.execute(insert, "app.later", 3600.0, 2)  # not due yet: not counted
    assert_ok(await check(migrated, dsn, "tasks.no_live_worker"))
    await migrated.execute(insert, "app.orphan", -1.0, 3)
    found = await check(migrated, dsn, "tasks.no_live_worker")
    assert found.level == "problem", found
    assert "3 due jobs" in found.message and "app.orphan (queue default): 3" in found.message
    assert [(t["task"], t["due"]) for t in found.details["tasks"]] == [("app.orphan", 3)]
    # A live worker that registered the task; a supervisor's task list does not count.
    await register(migrated, "supervisor-1", kind="supervisor", tasks=["app.orphan"])
    assert (await check(migrated, dsn, "tasks.no_live_worker")).level == "problem"
    await register(migrated, "worker-1", tasks=["app.orphan"])
    assert_ok(await check(migrated, dsn, "tasks.no_live_worker"))
