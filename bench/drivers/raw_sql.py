"""The raw ceiling's table and statements: run by ``raw_driver.py`` (inside the benchmark's
virtualenv, where this folder is ``sys.path[0]``) and measured alone by ``bench/sqlcost.py``."""

TABLE = """
CREATE TABLE raw_jobs (
    id           bigserial PRIMARY KEY,
    key          integer NOT NULL,
    enqueued_at  double precision NOT NULL,
    status       text NOT NULL DEFAULT 'pending',
    attempt      integer NOT NULL DEFAULT 0,
    finished_at  timestamptz
);
CREATE INDEX raw_jobs_pending_idx ON raw_jobs (id) WHERE status = 'pending';
CREATE INDEX raw_jobs_running_idx ON raw_jobs (id) WHERE status = 'running';
"""
CLAIM = """
UPDATE raw_jobs SET status = 'running', attempt = attempt + 1
 WHERE id IN (SELECT id FROM raw_jobs WHERE status = 'pending'
               ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id, key, enqueued_at
"""
DONE_ONE = "UPDATE raw_jobs SET status = 'done', finished_at = now() WHERE id = $1"
DONE_MANY = "UPDATE raw_jobs SET status = 'done', finished_at = now() WHERE id = ANY($1::bigint[])"
