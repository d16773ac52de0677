"""``python -m bench.dashboard_pages``: the dashboard's pages on a table of millions of jobs.

Starts the bench's durable PostgreSQL (``postgres.py``, with ``shared_buffers`` and the WAL
sized for a table of gigabytes), migrates a fresh database with pg-scheduler's migrations and
fills ``scheduled_jobs`` with ``--rows`` rows in a few set-based ``INSERT ... SELECT`` statements
(one per million rows; no round trip per row), then ``VACUUM ANALYZE``. The mix is a week of a
busy cluster: 94 % completed, 3 % failed (each with a multi-line traceback), 1 % cancelled, 1 %
expired, 1 % pending (most due in the coming week, some overdue), a few hundred running (worker,
lease, heartbeat), 5 queues, 50 task names (5 of them periodic, with their windows and
``scheduler_periodic`` rows), a registry of two pods and a leader.

Then it loads every page through the ASGI app (``create_app`` on an asyncpg pool, httpx's
``ASGITransport``: no socket, no uvicorn) ``--loads`` times after one warm-up load, interleaved
(each load visits every page in turn), and reads the server's own time from the
``Server-Timing`` header (``db`` and ``total``) next to the request's wall time. Every page whose
server time exceeds the budget has its slowest queries (captured with asyncpg's query logger)
run again under ``EXPLAIN (ANALYZE, BUFFERS)``, and the plan node that dominates is named.

    python -m bench.dashboard_pages                         # 10,000,000 rows, 20 loads
    python -m bench.dashboard_pages --rows 1000000 --keep   # keep the server's folder
    python -m bench.dashboard_pages --reuse /tmp/pgsched-xyz --json out.json

Not a test and not part of ``python -m bench``: the speed goal of issue 22 (every page under
300 ms of server time with 10 million rows), measured.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import importlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from pg_scheduler.embedded import Cluster
from pg_scheduler.shared import schema
from tests.pgserver import TestPostgres

from .postgres import SERVER_SETTINGS, check_durability, server_version

DATABASE = "dashboard_bench"
BUDGET_MS = 300.0
HOUR, DAY, WEEK = timedelta(hours=1), timedelta(days=1), timedelta(days=7)
CHUNK = 1_000_000
OVERVIEW_GAP = 3.5
"""Seconds between two loads of the overview: longer than its count cache lives
(pg_scheduler.dashboard.reads.COUNTS_TTL_SECONDS, 3 s), so every load reads the counts."""
# The bench's durable settings, plus memory for a table of gigabytes: a modest shared_buffers
# (the machine is shared), room for the index builds, and WAL that does not checkpoint every
# second while the rows go in. Everything else is PostgreSQL's default (work_mem 4 MB).
SETTINGS = {
    **SERVER_SETTINGS,
    "max_connections": "100",
    "shared_buffers": "1GB",
    "maintenance_work_mem": "512MB",
    "max_wal_size": "8GB",
}

QUEUES = ["default", "emails", "billing", "reports", "webhooks"]
# 50 task names; the last 5 are periodic. A task sits in one queue (task i in QUEUES[i % 5]).
TASKS = [
    f"app.tasks.{name}"
    for name in (
        "send_welcome_email send_receipt send_password_reset charge_card refund_payment "
        "sync_invoice build_monthly_report build_daily_report export_csv deliver_webhook "
        "retry_webhook resize_image transcode_video index_document reindex_customer "
        "notify_slack notify_sms update_search score_lead enrich_company import_contacts "
        "dedupe_contacts archive_order ship_order cancel_order restock_item price_update "
        "sync_crm send_digest render_pdf ocr_scan geocode_address fraud_check tax_quote "
        "close_books audit_log rotate_keys warm_cache purge_cdn generate_thumbnail "
        "compute_metrics backfill_events expire_sessions sync_calendar translate_text "
        "poll_feeds heartbeat_ping sync_inventory hourly_report nightly_cleanup"
    ).split()
]
ORDINARY = 45
# (task index, every seconds, cron, timezone): the periodic schedules and their windows.
PERIODIC = [
    (45, 30.0, None, None),
    (46, 60.0, None, None),
    (47, 300.0, None, None),
    (48, None, "0 * * * *", "UTC"),
    (49, None, "0 3 * * *", "Europe/Paris"),
]
HOSTS = ["jobs-7d9f8-abcde", "jobs-7d9f8-fghij"]

# u(g, k): a uniform number in [0, 1) for row g, stream k; deterministic (a hash, not random()),
# so that every column of a row agrees whatever order the planner evaluates them in, and a
# fill of the same size is the same table every time. Inlined by the planner (SQL, IMMUTABLE).
UNIFORM = """
CREATE FUNCTION pg_temp.u(g bigint, k int) RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (hashint8(g * 64 + k) & 2147483647)::float8 / 2147483648 $$
"""

TRACEBACK = """Traceback (most recent call last):
  File "/usr/local/lib/python3.12/site-packages/pg_scheduler/worker/runner.py", line 214, in run_job
    result = await self._call(fn, args, kwargs)
             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/usr/local/lib/python3.12/site-packages/pg_scheduler/worker/runner.py", line 251, in _call
    return await fn(*args, **kwargs)
           ^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/app/app/tasks.py", line %s, in %s
    order = await client.fetch_order(customer_id, order["id"])
            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/app/app/clients/orders.py", line 88, in fetch_order
    response = await self._http.get(f"/customers/{customer_id}/orders/{order_id}")
               ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/usr/local/lib/python3.12/site-packages/httpx/_client.py", line 1814, in get
    return await self.request(
           ^^^^^^^^^^^^^^^^^^^
  File "/usr/local/lib/python3.12/site-packages/httpx/_client.py", line 1585, in request
    return await self.send(request, auth=auth, follow_redirects=follow_redirects)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
%s"""
ERRORS = [
    "httpx.ConnectTimeout: timed out connecting to orders.internal:443 (order %s)",
    "ValueError: customer %s has no billing address",
    "KeyError: 'sku' (order %s)",
    "asyncpg.exceptions.UniqueViolationError: duplicate key value violates unique constraint "
    '"invoices_order_id_key"\nDETAIL:  Key (order_id)=(%s) already exists.',
]

# The bulk of the table: rows g in [$1, $2], created over the week before the anchor $3 (step
# $4 seconds apart), in creation order, so that job ids (UUIDv7 of created_at, as
# pg_scheduler.ids makes them) grow with the heap, as in a real table.
# $5 task names, $6 queues, $7 the week's worker ids, $8 the traceback format, $9 error lines
FILL_JOBS = """
INSERT INTO scheduled_jobs
    (job_id, job_name, queue, execution_time, status, task_data, created_at, last_heartbeat,
     lease_until, priority, retry_count, max_retries, worker_id, error_message, attempt,
     started_at, finished_at, timeout_seconds, result, misfire_grace_time)
SELECT uuidv7(created_at - now())::text, ($5::text[])[t + 1], ($6::text[])[t % 5 + 1],
       execution_time, status,
       jsonb_build_object('args', '[]'::jsonb,
                          'kwargs', jsonb_build_object('customer_id', customer,
                                                       'order', jsonb_build_object('id', g))),
       created_at,
       CASE WHEN status IN ('completed', 'failed')
            THEN greatest(started_at, finished_at - interval '2 seconds') END,
       NULL,
       CASE WHEN pg_temp.u(g, 8) < 0.05 THEN 1 WHEN pg_temp.u(g, 8) < 0.10 THEN 10 ELSE 5 END,
       retry_count, max_retries,
       CASE WHEN status IN ('completed', 'failed')
            THEN ($7::text[])[1 + (g * 37 + (pg_temp.u(g, 10) * 4)::int) % array_length($7::text[], 1)] END,
       CASE WHEN status = 'failed' OR (status = 'pending' AND retry_count > 0)
            THEN format($8, 40 + t * 7, split_part(($5::text[])[t + 1], '.', 3),
                        format(($9::text[])[t % 4 + 1], CASE WHEN t % 4 = 1 THEN customer ELSE g END))
            WHEN status = 'expired'
            THEN format('misfired: %s s late, misfire grace is 60 s',
                        round((61 + pg_temp.u(g, 11) * 600)::numeric, 3))
       END,
       CASE status WHEN 'completed' THEN retry_count + 1 WHEN 'failed' THEN max_retries + 1
                   WHEN 'pending' THEN retry_count ELSE 0 END,
       started_at,
       finished_at,
       CASE WHEN t % 7 = 0 THEN 300 END,
       CASE WHEN status = 'completed' AND t % 4 = 0
            THEN jsonb_build_object('ok', true, 'processed', (pg_temp.u(g, 12) * 1000)::int) END,
       CASE WHEN status = 'expired' THEN 60 END
  FROM (
  SELECT *,
         CASE status WHEN 'cancelled' THEN created_at + (execution_time - created_at) * pg_temp.u(g, 6)
                                           + interval '40 milliseconds'
                     WHEN 'expired' THEN execution_time + (61 + pg_temp.u(g, 11) * 600) * interval '1 second'
                     WHEN 'pending' THEN NULL
                     ELSE started_at + (0.01 + 60 * pg_temp.u(g, 6) ^ 4) * interval '1 second'
         END AS finished_at
  FROM (
    SELECT *,
           CASE WHEN status IN ('completed', 'failed')
                THEN execution_time + (0.002 + 0.3 * pg_temp.u(g, 5) ^ 2) * interval '1 second' END
               AS started_at,
           CASE WHEN status = 'failed' THEN max_retries
                WHEN status IN ('completed', 'pending') AND max_retries > 0 AND pg_temp.u(g, 9) < 0.08
                THEN 1 ELSE 0 END AS retry_count
      FROM (
        SELECT *,
               CASE WHEN status = 'pending' AND pg_temp.u(g, 3) < 0.15
                    THEN $3::timestamptz - pg_temp.u(g, 4) * interval '20 minutes'
                    WHEN status = 'pending' THEN $3::timestamptz + pg_temp.u(g, 4) * interval '7 days'
                    WHEN pg_temp.u(g, 3) < 0.9 THEN created_at + pg_temp.u(g, 4) * interval '50 milliseconds'
                    ELSE created_at + pg_temp.u(g, 4) * interval '10 minutes' END AS execution_time
          FROM (
            SELECT g,
                   $3::timestamptz - interval '7 days'
                       + (g - 1 + pg_temp.u(g, 0)) * $4::float8 * interval '1 second' AS created_at,
                   CASE WHEN pg_temp.u(g, 1) < 0.94 THEN 'completed'
                        WHEN pg_temp.u(g, 1) < 0.97 THEN 'failed'
                        WHEN pg_temp.u(g, 1) < 0.98 THEN 'cancelled'
                        WHEN pg_temp.u(g, 1) < 0.99 THEN 'expired'
                        ELSE 'pending' END AS status,
                   -- skewed: a few tasks make most of the rows, as in a real application
                   floor(pg_temp.u(g, 2) ^ 2 * 45)::int AS t,
                   1 + floor(pg_temp.u(g, 7) * 100000)::int AS customer,
                   CASE WHEN floor(pg_temp.u(g, 2) ^ 2 * 45)::int % 3 = 0 THEN 3 ELSE 0 END AS max_retries
              FROM generate_series($1::bigint, $2::bigint) AS g
          ) AS a
      ) AS b
  ) AS c
  ) AS d
"""

# The jobs running now: $1 how many, $2 the anchor, $3 task names, $4 queues, $5 live worker ids.
FILL_RUNNING = """
INSERT INTO scheduled_jobs
    (job_id, job_name, queue, execution_time, status, task_data, created_at, last_heartbeat,
     lease_until, priority, retry_count, max_retries, worker_id, attempt, started_at)
SELECT uuidv7(created_at - now())::text, ($3::text[])[t + 1], ($4::text[])[t % 5 + 1], created_at,
       'running',
       jsonb_build_object('args', '[]'::jsonb,
                          'kwargs', jsonb_build_object('customer_id', 1 + (g * 7919) % 100000,
                                                       'order', jsonb_build_object('id', 20000000 + g))),
       created_at, $2::timestamptz - pg_temp.u(-g, 3) * interval '9 seconds',
       $2::timestamptz + interval '1 hour', 5, 0, CASE WHEN t % 3 = 0 THEN 3 ELSE 0 END,
       ($5::text[])[1 + g % array_length($5::text[], 1)], 1,
       created_at + pg_temp.u(-g, 4) * interval '1 second'
  FROM (SELECT g, floor(pg_temp.u(-g, 2) ^ 2 * 45)::int AS t,
               $2::timestamptz - (g::float8 / $1) * interval '3 minutes' AS created_at
          FROM generate_series(1, $1::int) AS g) AS a
 ORDER BY created_at
"""

# One periodic schedule's windows over the week (each a row, done), and the next one written
# ahead (pending). $1 dedup_key / job_name, $2 queue, $3 window starts, $4 the anchor.
FILL_WINDOWS = """
INSERT INTO scheduled_jobs
    (job_id, job_name, queue, execution_time, status, task_data, created_at, last_heartbeat,
     priority, worker_id, error_message, attempt, started_at, finished_at, dedup_key,
     window_start, overlap)
SELECT uuidv7(least(w - interval '2 seconds', $4::timestamptz) - now())::text, $1, $2, w,
       CASE WHEN w > $4::timestamptz THEN 'pending'
            WHEN pg_temp.u(i, 20) < 0.01 THEN 'failed' ELSE 'completed' END,
       '{"args": [], "kwargs": {}}'::jsonb, least(w - interval '2 seconds', $4::timestamptz),
       CASE WHEN w <= $4::timestamptz THEN w + interval '30 milliseconds' END, 5,
       CASE WHEN w <= $4::timestamptz THEN $5 END,
       CASE WHEN w <= $4::timestamptz AND pg_temp.u(i, 20) < 0.01
            THEN 'TimeoutError: feed did not answer within 10 s' END,
       CASE WHEN w <= $4::timestamptz THEN 1 ELSE 0 END,
       CASE WHEN w <= $4::timestamptz THEN w + interval '4 milliseconds' END,
       CASE WHEN w <= $4::timestamptz THEN w + (0.02 + pg_temp.u(i, 21)) * interval '1 second' END,
       $1, w, 'allow'
  FROM unnest($3::timestamptz[]) WITH ORDINALITY AS s(w, i)
"""

PERIODIC_ROW = """
INSERT INTO scheduler_periodic
    (dedup_key, task_name, job_name, every_seconds, cron, timezone, code_every_seconds, code_cron,
     code_timezone, queue, next_run_at, last_window, created_at, updated_at, enabled)
VALUES ($1, $1, $1, $2, $3, $4, $2, $3, $4, $5, $6, $7, $8::timestamptz - interval '30 days', $8, $9)
"""


@dataclass
class Page:
    label: str
    path: str
    loads: list[dict[str, Any]] = field(default_factory=list)
    status: set[int] = field(default_factory=set)
    queries: list[dict[str, Any]] = field(default_factory=list)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.dashboard_pages", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=10_000_000, help="rows of scheduled_jobs (10000000)")
    p.add_argument("--loads", type=int, default=20, help="timed loads of each page, after one warm-up (20)")
    p.add_argument("--keep", action="store_true", help="keep the server's folder (data and log) and name it")
    p.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="a folder that --keep left: start that server, skip the fill when the rows are there",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument(
        "--app",
        default="pg_scheduler.dashboard:create_app",
        help="module:factory of the app, called as factory(pool) (pg_scheduler.dashboard:create_app)",
    )
    p.add_argument("--report", type=Path, default=None, help="print the table of an earlier --json again")
    p.add_argument("--no-explain", action="store_true", help="do not EXPLAIN the queries of slow pages")
    p.add_argument(
        "--try-sql",
        type=Path,
        default=None,
        help="SQL run on the filled database before the timing (e.g. a proposed migration's"
        " indexes); it stays in the database, which --reuse then keeps",
    )
    return p.parse_args(argv)


def server(reuse: Path | None) -> TestPostgres:
    """The bench's server in a new temp folder, or in the folder ``reuse`` that --keep left."""
    pg = TestPostgres(settings=SETTINGS, timeout=300.0)
    if reuse is not None:
        if not (reuse / "data" / "PG_VERSION").exists():
            raise SystemExit(f"{reuse} holds no data folder of a kept server")
        shutil.rmtree(pg.base, ignore_errors=True)
        pg.base = reuse
        pg.datadir = reuse / "data"
        pg.logfile = reuse / "postgres.log"
        pg.cluster = Cluster(pg.bindir, pg.datadir, pg.logfile, timeout=pg.timeout)
    return pg.start()


def _worker_ids() -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """The week's worker ids (pods restarted now and then), the live ones, and the live
    registry's rows (a supervisor and two worker processes per pod)."""
    past = [f"jobs-7d9f8-{d:05x}:{100 + d % 7}:w{d % 2}:{d * 2654435761 % 16**6:06x}" for d in range(24)]
    live: list[str] = []
    rows: list[dict[str, Any]] = []
    for n, host in enumerate(HOSTS):
        sup = f"{host}:1:{0xA1B2C3D4 + n:08x}"
        rows.append({"worker_id": sup, "kind": "supervisor", "host": host, "pid": 1, "supervisor_id": None})
        for w in range(2):
            wid = f"{host}:{20 + w}:w{w}:{0xABC123 + 17 * n + w:06x}"
            live.append(wid)
            rows.append(
                {"worker_id": wid, "kind": "worker", "host": host, "pid": 20 + w, "supervisor_id": sup}
            )
    return past + live, live, rows


def _windows(every: float | None, cron: str | None, tz: str | None, anchor: datetime) -> list[datetime]:
    """The window starts of the week before the anchor, and the next one after it."""
    start = anchor.timestamp() - 7 * 86400
    if every is not None:
        first = (start // every + 1) * every
        count = int((anchor.timestamp() - first) // every) + 2
        return [datetime.fromtimestamp(first + i * every, UTC) for i in range(count)]
    step = 3600.0 if cron == "0 * * * *" else 86400.0
    offset = 0.0 if step == 3600.0 else 2 * 3600.0  # 03:00 Europe/Paris is 02:00 UTC in winter
    first = ((start - offset) // step + 1) * step + offset
    count = int((anchor.timestamp() - first) // step) + 2
    return [datetime.fromtimestamp(first + i * step, UTC) for i in range(count)]


async def fill(dsn: str, rows: int) -> dict[str, Any]:
    """Migrate and fill the database; the time of each step."""
    conn = await asyncpg.connect(dsn)
    took: dict[str, Any] = {}
    try:
        t0 = time.perf_counter()
        await schema.migrate(conn)
        took["migrate_s"] = round(time.perf_counter() - t0, 2)
        await conn.execute(UNIFORM)
        anchor = datetime.now(UTC).replace(microsecond=0)
        took["anchor"] = anchor.isoformat()
        every_id, live, registry = _worker_ids()
        periodic_rows = 0
        windows = {key: _windows(every, cron, tz, anchor) for key, every, cron, tz in PERIODIC}
        periodic_rows = sum(len(w) for w in windows.values())
        running = 300
        bulk = max(rows - running - periodic_rows, 0)
        step = (7 * 86400 - 900) / max(bulk, 1)  # created over the week, up to 15 minutes ago
        t0 = time.perf_counter()
        for lo in range(1, bulk + 1, CHUNK):
            hi = min(lo + CHUNK - 1, bulk)
            c0 = time.perf_counter()
            await conn.execute(
                FILL_JOBS,
                lo,
                hi,
                anchor,
                step,
                TASKS,
                QUEUES,
                every_id,
                TRACEBACK,
                ERRORS,
                timeout=None,
            )
            print(f"  rows {lo:,}–{hi:,}: {time.perf_counter() - c0:.1f} s", flush=True)
        for key, every, cron, tz in PERIODIC:
            ws = windows[key]
            await conn.execute(FILL_WINDOWS, TASKS[key], QUEUES[key % 5], ws, anchor, live[key % len(live)])
            done = [w for w in ws if w <= anchor]
            await conn.execute(
                PERIODIC_ROW,
                TASKS[key],
                every,
                cron,
                tz,
                QUEUES[key % 5],
                ws[-1],
                done[-1],
                anchor,
                key != 47,  # one schedule disabled
            )
        await conn.execute(FILL_RUNNING, running, anchor, TASKS, QUEUES, live)
        took["insert_s"] = round(time.perf_counter() - t0, 1)
        await registry_rows(conn, registry, anchor)
        t0 = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE)", timeout=None)
        took["vacuum_analyze_s"] = round(time.perf_counter() - t0, 1)
        await conn.execute("CHECKPOINT", timeout=None)
        took["rows"] = bulk + running + periodic_rows
    finally:
        await conn.close()
    return took


async def registry_rows(conn: asyncpg.Connection, registry: list[dict[str, Any]], anchor: datetime) -> None:
    """Two pods (a supervisor, two workers each), the leader, the queues and a registrar pass."""
    for r in registry:
        await conn.execute(
            "INSERT INTO scheduler_workers (worker_id, kind, host, pid, tasks, supervisor_id, queues,"
            " enforces_limits, started_at) VALUES ($1, $2, $3, $4, $5, $6, NULL, true, $7)",
            r["worker_id"],
            r["kind"],
            r["host"],
            r["pid"],
            TASKS if r["kind"] == "worker" else [],
            r["supervisor_id"],
            anchor - 2 * DAY,
        )
    leader = registry[0]
    await conn.execute(
        "UPDATE scheduler_leader SET epoch = 7, leader_id = $1, host = $2, pid = $3, elected_at = $4",
        leader["worker_id"],
        leader["host"],
        leader["pid"],
        anchor - 2 * DAY,
    )
    await conn.execute("UPDATE scheduler_periodic_pass SET pass_at = $1, epoch = 7", anchor)
    for name in QUEUES:
        limit = 4 if name == "reports" else None
        await conn.execute(
            "INSERT INTO scheduler_queues (name, concurrency, code_concurrency, declared)"
            " VALUES ($1, $2, $2, true) ON CONFLICT (name) DO NOTHING",
            name,
            limit,
        )


# A live cluster, when the pages are timed (however long ago the fill ran): the processes'
# heartbeats, the running jobs' leases and heartbeats, the registrar's last pass.
TOUCH = """
WITH w AS (UPDATE scheduler_workers SET last_heartbeat = now() - random() * interval '4 seconds'),
     p AS (UPDATE scheduler_periodic_pass SET pass_at = now() - interval '3 seconds')
UPDATE scheduled_jobs
   SET last_heartbeat = now() - random() * interval '9 seconds', lease_until = now() + interval '25 seconds'
 WHERE status = 'running'
"""


async def describe(conn: asyncpg.Connection) -> dict[str, Any]:
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM scheduled_jobs GROUP BY status ORDER BY n DESC"
    )
    sizes = await conn.fetchrow(
        "SELECT pg_table_size('scheduled_jobs') AS heap, pg_indexes_size('scheduled_jobs') AS indexes,"
        " pg_database_size(current_database()) AS db"
    )
    indexes = await conn.fetch(
        "SELECT indexrelid::regclass::text AS name, pg_relation_size(indexrelid) AS bytes"
        "  FROM pg_index WHERE indrelid = 'scheduled_jobs'::regclass ORDER BY 2 DESC"
    )
    return {
        "states": {r["status"]: r["n"] for r in rows},
        "heap_bytes": sizes["heap"],
        "index_bytes": sizes["indexes"],
        "db_bytes": sizes["db"],
        "indexes": {r["name"]: r["bytes"] for r in indexes},
        "schema_version": await schema.current_version(conn),
    }


async def pick(conn: asyncpg.Connection) -> dict[str, Any]:
    """Values for the pages' filters, read from the table: a failed job (the newest), a queue and
    task that have failed jobs, a customer with completed jobs, a window of an hour."""
    failed = await conn.fetchrow(
        "SELECT job_id, job_name, queue FROM scheduled_jobs WHERE status = 'failed'"
        " AND dedup_key IS NULL"
        " ORDER BY finished_at DESC LIMIT 1"
    )
    # A task of the middle of the skew: neither the busiest nor a rare one.
    task = TASKS[12]
    customer = await conn.fetchval(
        "SELECT (task_data->'kwargs'->>'customer_id')::int FROM scheduled_jobs"
        " WHERE status = 'completed' AND dedup_key IS NULL ORDER BY finished_at DESC LIMIT 1"
    )
    anchor = await conn.fetchval("SELECT max(created_at) FROM scheduled_jobs WHERE status <> 'running'")
    return {
        "failed_id": failed["job_id"],
        "queue": QUEUES[12 % 5],
        "task": task,
        "customer": customer,
        "range_from": (anchor - 3 * DAY).isoformat(timespec="seconds"),
        "range_to": (anchor - 3 * DAY + HOUR).isoformat(timespec="seconds"),
    }


def pages(v: dict[str, Any]) -> list[Page]:
    from urllib.parse import quote

    search = quote(json.dumps({"customer_id": v["customer"]}, separators=(",", ":")))
    return [
        Page("overview", "/"),
        Page("jobs: failed", "/jobs?state=failed"),
        Page("jobs: completed", "/jobs?state=completed"),
        Page("jobs: completed, page 2", ""),  # the next link of the page above
        Page("jobs: pending", "/jobs?state=pending"),
        Page("jobs: running", "/jobs?state=running"),
        Page("jobs: failed, queue + task", f"/jobs?state=failed&queue={v['queue']}&task={quote(v['task'])}"),
        Page("jobs: completed, q={customer_id}", f"/jobs?state=completed&q={search}"),
        Page(
            "jobs: completed, one hour",
            f"/jobs?state=completed&since={quote(v['range_from'])}&until={quote(v['range_to'])}",
        ),
        Page(
            "jobs: completed, q={customer_id}, one hour",
            f"/jobs?state=completed&q={search}&since={quote(v['range_from'])}&until={quote(v['range_to'])}",
        ),
        Page("job detail (failed)", f"/jobs/{v['failed_id']}"),
        Page("periodic", "/periodic"),
        Page("queues", "/queues"),
    ]


_TIMING = re.compile(r"(\w+);dur=([0-9.]+)")
_NEXT = [
    re.compile(r'<a[^>]*rel="next"[^>]*href="([^"]+)"'),
    re.compile(r'<a[^>]*href="([^"]+)"[^>]*rel="next"'),
    re.compile(r'href="([^"]*[?&](?:amp;)?(?:cursor|after|before)=[^"]*)"'),
]


def server_timing(header: str | None) -> dict[str, float]:
    return {k: float(v) for k, v in _TIMING.findall(header or "")}


def next_link(body: str) -> str | None:
    for pattern in _NEXT:
        m = pattern.search(body)
        if m:
            return html.unescape(m.group(1))
    return None


class Capture:
    """Every statement the app's pool runs, with its arguments and time (asyncpg's query logger)."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def attach(self, conn: asyncpg.Connection) -> None:
        conn.add_query_logger(self.seen.append)


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """The app's startup and shutdown (httpx's ASGITransport does not send lifespan events)."""
    ctx = getattr(getattr(app, "router", None), "lifespan_context", None)
    async with ctx(app) if ctx is not None else nullcontext():
        yield


async def time_pages(dsn: str, factory: Callable[..., Any], plan: list[Page], loads: int) -> None:
    import httpx

    capture = Capture()
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=5, init=capture.attach)
    try:
        app = factory(pool)
        async with lifespan(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as client:
                last_overview = 0.0
                for n in range(loads + 1):  # load 0: the warm-up, not counted
                    for page in plan:
                        if not page.path:
                            continue
                        if page.path == "/":
                            # Past the overview's count cache: every load counts afresh.
                            await asyncio.sleep(max(0.0, last_overview + OVERVIEW_GAP - time.monotonic()))
                            last_overview = time.monotonic()
                        capture.seen.clear()
                        t0 = time.perf_counter()
                        r = await client.get(page.path)
                        wall = (time.perf_counter() - t0) * 1000
                        await asyncio.sleep(0)  # the query logger's callbacks run from call_soon
                        timing = server_timing(r.headers.get("server-timing"))
                        page.status.add(r.status_code)
                        statements = [
                            {
                                "sql": q.query,
                                "args": list(q.args or ()),
                                "ms": round(q.elapsed * 1000, 2),
                                "error": repr(q.exception) if q.exception else None,
                            }
                            for q in capture.seen
                        ]
                        if n == 0:
                            if page.label == "jobs: completed":
                                link = next_link(r.text)
                                nxt = next(p for p in plan if p.label == "jobs: completed, page 2")
                                nxt.path = link or ""
                                if not link:
                                    print("  no next link on /jobs?state=completed", file=sys.stderr)
                            page.queries = statements
                            continue
                        page.loads.append(
                            {
                                "status": r.status_code,
                                "total_ms": timing.get("total"),
                                "db_ms": timing.get("db"),
                                "wall_ms": round(wall, 2),
                                "bytes": len(r.content),
                            }
                        )
                        slowest = max((s["ms"] for s in statements), default=0.0)
                        if slowest >= max((s["ms"] for s in page.queries), default=0.0):
                            page.queries = statements
                    print(f"  load {n}/{loads}{' (warm-up)' if n == 0 else ''}", flush=True)
    finally:
        await pool.close()


def summary(page: Page) -> dict[str, Any]:
    def stat(key: str) -> tuple[float | None, float | None]:
        xs = [x[key] for x in page.loads if x[key] is not None]
        return (round(statistics.median(xs), 1), round(max(xs), 1)) if xs else (None, None)

    total = stat("total_ms")
    db = stat("db_ms")
    wall = stat("wall_ms")
    return {
        "page": page.label,
        "path": page.path,
        "status": sorted(page.status),
        "total_p50_ms": total[0],
        "total_max_ms": total[1],
        "db_p50_ms": db[0],
        "db_max_ms": db[1],
        "wall_p50_ms": wall[0],
        "wall_max_ms": wall[1],
        "bytes": page.loads[-1]["bytes"] if page.loads else None,
        "over_budget": total[1] is not None and total[1] > BUDGET_MS,
    }


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x:,.1f}"


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| page | server ms p50 / max | db ms p50 / max | wall ms p50 / max | HTTP |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in rows:
        over = " **over 300**" if s["over_budget"] else ""
        out.append(
            f"| {s['page']} | {_ms(s['total_p50_ms'])} / {_ms(s['total_max_ms'])}{over}"
            f" | {_ms(s['db_p50_ms'])} / {_ms(s['db_max_ms'])}"
            f" | {_ms(s['wall_p50_ms'])} / {_ms(s['wall_max_ms'])}"
            f" | {', '.join(map(str, s['status'])) or '—'} |"
        )
    return "\n".join(out)


def _self_times(
    node: dict[str, Any], out: list[tuple[float, dict[str, Any]]], parallel: bool = False
) -> float:
    """Collect (self time, node) for every node of a JSON plan; returns the node's total time.
    Below a Gather, loops are the parallel processes, which run at once: time is not multiplied."""
    total = node.get("Actual Total Time", 0.0) * (1 if parallel else node.get("Actual Loops", 1))
    below = parallel or node["Node Type"] in ("Gather", "Gather Merge")
    children = sum(_self_times(c, out, below) for c in node.get("Plans", []))
    out.append((max(total - children, 0.0), node))
    return total


def _node_name(node: dict[str, Any]) -> str:
    name = node["Node Type"]
    if "Index Name" in node:
        name += f" using {node['Index Name']}"
    if "Relation Name" in node:
        name += f" on {node['Relation Name']}"
    return name


async def explain(dsn: str, statement: dict[str, Any]) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of one captured statement: the plan's text and the node that
    took most of the time by itself."""
    conn = await asyncpg.connect(dsn)
    try:
        sql, args = statement["sql"], statement["args"]
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, *args, timeout=None)
        text = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args, timeout=None)
    finally:
        await conn.close()
    plan = json.loads(rows[0][0])[0] if isinstance(rows[0][0], str) else rows[0][0][0]
    nodes: list[tuple[float, dict[str, Any]]] = []
    _self_times(plan["Plan"], nodes)
    top_self, top = max(nodes, key=lambda x: x[0])
    return {
        "sql": sql,
        "args": [None if a is None else str(a) for a in args],
        "execution_ms": plan.get("Execution Time"),
        "dominant": f"{_node_name(top)}: {top_self:,.1f} ms by itself, rows {top.get('Actual Rows')}"
        f" × loops {top.get('Actual Loops')}, shared hit {top.get('Shared Hit Blocks')}"
        f" read {top.get('Shared Read Blocks')}"
        + (f", filter {top['Filter']}" if "Filter" in top else "")
        + (f", removed by filter {top['Rows Removed by Filter']}" if "Rows Removed by Filter" in top else ""),
        "plan": "\n".join(r[0] for r in text),
    }


