"""Prometheus metrics: one set of names for the in-process ``Scheduler`` and for pods.

The metrics are created on first use, not at import: ``pg-scheduler run`` first points
prometheus_client at a multiprocess folder (``PROMETHEUS_MULTIPROC_DIR``), so that every worker
process writes its samples there and the supervisor's ``/metrics`` sums them; prometheus_client
chooses its value store when it is imported. An in-process ``Scheduler`` simply records into the
default registry, which the application exposes with its own server.

Two kinds of series:

- per process, aggregated over a pod's processes: counters and histograms of what workers did,
  the leader gauges of the supervisor, the number of live workers (each worker adds itself, and a
  dead worker's share is dropped with ``mark_process_dead``);
- cluster-wide (jobs by state, oldest due job, oldest worker heartbeat): sampled by one query per
  interval on the leader only (:class:`ClusterCollector`), and exported only by the pod that
  leads, so that summing over pods never double counts. Read them with ``max``.
"""

from __future__ import annotations

import asyncio
import bisect
import glob
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
LAG_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)


@dataclass(frozen=True)
class Metrics:
    """The process's metric objects (see :func:`metrics`): one field per series."""

    jobs_claimed: Counter
    jobs_finished: Counter
    job_duration: Histogram
    job_start_lag: Histogram
    periodic_lag: Histogram
    periodic_missed_windows: Counter
    is_leader: Gauge
    leader_epoch: Gauge
    leader_elections: Counter
    workers: Gauge
    worker_restarts: Counter
    orphans_rescued: Counter
    vacuumed_jobs: Counter
    db_errors: Counter


_lock = threading.Lock()
_metrics: Metrics | None = None


def metrics() -> Metrics:
    """The process's metric objects, created on the first call."""
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = _create()
    return _metrics


def _create() -> Metrics:
    from prometheus_client import REGISTRY, Counter, Gauge, Histogram

    REGISTRY.register(cluster_collector)
    return Metrics(
        jobs_claimed=Counter("pg_scheduler_jobs_claimed", "Jobs claimed to run.", ["task"]),
        jobs_finished=Counter(
            "pg_scheduler_jobs_finished",
            "Runs that ended, by outcome: completed, failed, retried, cancelled, expired, "
            "lease_lost, skipped, deferred.",
            ["task", "outcome"],
        ),
        job_duration=Histogram(
            "pg_scheduler_job_duration_seconds", "How long a run took.", ["task"], buckets=DURATION_BUCKETS
        ),
        job_start_lag=Histogram(
            "pg_scheduler_job_start_lag_seconds", "Start minus due time.", ["task"], buckets=LAG_BUCKETS
        ),
        periodic_lag=Histogram(
            "pg_scheduler_periodic_lag_seconds",
            "Start of a periodic run minus its window start.",
            ["job"],
            buckets=LAG_BUCKETS,
        ),
        periodic_missed_windows=Counter(
            "pg_scheduler_periodic_missed_windows",
            "Periodic windows that passed while no leader ran, by what the misfire policy did: "
            "skipped, coalesced (folded into one run) or run.",
            ["job", "outcome"],
        ),
        is_leader=Gauge(
            "pg_scheduler_is_leader", "1 while this pod (process) leads.", multiprocess_mode="livemax"
        ),
        leader_epoch=Gauge(
            "pg_scheduler_leader_epoch", "The epoch of this pod's last term.", multiprocess_mode="livemax"
        ),
        leader_elections=Counter("pg_scheduler_leader_elections", "Times this pod (process) won leadership."),
        workers=Gauge(
            "pg_scheduler_workers", "Live worker processes (worker loops) here.", multiprocess_mode="livesum"
        ),
        worker_restarts=Counter("pg_scheduler_worker_restarts", "Worker processes replaced after they died."),
        orphans_rescued=Counter("pg_scheduler_orphans_rescued", "Jobs of lost workers run again or failed."),
        vacuumed_jobs=Counter("pg_scheduler_vacuumed_jobs", "Finished jobs deleted by vacuum.", ["state"]),
        db_errors=Counter("pg_scheduler_db_errors", "Database calls that failed."),
    )


class TaskSeries:
    """One task's labelled series, looked up once. ``labels()`` takes a lock and builds a key
    at every call, and a busy worker updates four series per job."""

    def __init__(self, m: Metrics, task: str) -> None:
        self.claimed = m.jobs_claimed.labels(task)
        self.start_lag = m.job_start_lag.labels(task)
        self.duration = m.job_duration.labels(task)
        self._finished = m.jobs_finished
        self._task = task
        self._by_outcome: dict[str, Any] = {}

    def finished(self, outcome: str) -> Any:
        """The ``jobs_finished`` series of this task and outcome."""
        series = self._by_outcome.get(outcome)
        if series is None:
            series = self._by_outcome[outcome] = self._finished.labels(self._task, outcome)
        return series


