-- pg_scheduler schema, version 17: the hand-over's pick, in PL/pgSQL and asked for no more than
-- the hand-over claims.
--
-- pg_scheduler_pick_due: pg_scheduler.shared.queries.claim.PICK_DUE_FUNCTION, whose docstring
-- says how it works. Migration 15 wrote it in SQL, whose functions keep their plans only from
-- PostgreSQL 18 on; its statement is now PL/pgSQL's, planned once per session on every
-- supported version. A function's rows are all made before its caller reads them, so the
-- hand-over now asks each queue for no more than its share of the claim's limit: asked for each
-- queue's completions, it locked rows it would not claim when those outnumbered the limit.
-- pg_scheduler_claim_limited: pg_scheduler.shared.queries.claim.LIMITED_CLAIM_FUNCTION, whose
-- first statement is the hand-over (tests/unit/test_migrations.py checks both copies are the
-- code's text). Class 1347633924 is pg_scheduler.shared.locks.QUEUE_LOCK_CLASS.
CREATE OR REPLACE FUNCTION pg_scheduler_pick_due(
    queue_name TEXT, names TEXT[], n BIGINT)
RETURNS SETOF tid
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    RETURN QUERY
    SELECT b.tid FROM (
        SELECT j.ctid AS tid FROM scheduled_jobs AS j
         WHERE j.status = 'pending' AND j.execution_time <= now() AND j.queue = queue_name
       AND j.job_name = ANY (names::text[]) AND 
(j.overlap IS NULL OR j.overlap = 'allow'
 OR NOT EXISTS (SELECT 1 FROM scheduled_jobs AS r
                 WHERE r.dedup_key = j.dedup_key AND r.status = 'running'))
 AND 
(j.window_start IS NULL OR j.execution_time <> j.window_start
 OR j.window_start >= now() - interval '1 seconds'
 OR j.window_start <= coalesce((SELECT pass_at FROM scheduler_periodic_pass), 'infinity'))

         ORDER BY j.priority, j.execution_time
         LIMIT 128
           FOR UPDATE SKIP LOCKED) AS b
     LIMIT n;
END
$fn$;

CREATE OR REPLACE FUNCTION pg_scheduler_claim_limited(
    worker TEXT, done_ids TEXT[], done_attempts INTEGER[], names TEXT[], max_jobs INTEGER,
    lease DOUBLE PRECISION, tolerance DOUBLE PRECISION, only_queues TEXT[])
RETURNS TABLE (claim BOOLEAN, job_id TEXT, attempt INTEGER, job_name TEXT, task_data JSONB,
               status TEXT, execution_time TIMESTAMPTZ, started_at TIMESTAMPTZ,
               timeout_seconds DOUBLE PRECISION, retry_count INTEGER, max_retries INTEGER,
               use_advisory_lock BOOLEAN, dedup_key TEXT, window_start TIMESTAMPTZ,
               priority INTEGER, overlap TEXT, lag_seconds DOUBLE PRECISION,
               window_lag_seconds DOUBLE PRECISION)
LANGUAGE plpgsql VOLATILE
-- A generic plan for every statement: a custom plan of these statements costs more to make
-- than it saves (their arrays' sizes are unknown to a generic plan, so PostgreSQL would
-- otherwise plan some of them afresh at every call).
SET plan_cache_mode = force_generic_plan
-- No bitmap scans: the running set is read by index scans, the only kind that marks the entries
-- of finished runs dead in the index (until vacuum, every run leaves one in the running index),
-- so that later claims skip them. A bitmap scan visits each of their rows at every claim.
SET enable_bitmapscan = off
AS $fn$
#variable_conflict use_column
DECLARE
    lq RECORD;
    queue_name TEXT;
    held TEXT[];
    keyless BOOLEAN;
    tids TID[];
    scanned BIGINT;
    claim_at TIMESTAMPTZ;
    may_wait BOOLEAN := true;
    got INTEGER;
    any_keyless BOOLEAN;
BEGIN
    -- The worker's completions first, and the jobs that take over their slots in queues limited
    -- by a concurrency alone (_complete_and_hand_over): the other slots they free count as free
    -- to the claims below, which run in later snapshots of this transaction. Refused completions
    -- count against max_jobs too (they are rare: a lease lost; the worker's loop claims for
    -- those slots). A claimer that has sent completions holds their rows' locks, so it waits for
    -- no queue lock: a claimer holding that lock may be waiting for one of those rows.
    IF cardinality(done_ids) > 0 THEN
        may_wait := false;
        RETURN QUERY
WITH mine AS (
    SELECT j.job_id, j.lease_until > clock_timestamp() AS live
      FROM (SELECT * FROM unnest(done_ids::text[], done_attempts::int[]) AS r(job_id, attempt)
             ORDER BY job_id) AS r
     CROSS JOIN LATERAL (
           SELECT j.job_id, j.worker_id, j.status, j.lease_until FROM scheduled_jobs AS j
            WHERE j.job_id = r.job_id AND j.attempt = r.attempt
           OFFSET 0
              FOR UPDATE) AS j
     WHERE j.worker_id = worker AND j.status = 'running'
),
done AS (
UPDATE scheduled_jobs AS j
   SET status = 'completed', finished_at = now(), lease_until = NULL, error_message = NULL
  FROM mine
 WHERE j.job_id = mine.job_id
RETURNING j.job_id, j.attempt, j.queue, j.started_at, mine.live
), capped AS MATERIALIZED (
    SELECT q.name, q.concurrency, q.concurrency_since, q.xmin AS version
      FROM scheduler_queues AS q
     WHERE q.name IN (SELECT done.queue FROM done WHERE done.live)
       AND q.concurrency IS NOT NULL AND q.rate_limit IS NULL
       AND q.key_concurrency IS NULL AND NOT q.paused
       AND (only_queues IS NULL OR q.name = ANY (only_queues))
), handing AS (
    -- The queues' locks are tried only for those queues (MATERIALIZED: never pushed below
    -- their test).
    SELECT c.name, c.concurrency, c.concurrency_since
      FROM capped AS c
     WHERE CASE WHEN pg_try_advisory_xact_lock_shared(1347633924, hashtext(c.name))
                THEN pg_scheduler_queue_version(c.name) = c.version
                ELSE false END
), handed AS (
    -- Each queue's share, cut so that the shares add up to no more than the claim's limit:
    -- pg_scheduler_pick_due locks every row it returns.
    SELECT h.name AS queue,
           least(count(*), max_jobs - coalesce(sum(count(*)) OVER (ORDER BY h.name ROWS BETWEEN
                                                                  UNBOUNDED PRECEDING AND 1 PRECEDING),
                                              0))::bigint AS n
      FROM done JOIN handing AS h ON h.name = done.queue
     WHERE done.live
     GROUP BY h.name, h.concurrency, h.concurrency_since
    HAVING bool_and((done.started_at > h.concurrency_since + interval '1 second') IS TRUE)
        OR (SELECT count(*) FROM scheduled_jobs AS r
             WHERE r.status = 'running' AND r.queue = h.name AND r.lease_until > now()) <= h.concurrency
), picked AS (
    SELECT t.tid FROM handed
     CROSS JOIN LATERAL pg_scheduler_pick_due(handed.queue, names::text[], greatest(handed.n, 0))
                     AS t(tid)
     LIMIT max_jobs
), claimed AS (
UPDATE scheduled_jobs AS j SET
    (status, attempt, worker_id, lease_until, last_heartbeat, started_at, finished_at, error_message) =
    ROW(CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN 'expired' ELSE 'running' END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN j.attempt ELSE j.attempt + 1 END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN NULL ELSE worker END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN NULL ELSE now() + make_interval(secs => lease) END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN j.last_heartbeat ELSE now() END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN j.started_at ELSE clock_timestamp() END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN now() ELSE NULL END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance))
             THEN format('misfired: %s s late, misfire grace is %s s',
                         round(extract(epoch FROM now() - j.execution_time)::numeric, 3),
                         j.misfire_grace_time)
             ELSE j.error_message END)
 WHERE j.ctid = ANY (ARRAY(SELECT tid FROM picked)) AND j.status = 'pending'
