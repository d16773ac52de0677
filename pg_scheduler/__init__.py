"""pg_scheduler: one-off and periodic async jobs on PostgreSQL, on any number of replicas.

Importing the package configures no logging and starts nothing.
"""

from __future__ import annotations

import logging

# From the submodule of 0.2.3's path, so that it is loaded before the name is bound: loading
# ``pg_scheduler.periodic`` later would set the package's ``periodic`` to the module.
from .periodic import PeriodicJobInfo, periodic
from .scheduler import Scheduler
from .shared.context import JobContext, current_job
from .shared.db import pool_reset
from .shared.errors import (
    ConfigurationError,
    InvalidJobError,
    InvalidScheduleError,
    JobAlreadyExistsError,
    JobNotFoundError,
    LeadershipLostError,
    NotACoroutineFunctionError,
    PgSchedulerError,
    SchedulerStateError,
    SerializationError,
    TaskNameConflictError,
    UnknownTaskError,
)
from .shared.job_filter import JobCursor, JobFilter, JobPage
from .shared.models import (
    ConflictResolution,
    Job,
    JobPriority,
    JobSpec,
    JobState,
    PollingConfig,
    VacuumConfig,
    VacuumPolicy,
    VacuumTrigger,
)
from .shared.queue_limits import QueueInfo, QueueLimitChanges
from .shared.queues import QueueLimits, Rate, declare_queue
from .shared.tasks import deterministic_job_id, job
from .sync import SyncScheduler

__version__ = "1.0.0.dev0"

__all__ = [
    "ConfigurationError",
    "ConflictResolution",
    "InvalidJobError",
    "InvalidScheduleError",
    "Job",
    "JobContext",
    "JobCursor",
    "JobFilter",
    "JobPage",
    "JobAlreadyExistsError",
    "JobNotFoundError",
    "JobPriority",
    "JobSpec",
    "JobState",
    "LeadershipLostError",
    "NotACoroutineFunctionError",
    "PeriodicJobInfo",
    "PgSchedulerError",
    "PollingConfig",
    "QueueInfo",
    "QueueLimitChanges",
    "QueueLimits",
    "Rate",
    "Scheduler",
    "SchedulerStateError",
    "SerializationError",
    "SyncScheduler",
    "TaskNameConflictError",
    "UnknownTaskError",
    "VacuumConfig",
    "VacuumPolicy",
    "VacuumTrigger",
    "current_job",
    "declare_queue",
    "deterministic_job_id",
    "job",
    "periodic",
    "pool_reset",
]

# A library adds no handlers: the host application decides where logs go.
logging.getLogger(__name__).addHandler(logging.NullHandler())
