-- pg_scheduler schema, version 6: the term of the leader whose registrar pass was stamped last.
--
-- A leaderless gap lies between two passes only if leadership changed hands between them: a
-- pass compares the epoch of the previous stamp with its own (the fence's pg_scheduler.epoch).
-- Epochs, not times: a deposed leader's last pass may commit after its successor's election
-- began, which no comparison of timestamps orders reliably.

ALTER TABLE scheduler_periodic_pass
    ADD COLUMN IF NOT EXISTS epoch BIGINT;
