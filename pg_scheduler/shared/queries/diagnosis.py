"""What ``pg-scheduler doctor`` reads: catalog, statistics and registry figures, no writes.

Tables and indexes are named by the caller and resolved with ``to_regclass``, through the
session's ``search_path`` as the scheduler's own unqualified statements are.
Columns that only some server versions have (``datlocprovider`` from 15, ``datlocale`` and
``colllocale`` from 17, ``reserved_connections`` from 16) are read through ``to_jsonb(row)`` or
``current_setting(name, true)``, which give NULL where the column or setting does not exist, so
that one statement runs on every supported version (14 and later).
"""

from __future__ import annotations

from .admin import _unrunnable_jobs

# --------------------------------------------------------------------------- indexes

# Each named index ($1) on its table ($2, same order), with its validity flags; NULL flags: no
# such index on that table.
DB_LIST_INDEXES = """
SELECT n.name, n.table_name, i.indisvalid AS valid, i.indisready AS ready
  FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS n(name, table_name, ord)
  LEFT JOIN pg_index AS i
         ON i.indexrelid = to_regclass(n.name) AND i.indrelid = to_regclass(n.table_name)
 ORDER BY n.ord
"""

# --------------------------------------------------------------------------- vacuum

# One table's ($1) size, live and dead row estimates, last vacuums and storage options (NULL
# counters: the statistics have no entry for it yet).
VACUUM_GET_TABLE_STATS = """
SELECT coalesce(s.n_live_tup, 0) AS live, coalesce(s.n_dead_tup, 0) AS dead,
       s.last_autovacuum, s.last_vacuum, coalesce(s.autovacuum_count, 0) AS autovacuum_count,
       pg_total_relation_size(c.oid) AS total_bytes, coalesce(c.reloptions, '{}') AS reloptions
  FROM pg_class AS c
  LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
 WHERE c.oid = to_regclass($1)
"""

# The server's values of the settings named in $1.
DB_LIST_SETTINGS = "SELECT name, setting FROM pg_settings WHERE name = ANY ($1::text[])"

# --------------------------------------------------------------------------- vacuum horizon

# Sessions of this database, other than the asking one, whose transaction began more than $1
# seconds ago and holds a snapshot or a transaction id: vacuum keeps every row version they
# might still see. Autovacuum's own workers are left out: a vacuum's snapshot holds no other
# vacuum back, and ending them is not the fix. No query text: it may hold the application's data.
DB_LIST_OLD_TRANSACTIONS = """
SELECT pid, usename AS role, application_name, state, backend_xid IS NOT NULL AS writes,
       extract(epoch FROM statement_timestamp() - xact_start)::float8 AS age_seconds
  FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid()
   AND backend_type <> 'autovacuum worker'
   AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)
   AND xact_start < statement_timestamp() - make_interval(secs => $1)
 ORDER BY xact_start
"""

# Prepared (two-phase) transactions of this database older than $1 seconds: they hold the
# horizon until someone commits or rolls them back, whatever happens to their session.
DB_LIST_PREPARED_TRANSACTIONS = """
SELECT gid, owner AS role,
       extract(epoch FROM statement_timestamp() - prepared)::float8 AS age_seconds
  FROM pg_prepared_xacts
 WHERE database = current_database()
   AND prepared < statement_timestamp() - make_interval(secs => $1)
 ORDER BY prepared
"""

# Replication slots that nobody streams from but that keep an xmin: vacuum keeps what it covers
# until the slot is used or dropped.
DB_LIST_IDLE_SLOTS = """
SELECT slot_name, slot_type, age(xmin)::int8 AS xmin_age
  FROM pg_replication_slots
 WHERE xmin IS NOT NULL AND NOT active
 ORDER BY age(xmin) DESC
"""

# --------------------------------------------------------------------------- pooler

DB_GET_BACKEND_PID = "SELECT pg_backend_pid()"

# --------------------------------------------------------------------------- connections

# The server's connection limit, the slots kept for superusers and for roles with
# pg_use_reserved_connections (16 and later), and the client sessions open on the whole server.
DB_GET_CONNECTIONS = """
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved,
       coalesce(current_setting('reserved_connections', true), '0')::int AS reserved,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS in_use
"""

# Registered processes by kind whose heartbeat is younger than $1 seconds.
WORKER_COUNT_LIVE_BY_KIND = """
SELECT kind, count(*)::int AS n
  FROM scheduler_workers
 WHERE last_heartbeat >= now() - make_interval(secs => $1)
 GROUP BY kind
 ORDER BY kind
"""

# --------------------------------------------------------------------------- clock

# The server's clock when it runs the statement (now() would be the transaction's start).
DB_GET_CLOCK = "SELECT clock_timestamp()"

# --------------------------------------------------------------------------- collation

# This database's default collation: the libc name, and the provider and locale where the
# server has them (15 and later; NULL provider: libc).
DB_GET_COLLATION = """
SELECT d.datcollate AS lc_collate,
       to_jsonb(d) ->> 'datlocprovider' AS provider,
       coalesce(to_jsonb(d) ->> 'datlocale', to_jsonb(d) ->> 'daticulocale') AS locale
  FROM pg_database AS d
 WHERE d.datname = current_database()
"""

# The collation of each named column ($2) of a table ($1): provider ``d`` is the database's.
DB_LIST_COLUMN_COLLATIONS = """
SELECT a.attname AS column_name, c.collname,
       to_jsonb(c) ->> 'collprovider' AS provider, c.collcollate AS lc_collate,
       coalesce(to_jsonb(c) ->> 'colllocale', to_jsonb(c) ->> 'colliculocale') AS locale
  FROM pg_attribute AS a
  JOIN pg_collation AS c ON c.oid = a.attcollation
 WHERE a.attrelid = to_regclass($1) AND a.attname = ANY ($2::text[]) AND NOT a.attisdropped
 ORDER BY a.attnum
"""

# --------------------------------------------------------------------------- registry

# Registered processes whose last heartbeat is older than $1 seconds.
WORKER_LIST_STALE = """
SELECT worker_id, kind, host, pid,
       extract(epoch FROM now() - last_heartbeat)::float8 AS heartbeat_age_seconds
  FROM scheduler_workers
 WHERE last_heartbeat < now() - make_interval(secs => $1)
 ORDER BY last_heartbeat, worker_id
"""

# Due pending jobs that no live process which runs jobs can claim, by task and queue: none
# registered the task, or none that did claims the queue.
JOB_COUNT_UNRUNNABLE_DUE = _unrunnable_jobs("due", due_only=True)
