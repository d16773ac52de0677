"""A plain synchronous script: enqueue jobs with ``SyncScheduler`` and wait for their results.

    export DATABASE_URL=postgresql://...
    pg-scheduler run examples/script_tasks.py &    # the workers: a pod, here or elsewhere
    python examples/script.py

The script runs no job itself: a pod does, as it would for a cron job, a data import or a
notebook that hands work to the cluster. It waits for each job (woken by the job's
notification, not by polling) for ``$SCRIPT_TIMEOUT`` seconds (default 30), prints the results
and exits 0 only if every job completed.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

# The module the pods import, found beside this file (python puts the script's folder first
# on sys.path): both sides register its tasks under the same names.
from script_tasks import count_words

from pg_scheduler import JobState, SyncScheduler

TEXTS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps.",
    "To be, or not to be, that is the question.",
    "PostgreSQL is the queue: one table, many workers, no broker.",
]


def main() -> int:
    url = os.environ.get("DATABASE_URL")
    if not url:
        print("script: set DATABASE_URL to the jobs database", file=sys.stderr)
        return 2
    timeout = float(os.environ.get("SCRIPT_TIMEOUT", "30"))
    ok = True
    # One SyncScheduler for the whole script; leaving the block closes its pool and thread.
    with SyncScheduler(url) as scheduler:
        now = datetime.now(UTC)
        ids = [scheduler.schedule(count_words, execution_time=now, args=(text,)) for text in TEXTS]
        print(f"scheduled {len(ids)} jobs; waiting for a pod to run them")
        for text, job_id in zip(TEXTS, ids, strict=True):
            try:
                done = scheduler.wait_for(job_id, timeout=timeout)
            except TimeoutError:
                print(f"  {job_id}: not finished after {timeout:g} s; is a pod running?")
                ok = False
                continue
            print(f"  {done.status.value}: {text[:24]!r}... -> {done.result}")
            ok = ok and done.status is JobState.COMPLETED
    print("OK: every job completed" if ok else "NOT OK: some job did not complete")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