RETURNING j.job_id, j.attempt, j.job_name, j.task_data, j.status, j.execution_time, j.started_at,
          j.timeout_seconds, j.retry_count, j.max_retries, j.use_advisory_lock, j.dedup_key,
          j.window_start, j.priority, j.overlap,
          extract(epoch FROM now() - j.execution_time)::float8 AS lag_seconds,
          extract(epoch FROM now() - j.window_start)::float8 AS window_lag_seconds

)
SELECT true, claimed.* FROM claimed
UNION ALL
SELECT false, r.job_id, r.attempt, NULL::text, NULL::jsonb, NULL::text, NULL::timestamptz, NULL::timestamptz, NULL::float8,
               NULL::int, NULL::int, NULL::boolean, NULL::text, NULL::timestamptz, NULL::int,
               NULL::text, NULL::float8, NULL::float8
  FROM unnest(done_ids, done_attempts) AS r(job_id, attempt)
 WHERE NOT EXISTS (SELECT FROM done WHERE done.job_id = r.job_id AND done.attempt = r.attempt);
        GET DIAGNOSTICS got = ROW_COUNT;
        max_jobs := max_jobs - got;
        IF max_jobs <= 0 THEN
            RETURN;
        END IF;
    END IF;
    FOR lq IN
        SELECT q.name, q.key_concurrency, q.concurrency IS NULL AND q.rate_limit IS NULL AS by_key
          FROM scheduler_queues AS q
         WHERE q.limited AND NOT q.paused
           AND (only_queues IS NULL OR q.name = ANY (only_queues))
           -- One probe of the next-due index per task name.
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
        queue_name := lq.name;
        IF lq.by_key THEN
            -- Limited by key only: the queue's lock shared (claims that count the whole queue
            -- take it alone), and the locks of the keys it claims.
            CONTINUE WHEN NOT pg_try_advisory_xact_lock_shared(1347633924, hashtext(queue_name));
            may_wait := false;
            -- A key whose jobs another claimer claimed and committed after this claim's
            -- snapshot, but before it tried the key's lock, is held for nothing: the claim finds
            -- the key full. Then it looks again, in a later snapshot that sees that key running,
            -- so that racing claimers come back with what they asked for. It looks again, wider,
            -- too when its first rows held too few keys with room (one key's many jobs first).
            any_keyless := false;
            FOR tries IN 1..3 LOOP
                IF tries = 1 THEN
                    WITH r AS (
    SELECT j.ctid AS tid, j.concurrency_key AS k, j.priority, j.execution_time
      FROM scheduled_jobs AS j
     WHERE j.status = 'pending' AND j.execution_time <= now() AND j.queue = queue_name
       AND j.job_name = ANY (names::text[]) AND 
(j.overlap IS NULL OR j.overlap = 'allow'
 OR NOT EXISTS (SELECT 1 FROM scheduled_jobs AS r
                 WHERE r.dedup_key = j.dedup_key AND r.status = 'running'))
 AND 
(j.window_start IS NULL OR j.execution_time <> j.window_start
 OR j.window_start >= now() - interval '1 seconds'
 OR j.window_start <= coalesce((SELECT pass_at FROM scheduler_periodic_pass), 'infinity'))

       AND (j.concurrency_key IS NULL OR j.concurrency_key NOT IN (
               SELECT b.concurrency_key FROM scheduled_jobs AS b
                WHERE b.status = 'running' AND b.queue = queue_name AND b.lease_until > now()
                  AND b.concurrency_key IS NOT NULL
                GROUP BY b.concurrency_key HAVING count(*) >= lq.key_concurrency))
     ORDER BY j.priority, j.execution_time
     LIMIT 64
), locked AS (
    -- OFFSET 0 keeps the try-lock out of the grouping (PostgreSQL would push it down as a
    -- HAVING test and try the lock of every key read); above it, the try-locks run in the
    -- keys' order, and the LIMIT stops them once ``limit`` keys are held.
    SELECT c.k
      FROM (SELECT r.k FROM r GROUP BY r.k ORDER BY min(r.priority), min(r.execution_time)
            OFFSET 0) AS c
     WHERE c.k IS NULL OR pg_try_advisory_xact_lock(1347633925, hashtext(queue_name || ':' || c.k))
     LIMIT max_jobs
)
SELECT coalesce(array_agg(locked.k) FILTER (WHERE locked.k IS NOT NULL), '{}'),
       coalesce(bool_or(locked.k IS NULL), false),
       ARRAY(SELECT r.tid FROM r WHERE r.k IN (SELECT locked.k FROM locked)),
       (SELECT count(*) FROM r)
  INTO held, keyless, tids, scanned
  FROM locked;
                ELSE
                    WITH r AS (
    SELECT j.ctid AS tid, j.concurrency_key AS k, j.priority, j.execution_time
      FROM scheduled_jobs AS j
     WHERE j.status = 'pending' AND j.execution_time <= now() AND j.queue = queue_name
       AND j.job_name = ANY (names::text[]) AND 
(j.overlap IS NULL OR j.overlap = 'allow'
 OR NOT EXISTS (SELECT 1 FROM scheduled_jobs AS r
                 WHERE r.dedup_key = j.dedup_key AND r.status = 'running'))
 AND 
(j.window_start IS NULL OR j.execution_time <> j.window_start
 OR j.window_start >= now() - interval '1 seconds'
 OR j.window_start <= coalesce((SELECT pass_at FROM scheduler_periodic_pass), 'infinity'))

       AND (j.concurrency_key IS NULL OR j.concurrency_key NOT IN (
               SELECT b.concurrency_key FROM scheduled_jobs AS b
                WHERE b.status = 'running' AND b.queue = queue_name AND b.lease_until > now()
                  AND b.concurrency_key IS NOT NULL
                GROUP BY b.concurrency_key HAVING count(*) >= lq.key_concurrency))
     ORDER BY j.priority, j.execution_time
     LIMIT 256
), locked AS (
    -- OFFSET 0 keeps the try-lock out of the grouping (PostgreSQL would push it down as a
    -- HAVING test and try the lock of every key read); above it, the try-locks run in the
    -- keys' order, and the LIMIT stops them once ``limit`` keys are held.
    SELECT c.k
      FROM (SELECT r.k FROM r GROUP BY r.k ORDER BY min(r.priority), min(r.execution_time)
            OFFSET 0) AS c
     WHERE c.k IS NULL OR pg_try_advisory_xact_lock(1347633925, hashtext(queue_name || ':' || c.k))
     LIMIT max_jobs
)
SELECT coalesce(array_agg(locked.k) FILTER (WHERE locked.k IS NOT NULL), '{}'),
       coalesce(bool_or(locked.k IS NULL), false),
       ARRAY(SELECT r.tid FROM r WHERE r.k IN (SELECT locked.k FROM locked)),
       (SELECT count(*) FROM r)
  INTO held, keyless, tids, scanned
  FROM locked;
                END IF;
                any_keyless := any_keyless OR keyless;
                PERFORM 1 FROM scheduled_jobs
             WHERE status = 'running' AND queue = queue_name AND concurrency_key = ANY (held)
               AND lease_until <= clock_timestamp()
             ORDER BY job_id
               FOR KEY SHARE;
                RETURN QUERY
WITH q AS (
    SELECT key_concurrency FROM scheduler_queues
     WHERE name = queue_name AND NOT paused AND concurrency IS NULL AND rate_limit IS NULL
), keys AS MATERIALIZED (
    -- Once per claim, not once per due row (inlined, it would be a subquery of each).
    SELECT concurrency_key AS k, count(*) AS n FROM scheduled_jobs
     WHERE status = 'running' AND queue = queue_name AND lease_until > now()
       AND concurrency_key = ANY (held)
     GROUP BY concurrency_key
), due AS (
    SELECT j.ctid AS tid, j.concurrency_key AS k, j.priority, j.execution_time
      FROM scheduled_jobs AS j
     WHERE j.ctid = ANY (tids) AND j.status = 'pending' AND j.execution_time <= now() AND j.queue = queue_name
       AND j.job_name = ANY (names::text[]) AND 
(j.overlap IS NULL OR j.overlap = 'allow'
 OR NOT EXISTS (SELECT 1 FROM scheduled_jobs AS r
                 WHERE r.dedup_key = j.dedup_key AND r.status = 'running'))
 AND 
(j.window_start IS NULL OR j.execution_time <> j.window_start
 OR j.window_start >= now() - interval '1 seconds'
 OR j.window_start <= coalesce((SELECT pass_at FROM scheduler_periodic_pass), 'infinity'))
 AND j.concurrency_key = ANY (held)
), picked AS (
    SELECT d.tid FROM (
        SELECT due.*, row_number() OVER (PARTITION BY due.k
                                         ORDER BY due.priority, due.execution_time) AS rn
          FROM due) AS d, q
     WHERE d.rn <= q.key_concurrency - coalesce((SELECT keys.n FROM keys WHERE keys.k = d.k), 0)
     ORDER BY d.priority, d.execution_time
     LIMIT max_jobs
), claimed AS (
UPDATE scheduled_jobs AS j SET
    (status, attempt, worker_id, lease_until, last_heartbeat, started_at, finished_at, error_message) =
    ROW(CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN 'expired' ELSE 'running' END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN j.attempt ELSE j.attempt + 1 END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN NULL ELSE worker END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN NULL ELSE now() + make_interval(secs => lease) END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN j.last_heartbeat ELSE now() END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN j.started_at ELSE now() END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN now() ELSE NULL END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance))
             THEN format('misfired: %s s late, misfire grace is %s s',
                         round(extract(epoch FROM now() - j.execution_time)::numeric, 3),
                         j.misfire_grace_time)
             ELSE j.error_message END)
 WHERE j.ctid = ANY (ARRAY(SELECT tid FROM picked)) AND j.status = 'pending'