def _du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=False).stdout
    return int(out.split()[0]) if out else 0


async def run(args: argparse.Namespace) -> int:
    module, _, name = args.app.partition(":")
    factory = None
    try:
        factory = getattr(importlib.import_module(module), name or "create_app")
    except ImportError as exc:
        print(f"dashboard_pages: cannot import {args.app} ({exc}); filling only", file=sys.stderr)

    result: dict[str, Any] = {"rows_asked": args.rows, "loads": args.loads, "budget_ms": BUDGET_MS}
    pg = server(args.reuse)
    print(f"server: {pg.base} (PID {pg.pid}, port {pg.port})", flush=True)
    try:
        admin = pg.dsn()
        result["durability"] = await check_durability(admin)
        result["server_version"] = await server_version(admin)
        dsn = pg.dsn(DATABASE)
        conn = await asyncpg.connect(admin)
        try:
            exists = await conn.fetchval("SELECT true FROM pg_database WHERE datname = $1", DATABASE)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(dsn)
        try:
            filled = (
                exists
                and await conn.fetchval("SELECT to_regclass('scheduled_jobs') IS NOT NULL")
                and (await conn.fetchval("SELECT count(*) FROM (SELECT FROM scheduled_jobs LIMIT 1000) AS x"))
            )
            if filled:
                t0 = time.perf_counter()
                applied = await schema.migrate(conn)
                if applied:
                    took = time.perf_counter() - t0
                    print(f"reused the filled database; migrations {applied} took {took:.1f} s", flush=True)
                    result["migrations_on_reuse"] = {"versions": applied, "s": round(took, 1)}
                    await conn.execute("ANALYZE scheduled_jobs", timeout=None)
        finally:
            await conn.close()
        if not filled:
            print(f"filling {args.rows:,} rows", flush=True)
            t0 = time.perf_counter()
            result["fill"] = await fill(dsn, args.rows)
            result["fill"]["total_s"] = round(time.perf_counter() - t0, 1)
            f = result["fill"]
            print(
                f"filled {f['rows']:,} rows in {f['total_s']} s (insert {f['insert_s']} s,"
                f" VACUUM ANALYZE {f['vacuum_analyze_s']} s)",
                flush=True,
            )
        conn = await asyncpg.connect(dsn)
        try:
            if args.try_sql is not None:
                t0 = time.perf_counter()
                await conn.execute(args.try_sql.read_text(), timeout=None)
                await conn.execute("ANALYZE scheduled_jobs", timeout=None)
                took = time.perf_counter() - t0
                result["try_sql"] = {"path": str(args.try_sql), "s": round(took, 1)}
                print(f"ran {args.try_sql} in {took:.1f} s", flush=True)
            await conn.execute(TOUCH)
            result["table"] = await describe(conn)
            values = await pick(conn)
        finally:
            await conn.close()
        result["disk_bytes"] = _du(pg.datadir)
        t = result["table"]
        print(
            f"scheduled_jobs: heap {t['heap_bytes'] / 2**30:.2f} GiB,"
            f" indexes {t['index_bytes'] / 2**30:.2f} GiB;"
            f" data folder {result['disk_bytes'] / 2**30:.2f} GiB; states {t['states']}",
            flush=True,
        )
        result["values"] = values
        if factory is None:
            return 0
        plan = pages(values)
        print(f"timing {len(plan)} pages × {args.loads} loads (+1 warm-up, not counted)", flush=True)
        await time_pages(dsn, factory, plan, args.loads)
        rows = [summary(p) for p in plan]
        result["pages"] = rows
        print()
        print(table(rows))
        slow = [
            p
            for p, s in zip(plan, rows, strict=True)
            if s["over_budget"] or (s["status"] and max(s["status"]) >= 500)
        ]
        result["explained"] = {}
        if slow and not args.no_explain:
            for p in slow:
                statements = sorted(p.queries, key=lambda s: s["ms"], reverse=True)
                worth = [s for s in statements if s["ms"] >= 50 or s["error"]][:3]
                result["explained"][p.label] = []
                for s in worth:
                    if not re.match(r"\s*(SELECT|WITH|TABLE|VALUES)\b", s["sql"], re.I):
                        continue
                    try:
                        e = await explain(dsn, s)
                    except Exception as exc:  # noqa: BLE001 - a plan we cannot rebuild is reported, not fatal
                        e = {"sql": s["sql"], "error": repr(exc)}
                    e["ms_in_app"] = s["ms"]
                    e["error_in_app"] = s["error"]
                    result["explained"][p.label].append(e)
                    failed = f" ({s['error']})" if s["error"] else ""
                    print(f"\n### {p.label}: {s['ms']} ms in the app{failed}")
                    print(e.get("dominant") or e.get("error"))
                    if "plan" in e:
                        print(e["plan"])
        for p in plan:
            result.setdefault("statements", {})[p.label] = p.queries
        return 0
    finally:
        if args.json:
            args.json.write_text(json.dumps(result, indent=2, default=str))
            print(f"wrote {args.json}")
        if args.keep or args.reuse:
            pg.stop()
            print(f"kept {pg.base} (python -m bench.dashboard_pages --reuse {pg.base})")
        else:
            pg.close()


def report(path: Path) -> int:
    """Print the table of an earlier run's JSON again."""
    r = json.loads(path.read_text())
    f, t = r.get("fill"), r["table"]
    if f:
        print(f"filled {f['rows']:,} rows in {f['total_s']} s (VACUUM ANALYZE {f['vacuum_analyze_s']} s)")
    print(
        f"PostgreSQL {r['server_version']}; scheduled_jobs: heap {t['heap_bytes'] / 2**30:.2f} GiB,"
        f" indexes {t['index_bytes'] / 2**30:.2f} GiB; data folder {r['disk_bytes'] / 2**30:.2f} GiB;"
        f" {r['loads']} loads after one warm-up"
    )
    print(table(r["pages"]))
    for label, plans in r.get("explained", {}).items():
        for e in plans:
            print(f"- {label}: {e.get('ms_in_app')} ms in the app: {e.get('dominant') or e.get('error')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.report is not None:
        return report(args.report)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
