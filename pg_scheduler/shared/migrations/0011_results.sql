-- pg_scheduler schema, version 11: job results, and a notification when an awaited job ends.
--
-- scheduled_jobs.result: the JSON a job's function returned (NULL for None), written with its
-- completion; it goes when the row goes (vacuum).
-- scheduled_jobs.awaited: set by Scheduler.wait_for. Only awaited jobs notify when they reach a
-- final state, so that the jobs nobody waits for (nearly all) cost no NOTIFY: every NOTIFY
-- takes a cluster-wide lock at commit.
ALTER TABLE scheduled_jobs ADD COLUMN IF NOT EXISTS result JSONB;
ALTER TABLE scheduled_jobs ADD COLUMN IF NOT EXISTS awaited BOOLEAN NOT NULL DEFAULT false;

CREATE OR REPLACE FUNCTION pg_scheduler_notify_finished() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF NEW.status IN ('completed', 'failed', 'cancelled', 'expired') THEN
        PERFORM pg_notify('pg_scheduler_job_finished', NEW.job_id);
    END IF;
    RETURN NULL;
END
$fn$;

-- The state is tested in the function, not in WHEN or UPDATE OF: a trigger that names a column
-- there stops ALTER COLUMN ... TYPE of it (e.g. to COLLATE "C", which doctor advises).
CREATE OR REPLACE TRIGGER scheduled_jobs_notify_finished
    AFTER UPDATE ON scheduled_jobs
    FOR EACH ROW
    WHEN (NEW.awaited)
    EXECUTE FUNCTION pg_scheduler_notify_finished();
