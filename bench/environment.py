"""The harness's own virtualenvs, built on first use and rebuilt when the pins change.

- ``bench/.venv``: this repository's pg-scheduler (editable, with the embedded PostgreSQL), the
  peers procrastinate and pgqueuer, and the harness itself runs here.
- ``bench/.venv-seed``: pg-scheduler 0.2.3 from PyPI alone. It has the same import name
  (``pg_scheduler``) as this repository's package, so the two can never share an environment.
- ``bench/.venv-base-<commit>``: this repository's package at an earlier commit (``--baseline``),
  installed from ``git archive`` of that commit into ``bench/.base-<commit>``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

PEERS = (
    "procrastinate==3.10.0",
    "psycopg[binary]>=3.2",  # procrastinate's driver, with its C implementation as in production
    "pgqueuer==1.6.0",
    "asyncpg>=0.29",
)
SEED = ("pg-scheduler==0.2.3",)


@dataclass(frozen=True)
class Venv:
    path: Path
    requirements: tuple[str, ...]
    inputs: tuple[Path, ...] = ()
    """Files whose change means a rebuild: this repository's pyproject.toml, whose dependencies
    the editable install pulls in (a dependency added there was missing from an older venv)."""

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def stamp(self) -> Path:
        return self.path / "bench-requirements.json"

    def wanted(self) -> str:
        inputs = {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest() for p in self.inputs}
        return json.dumps(
            {"python": sys.version.split()[0], "requirements": self.requirements, "inputs": inputs}
        )

    def up_to_date(self) -> bool:
        try:
            return self.python.exists() and self.stamp.read_text() == self.wanted()
        except FileNotFoundError:
            return False

    def build(self) -> None:
        print(f"bench: building {self.path.relative_to(ROOT)} ({', '.join(self.requirements)})", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(self.path)], check=True)
        subprocess.run(
            [str(self.python), "-m", "pip", "install", "--quiet", *self.requirements], check=True, cwd=ROOT
        )
        self.stamp.write_text(self.wanted())


@dataclass(frozen=True, kw_only=True)
class BaselineVenv(Venv):
    """This repository's package as it was at ``commit``, installed (not editable) from a copy of
    that commit's tree in ``src`` (a folder of its own: the build empties it)."""

    commit: str
    src: Path

    def build(self) -> None:
        shutil.rmtree(self.src, ignore_errors=True)
        self.src.mkdir(parents=True)
        tree = subprocess.run(["git", "archive", self.commit], cwd=ROOT, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(self.src)], input=tree.stdout, check=True)
        super().build()


def baseline(commit: str) -> BaselineVenv:
    """The virtualenv of this repository at ``commit`` (any name git knows), built if missing."""
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{commit}^{{commit}}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    src = BENCH / f".base-{sha[:12]}"
    venv = BaselineVenv(BENCH / f".venv-base-{sha[:12]}", (str(src),), commit=sha, src=src)
    if not venv.up_to_date():
        venv.build()
    return venv


MAIN = Venv(BENCH / ".venv", ("-e", f"{ROOT}[embedded]", *PEERS), (ROOT / "pyproject.toml",))
SEED_VENV = Venv(BENCH / ".venv-seed", SEED)


def ensure(rebuild: bool = False) -> None:
    """Build whichever virtualenv is missing or pinned differently."""
    for venv in (MAIN, SEED_VENV):
        if rebuild or not venv.up_to_date():
            venv.build()


def running_in_main_venv() -> bool:
    return Path(sys.prefix).resolve() == MAIN.path.resolve()
