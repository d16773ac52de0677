"""Starting and stopping the processes of a trial, always by their own PID.

Every child gets ``PR_SET_PDEATHSIG`` = SIGKILL, so nothing outlives a harness that crashed or
was killed; pg-scheduler's worker processes follow their supervisor by themselves.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The harness's environment without PYTHONPATH (the 0.2.3 driver must not see this
    repository's ``pg_scheduler``), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Running:
    name: str
    proc: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


async def start(name: str, cmd: Sequence[str], *, env: Mapping[str, str], log: Path, cwd: Path) -> Running:
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env),
            cwd=str(cwd),
            preexec_fn=_die_with_parent,
        )
    return Running(name, proc, log)


async def stop(running: Running, *, term_grace: float) -> None:
    """SIGTERM, then SIGKILL after ``term_grace`` seconds; returns once the process is reaped."""
    proc = running.proc
    for sig, grace in ((signal.SIGTERM, term_grace), (signal.SIGKILL, 10.0)):
        if proc.returncode is not None:
            return
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            await asyncio.wait_for(proc.wait(), grace)
            return
        except TimeoutError:
            continue
    raise RuntimeError(f"{running.name} (pid {proc.pid}) survived SIGKILL for 10 s")


def kill_if_alive(pid: int) -> None:
    """For a grandchild (a worker process of a pod) that outlived its parent's stop."""
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class CommandError(RuntimeError):
    pass


async def run_json(
    cmd: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float
) -> dict[str, object]:
    """Run a driver command to completion; its last stdout line is a JSON object."""
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=str(cwd),
        preexec_fn=_die_with_parent,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CommandError(f"{' '.join(cmd[1:4])}: no result within {timeout:.0f} s") from None
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(err.decode(errors="replace").strip().splitlines()[-15:])
        raise CommandError(f"{' '.join(cmd[1:4])} exited {proc.returncode}:\n{tail}")
    result = json.loads(lines[-1])
    if not isinstance(result, dict):
        raise CommandError(f"{' '.join(cmd[1:4])}: expected a JSON object, got {lines[-1]!r}")
    return result


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB, from /proc."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name (which may hold spaces): field 3 is index 0."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (its threads included), from /proc."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


def with_descendants(pids: Iterable[int]) -> list[int]:
    """``pids`` and every live process below them (a pod's worker processes and helpers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    found: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.append(pid)
            todo += children.get(pid, [])
    return found


def tree_cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds of each live process of ``pids`` and their descendants."""
    found = {}
    for pid in with_descendants(pids):
        try:
            found[pid] = cpu_seconds(pid)
        except (OSError, IndexError):
            continue
    return found


def tcp_client_ports(pids: Iterable[int], server_port: int) -> dict[int, int]:
    """Local port -> PID, for the TCP connections of ``pids`` to ``server_port`` on this host: a
    backend's ``pg_stat_activity.client_port`` names the process that opened it."""
    inode_pid: dict[int, int] = {}
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        for link in links:
            if link.startswith("socket:["):
                inode_pid[int(link[8:-1])] = pid
    ports = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, remote, inode = cols[1], cols[2], int(cols[9])
            if inode in inode_pid and int(remote.rsplit(":", 1)[1], 16) == server_port:
                ports[int(local.rsplit(":", 1)[1], 16)] = inode_pid[inode]
    return ports