RETURNING j.job_id, j.attempt, j.job_name, j.task_data, j.status, j.execution_time, j.started_at,
          j.timeout_seconds, j.retry_count, j.max_retries, j.use_advisory_lock, j.dedup_key,
          j.window_start, j.priority, j.overlap,
          extract(epoch FROM now() - j.execution_time)::float8 AS lag_seconds,
          extract(epoch FROM now() - j.window_start)::float8 AS window_lag_seconds

)
SELECT true, claimed.* FROM claimed;
                GET DIAGNOSTICS got = ROW_COUNT;
                max_jobs := max_jobs - got;
                EXIT WHEN max_jobs <= 0 OR (got >= cardinality(held)
                                            AND (tries > 1 OR scanned < 64));
            END LOOP;
            IF any_keyless AND max_jobs > 0 THEN
                RETURN QUERY
WITH q AS (
    SELECT 1 FROM scheduler_queues
     WHERE name = queue_name AND NOT paused AND concurrency IS NULL AND rate_limit IS NULL
), picked AS (
    SELECT d.tid FROM (
        SELECT j.ctid AS tid FROM scheduled_jobs AS j
         WHERE j.status = 'pending' AND j.execution_time <= now() AND j.queue = queue_name
       AND j.job_name = ANY (names::text[]) AND 
(j.overlap IS NULL OR j.overlap = 'allow'
 OR NOT EXISTS (SELECT 1 FROM scheduled_jobs AS r
                 WHERE r.dedup_key = j.dedup_key AND r.status = 'running'))
 AND 
(j.window_start IS NULL OR j.execution_time <> j.window_start
 OR j.window_start >= now() - interval '1 seconds'
 OR j.window_start <= coalesce((SELECT pass_at FROM scheduler_periodic_pass), 'infinity'))
 AND j.concurrency_key IS NULL AND EXISTS (SELECT FROM q)
         ORDER BY j.priority, j.execution_time
         LIMIT 256
           FOR UPDATE SKIP LOCKED) AS d
     LIMIT max_jobs
), claimed AS (
UPDATE scheduled_jobs AS j SET
    (status, attempt, worker_id, lease_until, last_heartbeat, started_at, finished_at, error_message) =
    ROW(CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN 'expired' ELSE 'running' END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN j.attempt ELSE j.attempt + 1 END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN NULL ELSE worker END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN NULL ELSE now() + make_interval(secs => lease) END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN j.last_heartbeat ELSE now() END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN j.started_at ELSE now() END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN now() ELSE NULL END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance))
             THEN format('misfired: %s s late, misfire grace is %s s',
                         round(extract(epoch FROM now() - j.execution_time)::numeric, 3),
                         j.misfire_grace_time)
             ELSE j.error_message END)
 WHERE j.ctid = ANY (ARRAY(SELECT tid FROM picked)) AND j.status = 'pending'
