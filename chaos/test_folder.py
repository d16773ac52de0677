"""A run's output folder is one run's at a time (chaos/folder.py, ``python -m chaos``). No lab and
no database here: the holder is a real second process, synchronised through its pipes, and the
command's run itself is replaced by a stand-in that must never be reached."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from . import report
from .folder import LOCK_NAME, FolderInUse, held
from .history import Term
from .invariants import Check
from .test_invariants import TARGETS, _kill, _killed_then_rerun, _row

ROOT = Path(__file__).resolve().parent.parent
HOLDER = """
import sys
from pathlib import Path
from chaos.folder import held
with held(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes the pipe
"""

chaos_main = importlib.import_module("chaos.__main__")


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``tmp_path / 'run'``, as a live run does."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "run")],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


class _NoRun:
    """Stands in for chaos.run.Run: the command must refuse before it builds one."""

    def __init__(self, *args: object) -> None:
        raise AssertionError("python -m chaos started a run in a folder it should refuse")


@pytest.fixture
def command(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr(chaos_main, "Run", _NoRun)
    monkeypatch.setattr(chaos_main, "lab_unavailable_reason", lambda: None)
    return CliRunner()


def test_a_folder_that_a_live_run_holds_is_refused_until_that_run_ends(
    tmp_path: Path,
    holder: subprocess.Popen[str],
    command: CliRunner,
) -> None:
    folder = tmp_path / "run"
    message = f"{folder} is in use by another chaos run (pid {holder.pid})"
    with pytest.raises(FolderInUse) as refused, held(folder):
        pass
    assert str(refused.value) == message
    for args in (["--out", str(folder)], ["--recheck", str(folder)]):
        result = command.invoke(chaos_main.main, args)
        assert result.exit_code == 1
        assert result.output == f"Error: {message}\n"
    assert (folder / LOCK_NAME).read_text() == f"{holder.pid}\n"  # the refusals left it alone

    assert holder.stdin is not None
    holder.stdin.close()
    assert holder.wait(timeout=10) == 0
    with held(folder):
        assert (folder / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_a_killed_run_leaves_no_lock_behind(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    holder.send_signal(signal.SIGKILL)
    assert holder.wait(timeout=10) == -signal.SIGKILL
    folder = tmp_path / "run"
    assert (folder / LOCK_NAME).read_text() == f"{holder.pid}\n"  # the stale PID does not block
    with held(folder):
        pass


def test_a_finished_run_is_refused_as_not_empty_and_can_still_be_rechecked(
    tmp_path: Path,
    command: CliRunner,
) -> None:
    folder = tmp_path / "run"
    (folder / "effects").mkdir(parents=True)
    effects, transitions = _killed_then_rerun(kill_at=12.0, rerun_at=12.3)
    lines = [json.dumps({k: v for k, v in vars(e).items() if v is not None}) for e in effects]
    (folder / "effects" / "effects-1.jsonl").write_text("\n".join(lines) + "\n")
    check = Check(
        expected_jobs={"a": {"fail_attempts": 0, "max_retries": 0}},
        effects=effects,
        transitions=transitions,
        terms=[Term(epoch=1, leader_id="pod-a", pid=1, t=0.0)],
        rows=[_row("a")],
        faults=[_kill(12.0)],
        t_start=0.0,
        t_end=60.0,
        targets=TARGETS,
        quiet_before=5.0,
    )
    check.save(folder / "history.json")
    result = check.run()
    result["counts"]["late_outcomes_refused"] = 0
    result.update(
        profile={
            "name": "short",
            "fault_seconds": 110.0,
            "pods": 3,
            "seed": 1,
            "settings": {"workers": 2, "lease_seconds": 4.0, "leader_ttl_seconds": 5.0},
        },
        settle_seconds=1.0,
        enqueue_retries=0,
        pod_exits=[],
        notes=[],
        faults=[],
    )
    with held(folder):  # as the run held it
        report.write(result, folder)

    refused = command.invoke(chaos_main.main, ["--out", str(folder)])
    assert refused.exit_code == 1
    assert refused.output == f"Error: {folder} is not empty: give each run its own folder\n"

    rechecked = command.invoke(chaos_main.main, ["--recheck", str(folder)])
    assert rechecked.exit_code == 0, rechecked.output
    assert "executions_never_assigned                                  0" in rechecked.output
    assert rechecked.output.rstrip().endswith("PASSED")
