-- pg_scheduler schema, version 7: limits per queue, for the whole cluster.
--
-- A queue has a row once the code declares it (declare_queue) or an operator sets it (the CLI,
-- the API). The limits in force are concurrency, key_concurrency and rate_limit per
-- rate_period_seconds (NULL: no such limit); code_* hold the code's declaration, which the limits
-- in force follow until an operator overrides them (overridden_at) and again after a reset.
-- ``limited``: a claim of the queue must go through pg_scheduler_claim_limited; every other
-- queue is claimed by the plain claim statement, which leaves limited queues alone.
CREATE TABLE IF NOT EXISTS scheduler_queues (
    name                       TEXT PRIMARY KEY,
    concurrency                INTEGER CHECK (concurrency > 0),
    key_concurrency            INTEGER CHECK (key_concurrency > 0),
    rate_limit                 INTEGER CHECK (rate_limit > 0),
    rate_period_seconds        DOUBLE PRECISION CHECK (rate_period_seconds > 0),
    paused                     BOOLEAN NOT NULL DEFAULT false,
    paused_at                  TIMESTAMPTZ,
    code_concurrency           INTEGER,
    code_key_concurrency       INTEGER,
    code_rate_limit            INTEGER,
    code_rate_period_seconds   DOUBLE PRECISION,
    declared                   BOOLEAN NOT NULL DEFAULT false,
    overridden_at              TIMESTAMPTZ,
    updated_at                 TIMESTAMPTZ NOT NULL DEFAULT now(),
    limited                    BOOLEAN GENERATED ALWAYS AS (
        concurrency IS NOT NULL OR key_concurrency IS NOT NULL OR rate_limit IS NOT NULL
        OR paused) STORED,
    CHECK ((rate_limit IS NULL) = (rate_period_seconds IS NULL))
);

-- One row per start of a job in a rate-limited queue (retries are starts): the exact sliding
-- log that rate limits count. Claims prune rows older than the queue's period.
CREATE TABLE IF NOT EXISTS scheduler_queue_starts (
    queue       TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS scheduler_queue_starts_idx ON scheduler_queue_starts (queue, started_at);

-- Whether a process enforces queue limits (processes of earlier versions register without the
-- column and so read false): status warns about such processes while a queue is limited.
ALTER TABLE scheduler_workers
    ADD COLUMN IF NOT EXISTS enforces_limits BOOLEAN NOT NULL DEFAULT false;

-- The claim of limited queues. For each limited, unpaused queue (in random order, so that no
-- queue starves another) with due jobs of the given names, take the queue's transaction lock,
-- then run ``claim_sql`` for it: a statement of the caller's that counts the queue's live leases
-- and recent starts and claims only what fits. The lock serialises the claims of one queue, and
-- the statement, run after the lock is granted, takes a snapshot that sees every claim committed
-- before: the count can never miss a claim, so the limits are never exceeded. The lock is held
-- until the claim commits. Only the first lock is waited for; later ones are tried, and a queue
-- whose lock is busy is left to the next claim: a waiting claimer holds no lock, so claimers
-- never deadlock. Class 1347633924 is pg_scheduler.shared.locks.QUEUE_LOCK_CLASS.
CREATE OR REPLACE FUNCTION pg_scheduler_claim_limited(
    claim_sql TEXT, names TEXT[], max_jobs INTEGER, worker TEXT, lease DOUBLE PRECISION,
    tolerance DOUBLE PRECISION, only_queues TEXT[])
RETURNS TABLE (job_id TEXT, attempt INTEGER, job_name TEXT, task_data JSONB, status TEXT,
               execution_time TIMESTAMPTZ, started_at TIMESTAMPTZ,
               timeout_seconds DOUBLE PRECISION, retry_count INTEGER, max_retries INTEGER,
               use_advisory_lock BOOLEAN, dedup_key TEXT, window_start TIMESTAMPTZ,
               priority INTEGER, overlap TEXT, lag_seconds DOUBLE PRECISION,
               window_lag_seconds DOUBLE PRECISION)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    queue_name TEXT;
    waited BOOLEAN := false;
    claimed INTEGER;
BEGIN
    FOR queue_name IN
        SELECT q.name FROM scheduler_queues AS q
         WHERE q.limited AND NOT q.paused
           AND (only_queues IS NULL OR q.name = ANY (only_queues))
           -- One probe of the next-due index per task name (a bare EXISTS over the names was
           -- planned as a scan of every pending row).
           AND EXISTS (SELECT 1 FROM unnest(names) AS t(name)
                        CROSS JOIN LATERAL (
                              SELECT 1 FROM scheduled_jobs AS j
                               WHERE j.status = 'pending' AND j.job_name = t.name
                                 AND j.queue = q.name AND j.execution_time <= now()
                               ORDER BY j.execution_time
                               LIMIT 1) AS due)
         ORDER BY random()
    LOOP
        EXIT WHEN max_jobs <= 0;
        IF NOT waited THEN
            PERFORM pg_advisory_xact_lock(1347633924, hashtext(queue_name));
            waited := true;
        ELSIF NOT pg_try_advisory_xact_lock(1347633924, hashtext(queue_name)) THEN
            CONTINUE;
        END IF;
        RETURN QUERY EXECUTE claim_sql USING queue_name, names, max_jobs, worker, lease, tolerance;
        GET DIAGNOSTICS claimed = ROW_COUNT;
        max_jobs := max_jobs - claimed;
    END LOOP;
END
$$;
