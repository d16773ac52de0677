"""Which job is running: ``current_job()`` inside a task body.

A task is called with its own arguments only (0.1's contract), so what the scheduler knows
about the run (its id, which attempt this is, which worker holds the lease) travels in a
context variable. Each run executes in its own asyncio task, so concurrent runs in one worker
never see each other's context, and tasks the body spawns inherit it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass

from .errors import SchedulerStateError


@dataclass(frozen=True)
class JobContext:
    """The run a task body belongs to. ``attempt`` counts every claim of the job (it is the
    fencing token with ``worker_id``); ``retry_count`` counts only failures and lost workers."""

    job_id: str
    job_name: str
    attempt: int
    retry_count: int
    max_retries: int
    worker_id: str
    dedup_key: str | None
    """The periodic job's key, or None for a one-off job."""


Current = JobContext | Callable[[], JobContext]
"""A job's context, or what builds it when a body first asks (most never do)."""

_current: ContextVar[Current | None] = ContextVar("pg_scheduler_current_job", default=None)


def current_job() -> JobContext:
    """The job whose body is running in this task; raises outside of a job run."""
    context = _current.get()
    if context is None:
        raise SchedulerStateError("current_job() called outside of a running job")
    return context if isinstance(context, JobContext) else context()


def enter_job(context: Current) -> Token[Current | None]:
    """Make ``context`` current; pass the token to ``leave_job`` when the body returns. Two
    calls rather than a context manager: a busy worker does this for every job, and a
    generator-based one costs several times as much. A worker passes a builder, so that the
    JobContext is built only for the bodies that ask for it."""
    return _current.set(context)


def leave_job(token: Token[Current | None]) -> None:
    """Restore the context that the ``enter_job`` call returning ``token`` replaced."""
    _current.reset(token)
