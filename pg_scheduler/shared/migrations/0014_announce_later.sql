-- pg_scheduler schema, version 14: an insert may leave its wake-up to a NOTIFY sent after it.
--
-- A transaction that sends a NOTIFY takes a cluster-wide lock at commit and holds it through its
-- commit's WAL flush, so concurrent inserts that each notify commit one at a time. The insert
-- trigger still notifies, unless the inserting transaction has set pg_scheduler.announce to
-- 'later': Scheduler.schedule() sets it on the inserts it sends while a NOTIFY of its own is in
-- flight, and sends one NOTIFY after they commit (pg_scheduler/announcer.py). Every other writer
-- (raw SQL, pg-scheduler 0.2.3, schedule() in the caller's transaction, schedule_bulk) notifies
-- in its own commit.
CREATE OR REPLACE FUNCTION pg_scheduler_notify_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('pg_scheduler.announce', true) IS DISTINCT FROM 'later' THEN
        PERFORM pg_notify('pg_scheduler_jobs', '');
    END IF;
    RETURN NULL;
END;
$$;
