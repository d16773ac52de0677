"""Rows of ``scheduled_jobs`` for tests: write one in any state (``insert_job``), change one
(``update_job``), read one (``job_row``), and wait until a job reaches a status
(``wait_for_status``).

A test that provokes a row state by hand uses ``insert_job`` rather than its own INSERT; SQL
that is itself under test (a query plan, a bulk load, a lock) stays written out in the test.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import timedelta
from typing import Any
from uuid import uuid4

import asyncpg

from pg_scheduler import Scheduler
from tests.support import wait_for

NOBODYS_TASK = "tests.rows:nobodys_task"
"""The task a row names by default: no test registers it, so no worker ever claims the row."""

EMPTY_TASK_DATA = {"args": [], "kwargs": {}}

Database = asyncpg.Pool | asyncpg.Connection


class Sql(str):
    """A column value written as an SQL expression, evaluated by the server:
    ``insert_job(pool, execution_time=Sql("now() - interval '1 hour'"))``."""


def ago(delta: timedelta) -> Sql:
    """The server's ``now()`` minus ``delta``, as a column value."""
    return Sql(f"now() - interval '{delta.total_seconds()} seconds'")


_RUNNING_DEFAULTS: dict[str, Any] = {
    "worker_id": "ghost-worker",
    "attempt": 1,
    "started_at": Sql("now()"),
    "lease_until": Sql("now() + interval '1 hour'"),
}
_FINAL_STATES = ("completed", "failed", "cancelled", "expired")


async def insert_job(db: Database, job_id: str | None = None, **columns: Any) -> str:
    """Insert a valid ``scheduled_jobs`` row and return its id.

    Defaults: a fresh id, ``NOBODYS_TASK``, due now, ``pending``, no arguments. A ``running``
    row also gets a worker (``ghost-worker``), ``attempt`` 1, a start and an hour's lease; a
    final one a finish time of now. Every column can be overridden, with a Python value (``None``
    for NULL; a dict or list for ``task_data``) or an ``Sql`` expression.
    """
    status = columns.get("status", "pending")
    values: dict[str, Any] = {
        "job_id": job_id if job_id is not None else f"job-{uuid4().hex[:12]}",
        "job_name": NOBODYS_TASK,
        "execution_time": Sql("now()"),
        "status": "pending",
        "task_data": EMPTY_TASK_DATA,
        **(_RUNNING_DEFAULTS if status == "running" else {}),
        **({"finished_at": Sql("now()")} if status in _FINAL_STATES else {}),
        **columns,
    }
    args: list[Any] = []
    exprs = _expressions(values, args)
    inserted: str = await db.fetchval(
        f"INSERT INTO scheduled_jobs ({', '.join(exprs)}) VALUES ({', '.join(exprs.values())})"
        " RETURNING job_id",
        *args,
    )
    return inserted


async def update_job(db: Database, job_id: str, **columns: Any) -> None:
    """Set the given columns of the job's row (values as for ``insert_job``; an ``Sql``
    expression may name the row's own columns: ``attempt=Sql("attempt + 1")``); fails the test
    if there is no such row."""
    args: list[Any] = [job_id]
    exprs = _expressions(columns, args)
    done = await db.execute(
        f"UPDATE scheduled_jobs SET {', '.join(f'{n} = {e}' for n, e in exprs.items())} WHERE job_id = $1",
        *args,
    )
    assert done == "UPDATE 1", f"no row for job {job_id!r} to update"


def _expressions(columns: dict[str, Any], args: list[Any]) -> dict[str, str]:
    """Each column's SQL: its ``Sql`` expression, or a bind parameter appended to ``args``."""
    exprs: dict[str, str] = {}
    for name, value in columns.items():
        assert name.isidentifier(), f"not a column name: {name!r}"
        if isinstance(value, Sql):
            exprs[name] = f"({value})"
            continue
        if name == "task_data" and value is not None and not isinstance(value, str):
            value = json.dumps(value)
        args.append(value)
        exprs[name] = f"${len(args)}"
    return exprs


async def insert_periodic(db: Database, key: str, *, enabled: bool = True) -> None:
    """A periodic schedule ``key``, every hour, of a task nobody runs."""
    await db.execute(
        "INSERT INTO scheduler_periodic (dedup_key, job_name, task_name, every_seconds, priority,"
        " max_retries, use_advisory_lock, enabled) VALUES ($1, $1, 'tests.rows:nobodys_task', 3600,"
        " 5, 0, false, $2)",
        key,
        enabled,
    )


async def job_row(db: Database, job_id: str) -> asyncpg.Record:
    """The job's row, every column; fails the test if there is none."""
    record = await db.fetchrow("SELECT * FROM scheduled_jobs WHERE job_id = $1", job_id)
    assert record is not None, f"no row for job {job_id!r}"
    return record


async def wait_for_status(
    source: Database | Scheduler,
    job_id: str,
    status: str | Collection[str],
    timeout: float = 10.0,
    interval: float = 0.05,
) -> Any:
    """Wait until the job is in ``status`` (one, or any of a collection), and return it: the
    ``Job`` from ``Scheduler.get_job`` when ``source`` is a scheduler, else its row."""
    wanted = {status} if isinstance(status, str) else set(status)

    async def reached() -> Any:
        if isinstance(source, Scheduler):
            found: Any = await source.get_job(job_id)
            current = None if found is None else found.status
        else:
            found = await source.fetchrow("SELECT * FROM scheduled_jobs WHERE job_id = $1", job_id)
            current = None if found is None else found["status"]
        return found if current in wanted else None

    message = f"job {job_id!r} to be {'/'.join(sorted(wanted))}"
    return await wait_for(reached, timeout, interval, message=message)
