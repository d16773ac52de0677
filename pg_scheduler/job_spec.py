"""Re-exports :class:`JobSpec` and ``_UNSET`` under 0.2.3's module path ``pg_scheduler.job_spec``.

``_UNSET`` is the default of ``JobSpec.misfire_grace_time`` ("use the scheduler's")."""

from .shared.models import UNSET as _UNSET
from .shared.models import JobSpec

__all__ = ["JobSpec", "_UNSET"]
