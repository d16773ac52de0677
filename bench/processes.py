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
from collections.abc import Mapping, Sequence
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
