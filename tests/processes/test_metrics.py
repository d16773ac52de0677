"""Metrics and health: real pods scraped over HTTP while they work, and the in-process Scheduler's
default registry.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from pg_scheduler import JobSpec, Scheduler
from pg_scheduler.embedded import free_port
from tests.pgserver import TestPostgres
from tests.pods import Pod, start_pod
from tests.replicas import ensure_events_table
from tests.rows import ago, insert_job, update_job
from tests.support import FAST, wait_for

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def scrape(port: int) -> Samples:
    status, text = await asyncio.to_thread(get, port, "/metrics")
    assert status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every label set that contains ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


async def test_two_pods_scraped_while_draining_agree_with_the_database(
    dsn: str, pool: asyncpg.Pool, pods: list[Pod], tmp_path: Path
) -> None:
    await ensure_events_table(pool)
    ports = [free_port(), free_port()]
    a = await start_pod(dsn, tmp_path, **{"--metrics-port": ports[0]})
    b = await start_pod(dsn, tmp_path, **{"--metrics-port": ports[1]})
    pods += [a, b]
    await a.wait_ready(pool, 3)
    await b.wait_ready(pool, 3)
    now = datetime.now(UTC)
    await Scheduler(pool).schedule_bulk(
        [JobSpec(func="apps.send_invoice", execution_time=now, args=(i,)) for i in range(1500)]  # type: ignore[arg-type]
    )

    # Scrape both pods while they drain: no counter of either pod ever goes backwards.
    last: list[Samples] = [{}, {}]
    counters = (
        "pg_scheduler_jobs_finished_total",
        "pg_scheduler_jobs_claimed_total",
        "pg_scheduler_job_duration_seconds_count",
    )
    scrapes = 0

    async def drained_while_scraping() -> bool:
        nonlocal scrapes
        for i, port in enumerate(ports):
            now_samples = await scrape(port)
            for key, old in last[i].items():
                if key[0] in counters:
                    assert now_samples.get(key, 0.0) >= old, (key, old, now_samples.get(key))
            last[i] = now_samples
        scrapes += 1
        done = await pool.fetchval("SELECT count(*) FROM scheduled_jobs WHERE status = 'completed'")
        return bool(done == 1500)

    await wait_for(drained_while_scraping, timeout=90, interval=0.1, message="drained")
    assert scrapes >= 3

    seen: list[float] = []

    async def counted() -> bool:  # an outcome is counted a moment after its commit
        finals = [await scrape(port) for port in ports]
        seen.append(sum(total(s, "pg_scheduler_jobs_finished_total", outcome="completed") for s in finals))
        return seen[-1] == 1500

    try:
        await wait_for(counted, timeout=5, message="completed counters sum to the database's")
    finally:
        print(f"completed counted over both pods, last scrapes: {seen[-3:]}")
        for port in ports:
            sm = await scrape(port)
            print({k: v for k, v in sm.items() if k[0] in counters or k[0] == "pg_scheduler_workers"})
    finals = [await scrape(port) for port in ports]
    assert all(total(s, "pg_scheduler_jobs_finished_total", outcome="completed") > 0 for s in finals), (
        "both pods worked"
    )
    assert sorted(value(s, "pg_scheduler_is_leader") for s in finals) == [0.0, 1.0]
    assert [value(s, "pg_scheduler_workers") for s in finals] == [3.0, 3.0]
    # Cluster gauges come from the leader only, and match the database.
    leader = finals[0] if value(finals[0], "pg_scheduler_is_leader") else finals[1]
    follower = finals[1] if leader is finals[0] else finals[0]

    async def sampled() -> bool:
        s = await scrape(ports[finals.index(leader)])
        return value(s, "pg_scheduler_jobs", state="completed") == 1500

    await wait_for(sampled, timeout=10, message="the leader's sample sees 1500 completed")
    assert not any(k[0] == "pg_scheduler_jobs" for k in follower)

    # Kill a worker of pod a: the live-worker gauge follows the processes, restarts are counted,
    # and the dead worker's counts stay in the pod's totals.
    before = await scrape(ports[0])
    victim = (await a.worker_pids(pool))[0]
    os.kill(victim, signal.SIGKILL)

    async def replaced() -> bool:
        pids = await a.worker_pids(pool)
        s = await scrape(ports[0])
        return (
            victim not in pids
            and len(pids) == 3
            and value(s, "pg_scheduler_workers") == 3.0
            and value(s, "pg_scheduler_worker_restarts_total") == 1.0
        )

    await wait_for(replaced, timeout=10, message="worker replaced and counted")
    after = await scrape(ports[0])
    for key, old in before.items():
        if key[0] in counters:
            assert after.get(key, 0.0) >= old, key


async def test_readyz_follows_the_database_and_healthz_stays_up(pods: list[Pod], tmp_path: Path) -> None:
    port = free_port()
    with TestPostgres() as server:
        pod = await start_pod(server.dsn(), tmp_path, workers=1, **{"--metrics-port": port})
        pods.append(pod)

        async def status(path: str) -> int:
            code, _ = await asyncio.to_thread(get, port, path)
            return code

        async def is_(path: str, code: int) -> bool:
            try:
                return await status(path) == code
            except OSError:  # not listening yet
                return False

        await wait_for(lambda: is_("/readyz", 200), timeout=30, message="ready")
        await asyncio.to_thread(server.stop, "fast")
        stopped = asyncio.get_running_loop().time()
        await wait_for(
            lambda: is_("/readyz", 503),
            timeout=5,
            interval=0.1,
            message="unready within 5 s of the database going away",
        )
        print(
            f"measured: unready {asyncio.get_running_loop().time() - stopped:.2f}s after the database stopped"
        )
        assert await status("/healthz") == 200
        _, body = await asyncio.to_thread(get, port, "/readyz")
        assert "database" in body
        await asyncio.to_thread(server.start)
        await wait_for(
            lambda: is_("/readyz", 200),
            timeout=20,
            interval=0.2,
            message="ready again once the database is back",
        )
        assert (await asyncio.to_thread(get, port, "/nope"))[0] == 404


async def test_in_process_scheduler_records_into_the_default_registry(pool: asyncpg.Pool) -> None:
    def finished() -> float:
        return (
            REGISTRY.get_sample_value(
                "pg_scheduler_jobs_finished_total", {"task": "metrics.noop", "outcome": "completed"}
            )
            or 0.0
        )

    before = finished()
    async with Scheduler(pool, **FAST) as scheduler:

        async def noop() -> None:
            pass

        scheduler.register(noop, "metrics.noop")
        for _ in range(3):
            await scheduler.schedule("metrics.noop", execution_time=datetime.now(UTC))
        await wait_for(lambda: finished() >= before + 3, timeout=10, message="3 runs counted")
        await wait_for(lambda: scheduler.is_leader, message="leads")
        assert REGISTRY.get_sample_value("pg_scheduler_is_leader") == 1.0
        assert (
            REGISTRY.get_sample_value("pg_scheduler_jobs_claimed_total", {"task": "metrics.noop"}) or 0
        ) >= 3
        assert (REGISTRY.get_sample_value("pg_scheduler_workers") or 0) >= 1
    assert finished() == before + 3
    assert REGISTRY.get_sample_value("pg_scheduler_is_leader") == 0.0


async def test_every_completed_job_reports_exactly_one_outcome(pool: asyncpg.Pool) -> None:
    # A heartbeat that renewed leases just after a completion committed used to report that job
    # "lost" and cancel its task while the outcome was being written: the row said completed,
    # the outcome hook and the metrics never heard of it (about 3 % of jobs at this pace).
    outcomes: list[tuple[str, str]] = []
    async with Scheduler(
        pool,
        **{**FAST, "heartbeat_seconds": 0.05},
        on_outcome=lambda job, outcome: outcomes.append((job.job_id, outcome)),
    ) as scheduler:

        async def noop() -> None:
            pass

        scheduler.register(noop, "metrics.burst")
        now = datetime.now(UTC)
        await scheduler.schedule_bulk(
            [JobSpec(func="metrics.burst", execution_time=now) for _ in range(1000)]  # type: ignore[arg-type]
        )

        async def done() -> bool:
            return (
                await pool.fetchval("SELECT count(*) FROM scheduled_jobs WHERE status = 'completed'") == 1000
            )

        await wait_for(done, timeout=60, interval=0.1, message="1000 completed")
        await wait_for(lambda: len(outcomes) >= 1000, timeout=5, message="1000 outcomes")
    assert len(outcomes) == 1000 and {o for _, o in outcomes} == {"completed"}
    assert len({job_id for job_id, _ in outcomes}) == 1000


async def test_oldest_due_age_leaves_out_windows_held_back_behind_a_running_run(
    pool: asyncpg.Pool,
) -> None:
    # A queue-policy window waiting for the run before it is not overdue work: nobody may claim
    # it. Counting it fired the overdue alert and scaled KEDA for a job only one pod can run.
    from pg_scheduler.shared.schema import ensure_schema
    from pg_scheduler.supervisor.fence import Unfenced
    from pg_scheduler.supervisor.maintenance.queue_sampler import QueueSampler

    async with pool.acquire() as conn:
        await ensure_schema(conn)
    for job_id, status, due_ago in [
        ("w1", "running", timedelta(minutes=20)),
        ("w2", "pending", timedelta(minutes=10)),
    ]:
        await insert_job(
            pool,
            job_id,
            job_name="t",
            execution_time=ago(due_ago),
            status=status,
            dedup_key="k",
            window_start=ago(due_ago),
            overlap="queue",
        )
    sampler = QueueSampler(Unfenced(pool), interval_seconds=5, worker_stale_seconds=30)
    sample = await sampler.run_once()
    assert sample["oldest_due_age"] == 0.0 and sample["jobs"]["pending"] == 1
    await update_job(pool, "w1", status="completed")
    sample = await sampler.run_once()
    assert 590 < sample["oldest_due_age"] < 900  # claimable now, and late
    await sampler.stop()


def test_a_scrape_survives_an_empty_metrics_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """prometheus_client creates a process's .db file before it sizes it (client_python#1199):
    a scrape in that window, or after a worker was killed in it, must still report the other
    processes' samples instead of failing whole (the CI run that found it got HTTP 500)."""
    from prometheus_client import generate_latest
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    from pg_scheduler.shared.metrics import multiprocess_registry

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    written = MmapedDict(str(tmp_path / "counter_101.db"))
    written.write_value(
        mmap_key(
            "pg_scheduler_jobs_claimed",
            "pg_scheduler_jobs_claimed_total",
            ["task"],
            ["t"],
            "Jobs claimed to run.",
        ),
        3.0,
        0.0,
    )
    written.close()
    (tmp_path / "counter_102.db").touch()  # a worker between creating its file and sizing it

    text = generate_latest(multiprocess_registry()).decode()

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("pg_scheduler_jobs_claimed_total", (("task", "t"),))] == 3.0


