"""One log format for the supervisor and its workers.

With it, a pod's interleaved output says which process wrote each line."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)-7s [%(role)s %(process)d] %(name)s: %(message)s"


class _RoleFilter(logging.Filter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def filter(self, record: logging.LogRecord) -> bool:
        """Stamp the process's role on the record; never drops one."""
        record.role = self.role
        return True


def parse_level(level: str | int) -> int:
    """A ``logging`` level from a number or a name (any case); ValueError for an unknown name."""
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r} (use DEBUG, INFO, WARNING or ERROR)")
    return value


def configure(level: str | int, role: str) -> None:
    """Log to stderr with the process's role (``supervisor``, ``worker-2``) on every line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_RoleFilter(role))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("pg_scheduler").setLevel(parse_level(level))