_task_series: dict[str, TaskSeries] = {}


class Batched:
    """A worker's per-job metric updates, written once per event-loop iteration.

    Each update of a multiprocess value takes a lock and writes the mmap, and a histogram's
    ``observe`` walks its buckets in Python, for each of a job's several updates. Here an update
    is a dict entry; the first one of an iteration schedules a flush at the end of it, which adds
    each counter's increments at once, and each histogram's sum and hit buckets once. A scrape
    lags by at most one loop iteration.
    """

    def __init__(self) -> None:
        self._counts: dict[Any, float] = {}
        self._observed: dict[Any, list[float]] = {}
        self._scheduled = False

    def inc(self, series: Any, amount: float = 1.0) -> None:
        """Add ``amount`` to the counter ``series`` at the next flush."""
        self._counts[series] = self._counts.get(series, 0.0) + amount
        self._schedule()

    def observe(self, series: Any, value: float) -> None:
        """Observe ``value`` on the histogram ``series`` at the next flush."""
        observed = self._observed.get(series)
        if observed is None:
            self._observed[series] = [value]
        else:
            observed.append(value)
        self._schedule()

    def _schedule(self) -> None:
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to batch in: write now
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what is pending (the worker also calls it when it stops)."""
        self._scheduled = False
        counts, self._counts = self._counts, {}
        observed, self._observed = self._observed, {}
        for series, amount in counts.items():
            series.inc(amount)
        for series, values in observed.items():
            observe_many(series, values)


def observe_many(histogram: Any, values: list[float]) -> None:
    """``histogram.observe(v)`` for each value, writing the sum and each hit bucket once.

    Uses the histogram's ``_upper_bounds``, ``_buckets`` and ``_sum`` (prometheus_client has kept
    them under these names since its first releases; ``observe`` itself adds to the first bucket
    whose bound is at or above the value); a version without them gets one ``observe`` per value.
    """
    try:
        bounds, buckets, total = histogram._upper_bounds, histogram._buckets, histogram._sum
    except AttributeError:
        for value in values:
            histogram.observe(value)
        return
    hits: dict[int, int] = {}
    for value in values:
        if value != value:  # NaN: in the sum, in no bucket, as observe
            continue
        i = bisect.bisect_left(bounds, value)
        hits[i] = hits.get(i, 0) + 1
    total.inc(sum(values))
    for i, count in hits.items():
        buckets[i].inc(count)


def task_series(task: str) -> TaskSeries:
    """The series of ``task`` in this process's metrics."""
    series = _task_series.get(task)
    if series is None:
        series = _task_series[task] = TaskSeries(metrics(), task)
    return series


class ClusterCollector:
    """The leader's latest sample of cluster-wide gauges; nothing while this process does not
    lead (the sample is cleared when leadership ends)."""

    def __init__(self) -> None:
        self._sample: Mapping[str, Any] | None = None

    def set(self, sample: Mapping[str, Any] | None) -> None:
        """Replace the sample; None exports nothing."""
        self._sample = sample

    def collect(self) -> Iterator[Any]:
        """Prometheus's collector hook: the latest sample's gauges; nothing without a sample."""
        sample = self._sample
        if sample is None:
            return
        from prometheus_client.core import GaugeMetricFamily

        jobs = GaugeMetricFamily(
            "pg_scheduler_jobs",
            "Jobs by state, in the whole cluster (exported by the leader only).",
            labels=["state"],
        )
        for state, count in sorted(sample["jobs"].items()):
            jobs.add_metric([state], count)
        yield jobs
        yield GaugeMetricFamily(
            "pg_scheduler_oldest_due_job_age_seconds",
            "How long the oldest due pending job has waited (0: none due; leader only).",
            value=sample["oldest_due_age"],
        )
        yield GaugeMetricFamily(
            "pg_scheduler_oldest_worker_heartbeat_age_seconds",
            "Heartbeat age of the live worker that beat longest ago (leader only).",
            value=sample["oldest_heartbeat_age"],
        )
        yield from _queue_families(sample.get("queues", []))


