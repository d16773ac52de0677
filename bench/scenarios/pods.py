"""Many idle pods, pg-scheduler only: what pods cost the server while no job is due.

1, 4 and 8 pods (``pg-scheduler run``, 2 worker processes each) against one database, after
their warm-up jobs and a settling pause, then a window (30 s) of nothing due:

- *connections*: the client backends of the database (the harness's own left out), each put to
  the pod whose process opened it (the backend's ``client_port`` is a local TCP port of one of
  the pod's processes: ``/proc/<pid>/fd`` and ``/proc/net/tcp``), by the session's
  ``application_name`` (pg-scheduler names its dedicated sessions ``pg_scheduler:leader:…``,
  ``…:listen:…``, ``…:heartbeat:…``; pool connections have none);
- *statements*: ``pg_stat_statements`` (``track = all``, set on this database only), the change
  of ``calls`` over the window: top-level statements (what the pods send; utility statements
  such as BEGIN, COMMIT and LISTEN included) and nested ones (run inside functions), and the
  statements with the most calls. The harness reads them from another database, so its own
  queries are not counted;
- *per pod and per session*: with ``log_statement = all`` on this database only, the server log
  names the backend of each statement the pods send (one line per simple query or execution of
  a prepared statement: a round trip, where a multi-statement query counts once). The leader is
  the pod whose ``pg_scheduler:leader`` session holds an advisory lock; what it sends beyond the
  mean of the other pods is the leader's own work.
"""

from __future__ import annotations

import asyncio
import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

from .. import postgres, processes
from ..systems import OURS
from ..systems.ours import PROCESSES_PER_POD
from ..trial import Context, Trial

PODS = (1, 4, 8)
QUICK_PODS = (1, 2)
SETTLE_SECONDS = 70.0
"""After the warm-up, before the window: longer than the pods' POOL_IDLE_SECONDS (60 s,
pg_scheduler/shared/db.py), so the window sees an idle pod's connections, not what its warm-up
opened. --quick settles QUICK_SETTLE_SECONDS and counts those too."""
QUICK_SETTLE_SECONDS = 12.0
TOP_STATEMENTS = 10
_LOGGED = re.compile(r"^[^\[\n]*\[(\d+)\] LOG:  (?:statement|execute [^:\n]*): ", re.MULTILINE)

STATEMENTS = """
SELECT userid, queryid, toplevel, calls, query FROM pg_stat_statements
 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1)
"""
SESSIONS = """
SELECT pid, coalesce(application_name, '') AS application_name, client_port
  FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'
"""
LOCK_HOLDERS = """
SELECT DISTINCT pid FROM pg_locks
 WHERE locktype = 'advisory' AND granted
   AND database = (SELECT oid FROM pg_database WHERE datname = $1)
"""


def _kind(application_name: str) -> str:
    """``pg_scheduler:heartbeat:<worker id>`` -> ``pg_scheduler:heartbeat``; no name -> ``pool``."""
    if application_name.startswith("pg_scheduler:"):
        return ":".join(application_name.split(":")[:2])
    return application_name or "pool"


