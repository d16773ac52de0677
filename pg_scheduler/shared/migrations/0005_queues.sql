-- pg_scheduler schema, version 5: every job belongs to a queue, and may carry a concurrency key.
--
-- Both columns are added without rewriting the table (a constant default is stored in the
-- catalog), so the migration takes its lock for a moment only, whatever the number of rows.
-- Existing rows, and rows that a program of an earlier version inserts without naming the
-- columns, are in the queue 'default'.

ALTER TABLE scheduled_jobs
    ADD COLUMN IF NOT EXISTS queue            TEXT NOT NULL DEFAULT 'default',
    ADD COLUMN IF NOT EXISTS concurrency_key  TEXT;

-- The queue that a periodic job's windows are written in.
ALTER TABLE scheduler_periodic
    ADD COLUMN IF NOT EXISTS queue TEXT NOT NULL DEFAULT 'default';

-- The queues each process claims (NULL: every queue), for status and the registrar.
ALTER TABLE scheduler_workers
    ADD COLUMN IF NOT EXISTS queues TEXT[];
