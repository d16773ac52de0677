"""Generated job ids: UUIDv7 (pg_scheduler/ids.py), time-ordered, distinct."""

from __future__ import annotations

import time
import uuid

from pg_scheduler.ids import _job_ids, new_job_id, new_job_ids


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


def test_ids_stay_exact_where_the_count_carries_into_the_cached_text() -> None:
    """A batch's text before the last 12 hex digits is reused until the count carries past it
    (pg_scheduler/ids.py): each id still carries the timestamp and the count itself."""
    ms = 0x0123_4567_89AB

    def count(u: uuid.UUID) -> int:  # rand_a (12 bits), then rand_b (62 bits)
        return (u.int >> 64 & 0xFFF) << 62 | (u.int & (1 << 62) - 1)

    for start in (0, (1 << 48) - 3, (1 << 62) - 3, (1 << 72) - 3):
        batch = _job_ids(ms, start, 6)
        parsed = [uuid.UUID(i) for i in batch]
        assert [str(u) for u in parsed] == batch
        assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
        assert all(u.int >> 80 == ms for u in parsed)
        assert [count(u) for u in parsed] == list(range(start, start + 6))
