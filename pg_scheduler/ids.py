"""Job ids: UUIDv7 (RFC 9562), time-ordered.

A random UUIDv4 lands anywhere in the primary key's B-tree: every insert, and every non-HOT
update of a job row (claim, completion), dirties some random leaf page, and after a checkpoint
each such page costs a full-page image in the WAL. Ids that grow with time keep the pages of the
jobs in flight together at the right edge of the index, however many finished rows the table
holds. They are also cheaper to make than ``str(uuid.uuid4())``: a batch takes one timestamp and
one random draw, then counts (RFC 9562's "monotonic random" method 2), so ids of one batch are
distinct and in order.

The text form is an ordinary UUID; ids given by callers are any non-empty text, as before.
"""

from __future__ import annotations

import os
import time


def new_job_ids(count: int) -> list[str]:
    """``count`` distinct UUIDv7 strings, increasing."""
    return _job_ids(time.time_ns() // 1_000_000, int.from_bytes(os.urandom(9)), count)


def _job_ids(ms: int, start: int, count: int) -> list[str]:
    """The ids of a batch: timestamp ``ms``, and the 74 bits after it (rand_a, rand_b) counting
    from ``start`` (below 2**72, so a batch never carries into the version bits)."""
    ids: list[str] = []
    append = ids.append
    a = m = -1
    head = prefix = ""
    for r in range(start, start + count):
        # Consecutive ids differ in their last 48 bits (the last 12 hex digits) until the count
        # carries past them: the text before those is made again only then, not for every id.
        if r >> 48 != m:
            m = r >> 48
            if r >> 62 != a:
                a = r >> 62
                h = f"{(ms & 0xFFFF_FFFF_FFFF) << 16 | 0x7 << 12 | a:016x}"
                head = f"{h[:8]}-{h[8:12]}-{h[12:]}-"
            prefix = f"{head}{0x8000 | m & 0x3FFF:04x}-"  # the variant bits, then rand_b
        append(f"{prefix}{r & 0xFFFF_FFFF_FFFF:012x}")
    return ids


def new_job_id() -> str:
    """One UUIDv7 string."""
    return new_job_ids(1)[0]
