"""A run's output folder: one run at a time, and a new run only in an empty one.

The checker reads every effects file in the folder as the run's own history, so a second run
writing into the same folder corrupts both verdicts (a long run once read a stray record of
another run as an overlapping run of its own). ``held`` takes an exclusive ``flock`` on
``run.lock`` in the folder for as long as a run (or a recheck, which rewrites the report) uses
it, and writes its PID there for the refusal to name. The kernel drops the lock when the holder
exits, however it exits (SIGKILL included), so a killed run leaves no lock behind, only the file
with its PID; the file stays, because removing it would let a run waiting to lock the old file
and a run creating a new one both hold "the" lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = "run.lock"


class FolderInUse(Exception):
    """Another live process holds the folder."""


@contextlib.contextmanager
def held(folder: Path) -> Iterator[None]:
    """Hold ``folder`` (created if missing) exclusively, or raise FolderInUse at once."""
    folder.mkdir(parents=True, exist_ok=True)
    # No O_TRUNC: a refused opener must not wipe the holder's PID. The descriptor is not
    # inheritable (Python's default), so no pod the harness starts keeps the lock after it.
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Empty only in the instant between the holder's lock and its write.
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FolderInUse(f"{folder} is in use by another chaos run (pid {owner})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def leftovers(folder: Path) -> list[str]:
    """What ``folder`` holds besides its lock file: a new run needs none."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME)
