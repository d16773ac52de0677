"""pg-scheduler 0.2.3's module path ``pg_scheduler.job_priority``: :class:`JobPriority`."""

from .shared.models import JobPriority

__all__ = ["JobPriority"]
