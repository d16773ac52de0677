"""Which jobs a listing or a bulk action is about: :class:`JobFilter`, and the pages of a listing.

A filter is a dict of conditions, all of which a job meets; a key left out does not filter.
:func:`check_job_filter` turns one into the bind parameters of the statements in
``queries/actions.py``, or raises a one-line :class:`ConfigurationError` before any query runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from .errors import ConfigurationError
from .models import Job, JobState


class JobFilter(TypedDict, total=False):
    """Conditions on jobs, all of which must hold; a key left out matches every job.

    - ``state``: one :class:`JobState` value (``"failed"``).
    - ``queue``: the job's queue.
    - ``task``: the task's full name (``"app.tasks:send"``) or the part after the module
      (``"send"``).
    - ``since`` / ``until``: a time range, ``since`` included and ``until`` not, over the time
      of the job's own state: ``finished_at`` for completed, failed, cancelled and expired jobs,
      the due time (``execution_time``) for pending ones, ``started_at`` for running ones.
      Aware datetimes only.
    - ``job_id``: one job.
    - ``args``: the job's arguments contain these (JSON containment, ``task_data @> ...``): a
      list is matched against the positional arguments (``[42]``: 42 is among them), a dict
      against the keyword arguments (``{"to": "a@b.c"}``; nested values match in the same way).
    """

    state: str
    queue: str
    task: str
    since: datetime
    until: datetime
    job_id: str
    args: dict[str, Any] | list[Any]


@dataclass(frozen=True, slots=True)
class JobCursor:
    """Where a page of :meth:`Scheduler.list_jobs` ended: the sort key of its last job (its
    finish, due or start time, as the state orders) and its id. Pass ``JobPage.next`` back as
    ``after`` for the next page."""

    key: datetime
    job_id: str


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of :meth:`Scheduler.list_jobs`: its jobs in order, and the cursor of the next
    page (None on the last one)."""

    jobs: list[Job]
    next: JobCursor | None


_KEYS = frozenset(JobFilter.__annotations__)
_STATES = ", ".join(s.value for s in JobState)


@dataclass(frozen=True, slots=True)
class CheckedFilter:
    """A valid filter: its state (None: any) and the bind parameters after the state, in the
    order of the statements in ``queries/actions.py`` (queue, task, job_id, args, since, until).
    """

    state: JobState | None
    params: tuple[Any, ...]


def check_job_filter(job_filter: Mapping[str, Any]) -> CheckedFilter:
    """The filter checked, or a :class:`ConfigurationError` naming what is wrong with it."""
    if not isinstance(job_filter, Mapping):
        raise ConfigurationError(f"a job filter is a dict, not {type(job_filter).__name__}")
    unknown = sorted(set(job_filter) - _KEYS)
    if unknown:
        raise ConfigurationError(f"unknown job filter key {unknown[0]!r}: use {', '.join(sorted(_KEYS))}")
    state = None
    if "state" in job_filter:
        try:
            state = JobState(job_filter["state"])
        except ValueError:
            raise ConfigurationError(
                f"unknown job state {job_filter['state']!r}: use one of {_STATES}"
            ) from None
    for key in ("queue", "task", "job_id"):
        if key in job_filter and not isinstance(job_filter[key], str):
            raise ConfigurationError(
                f"job filter {key!r} must be a str, not {type(job_filter[key]).__name__}"
            )
    for key in ("since", "until"):
        value = job_filter.get(key)
        if key in job_filter and (not isinstance(value, datetime) or value.utcoffset() is None):
            raise ConfigurationError(f"job filter {key!r} must be an aware datetime, got {value!r}")
    since, until = job_filter.get("since"), job_filter.get("until")
    if since is not None and until is not None and since > until:
        raise ConfigurationError(f"job filter 'since' ({since}) is after 'until' ({until})")
    return CheckedFilter(
        state,
        (
            job_filter.get("queue"),
            job_filter.get("task"),
            job_filter.get("job_id"),
            _containment(job_filter["args"]) if "args" in job_filter else None,
            since,
            until,
        ),
    )


def _containment(args: Any) -> str:
    """The ``task_data`` JSON that the filter's ``args`` must be contained in."""
    if isinstance(args, list):
        wrapped: dict[str, Any] = {"args": args}
    elif isinstance(args, dict):
        wrapped = {"kwargs": args}
    else:
        raise ConfigurationError(f"job filter 'args' must be a list or a dict, not {type(args).__name__}")
    try:
        return json.dumps(wrapped, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"job filter 'args' must be JSON: {exc}") from None


def check_positive(name: str, value: int) -> int:
    """``value`` if it is an int of at least 1, else a :class:`ConfigurationError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
    return value
