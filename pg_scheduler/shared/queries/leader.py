"""Leadership: the election lock, the epoch, the leadership check, resignation, and the fence.

The fence statement opens every leader transaction."""

from __future__ import annotations

LEADER_TRY_LOCK = "SELECT pg_try_advisory_lock($1, $2)"
# $1 leader_id, $2 host, $3 pid
LEADER_BUMP_EPOCH = """
UPDATE scheduler_leader
   SET epoch = epoch + 1, leader_id = $1, host = $2, pid = $3, elected_at = now()
RETURNING epoch
"""
# Leadership is checked, never renewed by locking again (session advisory locks stack).
# $1 lock_classid, $2 lock_objid, $3 epoch
LEADER_CHECK = """
SELECT EXISTS (
           SELECT 1 FROM pg_locks
            WHERE locktype = 'advisory' AND database = (
                      SELECT oid FROM pg_database WHERE datname = current_database())
              AND classid = $1::int8::oid AND objid = $2::int8::oid AND objsubid = 2
              AND pid = pg_backend_pid() AND granted)
       AND (SELECT epoch FROM scheduler_leader) = $3
"""
LEADER_RESIGN = "SELECT pg_advisory_unlock($1, $2), pg_notify('pg_scheduler_leadership', 'resigned')"
# The statement timeout of a maintenance transaction (fenced or not), set first in it.
DB_SET_STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', $1, true)"
# Every leader transaction takes this share lock first (after its statement timeout): a new
# leader's epoch bump waits for it, and after the bump the old epoch matches no row, so a deposed
# leader's writes fail.
# set_config: the transaction carries its epoch, so a trigger or an audit can tell which term
# wrote what (the chaos suite checks that no two terms ever acted at once).
LEADER_FENCE = """
SELECT set_config('pg_scheduler.epoch', epoch::text, true)
  FROM scheduler_leader WHERE epoch = $1 FOR SHARE
"""
