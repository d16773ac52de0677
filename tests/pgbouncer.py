"""A throw-away PgBouncer on 127.0.0.1 in front of a test server, for the doctor's pooler check.

Debian's ``pgbouncer`` package (``.ci/run`` installs it). Outside CI a test that needs it is
skipped when the binary is absent; under ``CI=true`` it fails instead, so that a CI machine
without it cannot pass by skipping.

    with PgBouncer(server_dsn, {"jobs_tx": ("jobs", "transaction")}) as bouncer:
        dsn = bouncer.dsn("jobs_tx")

PgBouncer refuses to run as root: as root it is started with ``-u`` and the server user of the
embedded PostgreSQL. It is stopped by its own PID.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import pytest

from pg_scheduler.embedded import free_port
from pg_scheduler.embedded.cluster import server_user

START_TIMEOUT_SECONDS = 10.0


def pgbouncer_binary() -> str:
    """The pgbouncer binary; skips the test when it is missing, except under CI=true."""
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("pgbouncer is not installed, and CI must run the pooler tests (.ci/run installs it)")
    pytest.skip("pgbouncer is not installed (apt-get install pgbouncer): the pooler tests need it")


class PgBouncer:
    """PgBouncer listening on a free port; ``databases`` maps each alias to (real database,
    pool mode) on the server of ``server_dsn`` (trust authentication, user ``postgres``)."""

    def __init__(self, server_dsn: str, databases: Mapping[str, tuple[str, str]]) -> None:
        self.binary = pgbouncer_binary()
        target = urlsplit(server_dsn)
        self.server_host = target.hostname or "127.0.0.1"
        self.server_port = target.port or 5432
        self.user = target.username or "postgres"
        self.databases = dict(databases)
        self.port = 0
        self.base = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.base.chmod(0o755)  # read by the unprivileged user it switches to as root
        self.log = self.base / "pgbouncer.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _config(self) -> Path:
        lines = ["[databases]"]
        for alias, (dbname, mode) in self.databases.items():
            lines.append(
                f"{alias} = host={self.server_host} port={self.server_port} dbname={dbname} "
                f"user={self.user} pool_mode={mode}"
            )
        lines += [
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {self.base / 'users.txt'}",
            "pool_mode = transaction",
            "default_pool_size = 5",
            # asyncpg sends it in its startup packet; PgBouncer refuses parameters it does not know.
            "ignore_startup_parameters = extra_float_digits",
            "logfile =",
            "pidfile =",
        ]
        users = self.base / "users.txt"
        users.write_text(f'"{self.user}" ""\n')
        config = self.base / "pgbouncer.ini"
        config.write_text("\n".join(lines) + "\n")
        for path in (users, config):
            path.chmod(0o644)
        return config

    def start(self) -> Self:
        """Start it and return once it accepts TCP connections."""
        self.port = free_port("127.0.0.1")
        command = [self.binary]
        if os.geteuid() == 0:
            command += ["-u", server_user().pw_name]
        command.append(str(self._config()))
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd="/")
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.process.returncode}: {self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not listen in time: {self.log.read_text()}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM to its PID (immediate shutdown), then wait for it; SIGKILL if it lingers."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None

    def dsn(self, alias: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{alias}"

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

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
