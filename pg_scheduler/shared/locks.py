"""Advisory lock keys.

Two-int4 keys ``(CLASS, id)``: the class keeps ours apart from any lock
the application takes, and advisory locks are already scoped to one database."""

from __future__ import annotations

import hashlib

MIGRATION_LOCK = (0x5053_4301, 1)
"""Held (transaction-scoped) while migrations apply, so concurrent starts apply them once."""

LEADER_LOCK = (0x5053_4302, 1)
"""Held (session-scoped, on a dedicated connection) by the leader."""

EXCLUSIVE_JOB_LOCK_CLASS = 0x5053_4303
"""Class of the per-periodic-job locks of ``@periodic(use_advisory_lock=True)``."""

QUEUE_LOCK_CLASS = 0x5053_4304
"""Class of the per-queue transaction locks of limited queues (``(QUEUE_LOCK_CLASS,
hashtext(name))``, taken in SQL by ``pg_scheduler_claim_limited``): alone, it serialises the
claims of a queue with a concurrency or a rate; shared, it is held by the claims of a queue
limited by key only."""

QUEUE_KEY_LOCK_CLASS = 0x5053_4305
"""Class of the per-key transaction locks of a queue limited by key only
(``(QUEUE_KEY_LOCK_CLASS, hashtext(queue || ':' || key))``): its claims hold the locks of the
keys they claim, not the queue's, so claimers of different keys do not wait for each other."""


def exclusive_job_lock(dedup_key: str) -> tuple[int, int]:
    """The lock key of a periodic job's exclusive runs: our class and a hash of ``dedup_key``."""
    digest = hashlib.sha256(dedup_key.encode()).digest()
    return EXCLUSIVE_JOB_LOCK_CLASS, int.from_bytes(digest[:4], "big", signed=True)
