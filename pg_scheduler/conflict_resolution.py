"""pg-scheduler 0.2.3's module path ``pg_scheduler.conflict_resolution``:
:class:`ConflictResolution`."""

from .shared.models import ConflictResolution

__all__ = ["ConflictResolution"]
