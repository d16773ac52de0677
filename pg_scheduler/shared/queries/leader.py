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
# The statement timeout of an unfenced maintenance transaction, set first in it.
DB_SET_STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', $1, true)"
# Every leader transaction opens with this share lock: a new leader's epoch bump waits for it,
# and after the bump the old epoch matches no row, so a deposed leader's writes fail.
# set_config: the transaction carries its epoch, so a trigger or an audit can tell which term
# wrote what (the chaos suite checks that no two terms ever acted at once); its statement
# timeout and its idle-in-transaction timeout, so that the server ends the transaction of a
# leader frozen inside it (supervisor/fence.py).
# $1 epoch, $2 statement_timeout_ms, $3 idle_in_transaction_ms
LEADER_FENCE = """
SELECT set_config('pg_scheduler.epoch', epoch::text, true),
       set_config('statement_timeout', $2, true),
       set_config('idle_in_transaction_session_timeout', $3, true)
  FROM scheduler_leader WHERE epoch = $1 FOR SHARE
"""
