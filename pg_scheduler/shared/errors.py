"""Every error pg_scheduler raises on purpose.

Each one derives from :class:`PgSchedulerError`. Where pg-scheduler 0.2.3 raised a builtin
(``TypeError`` for a non-async function or non-JSON arguments, ``ValueError`` for a duplicate job
id), ours also derives from that builtin, so ``except ValueError`` in old programs keeps working.
"""

from __future__ import annotations


class PgSchedulerError(Exception):
    """Base class of every pg_scheduler error."""


class ConfigurationError(PgSchedulerError, ValueError):
    """A knob, DSN or environment variable has a value that cannot work."""


class EmbeddedPostgresError(ConfigurationError):
    """The embedded PostgreSQL could not be set up or started (initdb or pg_ctl failed); the
    message carries their output and the end of the server log."""


class EmbeddedPostgresTimeout(EmbeddedPostgresError, TimeoutError):
    """The embedded PostgreSQL did not stop within its timeout."""


class InvalidJobError(PgSchedulerError, ValueError):
    """A job cannot be scheduled as given (naive datetime, bad priority, bad retries...)."""


class NotACoroutineFunctionError(PgSchedulerError, TypeError):
    """Tasks must be ``async def`` functions: they run on the worker's event loop."""


class SerializationError(PgSchedulerError, TypeError):
    """Job arguments must be JSON; pickle is never used, so nothing else can travel."""


class InvalidScheduleError(PgSchedulerError, ValueError):
    """A periodic schedule is wrong: bad cron string, unknown time zone, both or neither of
    ``every`` and ``cron``, a non-positive interval."""


class TaskNameConflictError(PgSchedulerError, ValueError):
    """Two different functions were registered under one task name."""


class UnknownTaskError(PgSchedulerError, LookupError):
    """A task name that no code in this process registered."""


class JobNotFoundError(PgSchedulerError, LookupError):
    """No job has this id (never written, or vacuumed away)."""


class JobAlreadyExistsError(PgSchedulerError, ValueError):
    """``ConflictResolution.RAISE`` and a job with that id exists."""


class LeadershipLostError(PgSchedulerError):
    """A leader write was refused: this process's epoch is no longer the current one."""


class SchedulerStateError(PgSchedulerError, RuntimeError):
    """The scheduler was used in a way its state does not allow (started twice, shut down)."""


class AppLoadError(PgSchedulerError, ImportError):
    """``pg-scheduler run APP``: APP could not be imported (missing, or it raised)."""