RETURNING j.job_id, j.attempt, j.job_name, j.task_data, j.status, j.execution_time, j.started_at,
          j.timeout_seconds, j.retry_count, j.max_retries, j.use_advisory_lock, j.dedup_key,
          j.window_start, j.priority, j.overlap,
          extract(epoch FROM now() - j.execution_time)::float8 AS lag_seconds,
          extract(epoch FROM now() - j.window_start)::float8 AS window_lag_seconds

)
SELECT true, claimed.* FROM claimed;
                GET DIAGNOSTICS got = ROW_COUNT;
                max_jobs := max_jobs - got;
            END IF;
            CONTINUE;
        END IF;
        -- Only a claimer that holds no lock, nor rows it completed, waits for one: claimers
        -- never deadlock.
        IF may_wait THEN
            PERFORM pg_advisory_xact_lock(1347633924, hashtext(queue_name));
            may_wait := false;
        ELSIF NOT pg_try_advisory_xact_lock(1347633924, hashtext(queue_name)) THEN
            CONTINUE;
        END IF;
        PERFORM 1 FROM scheduled_jobs
             WHERE status = 'running' AND queue = queue_name
               AND lease_until <= clock_timestamp()
             ORDER BY job_id
               FOR KEY SHARE;
        claim_at := clock_timestamp();
        IF lq.key_concurrency IS NULL THEN
            RETURN QUERY