def test_a_worker_asking_a_cached_pid_still_writes_a_forked_childs_samples_apart(
    tmp_path: Path,
) -> None:
    """Workers give prometheus_client a cached pid (os.getpid() is a system call at every
    update); a fork hook keeps it right, so a job that forks writes the child's samples to the
    child's own file and the parent's file keeps the parent's count."""
    script = f"""
import os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(tmp_path)!r}
from pg_scheduler.shared.metrics import metrics, use_cached_pid_store
assert use_cached_pid_store()
metrics().db_errors.inc()
child = os.fork()
if child == 0:
    metrics().db_errors.inc(5)
    os._exit(0)
os.waitpid(child, 0)
metrics().db_errors.inc()
print(os.getpid(), child)
"""
    import subprocess
    import sys

    from prometheus_client.mmap_dict import MmapedDict

    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    parent, child = out.stdout.split()

    def count(pid: str) -> float:
        values = MmapedDict(str(tmp_path / f"counter_{pid}.db"), read_mode=True)
        try:
            return sum(v for key, v, _ in values.read_all_values() if "db_errors" in key)
        finally:
            values.close()

    assert count(parent) == 2.0
    assert count(child) == 5.0


def test_batched_updates_write_what_one_update_per_job_writes() -> None:
    """The worker buffers its per-job updates (metrics.Batched) and writes each counter and each
    histogram's sum and buckets once per loop iteration: the samples must be those of one
    ``observe``/``inc`` per job, values on a bucket's bound and past the last one included."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from pg_scheduler.shared.metrics import LAG_BUCKETS, Batched

    registry = CollectorRegistry()
    one = Histogram("one_by_one", "h", ["task"], buckets=LAG_BUCKETS, registry=registry)
    batched = Histogram("batched", "h", ["task"], buckets=LAG_BUCKETS, registry=registry)
    count_one = Counter("count_one", "c", ["task"], registry=registry)
    count_batched = Counter("count_batched", "c", ["task"], registry=registry)

    def samples(name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        family = next(f for f in registry.collect() if f.name == name)
        return {
            (s.name.removeprefix(name), tuple(sorted(s.labels.items()))): s.value
            for s in family.samples
            if not s.name.endswith("_created")
        }

    async def record(values: list[float]) -> None:
        buffer = Batched()
        for value in values:
            one.labels("t").observe(value)
            count_one.labels("t").inc()
            buffer.observe(batched.labels("t"), value)
            buffer.inc(count_batched.labels("t"))
        assert samples("count_batched") != samples("count_one")  # not written yet
        await asyncio.sleep(0)  # the flush runs at the end of this loop iteration

    values = [0.0, 0.001, 0.0011, 0.0025, 0.3, 0.3, 1.0, 299.9, 300.0, 301.0, 1e9]
    asyncio.run(record(values))
    assert samples("batched") == samples("one_by_one")
    assert samples("count_batched") == samples("count_one")

    asyncio.run(record([float("nan")]))  # a NaN lands in the sum and in no bucket, as observe
    expected, got = samples("one_by_one"), samples("batched")
    key = ("_sum", (("task", "t"),))
    assert math.isnan(expected.pop(key)) and math.isnan(got.pop(key))
    assert got == expected
