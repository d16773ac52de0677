"""Re-exports :mod:`pg_scheduler.embedded` under the import path ``pg_scheduler.shared.embedded``.

It serves programs that use this path. New code imports
``pg_scheduler.embedded``."""

from __future__ import annotations

import logging

from ..embedded import DEFAULT_DATA_DIR, LocalPostgres, database_url_or_embedded
from ..embedded import LOG_FILE as LOG_FILE
from ..embedded import NOT_INSTALLED as NOT_INSTALLED
from ..embedded import OS_USER as OS_USER
from ..embedded import PASSWORD_FILE as PASSWORD_FILE
from ..embedded import free_port as free_port
from ..embedded import make_traversable as make_traversable
from ..embedded import read_log_since as read_log_since
from ..embedded import server_user as server_user
from ..embedded import system_command as system_command
from ..embedded import try_reap as try_reap
from ..embedded import wheel_bindir as wheel_bindir

log = logging.getLogger("pg_scheduler.embedded")

__all__ = ["DEFAULT_DATA_DIR", "LocalPostgres", "database_url_or_embedded"]
