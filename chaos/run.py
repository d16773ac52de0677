"""One chaos run: build the lab, start PostgreSQL and the pods, feed them jobs while faults are
injected on a schedule, heal everything, let the cluster finish, then check the whole history.

Timeline of a run:

1. lab and PostgreSQL up; schema migrated; history triggers installed;
2. pods started; a "kubelet" loop restarts any pod whose supervisor died;
3. the fault phase: a producer enqueues one-off jobs at a steady rate, a killer SIGKILLs a worker
   every few seconds, and the profile's timed steps crash, stop, freeze or cut off the leader
   or another pod, freeze a worker, and restart PostgreSQL;
4. settle: every fault healed, the producer stopped; wait (with a deadline) until no job of
   the run is left pending or running;
5. pods stopped with SIGTERM (each must exit 0), and every process they ever ran must be gone;
6. the checker reads effects, the database's history and the fault log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from pg_scheduler import ConflictResolution, Scheduler
from pg_scheduler.embedded import StopMode
from pg_scheduler.shared.config import PERIODIC_INTERVAL_SECONDS_DEFAULT
from pg_scheduler.shared.locks import LEADER_LOCK
from pg_scheduler.shared.queries import MISSED_AFTER_SECONDS
from pg_scheduler.shared.schema import migrate
from tests.pgserver import TestPostgres

from . import history, workload
from .cluster import Pod, PodSettings, send_signal, start_postgres
from .folder import leftovers
from .invariants import Check, Fault, Targets, read_effects
from .network import Lab

log = logging.getLogger("chaos")

LEADER_NOW = """
SELECT l.epoch, l.pid FROM scheduler_leader AS l
 WHERE EXISTS (SELECT 1 FROM pg_locks
                WHERE locktype = 'advisory' AND granted
                  AND classid = $1::int8::oid AND objid = $2::int8::oid
                  AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))
"""
RUNNING_ON = """
SELECT DISTINCT w.pid FROM scheduled_jobs AS j JOIN scheduler_workers AS w USING (worker_id)
 WHERE j.status = 'running' AND w.kind = 'worker'
"""
UNFINISHED = """
SELECT count(*) FROM scheduled_jobs
 WHERE status IN ('pending', 'running')
   AND (job_id = ANY($1::text[]) OR (dedup_key IS NOT NULL AND window_start <= $2))
