"""``python -m tests.apps.pod run APP ...`` is ``pg-scheduler run APP ...``, except that the pod
gets SIGKILL when the test process that started it dies, so none outlives a crashed test run."""

from __future__ import annotations

import ctypes
import signal

from pg_scheduler.cli import main

if __name__ == "__main__":
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    main(prog_name="pg-scheduler")
