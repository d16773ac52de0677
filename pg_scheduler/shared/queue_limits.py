"""Queue limits in the database: the code's declarations, an operator's changes, the listing.

What holds:

- A queue is known once it has a row in ``scheduler_queues``: written by a process whose code
  declares it (:func:`~pg_scheduler.shared.queues.declare_queue`) when that process starts, or
  by an operator's ``set``. Pausing a queue without a row is refused.
- The limits in force follow the code's declaration until an operator sets others; those hold,
  across restarts and deploys, until ``reset`` goes back to the code's (none, for a queue that
  only an operator set). Pause and resume are operator state: ``reset`` leaves them as they are.
- Every change binds every claim that begins after it commits, on every pod: claims read the
  queue rows themselves (queries/claim.py), nothing is cached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

import asyncpg

from . import queries
from .errors import ConfigurationError
from .queues import QueueLimits, Rate, check_limit, check_queue, declared_queues, parse_rate

log = logging.getLogger("pg_scheduler.queues")


class QueueLimitChanges(TypedDict, total=False):
    """The limits a ``set`` changes; a limit not given is kept, ``None`` clears it.

    ``concurrency`` and ``key_concurrency`` are ints of at least 1; ``rate`` is ``N/PERIOD``
    (``"100/1m"``) or a :class:`~pg_scheduler.shared.queues.Rate`."""

    concurrency: int | None
    key_concurrency: int | None
    rate: str | Rate | None


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue as the cluster sees it: its limits, state and current load."""

    name: str
    limits: QueueLimits
    """In force."""
    code_limits: QueueLimits | None
    """What the code declares; None if no process declared the queue."""
    overridden: bool
    """The limits in force were set by an operator, over the code's."""
    paused: bool
    paused_at: datetime | None
    known: bool
    """The queue has a row (a queue with jobs but no row has no limits and cannot be paused)."""
    running: int
    """Jobs running with a live lease: what counts against the limits."""
    pending: int
    due: int
    oldest_due_seconds: float | None
    recent_starts: int
    """Starts within the rate's period (0 without a rate)."""

    @property
    def state(self) -> str:
        """``paused``, ``limited`` or ``open``."""
        return "paused" if self.paused else "limited" if self.limits.limited else "open"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``queues list --json``)."""
        return {
            "name": self.name,
            "state": self.state,
            "concurrency": self.limits.concurrency,
            "key_concurrency": self.limits.key_concurrency,
            "rate": None if self.limits.rate is None else str(self.limits.rate),
            "paused": self.paused,
            "paused_at": None if self.paused_at is None else self.paused_at.isoformat(),
            "overridden": self.overridden,
            "declared": None if self.code_limits is None else _limits_dict(self.code_limits),
            "known": self.known,
            "running": self.running,
            "pending": self.pending,
            "due": self.due,
            "oldest_due_seconds": self.oldest_due_seconds,
            "recent_starts": self.recent_starts,
        }


def _limits_dict(limits: QueueLimits) -> dict[str, Any]:
    return {
        "concurrency": limits.concurrency,
        "key_concurrency": limits.key_concurrency,
        "rate": None if limits.rate is None else str(limits.rate),
    }


def _limits(row: asyncpg.Record, prefix: str = "") -> QueueLimits:
    limit, period = row[f"{prefix}rate_limit"], row[f"{prefix}rate_period_seconds"]
    return QueueLimits(
        concurrency=row[f"{prefix}concurrency"],
        key_concurrency=row[f"{prefix}key_concurrency"],
        rate=None if limit is None else Rate(limit, period),
    )


def _info(row: asyncpg.Record) -> QueueInfo:
    return QueueInfo(
        name=row["name"],
        limits=_limits(row),
        code_limits=_limits(row, "code_") if row["declared"] else None,
        overridden=row["overridden_at"] is not None,
        paused=row["paused"],
        paused_at=row["paused_at"],
        known=row["has_row"],
        running=row["running"],
        pending=row["pending"],
        due=row["due"],
        oldest_due_seconds=row["oldest_due_seconds"],
        recent_starts=row["recent_starts"] or 0,
    )


def _limit_args(limits: QueueLimits) -> tuple[int | None, int | None, int | None, float | None]:
    """A queue's limits as the statements take them: concurrency, key_concurrency, rate_limit,
    rate_period_seconds."""
    rate = limits.rate
    return (
        limits.concurrency,
        limits.key_concurrency,
        None if rate is None else rate.limit,
        None if rate is None else rate.period_seconds,
    )


async def publish_declared(conn: asyncpg.Connection) -> list[str]:
    """Write this process's queue declarations; the names whose row changed."""
    changed = []
    for name, limits in sorted(declared_queues().items()):
        row = await conn.fetchrow(queries.QUEUE_DECLARE, name, *_limit_args(limits))
        if row is not None:
            changed.append(name)
            log.info("queue %s: declared in code: %s", name, limits.describe())
    if changed and not conn.is_in_transaction():
        await stamp_concurrency(conn)
    return changed


