-- pg_scheduler schema, version 1.
--
-- Written to upgrade in place a database that pg-scheduler 0.2.3 created: its scheduled_jobs
-- table keeps its columns and rows, and gains what the guarantees need.

CREATE TABLE IF NOT EXISTS scheduled_jobs (
    job_id          TEXT PRIMARY KEY DEFAULT gen_random_uuid()::text,
    job_name        TEXT NOT NULL,
    execution_time  TIMESTAMPTZ NOT NULL,
    status          TEXT DEFAULT 'pending',
    task_data       JSONB,
    created_at      TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    last_heartbeat  TIMESTAMPTZ,
    lease_until     TIMESTAMPTZ,
    priority        INTEGER DEFAULT 5,
    retry_count     INTEGER DEFAULT 0,
    max_retries     INTEGER DEFAULT 0,
    worker_id       TEXT,
    error_message   TEXT
);

ALTER TABLE scheduled_jobs
    ADD COLUMN IF NOT EXISTS misfire_grace_time DOUBLE PRECISION,
    -- attempt: bumped by every claim; the fencing token of (job_id, worker_id, attempt).
    ADD COLUMN IF NOT EXISTS attempt            INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS started_at         TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS finished_at        TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS timeout_seconds    DOUBLE PRECISION,
    -- dedup_key + window_start: one row per periodic window in the whole cluster.
    ADD COLUMN IF NOT EXISTS dedup_key          TEXT,
    ADD COLUMN IF NOT EXISTS window_start       TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS use_advisory_lock  BOOLEAN NOT NULL DEFAULT false;

ALTER TABLE scheduled_jobs ALTER COLUMN misfire_grace_time TYPE DOUBLE PRECISION;

-- Rows finished under 0.2.3 have no finish time; vacuum ages rows from it.
UPDATE scheduled_jobs
   SET finished_at = coalesce(last_heartbeat, created_at, now())
 WHERE finished_at IS NULL
   AND status IN ('completed', 'failed', 'cancelled', 'expired');

-- 0.2.3's indexes: replaced by the ones below (its lease index covered pending rows only, and
-- nothing covered the misfire scan, which was a sequential scan in every poll).
DROP INDEX IF EXISTS idx_jobs_pending_priority;
DROP INDEX IF EXISTS idx_jobs_lease_expiration;
DROP INDEX IF EXISTS idx_jobs_running_heartbeat;
DROP INDEX IF EXISTS idx_jobs_worker_cleanup;

-- Claiming: due pending rows in priority order, filtered on the task names a worker can run.
CREATE INDEX IF NOT EXISTS scheduled_jobs_claim_idx
    ON scheduled_jobs (priority, execution_time, job_name) WHERE status = 'pending';
-- Idle waiting: the next due time per task name, one index probe per name.
CREATE INDEX IF NOT EXISTS scheduled_jobs_next_due_idx
    ON scheduled_jobs (job_name, execution_time) WHERE status = 'pending';
-- Rescue and release: the running set is small; find it without touching the rest.
CREATE INDEX IF NOT EXISTS scheduled_jobs_running_idx
    ON scheduled_jobs (worker_id) WHERE status = 'running';
-- Vacuum: finished rows by state and finish time.
CREATE INDEX IF NOT EXISTS scheduled_jobs_finished_idx
    ON scheduled_jobs (status, finished_at)
    WHERE status IN ('completed', 'failed', 'cancelled', 'expired');
-- Exactly one row per periodic window, whatever the number of replicas.
CREATE UNIQUE INDEX IF NOT EXISTS scheduled_jobs_periodic_window_key
    ON scheduled_jobs (dedup_key, window_start) WHERE dedup_key IS NOT NULL;

-- Wake idle workers when rows arrive: once per statement, so a bulk insert costs one NOTIFY.
CREATE OR REPLACE FUNCTION pg_scheduler_notify_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pg_scheduler_jobs', '');
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS scheduled_jobs_notify ON scheduled_jobs;
CREATE TRIGGER scheduled_jobs_notify
    AFTER INSERT ON scheduled_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION pg_scheduler_notify_jobs();

-- Leadership: the advisory lock says who leads; the epoch fences what a leader writes.
CREATE TABLE IF NOT EXISTS scheduler_leader (
    singleton   BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch       BIGINT NOT NULL DEFAULT 0,
    leader_id   TEXT,
    host        TEXT,
    pid         INTEGER,
    elected_at  TIMESTAMPTZ
);
INSERT INTO scheduler_leader (singleton, epoch) VALUES (true, 0) ON CONFLICT DO NOTHING;

-- Periodic definitions and their cluster-wide state (enabled, the window cursor).
CREATE TABLE IF NOT EXISTS scheduler_periodic (
    dedup_key          TEXT PRIMARY KEY,
    task_name          TEXT NOT NULL,
    job_name           TEXT NOT NULL,
    every_seconds      DOUBLE PRECISION,
    cron               TEXT,
    timezone           TEXT,
    priority           INTEGER NOT NULL DEFAULT 5,
    max_retries        INTEGER NOT NULL DEFAULT 0,
    use_advisory_lock  BOOLEAN NOT NULL DEFAULT false,
    enabled            BOOLEAN NOT NULL DEFAULT true,
    -- next_run_at: the first window not yet turned into a job row (NULL: start from now).
    next_run_at        TIMESTAMPTZ,
    last_window        TIMESTAMPTZ,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((every_seconds IS NULL) <> (cron IS NULL))
);

-- Every process that claims jobs (in-process Scheduler, worker, supervisor) with a heartbeat.
CREATE TABLE IF NOT EXISTS scheduler_workers (
    worker_id       TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    host            TEXT NOT NULL,
    pid             INTEGER NOT NULL,
    tasks           TEXT[] NOT NULL DEFAULT '{}',
    started_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_heartbeat  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS scheduler_vacuum_stats (
    stat_date  DATE NOT NULL DEFAULT CURRENT_DATE,
    state      TEXT NOT NULL,
    deleted    BIGINT NOT NULL DEFAULT 0,
    last_run   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (stat_date, state)
);
