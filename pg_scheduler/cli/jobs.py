"""``pg-scheduler jobs add / list / show / cancel / retry``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import click

from ..scheduler import Scheduler
from ..shared import queries
from ..shared.diagnosis import STALE_HEARTBEAT_SECONDS_DEFAULT
from ..shared.errors import JobAlreadyExistsError
from ..shared.models import ConflictResolution, JobPriority, JobState
from .common import connect, database_option, fail, require_schema, run, with_producer
from .inspection import get_job_record, list_jobs
from .output import NONE, cell, one_line, table, to_json
from .periodic import parse_duration

STATES = [state.value for state in JobState]
RETRYABLE = ("failed", "cancelled", "expired")
CANCEL_REASON = "cancelled with pg-scheduler jobs cancel"

# `jobs show` prints these first, in this order; any other column follows.
SHOW_ORDER = [
    "job_id",
    "job_name",
    "status",
    "execution_time",
    "priority",
    "attempt",
    "retry_count",
    "max_retries",
    "worker_id",
    "created_at",
    "started_at",
    "finished_at",
    "lease_until",
    "last_heartbeat",
    "misfire_grace_time",
    "timeout_seconds",
    "dedup_key",
    "window_start",
    "use_advisory_lock",
    "task_data",
    "result",
]


@click.group("jobs")
def jobs_group() -> None:
    """Inspect and act on jobs (the rows of scheduled_jobs)."""


@jobs_group.command("add")
@click.argument("task")
@database_option()
@click.option(
    "--args",
    "args_json",
    metavar="JSON",
    default="[]",
    help="Positional arguments, a JSON list: '[1, \"a\"]'.",
)
@click.option(
    "--kwargs",
    "kwargs_json",
    metavar="JSON",
    default="{}",
    help='Keyword arguments, a JSON object: \'{"to": "a@b.c"}\'.',
)
@click.option(
    "--at", "at", metavar="TIME", help="Due time, ISO 8601 (2026-12-24T18:00:00+01:00; no zone: UTC)."
)
@click.option("--in", "after", metavar="DURATION", help="Due after this long: 90, 30s, 5m, 2h, 1d, 1h30m.")
@click.option(
    "--priority",
    type=click.Choice([p.value for p in JobPriority]),
    default=JobPriority.NORMAL.value,
    show_default=True,
    help="Priority within the queue.",
)
@click.option(
    "--queue",
    metavar="NAME",
    default="default",
    show_default=True,
    help="Queue (the shell does not import your code: name a @job(queue=...) task's queue here).",
)
@click.option("--concurrency-key", metavar="KEY", help="Key for the queue's key_concurrency limit.")
@click.option(
    "--max-retries", type=click.IntRange(min=0), default=0, show_default=True, help="Retries after a failure."
)
@click.option(
    "--timeout",
    "timeout_seconds",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Time limit of one attempt.",
)
@click.option("--job-id", metavar="ID", help="The job's id.  [default: a new UUIDv7]")
@click.option(
    "--on-conflict",
    type=click.Choice([c.value for c in ConflictResolution]),
    default=ConflictResolution.RAISE.value,
    show_default=True,
    help="When --job-id exists: raise (error), ignore (keep the existing job), replace.",
)
def add_command(
    task: str,
    database_url: str,
    args_json: str,
    kwargs_json: str,
    at: str | None,
    after: str | None,
    priority: str,
    queue: str,
    concurrency_key: str | None,
    max_retries: int,
    timeout_seconds: float | None,
    job_id: str | None,
    on_conflict: str,
) -> None:
    """Enqueue a job of TASK and print its id.

    TASK is the registered name, module:function as `jobs list` shows it. A task that no live
    worker has registered is accepted with a warning (a worker that registers it later runs
    it). Due now unless --at or --in says otherwise.

    \b
    pg-scheduler jobs add myapp.tasks:send_email --kwargs '{"to": "a@example.com"}'
    pg-scheduler jobs add myapp.tasks:report --in 5m --priority high --queue reports
    """
    args = _json_arg("--args", args_json, list)
    kwargs = _json_arg("--kwargs", kwargs_json, dict)
    if at is not None and after is not None:
        fail("give --at or --in, not both")
    due = _due(at, after)
    if job_id is None and on_conflict != ConflictResolution.RAISE.value:
        fail("--on-conflict applies to a given --job-id")

    async def add(scheduler: Scheduler) -> tuple[str, str | None, bool]:
        pool = scheduler.db_pool
        existing = None if job_id is None else await pool.fetchval(queries.JOB_GET_STATUS, job_id)
        try:
            new_id = await scheduler.schedule(
                task,
                execution_time=due,
                args=args,
                kwargs=kwargs,
                priority=priority,
                max_retries=max_retries,
                job_id=job_id,
                conflict_resolution=ConflictResolution(on_conflict),
                timeout_seconds=timeout_seconds,
                queue=queue,
                concurrency_key=concurrency_key,
            )
        except JobAlreadyExistsError as exc:
            fail(f"{exc}; --on-conflict ignore keeps it, replace overwrites it")
        known = bool(
            await pool.fetchval(queries.WORKER_CHECK_TASK, task, queue, STALE_HEARTBEAT_SECONDS_DEFAULT)
        )
        return new_id, existing, known

    new_id, existing, known = run("add the job", database_url, lambda: with_producer(database_url, add))
    if not known:
        click.echo(
            f"pg-scheduler: warning: no live worker runs {task!r} in queue {queue!r}; the job "
            "waits until one does (names are module:function, as `jobs list` shows them)",
            err=True,
        )
    if existing is not None and on_conflict == ConflictResolution.IGNORE.value:
        click.echo(f"pg-scheduler: job {new_id} exists ({existing}): kept as it is", err=True)
    click.echo(new_id)


def _json_arg(option: str, text: str, kind: type[list[Any]] | type[dict[str, Any]]) -> Any:
    try:
        value = json.loads(text)
    except ValueError as exc:
        fail(f"{option} is not JSON: {exc}")
    if not isinstance(value, kind):
        fail(f"{option} must be a JSON {'list' if kind is list else 'object'}, got {text!r}")
    return value


def _due(at: str | None, after: str | None) -> datetime:
    now = datetime.now(UTC)
    if after is not None:
        try:
            return now + parse_duration(after)
        except ValueError as exc:
            fail(f"--in: {exc}")
    if at is None:
        return now
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        fail(f"--at {at!r} is not an ISO 8601 time like 2026-12-24T18:00:00+01:00")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@jobs_group.command("list")
@database_option()
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(STATES),
    metavar="STATE",
    help=f"Only jobs in this state; repeat for several ({', '.join(STATES)}).",
)
@click.option(
    "--task",
    metavar="NAME",
    help="Only jobs of this task: its full name (module:function) or the function part.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    metavar="N",
    help="Show at most this many jobs.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list with every column.")
def list_command(
    database_url: str, states: tuple[str, ...], task: str | None, limit: int, as_json: bool
) -> None:
    """List jobs, the latest due time first."""

    async def read() -> list[dict[str, Any]]:
        conn = await connect(database_url)
        try:
            await require_schema(conn)
            return await list_jobs(conn, states=list(states), task=task, limit=limit)
        finally:
            await conn.close()

    rows = run("list jobs", database_url, read)
    if as_json:
        click.echo(to_json(rows))
        return
    if not rows:
        click.echo("no jobs match")
        return
    click.echo(
        table(
            ["JOB ID", "TASK", "STATE", "DUE", "ATTEMPT", "RETRIES", "WORKER", "ERROR"],
            [
                [
                    r["job_id"],
                    r["job_name"],
                    r["status"],
                    r["execution_time"],
                    r["attempt"],
                    f"{r['retry_count']}/{r['max_retries']}",
                    r["worker_id"],
                    one_line(r["error_message"]),
                ]
                for r in rows
            ],
        )
    )
    if len(rows) == limit:
        click.echo(f"(first {limit} shown; --limit N shows more)", err=True)


@jobs_group.command("show")
@click.argument("job_id")
@database_option()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with every column.")
def show_command(job_id: str, database_url: str, as_json: bool) -> None:
    """Show every column of one job: its result (what it returned, as JSON) and its error
    message in full."""

    async def read() -> dict[str, Any]:
        conn = await connect(database_url)
        try:
            await require_schema(conn)
            record = await get_job_record(conn, job_id)
        finally:
            await conn.close()
        if record is None:
            fail(f"no job {job_id!r}")
        return record

    record = run("show the job", database_url, read)
    if as_json:
        click.echo(to_json(record))
        return
    error = record.pop("error_message", None)
    keys = [k for k in SHOW_ORDER if k in record] + [k for k in record if k not in SHOW_ORDER]
    width = max(len(k) for k in [*keys, "error_message"])
    for key in keys:
        click.echo(f"{key.ljust(width)}  {_show_value(key, record[key])}")
    if error is None:
        click.echo(f"{'error_message'.ljust(width)}  {NONE}")
    else:
        click.echo("error_message:")
        click.echo(error)


def _show_value(key: str, value: Any) -> str:
    if key == "priority" and isinstance(value, int):
        return f"{value} ({JobPriority.from_db_value(value).value})"
    if key in ("task_data", "result") and value is not None:
        return json.dumps(value, sort_keys=True)
    return cell(value)


@jobs_group.command("cancel")
@click.argument("job_id")
@database_option()
def cancel_command(job_id: str, database_url: str) -> None:
    """Cancel a pending or running job.

    A pending job will not run. A running job is marked cancelled at once and its worker,
    wherever it runs, is told to cancel the coroutine. A finished job or an unknown id is an
    error (exit 1).
    """

    async def cancel(scheduler: Scheduler) -> asyncpg.Record:
        pool = scheduler.db_pool
        before = await pool.fetchrow(queries.JOB_GET, job_id)
        if before is None:
            fail(f"no job {job_id!r}")
        if await scheduler.cancel_job(job_id, reason=CANCEL_REASON):
            return before
        status = await pool.fetchval(queries.JOB_GET_STATUS, job_id)
        if status is None:
            fail(f"no job {job_id!r}")
        fail(f"job {job_id!r} is already {status}: nothing to cancel")

    before = run("cancel the job", database_url, lambda: with_producer(database_url, cancel))
    if before["status"] == "running":
        click.echo(
            f"cancelled job {job_id} (it was running attempt {before['attempt']} on "
            f"worker {before['worker_id']}, which has been told to stop it)"
        )
    else:
        click.echo(f"cancelled job {job_id} (it was {before['status']}; it will not run)")


@jobs_group.command("retry")
@click.argument("job_id")
@database_option()
def retry_command(job_id: str, database_url: str) -> None:
    """Run a failed, cancelled or expired job again.

    The job becomes pending and due now, with its retry count back to 0 (so it gets its
    max_retries again). Its attempt number keeps counting up, and its last error message stays
    until the new attempt ends. Workers are woken at once. A pending, running or completed job
    or an unknown id is an error (exit 1).
    """

    async def retry(scheduler: Scheduler) -> asyncpg.Record:
        # Read before: a retry keeps attempt and max_retries, and a worker may claim the job
        # (bumping its attempt) as soon as the retry commits.
        pool = scheduler.db_pool
        before = await pool.fetchrow(queries.JOB_GET, job_id)
        if before is None:
            fail(f"no job {job_id!r}")
        if await scheduler.retry_job(job_id):
            return before
        status = await pool.fetchval(queries.JOB_GET_STATUS, job_id)
        if status is None:
            fail(f"no job {job_id!r}")
        fail(
            f"job {job_id!r} is {status}: only {', '.join(RETRYABLE[:-1])} or {RETRYABLE[-1]} "
            "jobs can be retried"
        )

    row = run("retry the job", database_url, lambda: with_producer(database_url, retry))
    click.echo(
        f"job {job_id} is pending again, due now (its next run is attempt "
        f"{row['attempt'] + 1}; retries used reset to 0 of {row['max_retries']})"
    )