WITH q AS (
    SELECT concurrency, key_concurrency, rate_limit, rate_period_seconds
      FROM scheduler_queues WHERE name = queue_name AND NOT paused
), live AS (
    SELECT concurrency_key AS k FROM scheduled_jobs
     WHERE status = 'running' AND queue = queue_name AND lease_until > now()
), started AS (
    SELECT count(*) AS n FROM scheduler_queue_starts AS s, q
     WHERE s.queue = queue_name AND s.started_at > claim_at - make_interval(secs => q.rate_period_seconds)
), room AS (
    SELECT greatest(0, least(max_jobs, coalesce(q.concurrency - (SELECT count(*) FROM live), max_jobs),
                                 coalesce(q.rate_limit - (SELECT n FROM started), max_jobs)))::int AS n,
           q.key_concurrency AS per_key
      FROM q
), picked AS (
    SELECT d.tid FROM (
        SELECT j.ctid AS tid FROM scheduled_jobs AS j
         WHERE j.status = 'pending' AND j.execution_time <= now() AND j.queue = queue_name
       AND j.job_name = ANY (names::text[]) AND 
(j.overlap IS NULL OR j.overlap = 'allow'
 OR NOT EXISTS (SELECT 1 FROM scheduled_jobs AS r
                 WHERE r.dedup_key = j.dedup_key AND r.status = 'running'))
 AND 
(j.window_start IS NULL OR j.execution_time <> j.window_start
 OR j.window_start >= now() - interval '1 seconds'
 OR j.window_start <= coalesce((SELECT pass_at FROM scheduler_periodic_pass), 'infinity'))

         ORDER BY j.priority, j.execution_time
         LIMIT 128
           FOR UPDATE SKIP LOCKED) AS d
     LIMIT CASE WHEN (SELECT per_key FROM room) IS NULL THEN coalesce((SELECT n FROM room), 0)
                ELSE 0 END
), claimed AS (
UPDATE scheduled_jobs AS j SET
    (status, attempt, worker_id, lease_until, last_heartbeat, started_at, finished_at, error_message) =
    ROW(CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN 'expired' ELSE 'running' END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN j.attempt ELSE j.attempt + 1 END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN NULL ELSE worker END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN NULL ELSE now() + make_interval(secs => lease) END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN j.last_heartbeat ELSE now() END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN j.started_at ELSE claim_at END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN now() ELSE NULL END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance))
             THEN format('misfired: %s s late, misfire grace is %s s',
                         round(extract(epoch FROM now() - j.execution_time)::numeric, 3),
                         j.misfire_grace_time)
             ELSE j.error_message END)
 WHERE j.ctid = ANY (ARRAY(SELECT tid FROM picked)) AND j.status = 'pending'
