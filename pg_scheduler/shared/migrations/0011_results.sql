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
    PERFORM pg_notify('pg_scheduler_job_finished', NEW.job_id);
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE TRIGGER scheduled_jobs_notify_finished
    AFTER UPDATE OF status ON scheduled_jobs
    FOR EACH ROW
    WHEN (NEW.awaited AND NEW.status IN ('completed', 'failed', 'cancelled', 'expired'))
    EXECUTE FUNCTION pg_scheduler_notify_finished();
