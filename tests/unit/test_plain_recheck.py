"""How long a busy worker skips the claim of queues without limits after it found nothing (no
database: the worker's bookkeeping alone, on a clock the test moves)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from pg_scheduler.worker.worker import PLAIN_RECHECK_MAX_SECONDS, PLAIN_RECHECK_SECONDS, Worker


def test_each_empty_plain_claim_doubles_the_skip_up_to_the_cap_and_news_resets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1024.0]
    step = 1 / 64  # exact in binary, as are the waits
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    worker = SimpleNamespace(_plain_empty_at=None, _plain_recheck=PLAIN_RECHECK_SECONDS)

    def empty_for() -> float:
        """How long the claim is skipped from now on."""
        start = now[0]
        while Worker._plain_known_empty(worker):  # type: ignore[arg-type]
            now[0] += step
        return now[0] - start

    assert not Worker._plain_known_empty(worker)  # type: ignore[arg-type]
    skips = []
    for _ in range(5):
        Worker._plain_found(worker, False)  # type: ignore[arg-type]
        skips.append(empty_for())
    assert skips == [PLAIN_RECHECK_SECONDS, 0.5, PLAIN_RECHECK_MAX_SECONDS, 1.0, 1.0]
    Worker._plain_found(worker, True)  # type: ignore[arg-type]  # found jobs, or news of some
    assert not Worker._plain_known_empty(worker)  # type: ignore[arg-type]
    Worker._plain_found(worker, False)  # type: ignore[arg-type]
    assert empty_for() == PLAIN_RECHECK_SECONDS
