-- pg_scheduler schema, version 12: autovacuum set for a queue table.
--
-- scheduled_jobs turns over its pending and running rows all day: every run updates its row two
-- or three times, and every finished run leaves dead entries in the claim and running indexes
-- until vacuum. The server's default waits for 20 % of the table to be dead (200,000 rows of a
-- million retained jobs); these settings run autovacuum after 1 % plus 1,000 rows, and refresh
-- the planner's statistics after 2 %. `pg-scheduler doctor` advises the same values
-- (pg_scheduler.shared.diagnosis.AUTOVACUUM_ADVICE; tests/unit/test_migrations.py checks that
-- they agree) and warns when they are back at the server's defaults.
ALTER TABLE scheduled_jobs SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02
);
