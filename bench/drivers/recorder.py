"""What every benchmark job does: note which job ran, when, and in which process.

A job's body only appends ``key start enqueued`` to an in-memory queue: no database write, so the
job stays a no-op for the system under test. A daemon thread appends the queue to this process's
file (``$BENCH_RECORD_DIR/<pid>.rec``) every 50 ms, so the harness can check exactly-once across
processes (a key seen twice ran twice; a key missing was lost) without relying on exit hooks,
which worker processes of some systems never run (multiprocessing children end with os._exit).

Drivers import this module as ``recorder`` (their folder is ``sys.path[0]``); nothing here may
import the harness or any system under test.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import os
import threading
import time

FLUSH_SECONDS = 0.05
_queue: collections.deque[str] = collections.deque()  # append/popleft are thread-safe
_started = threading.Lock()
_thread: threading.Thread | None = None


def record(key: int, enqueued_at: float) -> None:
    """Called first thing in a job: the job with this key started now."""
    _queue.append(f"{key} {time.time():.6f} {enqueued_at:.6f}\n")
    if _thread is None:
        _start()


async def noop(key: int, enqueued_at: float) -> None:
    record(key, enqueued_at)


async def sleep(key: int, enqueued_at: float, seconds: float) -> None:
    record(key, enqueued_at)
    await asyncio.sleep(seconds)


def _start() -> None:
    global _thread
    with _started:
        if _thread is not None:
            return
        folder = os.environ.get("BENCH_RECORD_DIR")
        if not folder:
            raise RuntimeError("BENCH_RECORD_DIR is not set: run this through the benchmark harness")
        path = os.path.join(folder, f"{os.getpid()}.rec")
        _thread = threading.Thread(target=_flush_forever, args=(path,), name="bench-recorder", daemon=True)
        _thread.start()
        atexit.register(_flush, path)


def _flush(path: str) -> None:
    lines = []
    while True:
        try:
            lines.append(_queue.popleft())
        except IndexError:  # empty (the exit hook and the thread may both be here)
            break
    if lines:
        with open(path, "a", encoding="ascii") as f:
            f.write("".join(lines))


def _flush_forever(path: str) -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        _flush(path)
