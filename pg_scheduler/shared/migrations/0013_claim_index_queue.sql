-- pg_scheduler schema, version 13: the claim index carries each pending job's queue.
--
-- Counting each queue's pending and due jobs (QUEUE_LIST: `queues list`, `Scheduler.get_queues`,
-- the dashboard's overview and queues page) read every pending row's heap tuple for its queue:
-- 654 ms with 100,000 pending jobs among 10 million rows (bench/dashboard_pages.py). With the
-- queue in the claim index (INCLUDE: stored in each entry, not part of its order), the count is
-- an index-only scan of the pending jobs. The index's order, and so every claim's plan, is
-- unchanged, and no index is added: a separate (queue, ...) index of pending jobs cost a batch
-- enqueue 20 % (60,000 jobs, 129,600 against 161,500 jobs/s), and one of (queue,
-- execution_time) was picked by the claim of limited queues, which then sorted every due job of
-- the queue (their drains fell to 0.17-0.32x of an unlimited one).
-- Rebuilding it reads the pending rows while writes wait: about 2 s with 100,000 pending jobs in
-- 10 million rows. On a bigger backlog, build it first without blocking writes (CREATE INDEX
-- CONCURRENTLY scheduled_jobs_claim_idx_13 ON ... the definition below; DROP INDEX CONCURRENTLY
-- scheduled_jobs_claim_idx; ALTER INDEX scheduled_jobs_claim_idx_13 RENAME TO
-- scheduled_jobs_claim_idx): this migration rebuilds the index only while it lacks the queue.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_index
                    WHERE indexrelid = to_regclass('scheduled_jobs_claim_idx')
                      AND indnatts > indnkeyatts) THEN
        DROP INDEX IF EXISTS scheduled_jobs_claim_idx;
        CREATE INDEX scheduled_jobs_claim_idx
            ON scheduled_jobs (priority, execution_time, job_name) INCLUDE (queue)
            WHERE status = 'pending';
    END IF;
END
$$;
