"""Re-exports :class:`ConflictResolution` under 0.2.3's module path ``pg_scheduler.conflict_resolution``."""

from .shared.models import ConflictResolution

__all__ = ["ConflictResolution"]
