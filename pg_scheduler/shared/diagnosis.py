"""What ``pg-scheduler doctor`` checks: a database and its deployment, and what to fix.

:func:`diagnose` runs every check and returns one :class:`Finding` per check: a stable id, a level
(``ok``, ``warning``, ``problem``), a one-line message, a one-line fix when not ok, and the figures
behind it. A *problem* keeps the scheduler from working as documented (a pending migration, a
missing or invalid index, the leader's sessions through a transaction pooler, due jobs that no
live process runs); a *warning* is advice, or a condition that costs the database work or time
(default autovacuum settings, dead rows, a held-back vacuum horizon, a non-C collation, stale
heartbeats, a clock that drifts). :func:`exit_status` turns the findings into 0, 1 or 2.

Checks only read. Each runs in its own read-only transaction, so a check that fails (a view the
role may not read, a column an older schema lacks) becomes a warning of its own and the others
still run. Checks of the scheduler's tables are not run on a database without the schema.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import asyncpg

from . import queries
from .config import LEASE_SECONDS_DEFAULT, MISFIRE_TOLERANCE_SECONDS_DEFAULT
from .db import connect_params_from_pool
from .errors import ConfigurationError
from .schema import Migration, latest_version, migrations

Level = Literal["ok", "warning", "problem"]
LEVELS: tuple[Level, ...] = ("ok", "warning", "problem")

JOBS_TABLE = "scheduled_jobs"
CONNECT_TIMEOUT_SECONDS = 10.0

# ----------------------------------------------------------------------------- limits

OLD_TRANSACTION_SECONDS_DEFAULT = 60.0
"""A transaction open longer than this, holding a snapshot or an xid, is reported: vacuum keeps
every row version it may still see, and a queue table makes many."""

STALE_HEARTBEAT_SECONDS_DEFAULT = LEASE_SECONDS_DEFAULT
"""A process whose heartbeat is older than this is not live: the leader's rescuer prunes it
after ``worker_stale_seconds``, which is one lease by default."""

CLOCK_WARNING_SECONDS_DEFAULT = MISFIRE_TOLERANCE_SECONDS_DEFAULT
"""Skew above this is a warning. Leases, heartbeats, misfires and periodic windows are all timed
on the database clock, but the due times your code computes (``datetime.now(UTC) + ...``) come
from the host's: past the misfire pickup tolerance (1 s), a job scheduled "now" by a host that is
behind is already that late, and a short ``misfire_grace_time`` expires it."""

CLOCK_PROBLEM_SECONDS_DEFAULT = LEASE_SECONDS_DEFAULT
"""Skew above this is a problem: it exceeds a lease, the interval after which the cluster gives
up on a silent worker and runs its job again, so any time the host computes is off by more than
the scheduler's own recovery time; and hosts whose clocks are synchronised stay within
milliseconds of each other, so this much skew means synchronisation is broken."""

DEAD_ROWS_MIN_DEFAULT = 10_000
"""Dead rows below this never count as bloat: autovacuum has not had a reason to run yet."""

DEAD_ROWS_RATIO_DEFAULT = 0.2
"""Dead rows above this share of the live ones are reported (autovacuum's own default trigger)."""

AUTOVACUUM_ADVICE: Mapping[str, str] = {
    "autovacuum_vacuum_scale_factor": "0.01",
    "autovacuum_vacuum_threshold": "1000",
    "autovacuum_analyze_scale_factor": "0.02",
}
"""The jobs table's autovacuum settings to recommend: a queue table turns over its pending and
running rows all day, and every finished run leaves dead entries in the claim and running
indexes until vacuum (migration 10 tells what they cost the claims). The server's default waits
for 20 % of the table to be dead, 200,000 rows in a table of a million retained jobs; these run
it after 1 % plus 1,000 rows, and refresh the planner's statistics of the partial indexes after
2 %."""

AUTOVACUUM_SCALE_FACTOR_MAX = 0.05
"""An effective ``autovacuum_vacuum_scale_factor`` above this (the server's default is 0.2) is
reported with :data:`AUTOVACUUM_ADVICE`."""

CONNECTIONS_WARNING_SHARE = 0.8
CONNECTIONS_PROBLEM_SHARE = 0.95
"""Shares of the connections left to applications (``max_connections`` less the reserved slots)
in use now: above the first a warning, above the second a problem (new sessions, such as a new
leader's lock session or a pool growing under load, are about to be refused)."""

# The most connections one registered process opens, as docs/running.md ("Sizing") counts them:
# a worker process has a pool of min(M + 1, 20) plus a LISTEN and a heartbeat session; a
# supervisor a pool of 4 plus the leader's lock session; an in-process Scheduler the
# application's pool, counted at asyncpg's default max_size of 10, plus its lock, LISTEN and
# heartbeat sessions. tests/integration/test_doctor.py checks the first two against the code.
CONNECTIONS_PER_PROCESS: Mapping[str, int] = {"worker": 20 + 2, "supervisor": 4 + 1, "scheduler": 10 + 3}
CONNECTIONS_PER_OTHER_PROCESS = CONNECTIONS_PER_PROCESS["scheduler"]

KEY_COLUMNS: tuple[str, ...] = ("job_id", "job_name", "worker_id", "dedup_key", "status")
"""The jobs table's text columns that claims and completions compare (bench/README.md measured
their collation's cost)."""


@dataclass(frozen=True)
class Thresholds:
    """The bounds the checks judge by (their defaults say why)."""

    old_transaction_seconds: float = OLD_TRANSACTION_SECONDS_DEFAULT
    stale_heartbeat_seconds: float = STALE_HEARTBEAT_SECONDS_DEFAULT
    clock_warning_seconds: float = CLOCK_WARNING_SECONDS_DEFAULT
    clock_problem_seconds: float = CLOCK_PROBLEM_SECONDS_DEFAULT
    dead_rows_min: int = DEAD_ROWS_MIN_DEFAULT
    dead_rows_ratio: float = DEAD_ROWS_RATIO_DEFAULT


@dataclass(frozen=True)
class Finding:
    """The outcome of one check."""

    id: str
    """Stable, ``<area>.<what>``: scripts and alerts may match on it."""
    level: Level
    message: str
    """One line: what was found, with its figures."""
    fix: str | None = None
    """One line: what to do; None when the level is ok."""
    details: Mapping[str, Any] = field(default_factory=dict)
    """The figures behind the message, for ``--json``."""

    def to_dict(self) -> dict[str, Any]:
        """The finding as a JSON-ready dict (datetimes left for the caller to encode)."""
        return {
            "id": self.id,
            "level": self.level,
            "message": self.message,
            "fix": self.fix,
            "details": dict(self.details),
        }


def exit_status(findings: Sequence[Finding]) -> int:
    """2 if any finding is a problem, else 1 if any is a warning, else 0."""
    levels = {f.level for f in findings}
    return 2 if "problem" in levels else 1 if "warning" in levels else 0


def worst(findings: Sequence[Finding]) -> Level:
    """The most serious level among ``findings`` (``ok`` for none)."""
    return LEVELS[exit_status(findings)]


# ----------------------------------------------------------------------------- the run

ConnectionOpener = Callable[[], contextlib.AbstractAsyncContextManager[asyncpg.Connection]]


@dataclass
class _Context:
    conn: asyncpg.Connection
    thresholds: Thresholds
    host_clock: Callable[[], float]
    open_connection: ConnectionOpener | None
    open_leader_connection: ConnectionOpener | None
    applied: set[int] | None = None
    """The migrations applied; None while unknown (the schema check could not read them)."""


_Check = Callable[[_Context], Awaitable[list[Finding]]]


async def diagnose(
    db: asyncpg.Connection | asyncpg.Pool,
    *,
    dsn: str | None = None,
    leader_dsn: str | None = None,
    thresholds: Thresholds | None = None,
    host_clock: Callable[[], float] = time.time,
) -> list[Finding]:
    """Every check on the database of ``db``, one finding each, in a fixed order.

    ``dsn`` lets the pooler check open its own two sessions (with a pool, its connection
    parameters serve when ``dsn`` is None); ``leader_dsn``, the DSN given to ``pg-scheduler run
    --leader-database-url``, is checked to reach PostgreSQL without a transaction pooler.
    ``host_clock`` (seconds since the epoch) is the clock compared with the database's.
    """
    limits = thresholds or Thresholds()
    opener: ConnectionOpener | None = None
    if dsn is not None:
        opener = _dsn_opener(dsn)
    elif isinstance(db, asyncpg.Pool):
        with contextlib.suppress(ConfigurationError):  # a pool of another kind: not checked
            opener = _params_opener(*connect_params_from_pool(db))
    leader_opener = _dsn_opener(leader_dsn) if leader_dsn is not None else None
    async with _connection(db) as conn:
        ctx = _Context(conn, limits, host_clock, opener, leader_opener)
        schema = await _run_check(ctx, _SCHEMA)
        findings = list(schema)
        # Unknown (None) is not absent: the checks of the tables run and say for themselves.
        has_schema = ctx.applied is None or bool(ctx.applied)
        for check in _CHECKS:
            if check.needs_schema and not has_schema:
                findings.extend(
                    Finding(
                        fid,
                        "warning",
                        "not checked: the database has no pg_scheduler schema",
                        "run `pg-scheduler migrate`, then the doctor again",
                    )
                    for fid in check.ids
                )
                continue
            findings.extend(await _run_check(ctx, check))
    return findings


@dataclass(frozen=True)
class _CheckSpec:
    ids: tuple[str, ...]
    """The ids of the findings it returns, one each, in this order."""
    run: _Check
    needs_schema: bool = True
    transaction: bool = True


async def _run_check(ctx: _Context, check: _CheckSpec) -> list[Finding]:
    """Run one check; an error of the database or of the connection becomes its warning."""
    try:
        if not check.transaction:
            return await check.run(ctx)
        async with ctx.conn.transaction(readonly=True):
            return await check.run(ctx)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        return [
            Finding(
                fid,
                "warning",
                f"not checked: {_one_line(exc)}",
                "if the error is a permission, grant the doctor's role pg_monitor (the catalog and "
                "statistics views); else see whether the database is reachable and the schema current",
                {"error": type(exc).__name__},
            )
            for fid in check.ids
        ]


@contextlib.asynccontextmanager
async def _connection(db: asyncpg.Connection | asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


def _dsn_opener(dsn: str) -> ConnectionOpener:
    return _params_opener((dsn,), {})


def _params_opener(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> ConnectionOpener:
    # No named prepared statements: through a transaction pooler, a name prepared by one client
    # lands on a server session that another then uses.
    @contextlib.asynccontextmanager
    async def opener() -> AsyncIterator[asyncpg.Connection]:
        options = {"timeout": CONNECT_TIMEOUT_SECONDS, **kwargs, "statement_cache_size": 0}
        conn = await asyncpg.connect(*args, **options)
        try:
            yield conn
        finally:
            await conn.close(timeout=5)

    return opener


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    message = lines[0] if lines else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else plural or word + 's'}"


def _verb(n: int, singular: str, plural: str) -> str:
    return singular if n == 1 else plural


def _names(items: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


# ----------------------------------------------------------------------------- 1. schema


async def _check_schema(ctx: _Context) -> list[Finding]:
    fid = "schema.pending_migrations"
    try:
        async with ctx.conn.transaction(readonly=True):
            rows = await ctx.conn.fetch(queries.MIGRATION_LIST_APPLIED)
    except asyncpg.UndefinedTableError:
        rows = []
    applied = ctx.applied = {int(r["version"]) for r in rows}
    shipped = [m.version for m in migrations()]
    pending = [v for v in shipped if v not in applied]
    newer = sorted(v for v in applied if v > latest_version())
    details = {"applied": sorted(applied), "latest": latest_version(), "pending": pending}
    migrate = "run `pg-scheduler migrate` (pods also migrate when they start)"
    if not applied:
        return [Finding(fid, "problem", "the database has no pg_scheduler schema", migrate, details)]
    if pending:
        return [
            Finding(
                fid,
                "problem",
                f"{_plural(len(pending), 'migration')} not applied: {_names([str(v) for v in pending])} "
                f"(this pg-scheduler needs version {latest_version()})",
                migrate,
                details,
            )
        ]
    if newer:
        return [
            Finding(
                fid,
                "warning",
                f"the schema is at version {max(newer)}, newer than this pg-scheduler knows "
                f"({latest_version()}): the other checks may miss what the newer version needs",
                "run the doctor of the pg-scheduler version the pods run",
                details,
            )
        ]
    return [Finding(fid, "ok", f"schema at version {latest_version()}, no migration pending", None, details)]


# ----------------------------------------------------------------------------- 2. indexes


@dataclass(frozen=True)
class ExpectedIndex:
    """An index a migration creates (or a table's primary key), and the SQL that recreates it."""

    name: str
    table: str
    version: int
    create: str


_COMMENT = re.compile(r"--[^\n]*")
_CREATE_INDEX = re.compile(
    r"CREATE\s+(UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\s+ON\s+(\w+)\s*([^;]*);",
    re.IGNORECASE,
)
_DROP_INDEX = re.compile(r"DROP\s+INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+EXISTS\s+)?(\w+)", re.IGNORECASE)
_CREATE_TABLE = re.compile(
    r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\s*\((.*?)\n\);", re.IGNORECASE | re.DOTALL
)
_TABLE_KEY = re.compile(r"PRIMARY\s+KEY\s*\(([^)]*)\)", re.IGNORECASE)
_COLUMN_KEY = re.compile(r"^\s*(\w+)\s+[^\n]*\bPRIMARY\s+KEY\b", re.IGNORECASE | re.MULTILINE)


def expected_indexes(
    applied: set[int] | None = None, shipped: Sequence[Migration] | None = None
) -> list[ExpectedIndex]:
    """The indexes the migrations in ``applied`` (None: all shipped) leave behind, in migration
    order: every ``CREATE INDEX`` that no later migration drops, and each created table's primary
    key. Read from the migration files, so that a new index is checked as soon as a migration
    creates it."""
    found: dict[str, ExpectedIndex] = {}
    for migration in shipped if shipped is not None else migrations():
        if applied is not None and migration.version not in applied:
            continue
        sql = _COMMENT.sub("", migration.sql)
        events: list[tuple[int, str, ExpectedIndex | None]] = []
        for m in _CREATE_TABLE.finditer(sql):
            table, body = m[1], m[2]
            keys = _TABLE_KEY.search(body)
            column = _COLUMN_KEY.search(body)
            columns = (
                ", ".join(c.strip() for c in keys[1].split(",")) if keys else column[1] if column else None
            )
            if columns:
                name = f"{table}_pkey"
                create = f"ALTER TABLE {table} ADD PRIMARY KEY ({columns})"
                events.append((m.start(), name, ExpectedIndex(name, table, migration.version, create)))
        for m in _CREATE_INDEX.finditer(sql):
            unique, name, table, rest = m[1], m[2], m[3], " ".join(m[4].split())
            kind = "UNIQUE INDEX" if unique else "INDEX"
            create = f"CREATE {kind} CONCURRENTLY IF NOT EXISTS {name} ON {table} {rest}"
            events.append((m.start(), name, ExpectedIndex(name, table, migration.version, create)))
        for m in _DROP_INDEX.finditer(sql):
            events.append((m.start(), m[1], None))
        for _, name, index in sorted(events, key=lambda e: e[0]):
            if index is None:
                found.pop(name, None)
            else:
                found[name] = index
    return list(found.values())


async def _check_indexes(ctx: _Context) -> list[Finding]:
    fid = "indexes.required"
    expected = expected_indexes(ctx.applied)
    rows = await ctx.conn.fetch(
        queries.DB_LIST_INDEXES, [i.name for i in expected], [i.table for i in expected]
    )
    missing = [i for i, r in zip(expected, rows, strict=True) if r["valid"] is None]
    invalid = [i for i, r in zip(expected, rows, strict=True) if r["valid"] is False or r["ready"] is False]
    details = {
        "checked": [i.name for i in expected],
        "missing": [i.name for i in missing],
        "invalid": [i.name for i in invalid],
    }
    if not missing and not invalid:
        return [
            Finding(
                fid,
                "ok",
                f"all {len(expected)} indexes of the claim, idle and cleanup paths are valid",
                None,
                details,
            )
        ]
    parts = []
    if missing:
        parts.append(f"missing: {_names([i.name for i in missing])}")
    if invalid:
        parts.append(f"invalid (a failed or unfinished build): {_names([i.name for i in invalid])}")
    fixes = [i.create for i in missing] + [f"REINDEX INDEX CONCURRENTLY {i.name}" for i in invalid]
    return [
        Finding(
            fid,
            "problem",
            "indexes the scheduler's statements need are " + "; ".join(parts),
            "; ".join(fixes),
            details,
        )
    ]


# ----------------------------------------------------------------------------- 3. vacuum


async def _check_vacuum(ctx: _Context) -> list[Finding]:
    stats = await ctx.conn.fetchrow(queries.VACUUM_GET_TABLE_STATS, JOBS_TABLE)
    if stats is None:
        raise asyncpg.UndefinedTableError(f'relation "{JOBS_TABLE}" does not exist')
    names = ["autovacuum", *AUTOVACUUM_ADVICE]
    server = {r["name"]: r["setting"] for r in await ctx.conn.fetch(queries.DB_LIST_SETTINGS, names)}
    table = dict(option.split("=", 1) for option in stats["reloptions"])
    return [_dead_rows(ctx.thresholds, stats, table), _autovacuum_settings(server, table)]


def _dead_rows(limits: Thresholds, stats: asyncpg.Record, table: Mapping[str, str]) -> Finding:
    fid = "vacuum.dead_tuples"
    live, dead = int(stats["live"]), int(stats["dead"])
    last: datetime | None = max(
        (t for t in (stats["last_autovacuum"], stats["last_vacuum"]) if t is not None), default=None
    )
    details = {
        "live": live,
        "dead": dead,
        "total_bytes": int(stats["total_bytes"]),
        "last_autovacuum": stats["last_autovacuum"],
        "last_vacuum": stats["last_vacuum"],
        "autovacuum_count": int(stats["autovacuum_count"]),
    }
    size = f"{int(stats['total_bytes']) / 2**20:,.1f} MiB with indexes"
    vacuumed = "never vacuumed" if last is None else f"last vacuumed {last.isoformat(timespec='seconds')}"
    figures = f"{JOBS_TABLE}: {_plural(dead, 'dead row')}, {_plural(live, 'live row')}, {size}, {vacuumed}"
    if dead < limits.dead_rows_min or dead <= live * limits.dead_rows_ratio:
        return Finding(fid, "ok", figures, None, details)
    off = table.get("autovacuum_enabled", "true").lower() in ("false", "off", "0", "no")
    why = (
        "autovacuum is off for the table"
        if off
        else "see why autovacuum falls behind: its settings and vacuum's horizon (the checks below)"
    )
    return Finding(
        fid,
        "warning",
        f"{figures}: dead rows slow the claims, which step over their index entries",
        f"VACUUM (ANALYZE) {JOBS_TABLE}; then {why}",
        details,
    )


def _autovacuum_settings(server: Mapping[str, str], table: Mapping[str, str]) -> Finding:
    fid = "vacuum.autovacuum_settings"
    effective = {name: table.get(name, server.get(name, "?")) for name in AUTOVACUUM_ADVICE}
    details = {
        "table": {k: v for k, v in table.items() if k.startswith("autovacuum")},
        "server": dict(server),
        "effective": effective,
        "advice": dict(AUTOVACUUM_ADVICE),
    }
    advice = ", ".join(f"{k} = {v}" for k, v in AUTOVACUUM_ADVICE.items())
    alter = f"ALTER TABLE {JOBS_TABLE} SET ({advice})"
    if server.get("autovacuum", "on") != "on" or table.get("autovacuum_enabled", "true").lower() in (
        "false",
        "off",
        "0",
        "no",
    ):
        where = "on the server" if server.get("autovacuum", "on") != "on" else f"for {JOBS_TABLE}"
        return Finding(
            fid,
            "warning",
            f"autovacuum is off {where}: dead rows of finished runs pile up in the jobs table",
            f"ALTER TABLE {JOBS_TABLE} RESET (autovacuum_enabled) and autovacuum = on; then {alter}",
            details,
        )
    try:
        scale = float(effective["autovacuum_vacuum_scale_factor"])
    except ValueError:
        scale = 0.0
    source = "its own" if "autovacuum_vacuum_scale_factor" in table else "the server's default"
    if scale <= AUTOVACUUM_SCALE_FACTOR_MAX:
        return Finding(
            fid,
            "ok",
            f"autovacuum runs when {scale:.0%} of {JOBS_TABLE} is dead ({source} setting)",
            None,
            details,
        )
    return Finding(
        fid,
        "warning",
        f"autovacuum waits for {scale:.0%} of {JOBS_TABLE} to be dead ({source} setting); "
        "a queue table needs it sooner",
        alter,
        details,
    )


# ----------------------------------------------------------------------------- 4. horizon


async def _check_transactions(ctx: _Context) -> list[Finding]:
    fid = "transactions.long_running"
    seconds = float(ctx.thresholds.old_transaction_seconds)
    sessions = await ctx.conn.fetch(queries.DB_LIST_OLD_TRANSACTIONS, seconds)
    prepared = await ctx.conn.fetch(queries.DB_LIST_PREPARED_TRANSACTIONS, seconds)
    details = {
        "threshold_seconds": seconds,
        "sessions": [dict(r) for r in sessions],
        "prepared": [dict(r) for r in prepared],
    }
    if not sessions and not prepared:
        return [
            Finding(
                fid, "ok", f"no transaction open longer than {seconds:g}s holds vacuum back", None, details
            )
        ]
    held = [
        f"pid {r['pid']} ({r['state'] or '?'}, {r['application_name'] or r['role'] or '?'}, "
        f"{r['age_seconds']:.0f}s)"
        for r in sessions
    ] + [f"prepared '{r['gid']}' ({r['age_seconds']:.0f}s)" for r in prepared]
    fixes = []
    if sessions:
        fixes.append(
            "end them (SELECT pg_terminate_backend(pid)) and set idle_in_transaction_session_timeout "
            "for the roles that leave transactions open"
        )
    if prepared:
        fixes.append("COMMIT PREPARED or ROLLBACK PREPARED each gid")
    return [
        Finding(
            fid,
            "warning",
            f"{_plural(len(held), 'transaction')} open longer than {seconds:g}s "
            f"{_verb(len(held), 'holds', 'hold')} vacuum's horizon back: {_names(held)}",
            "; ".join(fixes),
            details,
        )
    ]


async def _check_slots(ctx: _Context) -> list[Finding]:
    fid = "transactions.replication_slots"
    slots = await ctx.conn.fetch(queries.DB_LIST_IDLE_SLOTS)
    details = {"slots": [dict(r) for r in slots]}
    if not slots:
        return [Finding(fid, "ok", "no idle replication slot holds vacuum's horizon back", None, details)]
    names = [f"{r['slot_name']} ({r['slot_type']}, xmin {r['xmin_age']:,} transactions old)" for r in slots]
    # Slot names are lower-case letters, digits and underscores: they need no quoting.
    drops = "; ".join(f"SELECT pg_drop_replication_slot('{r['slot_name']}')" for r in slots)
    return [
        Finding(
            fid,
            "warning",
            f"{_plural(len(slots), 'replication slot')} with no consumer "
            f"{_verb(len(slots), 'holds', 'hold')} vacuum's horizon back: " + _names(names),
            f"reconnect their standby or consumer, or drop them: {drops}",
            details,
        )
    ]


# ----------------------------------------------------------------------------- 5. pooler


async def pooling_evidence(open_connection: ConnectionOpener) -> str | None:
    """How two client sessions of ``open_connection`` show a transaction (or statement) pooler
    between them and PostgreSQL, or None when each keeps its own server session.

    A session lock, a LISTEN and the session settings stay with the server session; without a
    pooler a client connection has one server session for its life, and no two client
    connections share one. So: two clients that report the same ``pg_backend_pid()``, or one
    whose backend changes while the other holds a transaction open, are behind a pooler. Nothing
    is left behind on the server sessions (no lock, no LISTEN): through a pooler they go on
    serving other clients."""
    try:
        async with open_connection() as a, open_connection() as b:
            a1 = await a.fetchval(queries.DB_GET_BACKEND_PID)
            b1 = await b.fetchval(queries.DB_GET_BACKEND_PID)
            if a1 == b1:
                return f"two client connections were served by one server session (backend {a1})"
            async with b.transaction():
                b2 = await b.fetchval(queries.DB_GET_BACKEND_PID)
                a2 = await a.fetchval(queries.DB_GET_BACKEND_PID)
            if a2 != a1:
                return f"one client connection moved from backend {a1} to {a2} between two statements"
            if b2 != b1:
                return f"one client connection moved from backend {b1} to {b2} between two statements"
            return None
    except (asyncpg.DuplicatePreparedStatementError, asyncpg.InvalidSQLStatementNameError) as exc:
        return f"a prepared statement of one client was seen by another ({_one_line(exc)})"


async def _check_pooler(ctx: _Context) -> list[Finding]:
    fid = "pooler.transaction_mode"
    fix = (
        "point --leader-database-url (PG_SCHEDULER_LEADER_DATABASE_URL) of `pg-scheduler run` "
        "at PostgreSQL itself, past the pooler (docs/kubernetes.md), and give it to the doctor too"
    )
    if ctx.open_connection is None:
        return [
            Finding(
                fid,
                "warning",
                "not checked: diagnose() was given one connection and no dsn to open two more",
                "pass dsn= to diagnose()",
            )
        ]
    main = await pooling_evidence(ctx.open_connection)
    leader = None
    if ctx.open_leader_connection is not None:
        try:
            leader = await pooling_evidence(ctx.open_leader_connection)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, ValueError) as exc:
            return [
                Finding(
                    fid,
                    "warning",
                    f"the leader database URL cannot be reached: {_one_line(exc)}",
                    "check --leader-database-url: it must reach the jobs database without a pooler",
                    {"database_url": main, "leader_database_url": None},
                )
            ]
    details = {
        "database_url_pooled": main is not None,
        "leader_database_url_given": ctx.open_leader_connection is not None,
        "leader_database_url_pooled": leader is not None,
        "evidence": leader or main,
    }
    if leader is not None:
        return [
            Finding(
                fid,
                "problem",
                f"the leader database URL goes through a transaction pooler: {leader}; the leader's "
                "lock and the workers' LISTEN would not stick to their sessions",
                fix,
                details,
            )
        ]
    if main is not None and ctx.open_leader_connection is None:
        return [
            Finding(
                fid,
                "problem",
                f"the database URL goes through a transaction pooler ({main}) and no leader URL "
                "is given: the leader's lock and the workers' LISTEN would not stick to their sessions",
                fix,
                details,
            )
        ]
    if main is not None:
        message = (
            "the database URL goes through a transaction pooler; the leader URL reaches PostgreSQL itself"
        )
    else:
        message = "each client connection keeps its own server session (no transaction pooler)"
    return [Finding(fid, "ok", message, None, details)]


# ----------------------------------------------------------------------------- 6. connections


async def _check_connections(ctx: _Context) -> list[Finding]:
    fid = "connections.max_connections"
    limits = await ctx.conn.fetchrow(queries.DB_GET_CONNECTIONS)
    kinds = {
        r["kind"]: int(r["n"])
        for r in await ctx.conn.fetch(
            queries.WORKER_COUNT_LIVE_BY_KIND, float(ctx.thresholds.stale_heartbeat_seconds)
        )
    }
    reserved = int(limits["superuser_reserved"]) + int(limits["reserved"])
    available = int(limits["max_connections"]) - reserved
    in_use = int(limits["in_use"])
    peak = sum(
        n * CONNECTIONS_PER_PROCESS.get(kind, CONNECTIONS_PER_OTHER_PROCESS) for kind, n in kinds.items()
    )
    processes = sum(kinds.values())
    details = {
        "max_connections": int(limits["max_connections"]),
        "reserved": reserved,
        "available": available,
        "in_use": in_use,
        "live_processes": kinds,
        "registered_peak": peak,
    }
    figures = (
        f"max_connections {limits['max_connections']} leaves {available} after {reserved} reserved; "
        f"{in_use} in use on the server; "
        + (
            f"the {_plural(processes, 'live registered process', 'live registered processes')} "
            f"may open up to {peak}"
            if processes
            else "no live registered process"
        )
    )
    raise_it = (
        f"raise max_connections (a restart) or pool the pods' connections through PgBouncer with "
        f"--leader-database-url past it; fewer --max-concurrent-jobs shrink each worker's pool "
        f"(min(M + 1, 20)); room needed for the registered processes alone: {peak + reserved}"
    )
    if in_use >= available:
        # The connection limit counts every client session; past it, only roles that may use the
        # reserved slots get one (superusers, and pg_use_reserved_connections from 16).
        full = "the server refuses new sessions to roles without a reserved slot"
        return [Finding(fid, "problem", f"{figures}: {full}", raise_it, details)]
    if in_use >= available * CONNECTIONS_PROBLEM_SHARE:
        return [
            Finding(
                fid, "problem", f"{figures}: the server is about to refuse new sessions", raise_it, details
            )
        ]
    if peak > available:
        return [
            Finding(
                fid,
                "warning",
                f"{figures}: more than the server accepts, so under load their pools are refused",
                raise_it,
                details,
            )
        ]
    if in_use >= available * CONNECTIONS_WARNING_SHARE:
        return [Finding(fid, "warning", f"{figures}: few connections are left", raise_it, details)]
    return [Finding(fid, "ok", figures, None, details)]


# ----------------------------------------------------------------------------- 7. clock

CLOCK_SAMPLES = 3


async def _check_clock(ctx: _Context) -> list[Finding]:
    fid = "clock.skew"
    best: tuple[float, float] | None = None
    # The database read its clock somewhere within the round trip: the middle of it is the best
    # guess, and half the round trip is the error bound. The fastest of a few samples is kept.
    for _ in range(CLOCK_SAMPLES):
        host_before = ctx.host_clock()
        started = time.monotonic()
        db_time: datetime = await ctx.conn.fetchval(queries.DB_GET_CLOCK)
        round_trip = time.monotonic() - started
        offset = db_time.timestamp() - (host_before + round_trip / 2)
        if best is None or round_trip < best[1]:
            best = (offset, round_trip)
    assert best is not None
    offset, round_trip = best
    skew = max(0.0, abs(offset) - round_trip / 2)
    limits = ctx.thresholds
    details = {
        "offset_seconds": round(offset, 6),
        "round_trip_seconds": round(round_trip, 6),
        "skew_seconds": round(skew, 6),
        "warning_seconds": limits.clock_warning_seconds,
        "problem_seconds": limits.clock_problem_seconds,
    }
    direction = "ahead of" if offset > 0 else "behind"
    message = (
        f"the database clock is {abs(offset):.3f}s {direction} this host's "
        f"(round trip {round_trip * 1000:.1f} ms)"
    )
    fix = (
        "synchronise the clocks of this host and the database server (NTP, chrony): due times "
        "your code computes come from the host's clock, leases and misfires from the database's"
    )
    if skew > limits.clock_problem_seconds:
        return [
            Finding(
                fid,
                "problem",
                f"{message}: more than a lease ({limits.clock_problem_seconds:g}s)",
                fix,
                details,
            )
        ]
    if skew > limits.clock_warning_seconds:
        return [
            Finding(
                fid,
                "warning",
                f"{message}: more than the misfire tolerance ({limits.clock_warning_seconds:g}s)",
                fix,
                details,
            )
        ]
    return [Finding(fid, "ok", message, None, details)]


# ----------------------------------------------------------------------------- 8. collation


def collates_as_c(provider: str | None, lc_collate: str | None, locale: str | None) -> bool:
    """Whether a collation compares text byte by byte (code point order), without a locale: the
    builtin provider (17 and later), or libc's ``C`` and ``POSIX``. libc's ``C.UTF-8`` still goes
    through the C library's locale code, and ICU always does."""
    if provider == "b":
        return True
    if provider == "i":
        return False
    return (lc_collate or locale) in ("C", "POSIX")


def _describe_collation(provider: str | None, lc_collate: str | None, locale: str | None) -> str:
    kind = {"b": "builtin", "i": "ICU", "c": "libc", None: "libc"}.get(provider, provider)
    return f"{kind} '{locale if provider in ('b', 'i') else lc_collate}'"


async def _check_collation(ctx: _Context) -> list[Finding]:
    fid = "collation.jobs_database"
    database = await ctx.conn.fetchrow(queries.DB_GET_COLLATION)
    columns = await ctx.conn.fetch(queries.DB_LIST_COLUMN_COLLATIONS, JOBS_TABLE, list(KEY_COLUMNS))
    db_args = (database["provider"], database["lc_collate"], database["locale"])
    db_is_c = collates_as_c(*db_args)
    slow = []
    for c in columns:
        if c["provider"] == "d":
            is_c = db_is_c
        else:
            is_c = collates_as_c(c["provider"], c["lc_collate"], c["locale"])
        if not is_c:
            slow.append(c["column_name"])
    described = _describe_collation(*db_args)
    details = {
        "database": {"provider": db_args[0], "collate": db_args[1], "locale": db_args[2]},
        "columns_not_c": slow,
    }
    if not slow and db_is_c:
        return [
            Finding(
                fid,
                "ok",
                f"the database's collation ({described}) compares text without a locale",
                None,
                details,
            )
        ]
    if not slow and columns:
        message = f'the key columns of {JOBS_TABLE} are COLLATE "C": they compare text without a locale'
        return [Finding(fid, "ok", f"{message} ({described} database)", None, details)]
    return [
        Finding(
            fid,
            "warning",
            f"the jobs database collates with {described}: comparisons of job ids and task names "
            "go through the locale (about 10 % more database CPU per job)",
            "for a new jobs database: CREATE DATABASE jobs LOCALE 'C' ENCODING 'UTF8' TEMPLATE template0 "
            '(docs/kubernetes.md); in this one, declaring the key columns COLLATE "C" rebuilds their '
            "indexes under an exclusive lock (bench/README.md)",
            details,
        )
    ]


# ----------------------------------------------------------------------------- 9. heartbeats


async def _check_heartbeats(ctx: _Context) -> list[Finding]:
    fid = "workers.stale_heartbeats"
    seconds = float(ctx.thresholds.stale_heartbeat_seconds)
    rows = await ctx.conn.fetch(queries.WORKER_LIST_STALE, seconds)
    details = {"threshold_seconds": seconds, "stale": [dict(r) for r in rows]}
    if not rows:
        return [
            Finding(
                fid,
                "ok",
                f"every registered process sent a heartbeat in the last {seconds:g}s",
                None,
                details,
            )
        ]
    stale = [
        f"{r['worker_id']} ({r['kind']} on {r['host']}, pid {r['pid']}, {r['heartbeat_age_seconds']:.0f}s)"
        for r in rows
    ]
    return [
        Finding(
            fid,
            "warning",
            f"{_plural(len(rows), 'registered process', 'registered processes')} sent no heartbeat "
            f"for more than {seconds:g}s: {_names(stale)}",
            "check those processes (frozen, cut off from the database, or gone); a leader prunes the "
            "rows of gone ones at its next rescue pass, so rows that stay mean no leader runs",
            details,
        )
    ]


# ----------------------------------------------------------------------------- 10. tasks


async def _check_tasks(ctx: _Context) -> list[Finding]:
    fid = "tasks.no_live_worker"
    rows = await ctx.conn.fetch(
        queries.JOB_COUNT_UNRUNNABLE_DUE, float(ctx.thresholds.stale_heartbeat_seconds)
    )
    details = {"tasks": [dict(r) for r in rows]}
    if not rows:
        return [Finding(fid, "ok", "every task with due jobs has a live process that runs it", None, details)]
    total = sum(int(r["due"]) for r in rows)
    listed = [f"{r['task']} (queue {r['queue']}): {r['due']:,}" for r in rows]
    return [
        Finding(
            fid,
            "problem",
            f"{_plural(total, 'due job')} of tasks that no live process runs: {_names(listed)}",
            "start a worker that imports those tasks and claims their queues "
            "(`pg-scheduler run APP --queues ...`), or cancel the jobs (`pg-scheduler jobs cancel`)",
            details,
        )
    ]


# ----------------------------------------------------------------------------- the order

_SCHEMA = _CheckSpec(("schema.pending_migrations",), _check_schema, needs_schema=False, transaction=False)

_CHECKS: tuple[_CheckSpec, ...] = (
    _CheckSpec(("indexes.required",), _check_indexes),
    _CheckSpec(("vacuum.dead_tuples", "vacuum.autovacuum_settings"), _check_vacuum),
    _CheckSpec(("transactions.long_running",), _check_transactions, needs_schema=False),
    _CheckSpec(("transactions.replication_slots",), _check_slots, needs_schema=False),
    _CheckSpec(("pooler.transaction_mode",), _check_pooler, needs_schema=False, transaction=False),
    _CheckSpec(("connections.max_connections",), _check_connections),
    _CheckSpec(("clock.skew",), _check_clock, needs_schema=False, transaction=False),
    _CheckSpec(("collation.jobs_database",), _check_collation, needs_schema=False),
    _CheckSpec(("workers.stale_heartbeats",), _check_heartbeats),
    _CheckSpec(("tasks.no_live_worker",), _check_tasks),
)

CHECK_IDS: tuple[str, ...] = tuple(fid for check in (_SCHEMA, *_CHECKS) for fid in check.ids)
"""Every finding's id, in the order :func:`diagnose` returns them."""
