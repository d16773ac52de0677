"""The system under test: one PostgreSQL in the lab's db namespace and N pods, each a real
``pg-scheduler run chaos.workload`` (a supervisor and its worker processes) in its own namespace.

Processes are only ever signalled by their own PID. All namespaces share the PID namespace, so
the harness sees every supervisor and worker; pods reach PostgreSQL over the lab's network
(where faults happen) and the harness through the server's unix socket (where none do).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.pgserver import TestPostgres

from .network import Lab
from .workload import EFFECTS_DIR_ENV, QUEUES_ENV

ROOT = Path(__file__).resolve().parent.parent

# Durable like production: an immediate restart must not lose a committed completion (a lost
# one would be re-run and look like a duplicate). Server keepalives as the DESIGN asks of a
# deployment, so a cut-off pod's sessions (and a leader's lock) are freed in seconds.
SERVER_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_connections": "300",
    "tcp_keepalives_idle": "2",
    "tcp_keepalives_interval": "1",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "5000",
}
PORT = 5432  # each namespace has its own ports: the default is free inside the lab


@dataclass(frozen=True)
class PodSettings:
    """``pg-scheduler run`` options of every pod; a profile picks them."""

    workers: int = 2
    max_concurrent_jobs: int = 8
    lease_seconds: float = 4.0
    heartbeat_seconds: float = 1.0
    leader_ttl_seconds: float = 5.0
    shutdown_timeout: float = 3.0

    def options(self) -> list[str]:
        return [
            "--workers", str(self.workers),
            "--max-concurrent-jobs", str(self.max_concurrent_jobs),
            "--lease-seconds", str(self.lease_seconds),
            "--heartbeat-seconds", str(self.heartbeat_seconds),
            "--leader-ttl-seconds", str(self.leader_ttl_seconds),
            "--shutdown-timeout", str(self.shutdown_timeout),
            "--retry-delay-seconds", "0.2",
            "--retry-max-delay-seconds", "2",
            "--poll-interval-seconds", "1",
            "--wait-for-database", "600",
        ]  # fmt: skip


def start_postgres(lab: Lab) -> TestPostgres:
    pg = TestPostgres(
        host=lab.db_address,
        port=PORT,
        settings=SERVER_SETTINGS,
        launcher=lab.netns_exec("db"),
        hba=[f"host all all {lab.subnet} trust"],
    )
    return pg.start()


@dataclass
class Pod:
    """One pod: ``pg-scheduler run`` inside namespace ``name``; started again by ``restart``
    as a kubelet would after its container died."""

    name: str
    lab: Lab
    dsn: str
    settings: PodSettings
    run_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    generation: int = 0
    pids_seen: set[int] = field(default_factory=set)
    queues: str | None = None
    """``PG_SCHEDULER_QUEUES`` of the pod (None: it claims every queue)."""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> None:
        self.generation += 1
        log = self.run_dir / f"pod-{self.name}-{self.generation}.log"
        env = {
            **os.environ,
            "DATABASE_URL": self.dsn,
            "PYTHONPATH": str(ROOT),
            EFFECTS_DIR_ENV: str(self.run_dir / "effects"),
            "PYTHONUNBUFFERED": "1",
        }
        if self.queues is not None:
            env[QUEUES_ENV] = self.queues
        with log.open("wb") as out:
            # `ip netns exec` execs the program, so proc.pid is the supervisor itself. Started
            # from the main thread only: the pod dies with the thread that started it (PDEATHSIG).
            self.proc = subprocess.Popen(
                [
                    *self.lab.netns_exec(self.name),
                    sys.executable,
                    "-m",
                    "tests.apps.pod",
                    "run",
                    "chaos.workload",
                    *self.settings.options(),
                ],
                cwd=str(ROOT),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.pids_seen.add(self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def worker_pids(self) -> list[int]:
        """The pod's worker processes, from /proc (works while the database is unreachable)."""
        pid = self.pid
        if pid is None:
            return []
        found = []
        for child in _children(pid):
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:  # not the resource tracker
                found.append(child)
        self.pids_seen.update(found)
        return sorted(found)

    def signal(self, sig: signal.Signals) -> bool:
        pid = self.pid
        if pid is None:
            return False
        return send_signal(pid, sig)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (SIGCONT first, in case it is frozen), SIGKILL after ``timeout``; returns the
        exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.worker_pids()
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def survivors(self, grace: float) -> list[int]:
        """Processes this pod ever ran that are still alive ``grace`` seconds from now (a
        worker must exit by itself soon after its supervisor is gone); they are killed."""
        deadline = time.monotonic() + grace
        left = [p for p in self.pids_seen if _alive(p)]
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = [p for p in left if _alive(p)]
        for pid in left:
            send_signal(pid, signal.SIGKILL)
        return left


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def send_signal(pid: int, sig: signal.Signals) -> bool:
    """Signal one process by PID; False when it is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True
