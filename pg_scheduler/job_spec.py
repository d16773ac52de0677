"""pg-scheduler 0.2.3's module path ``pg_scheduler.job_spec``: :class:`JobSpec`, and ``_UNSET``,
the default of ``JobSpec.misfire_grace_time`` ("use the scheduler's")."""

from .shared.models import UNSET as _UNSET
from .shared.models import JobSpec

__all__ = ["JobSpec", "_UNSET"]
