"""Migrations that copy SQL the code builds hold exactly the code's text (no database)."""

from __future__ import annotations

from pathlib import Path

from pg_scheduler.shared import queries
from pg_scheduler.shared.diagnosis import AUTOVACUUM_ADVICE
from pg_scheduler.shared.locks import QUEUE_LOCK_CLASS

MIGRATIONS = Path(__file__).resolve().parents[2] / "pg_scheduler" / "shared" / "migrations"


def test_migration_7_creates_the_first_limited_claim() -> None:
    text = (MIGRATIONS / "0007_queue_limits.sql").read_text()
    assert "CREATE OR REPLACE FUNCTION pg_scheduler_claim_limited(" in text
    assert f"pg_advisory_xact_lock({QUEUE_LOCK_CLASS}, hashtext(queue_name))" in text


def test_the_latest_migration_of_the_limited_claim_creates_what_the_code_builds() -> None:
    """The function is static SQL (so that PostgreSQL keeps its plans) built from the claim's
    fragments: when a fragment changes, this fails until a new migration replaces it."""
    defining = sorted(
        path
        for path in MIGRATIONS.glob("*.sql")
        if "CREATE OR REPLACE FUNCTION pg_scheduler_claim_limited(" in path.read_text()
    )
    assert defining[-1].name == "0017_hand_over_pick_within_limit.sql"
    text = defining[-1].read_text()
    assert queries.LIMITED_CLAIM_FUNCTION in text
    assert f"pg_advisory_xact_lock({QUEUE_LOCK_CLASS}, hashtext(queue_name))" in text


def test_the_latest_migration_of_the_hand_overs_pick_creates_what_the_code_builds() -> None:
    defining = sorted(
        path
        for path in MIGRATIONS.glob("*.sql")
        if "CREATE OR REPLACE FUNCTION pg_scheduler_pick_due(" in path.read_text()
    )
    assert defining[-1].name == "0017_hand_over_pick_within_limit.sql"
    assert queries.PICK_DUE_FUNCTION in defining[-1].read_text()


def test_migration_8_makes_changes_of_a_queue_take_its_claims_lock() -> None:
    text = (MIGRATIONS / "0008_claim_limited.sql").read_text()
    assert f"pg_advisory_xact_lock({QUEUE_LOCK_CLASS}, hashtext(NEW.name))" in text
    assert "BEFORE UPDATE ON scheduler_queues" in text


def test_migration_12_sets_the_autovacuum_that_doctor_advises() -> None:
    text = (MIGRATIONS / "0012_queue_table_autovacuum.sql").read_text()
    for name, value in AUTOVACUUM_ADVICE.items():
        assert f"{name} = {value}" in text, name
