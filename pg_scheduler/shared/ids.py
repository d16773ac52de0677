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
    ms = time.time_ns() // 1_000_000
    head = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76
    # The 74 bits after the timestamp (rand_a, rand_b) count from a random start below 2**72,
    # so a batch never carries into the version bits.
    start = int.from_bytes(os.urandom(9))
    ids = []
    for i in range(count):
        r = start + i
        n = head | (r >> 62) << 64 | 0b10 << 62 | (r & 0x3FFF_FFFF_FFFF_FFFF)
        h = f"{n:032x}"
        ids.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return ids


def new_job_id() -> str:
    """One UUIDv7 string."""
    return new_job_ids(1)[0]
