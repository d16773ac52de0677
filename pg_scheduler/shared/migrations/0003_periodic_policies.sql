-- pg_scheduler schema, version 3: periodic policies, and schedules changed at run time.
--
-- Policies come from @periodic (code): DST gap and fold handling for cron schedules, what to do
-- with windows missed during downtime, and what to do with a window that comes while the
-- previous run still runs.
--
-- every_seconds / cron / timezone stay the schedule in force (what the registrar and status
-- read). The code's own schedule is kept in code_* so that a schedule set from the CLI
-- (overridden_at set) survives restarts of processes that publish the code's definition, and
-- `pg-scheduler periodic set KEY --reset` can go back to it.

ALTER TABLE scheduler_periodic
    ADD COLUMN IF NOT EXISTS on_dst_gap        TEXT NOT NULL DEFAULT 'shift',
    ADD COLUMN IF NOT EXISTS on_dst_fold       TEXT NOT NULL DEFAULT 'first',
    ADD COLUMN IF NOT EXISTS misfire           TEXT NOT NULL DEFAULT 'coalesce',
    ADD COLUMN IF NOT EXISTS catch_up_seconds  DOUBLE PRECISION,
    ADD COLUMN IF NOT EXISTS overlap           TEXT NOT NULL DEFAULT 'allow',
    ADD COLUMN IF NOT EXISTS code_every_seconds DOUBLE PRECISION,
    ADD COLUMN IF NOT EXISTS code_cron         TEXT,
    ADD COLUMN IF NOT EXISTS code_timezone     TEXT,
    ADD COLUMN IF NOT EXISTS overridden_at     TIMESTAMPTZ;

UPDATE scheduler_periodic
   SET code_every_seconds = every_seconds, code_cron = cron, code_timezone = timezone
 WHERE code_every_seconds IS NULL AND code_cron IS NULL;

ALTER TABLE scheduler_periodic
    ADD CONSTRAINT scheduler_periodic_on_dst_gap_check CHECK (on_dst_gap IN ('shift', 'skip')),
    ADD CONSTRAINT scheduler_periodic_on_dst_fold_check CHECK (on_dst_fold IN ('first', 'both')),
    ADD CONSTRAINT scheduler_periodic_misfire_check CHECK (misfire IN ('coalesce', 'skip', 'all')),
    ADD CONSTRAINT scheduler_periodic_overlap_check CHECK (overlap IN ('allow', 'skip', 'queue')),
    ADD CONSTRAINT scheduler_periodic_catch_up_check CHECK (catch_up_seconds IS NULL OR catch_up_seconds > 0);

-- Copied onto each window's row, so that claiming does not join the definitions.
ALTER TABLE scheduled_jobs ADD COLUMN IF NOT EXISTS overlap TEXT;

-- "Is a run of this periodic job running?": asked when claiming windows of skip/queue jobs.
CREATE INDEX IF NOT EXISTS scheduled_jobs_running_periodic_idx
    ON scheduled_jobs (dedup_key) WHERE status = 'running' AND dedup_key IS NOT NULL;
