"""The worker's hot statements, as prepared statements that are planned again as the table grows.

asyncpg prepares every statement, and after five executions PostgreSQL may keep one generic plan
for it (the claim statements are built so that it does: ``queries.claim_bound``). A generic plan
is made from the table as it is then, and kept until the table's statistics change. Made on an
empty table, the claim found its rows again with a sequential scan (cheaper than a TID scan over
a table of a few pages); if the table then grows by single inserts, every claim reads all of it
until autovacuum's next ANALYZE (a minute or more). So the worker's statements are new statements
every ``PLAN_REFRESH_SECONDS`` (the text carries a generation number, in a comment): five custom
plans from the table as it is now, then a generic plan again. Planning five times every
``PLAN_REFRESH_SECONDS`` is cheap next to planning at every execution.
"""

from __future__ import annotations

import time

from ..shared import queries

PLAN_REFRESH_SECONDS = 10.0


def generation() -> int:
    """The current plan generation of this process."""
    return int(time.monotonic() // PLAN_REFRESH_SECONDS)


def fresh(sql: str) -> str:
    """``sql`` as the statement of the current plan generation."""
    return queries.replanned(sql, generation())
