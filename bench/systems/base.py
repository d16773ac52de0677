"""What the harness knows about a system: how to run its driver and workers, and how to read
its progress and outcome from its own tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..environment import BENCH, MAIN

DRIVERS = BENCH / "drivers"


@dataclass(frozen=True)
class Launch:
    """One OS process the harness starts for a trial, and how many worker processes it is."""

    name: str
    cmd: list[str]
    worker_processes: int = 1


@dataclass(frozen=True)
class System:
    key: str
    label: str
    driver: str
    unfinished_sql: str
    """The rows of the jobs not finished yet (``SELECT 1 FROM ...``). The drain polls whether
    there is one every 50 ms (``EXISTS``: it must not cost what it measures); the count is read
    only to report a trial that timed out."""
    outcome_sql: str
    """One row (done, first_attempt, total): jobs finished successfully, those of them that
    needed one attempt, and all jobs of the trial."""
    finished_at_sql: str | None = None
    """Epoch seconds of the last completion, by the system's own timestamp, when it keeps one:
    more precise than the 50 ms polling that notices the drain is over."""
    python: Path = MAIN.python
    worker_mode: str = ""
    scenarios: frozenset[str] = field(default_factory=frozenset)
    stop_grace: float = 15.0

    @property
    def any_unfinished_sql(self) -> str:
        return "SELECT EXISTS (" + self.unfinished_sql + ")"

    @property
    def count_unfinished_sql(self) -> str:
        """The backlog, counted (steady load samples it once a second, not every 50 ms)."""
        # The system's own constant, never input.
        return "SELECT count(*) FROM (" + self.unfinished_sql + ") AS unfinished"  # noqa: S608

    @property
    def driver_path(self) -> Path:
        return DRIVERS / self.driver

    def driver_cmd(self, command: str, dsn: str, *args: str) -> list[str]:
        return [str(self.python), str(self.driver_path), command, dsn, *args]

    def launches(self, dsn: str, processes: int, concurrency: int, pods: int = 0) -> list[Launch]:
        """Worker processes for a trial; ``pods`` only means something to pg-scheduler."""
        cmd = self.driver_cmd("worker", dsn, "--concurrency", str(concurrency), "--mode", self.worker_mode)
        return [Launch(f"{self.key}-worker-{i}", cmd) for i in range(processes)]
