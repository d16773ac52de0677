"""Generated job ids: UUIDv7 (shared/ids.py), time-ordered, distinct."""

from __future__ import annotations

import time
import uuid

from pg_scheduler.shared.ids import new_job_id, new_job_ids


def test_generated_ids_are_uuidv7_in_order_and_carry_the_time() -> None:
    before = time.time_ns() // 1_000_000
    batch = new_job_ids(10_000)
    after = time.time_ns() // 1_000_000
    parsed = [uuid.UUID(i) for i in batch]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert [str(u) for u in parsed] == batch  # canonical text form
    assert batch == sorted(batch) and len(set(batch)) == len(batch)
    assert all(before <= u.int >> 80 <= after for u in parsed)


def test_ids_of_separate_calls_do_not_collide() -> None:
    ids = [new_job_id() for _ in range(20_000)] + new_job_ids(20_000) + new_job_ids(20_000)
    assert len(set(ids)) == len(ids)
