"""What the web dashboard reads (pg_scheduler/dashboard/): counts for its overview, cheap at any
size of ``scheduled_jobs``.

Each statement is bounded by an index, or by a cap, so that its cost does not grow with the
table: running jobs through the running index (a small set), pending and due jobs counted up to
a cap through the pending indexes, finished jobs of the last hour through the finished index.
The totals of the finished states, which can be tens of millions of rows, are estimated from the
planner's statistics instead (the table's row estimate times each state's frequency). The
dashboard runs them after ``DB_SET_CUSTOM_PLANS`` (each planned with its values, so a state
given as a parameter can use the partial index of that state) and under a statement timeout.
"""

from __future__ import annotations

from .admin import _PENDING_PRIORITIES

# The rows of one state, counted up to $2 (the caller shows "$2 - 1 or more" when it gets $2):
# an index-only scan of that state's partial index, stopped at the cap. $1: the state.
JOB_COUNT_CAPPED = """
SELECT count(*)::int FROM (
    SELECT 1 FROM scheduled_jobs WHERE status = $1 LIMIT $2
) AS capped
"""

# The planner's estimate of the table's rows (-1: never analyzed) and the frequency of each
# common status value, from the last ANALYZE (autovacuum keeps it fresh). NULL arrays when the
# column has no statistics yet.
JOB_COUNT_ESTIMATED_BY_STATUS = """
SELECT c.reltuples::float8 AS total,
       s.most_common_vals::text::text[] AS states,
       s.most_common_freqs AS freqs,
       s.null_frac AS null_frac
  FROM pg_class AS c
  LEFT JOIN pg_stats AS s
    ON s.schemaname = current_schema() AND s.tablename = c.relname AND s.attname = 'status'
 WHERE c.oid = to_regclass('scheduled_jobs')
"""

# Pending jobs whose due time has passed, counted up to $1 within each priority, and how many
# seconds the oldest of them has waited. A loose index scan over the claim index finds the
# priorities in use (a handful), then one bounded range scan per priority: the cost follows the
# due rows (capped), not the pending ones due later.
JOB_COUNT_DUE = f"""
{_PENDING_PRIORITIES}
SELECT coalesce(sum(due.n), 0)::int AS due,
       CASE WHEN min(due.oldest) IS NOT NULL  -- greatest() would turn "none due" into 0
            THEN greatest(extract(epoch FROM now() - min(due.oldest)), 0) END::float8 AS oldest_due_seconds
  FROM prios AS p
  CROSS JOIN LATERAL (
      SELECT count(*) AS n, min(capped.execution_time) AS oldest FROM (
          SELECT j.execution_time FROM scheduled_jobs AS j
           WHERE j.status = 'pending' AND j.priority = p.priority AND j.execution_time <= now()
           ORDER BY j.execution_time
           LIMIT $1) AS capped) AS due
 WHERE p.priority IS NOT NULL
"""

# Completed and failed jobs per minute over the last hour (minutes with none are left out), from
# the finished index: a range scan of the hour in each of the two states.
JOB_COUNT_FINISHED_BY_MINUTE = """
SELECT date_trunc('minute', finished_at) AS minute,
       count(*) FILTER (WHERE status = 'completed')::int AS completed,
       count(*) FILTER (WHERE status = 'failed')::int AS failed
  FROM scheduled_jobs
 WHERE status IN ('completed', 'failed')
   AND finished_at >= date_trunc('minute', now()) - interval '59 minutes'
 GROUP BY 1
 ORDER BY 1
"""

# The first minute of the chart, on the database clock (the chart's 60 bars end at now()'s).
DB_GET_CHART_START = "SELECT date_trunc('minute', now()) - interval '59 minutes'"
