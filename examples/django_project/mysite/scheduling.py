"""The process's one ``SyncScheduler``, created on first use.

Lazily, not at import: a pre-forking server (gunicorn) imports the project before it forks,
and the scheduler's thread would not survive the fork. One per process: it is thread-safe, and
its pool bounds the connections the web process opens for jobs.
"""

from __future__ import annotations

import atexit
import threading

from django.conf import settings

from pg_scheduler import SyncScheduler

_lock = threading.Lock()
_scheduler: SyncScheduler | None = None


def get_scheduler() -> SyncScheduler:
    global _scheduler
    with _lock:  # two first requests at once create one
        if _scheduler is None:
            _scheduler = SyncScheduler(settings.PG_SCHEDULER_DATABASE_URL, max_size=4)
            atexit.register(_scheduler.close)
        return _scheduler
