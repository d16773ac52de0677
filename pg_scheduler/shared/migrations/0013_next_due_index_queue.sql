-- pg_scheduler schema, version 13: the index of pending jobs by task carries each one's queue.
--
-- Counting each queue's pending and due jobs (QUEUE_LIST: `queues list`, `Scheduler.get_queues`,
-- the dashboard's overview and queues page) read every pending row's heap tuple for its queue:
-- 654 ms with 100,000 pending jobs among 10 million rows (bench/dashboard_pages.py). With the
-- queue in scheduled_jobs_next_due_idx (INCLUDE: stored in each entry, not part of its order),
-- the count is an index-only scan of the pending jobs. That index serves the idle wait's probe
-- of the next due time per task, never a claim, so no claim's plan or cost changes; and no
-- index is added. What was tried first, and measured against (bench, 60,000 jobs):
-- - a separate (queue, execution_time) index of pending jobs: the claim of limited queues was
--   planned on it and sorted every due job of the queue (their drains fell to 0.17-0.32x);
-- - a separate (queue, priority, execution_time, job_name) one: a batch enqueue 20 % slower;
-- - the queue in the claim index: unlimited drains 0.87-0.89x of the commit before.
-- Rebuilding the index reads the pending rows while writes wait: about 2 s with 100,000 pending
-- jobs. On a bigger backlog, build it first without blocking writes (CREATE INDEX CONCURRENTLY
-- scheduled_jobs_next_due_idx_13 ON ... the definition below; DROP INDEX CONCURRENTLY
-- scheduled_jobs_next_due_idx; ALTER INDEX scheduled_jobs_next_due_idx_13 RENAME TO
-- scheduled_jobs_next_due_idx): this migration rebuilds it only while it lacks the queue.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_index
                    WHERE indexrelid = to_regclass('scheduled_jobs_next_due_idx')
                      AND indnatts > indnkeyatts) THEN
        DROP INDEX IF EXISTS scheduled_jobs_next_due_idx;
        CREATE INDEX scheduled_jobs_next_due_idx
            ON scheduled_jobs (job_name, execution_time) INCLUDE (queue)
            WHERE status = 'pending';
    END IF;
END
$$;
