"""pg-scheduler 0.2.3's module path ``pg_scheduler.vacuum``: the vacuum policy types."""

from .shared.models import VacuumConfig, VacuumPolicy, VacuumTrigger

__all__ = ["VacuumConfig", "VacuumPolicy", "VacuumTrigger"]