RETURNING j.job_id, j.attempt, j.job_name, j.task_data, j.status, j.execution_time, j.started_at,
          j.timeout_seconds, j.retry_count, j.max_retries, j.use_advisory_lock, j.dedup_key,
          j.window_start, j.priority, j.overlap,
          extract(epoch FROM now() - j.execution_time)::float8 AS lag_seconds,
          extract(epoch FROM now() - j.window_start)::float8 AS window_lag_seconds

), logged AS (
    INSERT INTO scheduler_queue_starts (queue, started_at)
    SELECT queue_name, claim_at FROM claimed, q WHERE claimed.status = 'running' AND q.rate_limit IS NOT NULL
), pruned AS (
    DELETE FROM scheduler_queue_starts AS s USING q
     WHERE s.queue = queue_name AND s.started_at <= claim_at - make_interval(secs => q.rate_period_seconds)
)
SELECT true, claimed.* FROM claimed;
        ELSE
            RETURN QUERY
WITH q AS (
    SELECT concurrency, key_concurrency, rate_limit, rate_period_seconds
      FROM scheduler_queues WHERE name = queue_name AND NOT paused
), live AS (
    SELECT concurrency_key AS k FROM scheduled_jobs
     WHERE status = 'running' AND queue = queue_name AND lease_until > now()
), started AS (
    SELECT count(*) AS n FROM scheduler_queue_starts AS s, q
     WHERE s.queue = queue_name AND s.started_at > claim_at - make_interval(secs => q.rate_period_seconds)
), room AS (
    SELECT greatest(0, least(max_jobs, coalesce(q.concurrency - (SELECT count(*) FROM live), max_jobs),
                                 coalesce(q.rate_limit - (SELECT n FROM started), max_jobs)))::int AS n,
           q.key_concurrency AS per_key
      FROM q
), keys AS MATERIALIZED (
    SELECT k, count(*) AS n FROM live WHERE k IS NOT NULL GROUP BY k
), due AS (
    SELECT j.ctid AS tid, j.concurrency_key AS k, j.priority, j.execution_time
      FROM scheduled_jobs AS j
     WHERE j.status = 'pending' AND j.execution_time <= now() AND j.queue = queue_name
       AND j.job_name = ANY (names::text[]) AND 
(j.overlap IS NULL OR j.overlap = 'allow'
 OR NOT EXISTS (SELECT 1 FROM scheduled_jobs AS r
                 WHERE r.dedup_key = j.dedup_key AND r.status = 'running'))
 AND 
(j.window_start IS NULL OR j.execution_time <> j.window_start
 OR j.window_start >= now() - interval '1 seconds'
 OR j.window_start <= coalesce((SELECT pass_at FROM scheduler_periodic_pass), 'infinity'))

       AND (j.concurrency_key IS NULL
            OR j.concurrency_key NOT IN (SELECT keys.k FROM keys, room WHERE keys.n >= room.per_key))
       AND EXISTS (SELECT FROM room WHERE room.n > 0)
     ORDER BY j.priority, j.execution_time
     LIMIT 256
), picked AS (
    SELECT d.tid FROM (
        SELECT due.*, row_number() OVER (PARTITION BY due.k
                                         ORDER BY due.priority, due.execution_time) AS rn
          FROM due) AS d, room
     WHERE d.k IS NULL OR room.per_key IS NULL
        OR d.rn <= room.per_key - coalesce((SELECT keys.n FROM keys WHERE keys.k = d.k), 0)
     ORDER BY d.priority, d.execution_time
     LIMIT (SELECT n FROM room)
), claimed AS (
UPDATE scheduled_jobs AS j SET
    (status, attempt, worker_id, lease_until, last_heartbeat, started_at, finished_at, error_message) =
    ROW(CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN 'expired' ELSE 'running' END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN j.attempt ELSE j.attempt + 1 END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN NULL ELSE worker END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN NULL ELSE now() + make_interval(secs => lease) END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN j.last_heartbeat ELSE now() END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN j.started_at ELSE claim_at END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance)) THEN now() ELSE NULL END,
        CASE WHEN (j.misfire_grace_time IS NOT NULL
             AND now() > j.execution_time + make_interval(secs => j.misfire_grace_time + tolerance))
             THEN format('misfired: %s s late, misfire grace is %s s',
                         round(extract(epoch FROM now() - j.execution_time)::numeric, 3),
                         j.misfire_grace_time)
             ELSE j.error_message END)
 WHERE j.ctid = ANY (ARRAY(SELECT tid FROM picked)) AND j.status = 'pending'
RETURNING j.job_id, j.attempt, j.job_name, j.task_data, j.status, j.execution_time, j.started_at,
          j.timeout_seconds, j.retry_count, j.max_retries, j.use_advisory_lock, j.dedup_key,
          j.window_start, j.priority, j.overlap,
          extract(epoch FROM now() - j.execution_time)::float8 AS lag_seconds,
          extract(epoch FROM now() - j.window_start)::float8 AS window_lag_seconds

), logged AS (
    INSERT INTO scheduler_queue_starts (queue, started_at)
    SELECT queue_name, claim_at FROM claimed, q WHERE claimed.status = 'running' AND q.rate_limit IS NOT NULL
), pruned AS (
    DELETE FROM scheduler_queue_starts AS s USING q
     WHERE s.queue = queue_name AND s.started_at <= claim_at - make_interval(secs => q.rate_period_seconds)
)
SELECT true, claimed.* FROM claimed;
        END IF;
        GET DIAGNOSTICS got = ROW_COUNT;
        max_jobs := max_jobs - got;
    END LOOP;
END
$fn$;