async def stamp_concurrency(conn: asyncpg.Connection | asyncpg.Pool, name: str | None = None) -> bool:
    """QUEUE_STAMP_CONCURRENCY for the queue ``name`` (every queue: None), after its change has
    committed: its hand-overs may skip their count from now on. Best effort: the change has
    landed whatever happens here, and the leader stamps what is left at its next sample; a
    failure is logged, and False."""
    try:
        await conn.execute(queries.QUEUE_STAMP_CONCURRENCY, name)
    except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
        log.warning("queues: could not stamp the concurrency's time (%r); the leader will", exc)
        return False
    return True


async def list_queues(conn: asyncpg.Connection | asyncpg.Pool) -> list[QueueInfo]:
    """Every queue with a row or with unfinished jobs, by name."""
    return [_info(row) for row in await conn.fetch(queries.QUEUE_LIST)]


async def list_queue_rows(conn: asyncpg.Connection | asyncpg.Pool) -> list[QueueInfo]:
    """The queues with a row, by name, their limits and pause, without counting their jobs (the
    counts are 0): cheap at any backlog, for when :func:`list_queues` would take too long."""
    return [_info(row) for row in await conn.fetch(queries.QUEUE_LIST_ROWS)]


def check_changes(changes: QueueLimitChanges) -> QueueLimitChanges:
    """The changes with each value checked (``rate`` parsed to a :class:`Rate`); a bad value or an
    unknown key raises ``ConfigurationError`` in one line."""
    unknown = changes.keys() - QueueLimitChanges.__annotations__.keys()
    if unknown:
        raise ConfigurationError(
            f"unknown queue limit {min(unknown)!r}: use concurrency, key_concurrency, rate"
        )
    checked: QueueLimitChanges = {}
    if "concurrency" in changes:
        checked["concurrency"] = check_limit("concurrency", changes["concurrency"])
    if "key_concurrency" in changes:
        checked["key_concurrency"] = check_limit("key_concurrency", changes["key_concurrency"])
    if "rate" in changes:
        rate = changes["rate"]
        checked["rate"] = None if rate is None else parse_rate(rate)
    return checked


async def set_limits(pool: asyncpg.Pool, name: str, changes: QueueLimitChanges) -> QueueLimits:
    """Change the limits given (None clears one; the others are kept) for the whole cluster,
    creating the queue's row if needed; the limits now in force. Checked before anything is
    written."""
    check_queue(name, ConfigurationError)
    checked = check_changes(changes)
    if not checked:
        raise ConfigurationError("nothing to set: give concurrency, key_concurrency or rate")
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(queries.QUEUE_LOCK, name)
        now = QueueLimits() if row is None else _limits(row)
        rate = checked["rate"] if "rate" in checked else now.rate
        assert rate is None or isinstance(rate, Rate)
        limits = QueueLimits(
            concurrency=checked["concurrency"] if "concurrency" in checked else now.concurrency,
            key_concurrency=(
                checked["key_concurrency"] if "key_concurrency" in checked else now.key_concurrency
            ),
            rate=rate,
        )
        await conn.execute(queries.QUEUE_SET_LIMITS, name, *_limit_args(limits))
    await stamp_concurrency(pool, name)
    log.info("queue %s: limits set for the cluster: %s", name, limits.describe())
    return limits


async def reset_limits(pool: asyncpg.Pool, name: str) -> bool:
    """Go back to the code's limits (none if no code declares the queue); False if the queue
    has no row."""
    check_queue(name, ConfigurationError)
    done = await pool.fetchrow(queries.QUEUE_RESET, name) is not None
    if done:
        await stamp_concurrency(pool, name)
        log.info("queue %s: limits reset to the code's declaration", name)
    return done


async def set_paused(pool: asyncpg.Pool, name: str, paused: bool) -> bool:
    """Pause (nothing new starts; running jobs finish) or resume a queue; False if the queue
    has no row."""
    check_queue(name, ConfigurationError)
    done = await pool.fetchrow(queries.QUEUE_SET_PAUSED, name, paused) is not None
    if done:
        log.info("queue %s: %s for the cluster", name, "paused" if paused else "resumed")
    return done