"""
CURRENT_EPOCH = "SELECT epoch FROM scheduler_leader"

# What a harness query can meet while PostgreSQL restarts (InternalClientError: asyncpg's pool
# resetting a connection the server just closed).
DB_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    TimeoutError,
)


@dataclass(frozen=True)
class Step:
    """A timed fault. ``hold`` is how long a freeze or partition lasts."""

    at: float
    kind: str
    """leader_crash, leader_stop, leader_freeze, partition_leader, partition_follower,
    worker_freeze, pg_restart, cluster_crash (every pod killed, restarted after ``hold``)."""
    mode: str | None = None
    hold: float = 0.0


@dataclass(frozen=True)
class Profile:
    name: str
    fault_seconds: float
    steps: tuple[Step, ...]
    settings: PodSettings = field(default_factory=PodSettings)
    pods: int = 3
    worker_kill_every: float = 4.0
    enqueue_per_second: float = 12.0
    settle_seconds: float = 90.0
    seed: int = 1


CLUSTER_DOWN_SECONDS = 8.0
"""How long every pod stays down in a cluster crash: longer than the registrar's lookahead (5 s),
so that windows written ahead before the crash pass while no leader runs, and others are not
written at all (the misfire policies decide both)."""


def _holds(settings: PodSettings) -> tuple[float, float, float]:
    """(leader partition, leader freeze, follower partition / worker freeze) durations: each
    longer than what it must outlast (the leader's TTL, a lease) by a margin."""
    return (settings.leader_ttl_seconds + 8, settings.leader_ttl_seconds + 5, settings.lease_seconds + 4)


def short_profile(settings: PodSettings | None = None) -> Profile:
    """The CI profile: about 2 minutes, every kind of fault at least as often as the issue asks."""
    s = settings or PodSettings()
    lead_cut, lead_freeze, short_hold = _holds(s)
    steps = (
        Step(6, "leader_crash"),
        Step(14, "partition_follower", "drop-from-db", short_hold),
        Step(28, "leader_crash"),
        Step(38, "leader_stop"),
        Step(46, "partition_leader", "drop", lead_cut),
        Step(66, "leader_freeze", hold=lead_freeze),
        Step(82, "leader_crash"),
        Step(90, "worker_freeze", hold=short_hold),
        Step(100, "pg_restart", "fast"),
        Step(104, "cluster_crash", hold=CLUSTER_DOWN_SECONDS),
    )
    return Profile("short", fault_seconds=120, steps=steps, settings=s)


def long_profile(minutes: float, settings: PodSettings | None = None, seed: int = 1) -> Profile:
    """Cycles of every fault kind, rotating partition modes (one way, both ways, reset, link
    down, 30 % loss as the slow link this kernel allows) and PostgreSQL stop modes."""
    s = settings or PodSettings()
    lead_cut, lead_freeze, short_hold = _holds(s)
    modes = ["drop", "drop-to-db", "reject", "drop-from-db", "down", "loss:0.3"]
    steps: list[Step] = []
    cycle = 0
    t = 6.0
    end = minutes * 60 - 20
    while True:
        # Offsets add up the holds before them, so that steps never queue behind a hold.
        block, at = [], 0.0
        for step, gap in (
            (Step(0, "leader_crash"), 10.0),
            (Step(0, "partition_follower", modes[(cycle + 3) % len(modes)], short_hold), short_hold + 4),
            (Step(0, "leader_stop"), 8.0),
            (Step(0, "partition_leader", modes[cycle % len(modes)], lead_cut), lead_cut + 2),
            (Step(0, "leader_freeze", hold=lead_freeze), lead_freeze + 6),
            (Step(0, "worker_freeze", hold=short_hold), short_hold + 8),
            (Step(0, "pg_restart", "immediate" if cycle % 2 else "fast"), 14.0),
            (Step(0, "cluster_crash", hold=CLUSTER_DOWN_SECONDS), CLUSTER_DOWN_SECONDS + 10),
        ):
            block.append(replace(step, at=t + at))
            at += gap
        if t + at > end:
            break
        steps += block
        t += at
        cycle += 1
    return Profile(
        f"{minutes:g}min",
        fault_seconds=minutes * 60 - 20,
        steps=tuple(steps),
        settings=s,
        worker_kill_every=6.0,
        seed=seed,
    )


class Run:
    def __init__(self, profile: Profile, out_dir: Path, lab: Lab | None = None) -> None:
        self.profile = profile
        self.out = out_dir
        self.lab = lab or Lab()
        self.rng = random.Random(profile.seed)
        self.faults: list[Fault] = []
        self.expected: dict[str, dict[str, Any]] = {}
        self.pods: list[Pod] = []
        self.exits: list[dict[str, Any]] = []
        self.expected_exit: dict[int, int] = {}
        """Supervisor pid -> the exit status our own fault should give it."""
        self.notes: list[str] = []
        self._frozen: set[str] = set()
        self._down_until: dict[str, float] = {}
        """Pods the kubelet must not restart before this ``time.monotonic()`` (cluster crash)."""
        self._frozen_pids: set[int] = set()
        self._enqueue_retries = 0

    # ------------------------------------------------------------------ lifecycle
    async def execute(self) -> dict[str, Any]:
        if leftovers(self.out):
            # Effects of another run would be read as this run's history. The lock file of a
            # caller that holds the folder (``python -m chaos``) does not count.
            raise FileExistsError(f"{self.out} is not empty: give each run its own folder")
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "effects").mkdir()
        names = [chr(ord("a") + i) for i in range(self.profile.pods)]
        self.lab.up(names)
        pg = start_postgres(self.lab)
        try:
            return await self._with_database(pg, names)
        finally:
            for pod in self.pods:
                pod.stop(timeout=5)
            pg.close()
            self.lab.down()

    async def _with_database(self, pg: TestPostgres, names: list[str]) -> dict[str, Any]:
        self.pg = pg
        admin = await asyncpg.connect(pg.socket_dsn())
        await admin.execute("CREATE DATABASE chaos")
        await admin.close()
        pool = await asyncpg.create_pool(pg.socket_dsn("chaos"), min_size=2, max_size=6)
        self.pool = pool
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
                await history.install(conn)
            lab_dsn = f"postgresql://postgres@{self.lab.db_address}:{pg.port}/chaos"
            # The last pod claims only the queue "default": jobs of PINNED_QUEUE must never run
            # there (runs_outside_their_queues), and the other pods must run them all.
            narrow = names[-1] if len(names) > 1 else None
            self.pods = [
                Pod(
                    name,
                    self.lab,
                    lab_dsn,
                    self.profile.settings,
                    self.out,
                    queues="default" if name == narrow else None,
                )
                for name in names
            ]
            for pod in self.pods:
                pod.start()
            await self._wait_pods_ready()
            self.t_start = time.time()
            stop = asyncio.Event()
            background = [
                asyncio.create_task(c)
                for c in (self._produce(stop), self._kill_workers(stop), self._kubelet(stop))
            ]
            await self._fault_steps()
            self.t_end = time.time()
            stop.set()
            await asyncio.gather(*background)
            await self._heal_all()
            settled = await self._settle()
            await self._stop_pods()
            return await self._check(settled)
        finally:
            await pool.close()

    async def _wait_pods_ready(self) -> None:
        want = self.profile.pods * self.profile.settings.workers
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            workers = await self.pool.fetchval("SELECT count(*) FROM scheduler_workers WHERE kind = 'worker'")
            if workers >= want and await self._leader() is not None:
                return
            for pod in self.pods:
                if not pod.alive():
                    raise RuntimeError(f"pod {pod.name} exited at start:\n{_tail(pod)}")
            await asyncio.sleep(0.2)
        raise TimeoutError(f"pods not ready within 60 s ({want} workers wanted)")

    # ------------------------------------------------------------------ background actors
    async def _produce(self, stop: asyncio.Event) -> None:
        """One-off jobs at a steady rate: mostly short, some longer than a lease (heartbeats
        matter), some failing their first attempt, a few failing for good."""
        producer = Scheduler(self.pool)
        lease = self.profile.settings.lease_seconds
        n = 0
        period = 1.0 / self.profile.enqueue_per_second
        next_at = time.monotonic()
        while not stop.is_set():
            n += 1
            roll = self.rng.random()
            if roll < 0.75:
                spec = {"seconds": round(self.rng.uniform(0.01, 0.3), 3), "fail_attempts": 0}
            elif roll < 0.88:  # spans heartbeats; capped so that long leases do not fill every slot
                spec = {"seconds": round(self.rng.uniform(0.5, 1.5) * min(lease, 6.0), 3), "fail_attempts": 0}
            elif roll < 0.98:
                spec = {"seconds": 0.05, "fail_attempts": 1}
            else:
                spec = {"seconds": 0.05, "fail_attempts": 99}
            max_retries = 1 if spec["fail_attempts"] == 99 else 8
            job_id = f"chaos-{n}"
            when = datetime.now(UTC) + timedelta(seconds=self.rng.choice((0, 0, 0, 1, 2)))
            # A fifth to the queue one pod does not claim; a tenth each to the queues with a
            # concurrency limit and with a key limit.
            queue, key = None, None
            pick = self.rng.random()
            if pick < 0.2:
                queue = workload.PINNED_QUEUE
            elif pick < 0.3:
                queue = workload.CAPPED_QUEUE
            elif pick < 0.4:
                queue, key = workload.KEYED_QUEUE, self.rng.choice(workload.KEYS)
            if await self._enqueue(producer, job_id, when, spec, max_retries, stop, queue=queue, key=key):
                self.expected[job_id] = {**spec, "max_retries": max_retries}
            next_at += period
            await _sleep_until(next_at, stop)

    async def _enqueue(
        self,
        producer: Scheduler,
        job_id: str,
        when: datetime,
        spec: dict[str, Any],
        max_retries: int,
        stop: asyncio.Event,
        queue: str | None = None,
        key: str | None = None,
    ) -> bool:
        """Retried through outages with the same id (IGNORE makes a retry of a commit whose
        answer was lost harmless); True once the row is known to be in."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                await producer.schedule(
                    workload.work,
                    execution_time=when,
                    kwargs=spec,
                    job_id=job_id,
                    max_retries=max_retries,
                    conflict_resolution=ConflictResolution.IGNORE,
                    queue=queue,
                    concurrency_key=key,
                )
                return True
            except DB_ERRORS:
                self._enqueue_retries += 1
                await asyncio.sleep(0.2)
        self.notes.append(f"{job_id}: could not be enqueued within 120 s")
        return False

    async def _kill_workers(self, stop: asyncio.Event) -> None:
        """SIGKILL one worker every few seconds, preferring one that is running a job."""
        every = self.profile.worker_kill_every
        next_at = time.monotonic() + every / 2
        while not stop.is_set():
            await _sleep_until(next_at, stop)
            next_at += every
            if stop.is_set():
                return
            candidates = {
                pid: pod
                for pod in self.pods
                if pod.name not in self._frozen
                for pid in pod.worker_pids()
                if pid not in self._frozen_pids
            }
            if not candidates:
                continue
            busy: list[int] = []
            try:
                busy = [
                    r["pid"] for r in await self.pool.fetch(RUNNING_ON, timeout=2) if r["pid"] in candidates
                ]
            except DB_ERRORS:
                pass
            pid = self.rng.choice(busy or sorted(candidates))
            pod = candidates[pid]
            t = time.time()
            if send_signal(pid, signal.SIGKILL):
                self.faults.append(Fault("worker_kill", pod.name, t, t, (pid,)))

    async def _kubelet(self, stop: asyncio.Event) -> None:
        """Start again any pod whose supervisor exited, a second later (as a kubelet would)."""
        restart_at: dict[str, float] = {}
        while not stop.is_set():
            now = time.monotonic()
            for pod in self.pods:
                if pod.proc is not None and not pod.alive() and pod.name not in restart_at:
                    self._record_exit(pod)
                    restart_at[pod.name] = max(now + 1.0, self._down_until.get(pod.name, 0.0))
            for pod in self.pods:
                if restart_at.get(pod.name, math.inf) <= now:
                    del restart_at[pod.name]
                    pod.start()
            await _sleep_until(time.monotonic() + 0.25, stop)

    def _record_exit(self, pod: Pod) -> None:
        assert pod.proc is not None
        pid, code = pod.proc.pid, pod.proc.returncode
        expected = self.expected_exit.pop(pid, None)
        self.exits.append({"pod": pod.name, "pid": pid, "status": code, "expected": expected})
        if expected is None or code != expected:
            self.notes.append(f"pod {pod.name} (pid {pid}) exited with {code}, expected {expected}")

    # ------------------------------------------------------------------ timed faults
    async def _fault_steps(self) -> None:
        t0 = time.monotonic()
        for step in self.profile.steps:
            await asyncio.sleep(max(0.0, t0 + step.at - time.monotonic()))
            try:
                await self._inject(step)
            except Exception as exc:  # a fault that could not be injected is reported, not fatal
                log.exception("chaos: step %s failed", step)
                self.notes.append(f"step {step.kind} at {step.at:.0f}s not injected: {exc!r}")
        await asyncio.sleep(max(0.0, t0 + self.profile.fault_seconds - time.monotonic()))

    async def _inject(self, step: Step) -> None:
        log.info("chaos: %s %s", step.kind, step.mode or "")
        if step.kind == "pg_restart":
            epoch = await self._epoch()
            t = time.time()
            stop_mode: StopMode = "immediate" if step.mode == "immediate" else "fast"
            await asyncio.to_thread(self.pg.restart, stop_mode)
            self.faults.append(Fault("pg_restart", None, t, time.time(), mode=step.mode, epoch_before=epoch))
            return
        if step.kind == "worker_freeze":
            await self._freeze_worker(step.hold)
            return
        if step.kind == "cluster_crash":
            await self._crash_cluster(step.hold)
            return
        leader = await self._wait_for_leader()
        epoch, pod = leader
        if step.kind == "partition_follower":
            pod = self.rng.choice([p for p in self.pods if p is not pod and p.alive()])
        pids = (pod.pid or 0, *pod.worker_pids())
        t = time.time()
        if step.kind == "leader_crash":
            self.expected_exit[pids[0]] = -signal.SIGKILL
            pod.signal(signal.SIGKILL)
            self.faults.append(
                Fault("leader_crash", pod.name, t, t, pids, was_leader=True, epoch_before=epoch)
            )
        elif step.kind == "leader_stop":
            self.expected_exit[pids[0]] = 0
            pod.signal(signal.SIGTERM)
            self.faults.append(
                Fault("leader_stop", pod.name, t, t, pids, was_leader=True, epoch_before=epoch)
            )
        elif step.kind == "leader_freeze":
            self._frozen.add(pod.name)
            pod.signal(signal.SIGSTOP)
            await asyncio.sleep(step.hold)
            pod.signal(signal.SIGCONT)
            self._frozen.discard(pod.name)
            self.faults.append(
                Fault(
                    "leader_freeze", pod.name, t, time.time(), pids[:1], was_leader=True, epoch_before=epoch
                )
            )
        elif step.kind in ("partition_leader", "partition_follower"):
            mode = step.mode or "drop"
            await asyncio.to_thread(self.lab.partition, pod.name, mode)
            await asyncio.sleep(step.hold)
            await asyncio.to_thread(self.lab.heal, pod.name)
            self.faults.append(
                Fault(
                    "partition",
                    pod.name,
                    t,
                    time.time(),
                    pids,
                    mode=mode,
                    was_leader=step.kind == "partition_leader",
                    epoch_before=epoch,
                )
            )
        else:
            raise ValueError(f"unknown step {step.kind}")

    async def _crash_cluster(self, hold: float) -> None:
        """SIGKILL every pod (their workers die with their supervisors) and keep them down for
        ``hold`` seconds: an outage of the whole deployment, after which the misfire policies
        decide what runs of the windows that passed."""
        epoch = await self._epoch()
        t = time.time()
        pids: list[int] = []
        for pod in self.pods:
            if pod.pid is None:
                continue
            pids += [pod.pid, *pod.worker_pids()]
            self.expected_exit[pod.pid] = -signal.SIGKILL
            self._down_until[pod.name] = time.monotonic() + hold
            pod.signal(signal.SIGKILL)
        await asyncio.sleep(hold)
        self.faults.append(Fault("cluster_crash", None, t, time.time(), tuple(pids), epoch_before=epoch))

    async def _freeze_worker(self, hold: float) -> None:
        """SIGSTOP a worker in the middle of a run longer than the freeze: the leader must take
        the job back once the lease runs out, another worker runs it again, and the frozen one,
        once thawed, must not complete it. The run is one of our own, enqueued for this, so the
        freeze always catches one (freezing whichever worker looked busy sometimes caught a run
        that ended first, and then proved nothing)."""
        job_id = f"chaos-freeze-{len(self.faults)}"
        # Short is enough: a frozen body cannot end before the thaw, by which time the job has
        # been rescued and started again elsewhere.
        spec = {"seconds": 2.0, "fail_attempts": 0}
        when = datetime.now(UTC)
        if await self._enqueue(Scheduler(self.pool), job_id, when, spec, 8, asyncio.Event()):
            self.expected[job_id] = {**spec, "max_retries": 8}
        # Wait for the body's own start, not for the claim: a worker frozen between its claim
        # and the body's start ran the body only after the thaw, once the job had already run
        # elsewhere, and the freeze then overlapped nothing (a CI run saw that).
        deadline = time.monotonic() + 15
        pid = None
        while time.monotonic() < deadline:
            owners = {pid: pod for pod in self.pods for pid in pod.worker_pids()}
            pid = _body_started_in(self.out / "effects", job_id)
            if pid in owners:
                break
            pid = None
            await asyncio.sleep(0.05)
        if pid is None:
            self.notes.append(f"worker freeze: {job_id} did not start within 15 s")
            return
        t = time.time()
        self._frozen_pids.add(pid)  # the killer leaves it alone: the freeze is the fault here
        send_signal(pid, signal.SIGSTOP)
        await asyncio.sleep(hold)
        send_signal(pid, signal.SIGCONT)
        self._frozen_pids.discard(pid)
        self.faults.append(Fault("worker_freeze", owners[pid].name, t, time.time(), (pid,)))

    async def _leader(self) -> tuple[int, Pod] | None:
        try:
            row = await self.pool.fetchrow(LEADER_NOW, *LEADER_LOCK, timeout=2)
        except DB_ERRORS:
            return None
        if row is None:
            return None
        pod = next((p for p in self.pods if p.pid == row["pid"]), None)
        return (row["epoch"], pod) if pod is not None else None

    async def _wait_for_leader(self, timeout: float = 60) -> tuple[int, Pod]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = await self._leader()
            if found is not None and found[1].name not in self._frozen:
                return found
            await asyncio.sleep(0.1)
        raise TimeoutError(f"no leader within {timeout} s")

    async def _epoch(self) -> int | None:
        try:
            return int(await self.pool.fetchval(CURRENT_EPOCH, timeout=2))
        except DB_ERRORS:
            return None

    # ------------------------------------------------------------------ the end
    async def _heal_all(self) -> None:
        for pod in self.pods:
            await asyncio.to_thread(self.lab.heal, pod.name)
            pod.signal(signal.SIGCONT)
            if not pod.alive():
                self._record_exit(pod)
                pod.start()

    async def _settle(self) -> float:
        """Seconds until nothing of the run is left to do (or -1 past the deadline)."""
        t0 = time.monotonic()
        # Long enough for a lost lease to be rescued and its job to run again, twice over.
        budget = max(self.profile.settle_seconds, 3 * self.profile.settings.lease_seconds + 30)
        deadline = t0 + budget
        ids = sorted(self.expected)
        cutoff = datetime.fromtimestamp(self.t_end, UTC)
        while time.monotonic() < deadline:
            try:
                left = await self.pool.fetchval(UNFINISHED, ids, cutoff, timeout=10)
            except DB_ERRORS:
                left = -1
            if left == 0:
                return time.monotonic() - t0
            await asyncio.sleep(0.5)
        self.notes.append(f"jobs still unfinished {budget:.0f} s after the faults")
        return -1.0

    async def _stop_pods(self) -> None:
        for pod in self.pods:
            if pod.alive():
                assert pod.proc is not None
                self.expected_exit[pod.proc.pid] = 0
        stopping = [asyncio.to_thread(pod.stop, 30.0) for pod in self.pods]
        await asyncio.gather(*stopping)
        for pod in self.pods:
            self._record_exit(pod)
            pod.proc = None
        survivors = [pid for pod in self.pods for pid in pod.survivors(grace=25)]
        if survivors:
            self.notes.append(f"processes alive 25 s after their pod stopped: {survivors}")

    async def _check(self, settled: float) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            transitions, terms, rows, passes, pass_epochs = await history.load(conn)
        s = self.profile.settings
        # A lost lease ends at most a lease after the last renewal; the rescuer's pass comes
        # within its period (5 s at most, lease / 3 below 15 s; jittered), and the re-queued job
        # is claimed at once (the rescuer notifies).
        rescue_period = min(5.0, s.lease_seconds / 3)
        targets = Targets(lost_lease_rescue=s.lease_seconds + 1.25 * rescue_period + 2)
        check = Check(
            expected_jobs=self.expected,
            effects=read_effects(self.out / "effects"),
            transitions=transitions,
            terms=terms,
            rows=rows,
            faults=self.faults,
            t_start=self.t_start,
            t_end=self.t_end,
            targets=targets,
            quiet_before=s.leader_ttl_seconds + s.lease_seconds + 3,
            passes=passes,
            pass_epochs=pass_epochs,
            pass_gap=PERIODIC_INTERVAL_SECONDS_DEFAULT + MISSED_AFTER_SECONDS,
        )
        check.save(self.out / "history.json")
        result = check.run()
        result["profile"] = {
            "name": self.profile.name,
            "fault_seconds": self.profile.fault_seconds,
            "pods": self.profile.pods,
            "settings": asdict(s),
            "seed": self.profile.seed,
        }
        result["counts"]["late_outcomes_refused"] = self._refused_outcomes()
        result["settle_seconds"] = settled
        result["enqueue_retries"] = self._enqueue_retries
        result["pod_exits"] = self.exits
        result["notes"] = self.notes
        result["faults"] = [asdict(f) for f in self.faults]
        return result

    def _refused_outcomes(self) -> int:
        """Outcomes a worker tried to write after its lease was gone, which the fence refused
        (the workers log each one)."""
        refused = 0
        for path in self.out.glob("pod-*.log"):
            text = path.read_text(errors="replace")
            refused += text.count("refused: lease lost") + text.count("not recorded: lease lost")
        return refused


def _tail(pod: Pod) -> str:
    logs = sorted(pod.run_dir.glob(f"pod-{pod.name}-*.log"))
    return logs[-1].read_text(errors="replace")[-3000:] if logs else "(no log)"


async def _sleep_until(at: float, stop: asyncio.Event) -> None:
    delay = at - time.monotonic()
    if delay > 0:
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            pass


def _body_started_in(folder: Path, job_id: str) -> int | None:
    """The PID of a process whose run of ``job_id`` has started its body (its start effect is
    written; chaos/workload.py), or None."""
    needle = f'"job": {json.dumps(job_id)}'
    for path in folder.glob("effects-*.jsonl"):
        for line in path.read_text().splitlines():
            if needle in line and '"ev": "start"' in line:
                return int(json.loads(line)["pid"])
    return None
