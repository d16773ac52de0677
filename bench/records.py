"""What the jobs themselves wrote (``drivers/recorder.py``): one ``<pid>.rec`` file per worker
process, one line ``key started_at enqueued_at`` per job start."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Start:
    key: int
    started_at: float
    enqueued_at: float
    pid: int


def read(folder: Path) -> list[Start]:
    starts = []
    for path in sorted(folder.glob("*.rec")):
        pid = int(path.stem)
        for line in path.read_text(encoding="ascii").splitlines():
            key, started, enqueued = line.split()
            starts.append(Start(int(key), float(started), float(enqueued), pid))
    return starts


def exactly_once_problems(starts: Iterable[Start], expected: set[int]) -> list[str]:
    """Empty when every expected key ran exactly once and nothing else ran."""
    counts = collections.Counter(s.key for s in starts)
    twice = sorted(k for k, n in counts.items() if n > 1)
    missing = sorted(expected - counts.keys())
    unknown = sorted(counts.keys() - expected)
    problems = []
    if twice:
        problems.append(f"{len(twice)} job(s) ran more than once (e.g. {twice[:5]})")
    if missing:
        problems.append(f"{len(missing)} job(s) never ran (e.g. {missing[:5]})")
    if unknown:
        problems.append(f"{len(unknown)} unexpected job(s) ran (e.g. {unknown[:5]})")
    return problems


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(len * q / 100), at least 1
    return ordered[int(rank) - 1]
