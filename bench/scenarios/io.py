"""I/O-bound jobs: each job awaits ``asyncio.sleep(sleep)`` (a stand-in for an HTTP call), 2
worker processes x 500 slots, a batch of jobs drained as in the drain scenario. With every slot
busy the drain cannot beat processes x slots / sleep (2 x 500 / 0.05 s = 20,000 jobs/s): the
throughput is read against that bound and against the peers with the same job and slots.

pg-scheduler runs twice: as pods (``ours``, ``pg-scheduler run``) and as an application that
embeds the in-process ``Scheduler(pool, max_concurrent_jobs=500)`` on the default asyncio loop
(``ours-inproc``, one per worker process). For every system: the CPU time (user + system, from
/proc) of all its worker-side processes (a pod's supervisor included) from the batch's enqueue
to the drain's end, per job; and the peak resident set (VmHWM) of each process that ran jobs,
read when the drain is over, before the workers stop: at least what it held with every slot
busy."""

from __future__ import annotations

from typing import Any

from .. import processes, records
from ..systems import System
from ..trial import Context, Trial

SLOTS = 500
JOBS_CAP = {"procrastinate": 20_000}
"""Fewer jobs for a system that cannot drain the batch within a round: procrastinate fetches one
job per statement, about 300 jobs/s here whatever its slots (the drain scenario gets as many),
so 200,000 jobs would take it 11 minutes per round, beyond ``--timeout``. 20,000 take it over a
minute: long enough for a rate. The tables say how many jobs each system drained."""


async def io(ctx: Context, system: System, *, jobs: int, sleep: float, slots: int = SLOTS) -> dict[str, Any]:
    opts = ctx.options
    jobs = min(jobs, JOBS_CAP.get(system.key, jobs))
    async with Trial(ctx, system, "io") as t:
        await t.start_workers(opts.processes, slots)
        await t.warm_up()
        launched = [w.pid for w in t.workers]
        cpu_before = processes.tree_cpu_seconds(launched)
        enqueued = await t.enqueue(jobs, sleep=sleep)
        noticed_at = await t.wait_drained()
        cpu_after = processes.tree_cpu_seconds(launched)
        job_pids = {s.pid for s in records.read(t.record_dir)}
        peaks = {pid: processes.rss_kib(pid)["VmHWM"] / 1024 for pid in job_pids}
        finished_at = await t.last_finished(noticed_at)
        seconds = finished_at - float(enqueued["done_at"])
        await t.verify()
    # What each process still alive at the end spent in the window (one that started in it
    # counts from zero; one that ended in it is not counted).
    cpu = sum(cpu_after[p] - cpu_before.get(p, 0.0) for p in cpu_after)
    bound = opts.processes * slots / sleep
    return {
        "jobs_per_s": jobs / seconds,
        "of_bound": jobs / seconds / bound,
        "bound_jobs_per_s": bound,
        "seconds": seconds,
        "jobs": jobs,
        "cpu_us_per_job": cpu / jobs * 1e6,
        "peak_rss_mb": max(peaks.values()),
        "worker_processes": t.worker_processes,
        "sleep_ms": sleep * 1000,
        "slots": slots,
        "peak_rss_mb_by_pid": {str(pid): mb for pid, mb in sorted(peaks.items())},
    }