def _one_line(query: str, width: int = 110) -> str:
    text = " ".join(query.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class _Sessions:
    """What the harness knows of each backend of the database: its name and its pod."""

    def __init__(self, pod_pids: list[list[int]], server_port: int, harness_pid: int) -> None:
        self.pod_pids = pod_pids
        self.server_port = server_port
        self.harness_pid = harness_pid
        self.name: dict[int, str] = {}
        self.pod: dict[int, int] = {}

    async def look(self, conn: asyncpg.Connection, db: str) -> list[int]:
        """Note the live backends (those that were seen before stay noted); returns their PIDs."""
        port_pod = {}
        for i, pids in enumerate(self.pod_pids):
            for port in processes.tcp_client_ports(processes.with_descendants(pids), self.server_port):
                port_pod[port] = i
        live = []
        for r in await conn.fetch(SESSIONS, db):
            if r["pid"] == self.harness_pid:
                continue
            live.append(r["pid"])
            self.name[r["pid"]] = r["application_name"]
            if r["client_port"] in port_pod:
                self.pod[r["pid"]] = port_pod[r["client_port"]]
        return live


async def _statements(conn: asyncpg.Connection, db: str) -> dict[tuple[int, int, bool], tuple[int, str]]:
    return {
        (r["userid"], r["queryid"], r["toplevel"]): (r["calls"], r["query"])
        for r in await conn.fetch(STATEMENTS, db)
    }


def _log_size(path: Path | None) -> int:
    return path.stat().st_size if path is not None else 0


def _logged_statements(path: Path, start: int, end: int) -> Counter[int]:
    """Statements logged between two offsets of the server log, per backend PID."""
    with path.open("rb") as f:
        f.seek(start)
        text = f.read(end - start).decode(errors="replace")
    return Counter(int(m.group(1)) for m in _LOGGED.finditer(text))


async def pods(ctx: Context, n: int, *, window: float, settle: float = SETTLE_SECONDS) -> dict[str, Any]:
    opts = ctx.options
    async with Trial(ctx, OURS, f"pods{n}") as t:
        db = postgres.database_of(t.dsn)
        admin = await asyncpg.connect(ctx.admin_dsn)
        try:
            await admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            # Identifiers cannot be bind parameters; database_of checked the name. Sessions
            # opened from now on in this database are tracked and logged (not the harness's).
            await admin.execute(f"ALTER DATABASE \"{db}\" SET pg_stat_statements.track = 'all'")
            await admin.execute(f'ALTER DATABASE "{db}" SET compute_query_id = on')
            if ctx.server_log is not None:
                await admin.execute(f"ALTER DATABASE \"{db}\" SET log_statement = 'all'")
            harness_pid = int(await t.conn.fetchval("SELECT pg_backend_pid()"))
            await t.start_workers(n * PROCESSES_PER_POD, opts.concurrency, pods=n)
            await t.warm_up()
            await asyncio.sleep(settle)
            sessions = _Sessions([[w.pid] for w in t.workers], postgres.server_port(t.dsn), harness_pid)

            await sessions.look(admin, db)
            log_start = _log_size(ctx.server_log)
            before = await _statements(admin, db)
            await asyncio.sleep(window)
            after = await _statements(admin, db)
            log_end = _log_size(ctx.server_log)
            live = await sessions.look(admin, db)
            holders = {r["pid"] for r in await admin.fetch(LOCK_HOLDERS, db)}
        finally:
            await admin.close()
        await t.verify()
        worker_processes = t.worker_processes

    calls = {k: c - before.get(k, (0, ""))[0] for k, (c, _) in after.items()}
    top_level = sum(c for k, c in calls.items() if k[2])
    nested = sum(c for k, c in calls.items() if not k[2])
    top = sorted(((c, k) for k, c in calls.items() if c > 0), key=lambda x: x[0], reverse=True)
    per_pod_connections = Counter(sessions.pod[p] for p in live if p in sessions.pod)
    result: dict[str, Any] = {
        "pods": n,
        "worker_processes": worker_processes,
        "window_s": window,
        "statements_per_s": top_level / window,
        "statements_per_s_per_pod": top_level / window / n,
        "nested_per_s": nested / window,
        "connections": len(live),
        "connections_per_pod": max(per_pod_connections.values(), default=0),
        "connections_unattributed": sum(1 for p in live if p not in sessions.pod),
        "connections_by_kind": dict(Counter(_kind(sessions.name[p]) for p in live)),
        "top_statements": [
            {
                "calls_per_s": c / window,
                "top_level": k[2],
                "query": _one_line(after[k][1]),
            }
            for c, k in top[:TOP_STATEMENTS]
        ],
    }
    if ctx.server_log is not None:
        result.update(
            _per_session(_logged_statements(ctx.server_log, log_start, log_end), sessions, holders, n, window)
        )
    return result


def _per_session(
    logged: Counter[int], sessions: _Sessions, holders: set[int], n: int, window: float
) -> dict[str, Any]:
    """The server log's statements per pod (the leader's first) and per kind of session."""
    leaders = [p for p in holders if _kind(sessions.name.get(p, "")) == "pg_scheduler:leader"]
    leader_pod = sessions.pod.get(leaders[0]) if leaders else None
    by_pod = Counter({i: 0 for i in range(n)})
    by_kind: Counter[str] = Counter()
    unattributed = 0
    for pid, count in logged.items():
        by_kind[_kind(sessions.name.get(pid, "?"))] += count
        if pid in sessions.pod:
            by_pod[sessions.pod[pid]] += count
        else:
            unattributed += count
    # The leader's pod first; without one known, the busiest.
    order = sorted(range(n), key=lambda i: (i != leader_pod, -by_pod[i] if leader_pod is None else i))
    per_pod = [by_pod[i] / window for i in order]
    others = per_pod[1:] if leader_pod is not None else []
    return {
        "logged_per_s": sum(logged.values()) / window,
        "logged_per_s_by_pod": per_pod,
        "logged_unattributed_per_s": unattributed / window,
        "leader_pod_known": leader_pod is not None,
        "leader_session_per_s": sum(logged[p] for p in leaders) / window,
        "leader_excess_per_s": per_pod[0] - statistics.fmean(others) if others else None,
        "logged_per_s_by_kind": {k: v / window for k, v in sorted(by_kind.items())},
    }