def _queue_families(queues: list[Mapping[str, Any]]) -> Iterator[Any]:
    """The per-queue gauges of the leader's sample (docs/metrics.md)."""
    from prometheus_client.core import GaugeMetricFamily

    def family(name: str, doc: str, labels: tuple[str, ...] = ("queue",)) -> Any:
        return GaugeMetricFamily(name, doc + " (leader only).", labels=list(labels))

    running = family("pg_scheduler_queue_running", "Jobs of the queue running with a live lease")
    pending = family("pg_scheduler_queue_pending", "Pending jobs of the queue, due or not")
    oldest = family(
        "pg_scheduler_queue_oldest_due_age_seconds",
        "How long the queue's oldest due job has waited (0: none due)",
    )
    limit = family(
        "pg_scheduler_queue_limit",
        "A limit of the queue in force: concurrency, key_concurrency, or rate (starts per "
        "rate period); absent when not set",
        ("queue", "limit"),
    )
    period = family("pg_scheduler_queue_rate_period_seconds", "The period of the queue's rate limit")
    paused = family("pg_scheduler_queue_paused", "1 while the queue is paused")
    held = family(
        "pg_scheduler_queue_held_jobs",
        "Due jobs of the queue held back, by the first reason that holds them: paused, "
        "concurrency, rate or key",
        ("queue", "reason"),
    )
    for q in queues:
        name = q["queue"]
        running.add_metric([name], q["running"])
        pending.add_metric([name], q["pending"])
        oldest.add_metric([name], q["oldest_due_age"])
        for kind, value in (
            ("concurrency", q["concurrency"]),
            ("key_concurrency", q["key_concurrency"]),
            ("rate", q["rate_limit"]),
        ):
            if value is not None:
                limit.add_metric([name, kind], value)
        if q["rate_period_seconds"] is not None:
            period.add_metric([name], q["rate_period_seconds"])
        paused.add_metric([name], 1 if q["paused"] else 0)
        for reason in ("paused", "concurrency", "rate", "key"):
            held.add_metric([name, reason], q[f"held_{reason}"])
    yield from (running, pending, oldest, limit, period, paused, held)


cluster_collector = ClusterCollector()


def prepare_multiprocess_dir(path: str | os.PathLike[str]) -> Path:
    """Empty (or create) the folder and point prometheus_client at it, for this process and the
    worker processes it starts. Call before anything records a metric."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.glob("*.db"):  # samples of a previous run would be summed in
        if entry.is_file():
            entry.unlink()
    os.environ[MULTIPROC_ENV] = str(folder)
    import prometheus_client.values as values

    if values.ValueClass is values.MutexValue:
        # prometheus_client was imported before the folder was set (by the application, say):
        # switch its value store now, before the first metric exists.
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return folder


_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def _cached_pid() -> int:
    return _pid


def use_cached_pid_store() -> bool:
    """Make this process's multiprocess metric values ask a cached pid, not ``os.getpid()``.

    prometheus_client checks the pid at every ``inc``/``observe`` to notice a fork, and glibc
    makes each ``os.getpid()`` a system call, which a busy worker would pay at every value update
    of every job. A fork hook keeps the cached pid right in a forked child.

    Only before the first metric of this process exists (True if switched): each value store
    keeps its own map of the per-pid files, and two maps writing one file would corrupt it. The
    worker calls it first thing after it is spawned, before it loads the application."""
    if not os.environ.get(MULTIPROC_ENV) or _metrics is not None:
        return False
    import prometheus_client.values as values

    values.ValueClass = values.MultiProcessValue(  # type: ignore[no-untyped-call]
        process_identifier=_cached_pid
    )
    return True


def multiprocess_registry() -> CollectorRegistry:
    """The supervisor's ``/metrics``: every process's samples from the folder, plus the cluster
    gauges when this pod leads."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    class SkipEmptyFiles(MultiProcessCollector):
        """prometheus_client creates a process's file before it sizes it (client_python#1199,
        open in 0.26): a scrape in that window failed whole with a struct.error (HTTP 500), and a
        worker killed in it left the empty file behind, failing every later scrape. An empty
        file holds no sample yet: skip it."""

        def collect(self) -> Any:
            files = [f for f in glob.glob(os.path.join(self._path, "*.db")) if os.path.getsize(f) > 0]
            return self.merge(files, accumulate=True)  # type: ignore[no-untyped-call]

    registry = CollectorRegistry()
    SkipEmptyFiles(registry)  # type: ignore[no-untyped-call]
    registry.register(cluster_collector)
    return registry


def default_registry() -> CollectorRegistry:
    """The default registry, with the metrics created in it."""
    from prometheus_client import REGISTRY

    metrics()
    return REGISTRY


def mark_process_dead(pid: int) -> None:
    """Drop a dead process's live gauges (its counters stay: they never go backwards)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
