-- pg_scheduler schema, version 13: the pending jobs by queue.
--
-- Counting each queue's pending and due jobs (QUEUE_LIST: `queues list`, `Scheduler.get_queues`,
-- the dashboard's overview and queues page) read every pending row's heap tuple for its queue:
-- 654 ms with 100,000 pending jobs among 10 million rows, where an index led by the queue answers
-- the count by an index-only scan (bench/dashboard_pages.py). Its columns after the queue are the
-- claim's order (priority, due time, task), so that the claim of a limited queue, which reads
-- one queue's due jobs in that order and may be planned on this index, finds them in order: an
-- index of (queue, execution_time) made those claims sort every due job of the queue, and the
-- drains of limited queues fell to 0.17-0.32x of an unlimited one (bench, 60,000 jobs).
-- Only pending rows are in it, so it costs a job's insert (and a retry's update) one more entry
-- and nothing once the job runs. Building it scans the table while writes wait: about 2 s at 10
-- million rows; on a bigger table, build it first with CREATE INDEX CONCURRENTLY (the same
-- statement), and this migration then finds it there.
CREATE INDEX IF NOT EXISTS scheduled_jobs_pending_queue_idx
    ON scheduled_jobs (queue, priority, execution_time, job_name) WHERE status = 'pending';
