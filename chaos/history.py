"""The database half of the history: triggers that log every change of a job row and every
leadership term, in the same transaction as the change.

A change that rolls back (a fenced write refused, a stale leader's transaction aborted) leaves
no trace, and one that commits cannot escape the log: the log is the committed history, which
is what the invariants are about. ``clock_timestamp()`` is taken inside the writing
transaction, before its commit; since a new term's epoch bump waits for the old term's fenced
transactions, a leader write logged with epoch ``e`` must be stamped before epoch ``e + 1``
began. The epoch comes from the fence (``set_config('pg_scheduler.epoch', ...)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

INSTALL = """
CREATE TABLE IF NOT EXISTS chaos_job_history (
    id          bigserial PRIMARY KEY,
    job_id      text NOT NULL,
    op          text NOT NULL,
    old_status  text,
    new_status  text,
    attempt     int,
    worker_id   text,
    old_worker_id text,
    dedup_key   text,
    window_start timestamptz,
    old_lease_until timestamptz,
    epoch       bigint,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS chaos_pass_history (
    id          bigserial PRIMARY KEY,
    pass_at     timestamptz NOT NULL,
    epoch       bigint,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS chaos_leader_history (
    epoch       bigint PRIMARY KEY,
    leader_id   text,
    pid         int,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE OR REPLACE FUNCTION chaos_log_job() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    term bigint := nullif(current_setting('pg_scheduler.epoch', true), '')::bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO chaos_job_history (job_id, op, old_status, attempt, old_worker_id, epoch)
        VALUES (OLD.job_id, TG_OP, OLD.status, OLD.attempt, OLD.worker_id, term);
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.status IS NOT DISTINCT FROM OLD.status
       AND NEW.attempt = OLD.attempt AND NEW.worker_id IS NOT DISTINCT FROM OLD.worker_id THEN
        RETURN NEW;  -- heartbeats and lease renewals: not a transition
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO chaos_job_history
            (job_id, op, new_status, attempt, worker_id, dedup_key, window_start, epoch)
        VALUES (NEW.job_id, TG_OP, NEW.status, NEW.attempt, NEW.worker_id, NEW.dedup_key,
                NEW.window_start, term);
    ELSE
        INSERT INTO chaos_job_history
            (job_id, op, old_status, new_status, attempt, worker_id, old_worker_id, dedup_key,
             window_start, old_lease_until, epoch)
        VALUES (NEW.job_id, TG_OP, OLD.status, NEW.status, NEW.attempt, NEW.worker_id,
                OLD.worker_id, NEW.dedup_key, NEW.window_start, OLD.lease_until, term);
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION chaos_log_leader() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.epoch IS DISTINCT FROM OLD.epoch THEN
        INSERT INTO chaos_leader_history (epoch, leader_id, pid) VALUES (NEW.epoch, NEW.leader_id, NEW.pid);
    END IF;
    RETURN NEW;
END $$;

-- Each committed pass of the periodic registrar (its stamp): the gaps between them are the
-- leaderless gaps whose windows follow the misfire policies.
CREATE OR REPLACE FUNCTION chaos_log_pass() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_pass_history (pass_at, epoch) VALUES (NEW.pass_at, NEW.epoch);
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS chaos_log_job ON scheduled_jobs;
CREATE TRIGGER chaos_log_job AFTER INSERT OR UPDATE OR DELETE ON scheduled_jobs
    FOR EACH ROW EXECUTE FUNCTION chaos_log_job();
DROP TRIGGER IF EXISTS chaos_log_leader ON scheduler_leader;
CREATE TRIGGER chaos_log_leader AFTER UPDATE ON scheduler_leader
    FOR EACH ROW EXECUTE FUNCTION chaos_log_leader();
DROP TRIGGER IF EXISTS chaos_log_pass ON scheduler_periodic_pass;
CREATE TRIGGER chaos_log_pass AFTER UPDATE ON scheduler_periodic_pass
    FOR EACH ROW EXECUTE FUNCTION chaos_log_pass();
"""

SELECT_JOB_HISTORY = """
SELECT job_id, op, old_status, new_status, attempt, worker_id, old_worker_id, dedup_key,
       extract(epoch FROM window_start)::float8 AS window_start,
       extract(epoch FROM old_lease_until)::float8 AS old_lease_until, epoch,
       extract(epoch FROM at)::float8 AS t
  FROM chaos_job_history ORDER BY id
"""
SELECT_LEADER_HISTORY = """
SELECT epoch, leader_id, pid, extract(epoch FROM at)::float8 AS t
  FROM chaos_leader_history ORDER BY epoch
"""
SELECT_PASSES = """
SELECT extract(epoch FROM pass_at)::float8 AS pass_at, epoch FROM chaos_pass_history ORDER BY pass_at
"""
SELECT_JOBS = """
SELECT job_id, job_name, status, attempt, retry_count, max_retries, dedup_key,
       extract(epoch FROM window_start)::float8 AS window_start, error_message, queue,
       concurrency_key
  FROM scheduled_jobs
"""


@dataclass(frozen=True)
class Transition:
    job_id: str
    op: str
    old_status: str | None
    new_status: str | None
    attempt: int | None
    worker_id: str | None
    old_worker_id: str | None
    dedup_key: str | None
    window_start: float | None
    old_lease_until: float | None
    epoch: int | None
    t: float


@dataclass(frozen=True)
class Term:
    epoch: int
    leader_id: str | None
    pid: int | None
    t: float


@dataclass(frozen=True)
class FinalRow:
    job_id: str
    job_name: str
    status: str
    attempt: int
    retry_count: int
    max_retries: int
    dedup_key: str | None
    window_start: float | None
    error_message: str | None
    queue: str = "default"
    concurrency_key: str | None = None


async def install(conn: asyncpg.Connection) -> None:
    """Create the log tables and triggers (after the scheduler's migrations)."""
    await conn.execute(INSTALL)


async def load(
    conn: asyncpg.Connection,
) -> tuple[list[Transition], list[Term], list[FinalRow], list[float], list[int | None]]:
    """The job history, the leader terms, the final rows, and the registrar's pass stamps with
    the term of each."""
    transitions = [Transition(**dict(r)) for r in await conn.fetch(SELECT_JOB_HISTORY)]
    terms = [Term(**dict(r)) for r in await conn.fetch(SELECT_LEADER_HISTORY)]
    rows = [FinalRow(**dict(r)) for r in await conn.fetch(SELECT_JOBS)]
    stamps = await conn.fetch(SELECT_PASSES)
    return transitions, terms, rows, [r["pass_at"] for r in stamps], [r["epoch"] for r in stamps]
