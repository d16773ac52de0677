-- pg_scheduler schema, version 13: the pending jobs by queue.
--
-- Counting each queue's pending and due jobs (QUEUE_LIST: `queues list`, `Scheduler.get_queues`,
-- the dashboard's overview and queues page) read every pending row's heap tuple for its queue:
-- 654 ms with 100,000 pending jobs among 10 million rows, where this index answers the count by
-- an index-only scan in 18-23 ms (bench/dashboard_pages.py). Only pending rows are in it, so it
-- costs a job's insert (and a retry's update) one more entry and nothing once the job runs; at
-- 100,000 pending jobs it is 3.3 MB and builds in about 2 s, during which writes wait.
CREATE INDEX IF NOT EXISTS scheduled_jobs_pending_queue_idx
    ON scheduled_jobs (queue, execution_time) WHERE status = 'pending';
