-- pg_scheduler schema, version 2: the process registry knows who started whom.
--
-- ``pg-scheduler run`` registers its supervisor (kind 'supervisor') and each worker process
-- (kind 'worker', supervisor_id set); in-process Schedulers register as kind 'scheduler'.
-- ``pg-scheduler status`` reads the tree from here.

ALTER TABLE scheduler_workers
    ADD COLUMN IF NOT EXISTS supervisor_id TEXT;
