"""pg-scheduler 0.2.3's module path ``pg_scheduler.polling``: :class:`PollingConfig`."""

from .shared.models import PollingConfig

__all__ = ["PollingConfig"]
