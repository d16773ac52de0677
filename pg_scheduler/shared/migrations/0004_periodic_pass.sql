-- pg_scheduler schema, version 4: when the leader's periodic registrar last passed.
--
-- Each pass of the registrar stamps ``pass_at`` in its fenced transaction. A window row written
-- ahead whose start lies after the last stamp, and that is more than the pickup tolerance late,
-- passed while no leader ran: workers leave it alone until a leader's pass has applied the job's
-- misfire policy to it (queries/claim.py: _NOT_AWAITING_MISFIRE; queries/periodic.py:
-- PERIODIC_RULE_MISSED). A table of its own, not a column of scheduler_leader, whose row every
-- leader transaction holds FOR SHARE: an update there would wait for the other maintenance
-- services' transactions.

CREATE TABLE IF NOT EXISTS scheduler_periodic_pass (
    singleton BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    pass_at   TIMESTAMPTZ
);
INSERT INTO scheduler_periodic_pass (singleton) VALUES (true) ON CONFLICT DO NOTHING;
