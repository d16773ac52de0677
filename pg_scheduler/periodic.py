"""Re-exports ``@periodic`` and ``PeriodicJobConfig`` under 0.2.3's path ``pg_scheduler.periodic``.

``PeriodicJobConfig`` is the type of ``get_periodic_jobs()``'s values (:class:`PeriodicJobInfo`,
which has 0.2.3's fields and more)."""

from .shared.periodic import PeriodicJobInfo, periodic

PeriodicJobConfig = PeriodicJobInfo

__all__ = ["PeriodicJobConfig", "PeriodicJobInfo", "periodic"]
