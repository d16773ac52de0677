"""The process registry: register, heartbeat, deregister, and a supervisor's live workers."""

from __future__ import annotations

# A process's row: the tasks it can run and the queues it claims (NULL: every queue). Processes
# of this version enforce queue limits (enforces_limits; earlier ones register without it).
# $1 worker_id, $2 kind, $3 host, $4 pid, $5 tasks, $6 supervisor_id, $7 queues
WORKER_REGISTER = """
INSERT INTO scheduler_workers
    (worker_id, kind, host, pid, tasks, supervisor_id, queues, enforces_limits)
VALUES ($1, $2, $3, $4, $5::text[], $6, $7::text[], true)
ON CONFLICT (worker_id) DO UPDATE
   SET last_heartbeat = now(), tasks = EXCLUDED.tasks, queues = EXCLUDED.queues,
       enforces_limits = true
"""
WORKER_HEARTBEAT = "UPDATE scheduler_workers SET last_heartbeat = now() WHERE worker_id = $1"
WORKER_DEREGISTER = "DELETE FROM scheduler_workers WHERE worker_id = $1"
# The readiness probe of a supervisor ($1): its worker processes that registered and beat lately.
WORKER_COUNT_LIVE = """
SELECT count(*) FROM scheduler_workers
 WHERE supervisor_id = $1 AND kind = 'worker'
   AND last_heartbeat > now() - make_interval(secs => $2)
"""
