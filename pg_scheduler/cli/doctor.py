"""``pg-scheduler doctor``: checks a database and its deployment, and says what to fix."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import asyncpg
import click

from ..shared.diagnosis import (
    OLD_TRANSACTION_SECONDS_DEFAULT,
    Finding,
    Thresholds,
    diagnose,
    exit_status,
    worst,
)
from .common import (
    CONNECT_TIMEOUT_SECONDS,
    DATABASE_ERRORS,
    database_option,
    describe,
    redact,
    stale_seconds_option,
)
from .output import to_json

UNREACHABLE_ID = "database.reachable"
COMMAND_TIMEOUT_SECONDS = 30.0
"""No statement of the doctor's may wait longer than this (a lock, an overloaded server)."""

_MARKS = {"ok": "ok", "warning": "warning", "problem": "problem"}


@click.command("doctor")
@database_option()
@click.option(
    "--leader-database-url",
    "leader_database_url",
    metavar="DSN",
    default=None,
    envvar="PG_SCHEDULER_LEADER_DATABASE_URL",
    show_envvar=True,
    help="The DSN `pg-scheduler run` gets for its session-bound connections, if any: checked to "
    "reach PostgreSQL without a transaction pooler.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of lines.")
@stale_seconds_option("A process whose last heartbeat is older than this is stale, not live.")
@click.option(
    "--transaction-seconds",
    type=click.FloatRange(min=0),
    default=OLD_TRANSACTION_SECONDS_DEFAULT,
    show_default=True,
    metavar="S",
    help="A transaction open longer than this, holding back vacuum, is reported.",
)
def doctor_command(
    database_url: str,
    leader_database_url: str | None,
    as_json: bool,
    stale_seconds: float,
    transaction_seconds: float,
) -> None:
    """Check the database and the deployment, and say what to fix.

    Checks the schema version, the indexes the claims need, dead rows and autovacuum of the jobs
    table, transactions that hold vacuum back, a transaction pooler in front of the database,
    max_connections against the registered processes, the database clock against this host's,
    the collation, stale heartbeats, and due jobs that no live process runs (docs/doctor.md).

    Reads only. Exit status: 0 healthy, 1 warnings, 2 problems (an unreachable database is a
    problem).
    """
    thresholds = Thresholds(
        stale_heartbeat_seconds=stale_seconds, old_transaction_seconds=transaction_seconds
    )
    findings = asyncio.run(_examine(database_url, leader_database_url, thresholds))
    findings = [_redacted(f, (database_url, leader_database_url)) for f in findings]
    click.echo(to_json(report(findings)) if as_json else render(findings))
    click.get_current_context().exit(exit_status(findings))


async def _examine(dsn: str, leader_dsn: str | None, thresholds: Thresholds) -> list[Finding]:
    try:
        conn = await asyncpg.connect(
            dsn,
            timeout=CONNECT_TIMEOUT_SECONDS,
            command_timeout=COMMAND_TIMEOUT_SECONDS,
            # Through a transaction pooler, a statement prepared by name on one server session
            # is not there on the next.
            statement_cache_size=0,
        )
    except DATABASE_ERRORS as exc:
        if logging.getLogger("pg_scheduler").isEnabledFor(logging.DEBUG):
            raise
        message = f"cannot connect to the database: {describe(exc, dsn)}"
        return [Finding(UNREACHABLE_ID, "problem", message, "check --database-url and that the server is up")]
    try:
        return await diagnose(conn, dsn=dsn, leader_dsn=leader_dsn, thresholds=thresholds)
    finally:
        await conn.close(timeout=5)


def _redacted(finding: Finding, dsns: Sequence[str | None]) -> Finding:
    message, fix = finding.message, finding.fix
    for dsn in dsns:
        message = redact(message, dsn)
        fix = None if fix is None else redact(fix, dsn)
    return Finding(finding.id, finding.level, message, fix, finding.details)


def report(findings: Sequence[Finding]) -> dict[str, object]:
    """The ``--json`` object: the overall level and exit status, counts, and every finding."""
    return {
        "status": worst(findings),
        "exit_status": exit_status(findings),
        "counts": {level: sum(1 for f in findings if f.level == level) for level in _MARKS},
        "findings": [f.to_dict() for f in findings],
    }


def render(findings: Sequence[Finding]) -> str:
    """One line per finding (level, id, message) with its fix indented below, then a summary.
    An unreachable database is its one line alone."""
    if [f.id for f in findings] == [UNREACHABLE_ID]:
        only = findings[0]
        return f"{_MARKS[only.level]}  {only.id}  {only.message}"
    width = max(len(f.id) for f in findings)
    lines = []
    for f in findings:
        lines.append(f"{_MARKS[f.level]:<8} {f.id:<{width}}  {f.message}")
        if f.fix:
            lines.append(f"{'':<8} fix: {f.fix}")
    counts = {level: sum(1 for f in findings if f.level == level) for level in _MARKS}
    lines.append(
        f"{counts['ok']} ok, {counts['warning']} warning(s), {counts['problem']} problem(s): "
        f"exit status {exit_status(findings)}"
    )
    return "\n".join(lines)
