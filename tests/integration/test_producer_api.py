"""The producer side of the public API, against a real PostgreSQL.

What is proven here, each against a defect of pg-scheduler 0.2.3:

- bad input is refused with a ``pg_scheduler`` error before anything is written, and the errors
  0.2.3 raised as ``TypeError``/``ValueError`` are still those builtins;
- a row naming a task no running code registered is never run (0.2.3 looked tasks up by bare
  ``__name__`` and would have run whatever matched);
- two tasks called ``send`` in two modules stay apart (0.2.3 ran modb's for moda's job);
- RAISE / IGNORE / REPLACE, including REPLACE of a running job (0.2.3 stranded the row) and 20
  concurrent RAISE calls (0.2.3 logged and retried unique violations);
- ``schedule_bulk`` returns the ids it wrote, as 0.2.3 did, or with ``per_spec=True`` one entry
  per spec in input order with ``None`` where a job was skipped (0.2.3 lost the positions); it
  is atomic under RAISE, and takes a repeated id under REPLACE;
- ``schedule(connection=...)`` follows the caller's transaction;
- a never-started Scheduler is a working producer on an empty database;
- importing configures no logging, constructing installs no signal handler and works off the
  main thread (0.2.3 did ``basicConfig`` at import and ``signal.signal`` in ``__init__``);
- the 0.1 README's environment variables are read.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import pg_scheduler
from pg_scheduler import (
    ConfigurationError,
    ConflictResolution,
    InvalidJobError,
    InvalidScheduleError,
    JobAlreadyExistsError,
    JobPriority,
    JobSpec,
    JobState,
    NotACoroutineFunctionError,
    PgSchedulerError,
    Scheduler,
    SerializationError,
    TaskNameConflictError,
    deterministic_job_id,
    job,
    periodic,
)
from pg_scheduler.shared import queries
from pg_scheduler.shared.periodic import periodic_registry
from pg_scheduler.shared.tasks import registry
from tests.rows import insert_job, job_row, wait_for_status
from tests.support import FAST, wait_for

REPO_ROOT = str(Path(pg_scheduler.__file__).resolve().parents[1])
"""Where ``pg_scheduler`` is imported from, for subprocesses (the suite runs it uninstalled)."""

LATER = timedelta(hours=1)
"""Far enough ahead that a job scheduled for ``now + LATER`` never runs during a test."""


def later() -> datetime:
    return datetime.now(UTC) + LATER


async def job_count(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM scheduled_jobs"))


# ============================================================================ 1. bad input


async def test_bad_schedule_input_raises_library_errors_and_writes_nothing(
    pool: asyncpg.Pool,
) -> None:
    @job
    async def task(*args: Any, **kwargs: Any) -> None:
        pass

    def generator_func() -> Iterator[None]:
        yield None

    scheduler = Scheduler(pool)
    await scheduler.initialize_db()  # so that "nothing written" can be counted
    now = datetime.now(UTC)

    bad_calls: list[tuple[str, dict[str, Any], type[PgSchedulerError]]] = [
        ("naive datetime", {"execution_time": datetime.now()}, InvalidJobError),
        ("string time", {"execution_time": "2030-01-01T00:00:00+00:00"}, InvalidJobError),
        ("epoch number", {"execution_time": 1_900_000_000.0}, InvalidJobError),
        ("object arg", {"execution_time": now, "args": (object(),)}, SerializationError),
        ("set arg", {"execution_time": now, "args": ({1, 2},)}, SerializationError),
        ("nan arg", {"execution_time": now, "args": (float("nan"),)}, SerializationError),
        ("inf kwarg", {"execution_time": now, "kwargs": {"x": float("inf")}}, SerializationError),
        ("object kwarg", {"execution_time": now, "kwargs": {"x": object()}}, SerializationError),
        ("args not a sequence", {"execution_time": now, "args": 5}, SerializationError),
        ("priority word", {"execution_time": now, "priority": "urgent"}, InvalidJobError),
        ("priority number", {"execution_time": now, "priority": 42}, InvalidJobError),
        ("negative retries", {"execution_time": now, "max_retries": -1}, InvalidJobError),
    ]
    for label, kwargs, error in bad_calls:
        with pytest.raises(error) as caught:
            await scheduler.schedule(task, **kwargs)
        assert isinstance(caught.value, PgSchedulerError), label
        assert str(caught.value), f"{label}: the error must say what is wrong"

    with pytest.raises(NotACoroutineFunctionError, match="async"):
        await scheduler.schedule(generator_func, execution_time=now)

    # A bulk call validates every spec before writing any: one bad spec, nothing written.
    specs = [JobSpec(task, now, args=(i,)) for i in range(3)]
    specs.append(JobSpec(task, datetime.now(), args=(3,)))
    with pytest.raises(InvalidJobError):
        await scheduler.schedule_bulk(specs)
    with pytest.raises(NotACoroutineFunctionError):
        await scheduler.schedule_bulk([JobSpec(task, now), JobSpec(generator_func, now)])
    # Options shared by specs are checked once per distinct value, and True == 1 in Python:
    # a spec with max_retries=True after one with max_retries=1 must still be refused.
    with pytest.raises(InvalidJobError, match="max_retries"):
        await scheduler.schedule_bulk(
            [JobSpec(task, now, max_retries=1), JobSpec(task, now, max_retries=True)]
        )

    assert await job_count(pool) == 0


async def test_bad_task_and_periodic_definitions_are_refused_at_decoration(
    pool: asyncpg.Pool,
) -> None:
    tasks_before = registry.names()
    periodic_before = set(periodic_registry.all())

    def not_a_task() -> Iterator[None]:  # a generator: neither a coroutine nor a plain result
        yield None

    async def fine() -> None: ...

    with pytest.raises(NotACoroutineFunctionError):
        job(not_a_task)
    with pytest.raises(NotACoroutineFunctionError):
        job(name="named.not_a_task")(not_a_task)
    with pytest.raises(NotACoroutineFunctionError):
        periodic(every=timedelta(minutes=1))(not_a_task)

    bad_schedules: list[tuple[str, dict[str, Any]]] = [
        ("both every and cron", {"every": timedelta(minutes=1), "cron": "* * * * *"}),
        ("neither every nor cron", {}),
        ("minute 61", {"cron": "61 * * * *"}),
        ("not a cron string", {"cron": "not cron"}),
        ("unknown zone", {"cron": "0 9 * * *", "timezone": "Mars/Olympus"}),
        ("timezone with every", {"every": timedelta(minutes=1), "timezone": "Europe/Lisbon"}),
    ]
    for label, kwargs in bad_schedules:
        with pytest.raises(InvalidScheduleError) as caught:
            periodic(**kwargs)(fine)
        assert isinstance(caught.value, PgSchedulerError), label
    with pytest.raises(InvalidScheduleError, match="Mars/Olympus"):
        periodic(cron="0 9 * * *", timezone="Mars/Olympus")(fine)
    with pytest.raises(InvalidScheduleError, match="61"):
        periodic(cron="61 * * * *")(fine)

    # Nothing was registered, so a scheduler publishes and writes nothing.
    assert registry.names() == tasks_before
    assert set(periodic_registry.all()) == periodic_before
    scheduler = Scheduler(pool)
    await scheduler.initialize_db()
    assert await job_count(pool) == 0
    assert await pool.fetchval("SELECT count(*) FROM scheduler_periodic") == 0


async def test_errors_0_2_3_raised_as_builtins_are_still_those_builtins(
    pool: asyncpg.Pool,
) -> None:
    assert issubclass(NotACoroutineFunctionError, TypeError)
    assert issubclass(SerializationError, TypeError)
    assert issubclass(JobAlreadyExistsError, ValueError)
    for error in (
        NotACoroutineFunctionError,
        SerializationError,
        JobAlreadyExistsError,
        InvalidJobError,
        InvalidScheduleError,
        TaskNameConflictError,
        ConfigurationError,
    ):
        assert issubclass(error, PgSchedulerError)

    @job
    async def task(x: Any = None) -> None:
        pass

    def generator_func() -> Iterator[None]:
        yield None

    # And an old program's except clauses really catch them.
    scheduler = Scheduler(pool)
    now = datetime.now(UTC)
    with pytest.raises(TypeError):
        await scheduler.schedule(generator_func, execution_time=now)
    with pytest.raises(TypeError):
        await scheduler.schedule(task, execution_time=now, args=(object(),))
    await scheduler.schedule(task, execution_time=later(), job_id="same")
    with pytest.raises(ValueError, match="same"):
        await scheduler.schedule(task, execution_time=later(), job_id="same")
    assert await job_count(pool) == 1


# ============================================================================ 2. foreign rows


async def test_row_naming_an_unregistered_task_is_never_run(
    pool: asyncpg.Pool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    token = "foreign-row-printed-this"
    probed: list[str] = []

    @job
    async def bystander() -> None:  # registered, never scheduled: the worker has names to claim
        pass

    @job
    async def probe(tag: str) -> None:
        probed.append(tag)

    async with Scheduler(pool, **FAST) as scheduler:
        # Rows written by someone else: a shell command and a print, due now, with arguments.
        await insert_job(
            pool, "foreign-os", job_name="os:system", task_data={"args": [f"touch {marker}"], "kwargs": {}}
        )
        await insert_job(
            pool, "foreign-print", job_name="builtins:print", task_data={"args": [token], "kwargs": {}}
        )
        probe_id = await scheduler.schedule(probe, execution_time=datetime.now(UTC), args=("live",))
        # The registered task ran, so the worker was polling.
        await wait_for_status(scheduler, probe_id, "completed")
        # Not-happening window: one more fallback poll interval (1 s in FAST) plus margin, so
        # the worker had at least one more look at the table with the foreign rows due.
        await asyncio.sleep(FAST["poll_interval_seconds"] + 0.5)

        for job_id in ("foreign-os", "foreign-print"):
            r = await job_row(pool, job_id)
            assert r["status"] == "pending", (job_id, r["status"])
            assert r["attempt"] == 0
            assert r["worker_id"] is None
            assert r["started_at"] is None
            assert r["error_message"] is None
    assert probed == ["live"]
    assert not marker.exists(), "os.system was run from a database row"
    assert token not in capsys.readouterr().out, "print was run from a database row"


# ============================================================================ 3. task names


def _write_module(root: Path, package: str, source: str) -> None:
    (root / package).mkdir()
    (root / package / "__init__.py").write_text("")
    (root / package / "jobs.py").write_text(source)


@pytest.fixture
def two_send_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``moda/jobs.py`` and ``modb/jobs.py``, each with ``@job async def send``, importable."""
    (tmp_path / "sendlog.py").write_text("SENT: list[tuple[str, str]] = []\n")
    source = (
        "from pg_scheduler import job\n"
        "from sendlog import SENT\n\n"
        "@job\n"
        "async def send(to: str) -> None:\n"
        "    SENT.append((__name__, to))\n"
    )
    _write_module(tmp_path, "moda", source)
    _write_module(tmp_path, "modb", source)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("sendlog", "moda", "moda.jobs", "modb", "modb.jobs"):
        sys.modules.pop(name, None)


async def test_two_tasks_named_send_in_two_modules_stay_apart(
    pool: asyncpg.Pool, two_send_modules: Path
) -> None:
    import moda.jobs  # type: ignore[import-not-found]
    import modb.jobs  # type: ignore[import-not-found]
    import sendlog  # type: ignore[import-not-found]

    async with Scheduler(pool, **FAST) as scheduler:
        now = datetime.now(UTC)
        a = await scheduler.schedule(moda.jobs.send, execution_time=now, args=("for-a",))
        b = await scheduler.schedule(modb.jobs.send, execution_time=now, args=("for-b",))
        for job_id in (a, b):
            await wait_for_status(scheduler, job_id, "completed")
        assert (await job_row(pool, a))["job_name"] == "moda.jobs:send"
        assert (await job_row(pool, b))["job_name"] == "modb.jobs:send"
    assert sorted(sendlog.SENT) == [("moda.jobs", "for-a"), ("modb.jobs", "for-b")]


async def test_a_different_function_under_a_taken_name_is_refused() -> None:
    @job(name="emails.send")
    async def first(to: str) -> None:
        pass

    async def second(to: str) -> None:
        pass

    with pytest.raises(TaskNameConflictError, match="emails.send"):
        job(name="emails.send")(second)
    with pytest.raises(TaskNameConflictError):
        registry.register(second, "emails.send")
    # The first registration stands; registering it again is harmless.
    assert registry.get("emails.send").func is first
    job(name="emails.send")(first)
    assert registry.get("emails.send").func is first


# ============================================================================ 4. conflicts


async def test_raise_refuses_a_second_job_with_the_same_id(pool: asyncpg.Pool) -> None:
    @job
    async def task(x: int) -> None:
        pass

    scheduler = Scheduler(pool)
    await scheduler.schedule(task, execution_time=later(), args=(1,), job_id="c1")
    with pytest.raises(JobAlreadyExistsError) as caught:
        await scheduler.schedule(
            task, execution_time=later(), args=(2,), job_id="c1", conflict_resolution=ConflictResolution.RAISE
        )
    assert "c1" in str(caught.value) and "pending" in str(caught.value)
    assert await job_count(pool) == 1
    assert (await scheduler.get_job("c1")).args == [1]  # type: ignore[union-attr]


async def test_twenty_concurrent_raise_calls_with_one_id_make_one_row(
    pool: asyncpg.Pool,
) -> None:
    @job
    async def task(i: int) -> None:
        pass

    scheduler = Scheduler(pool)
    results = await asyncio.gather(
        *(
            scheduler.schedule(
                task,
                execution_time=later(),
                args=(i,),
                job_id="race",
                conflict_resolution=ConflictResolution.RAISE,
            )
            for i in range(20)
        ),
        return_exceptions=True,
    )
    ok = [r for r in results if r == "race"]
    refused = [r for r in results if isinstance(r, JobAlreadyExistsError)]
    assert len(ok) == 1, results
    assert len(refused) == 19, results
    assert await job_count(pool) == 1


async def test_ignore_returns_the_existing_id_and_keeps_its_args(pool: asyncpg.Pool) -> None:
    @job
    async def task(x: int) -> None:
        pass

    scheduler = Scheduler(pool)
    when = later()
    first = await scheduler.schedule(task, execution_time=when, args=(1,), job_id="ig")
    again = await scheduler.schedule(
        task,
        execution_time=when + timedelta(hours=1),
        args=(2,),
        job_id="ig",
        priority=JobPriority.CRITICAL,
        conflict_resolution=ConflictResolution.IGNORE,
    )
    assert first == again == "ig"
    j = await scheduler.get_job("ig")
    assert j is not None
    assert j.args == [1] and j.execution_time == when and j.priority is JobPriority.NORMAL
    assert await job_count(pool) == 1


async def test_replace_of_a_pending_job_runs_it_once_with_the_new_args(
    pool: asyncpg.Pool,
) -> None:
    ran: list[str] = []

    @job
    async def task(tag: str) -> None:
        ran.append(tag)

    async with Scheduler(pool, **FAST) as scheduler:
        await scheduler.schedule(task, execution_time=later(), args=("old",), job_id="rp")
        await scheduler.schedule(
            task,
            execution_time=datetime.now(UTC),
            args=("new",),
            job_id="rp",
            conflict_resolution=ConflictResolution.REPLACE,
        )
        j = await wait_for_status(scheduler, "rp", "completed")
    assert ran == ["new"]
    assert j.args == ["new"] and j.attempt == 1 and j.error_message is None
    assert await job_count(pool) == 1


async def test_replace_of_a_running_job_reruns_it_and_fences_out_the_old_run(
    pool: asyncpg.Pool,
) -> None:
    events: list[tuple[str, str]] = []
    gate = asyncio.Event()
    outcomes: list[tuple[int, str]] = []

    @job
    async def slow(tag: str) -> None:
        events.append(("start", tag))
        if tag == "old":
            await gate.wait()
        events.append(("end", tag))

    def record(claimed: Any, outcome: Any) -> None:
        outcomes.append((claimed.attempt, str(outcome)))

    async with Scheduler(pool, on_outcome=record, **FAST) as scheduler:
        await scheduler.schedule(slow, execution_time=datetime.now(UTC), args=("old",), job_id="rr")
        await wait_for(lambda: ("start", "old") in events, message="first run started")
        assert (await job_row(pool, "rr"))["status"] == "running"

        # Due a little later, so that the row can be seen pending before it is claimed again.
        await scheduler.schedule(
            slow,
            execution_time=datetime.now(UTC) + timedelta(seconds=1.5),
            args=("new",),
            job_id="rr",
            conflict_resolution=ConflictResolution.REPLACE,
        )
        replaced = await job_row(pool, "rr")
        assert replaced["status"] == "pending" and replaced["worker_id"] is None
        assert replaced["task_data"] is not None and "new" in replaced["task_data"]

        done = await wait_for_status(scheduler, "rr", "completed")  # the replacement ran
        gate.set()  # if the old run is still alive, let it try to complete: it must be refused
        await wait_for(lambda: len(outcomes) == 2, message="both runs reported")

    assert ("end", "new") in events
    assert ("end", "old") not in events or events.index(("end", "old")) > events.index(("end", "new"))
    assert sorted(outcomes) == [(1, "lease_lost"), (2, "completed")]
    final = await job_row(pool, "rr")
    assert final["status"] == "completed" and final["attempt"] == 2
    assert final["error_message"] is None
    assert done.args == ["new"]


async def test_replace_while_running_then_old_run_ending_first_leaves_new_run_alone(
    pool: asyncpg.Pool,
) -> None:
    """The replacement is claimed at once by the same worker while the old run still runs. The
    old run is stopped (its lease is gone), and its ending must neither complete the job nor
    drop the new run's slot or lease (it did: the new run was rescued as lost, then failed)."""
    events: list[tuple[str, str]] = []
    gates = {"old": asyncio.Event(), "new": asyncio.Event()}
    outcomes: list[tuple[int, str]] = []

    @job
    async def slow(tag: str) -> None:
        events.append(("start", tag))
        try:
            await gates[tag].wait()
        except asyncio.CancelledError:
            events.append(("cancelled", tag))
            raise
        events.append(("end", tag))

    def record(claimed: Any, outcome: Any) -> None:
        outcomes.append((claimed.attempt, str(outcome)))

    async with Scheduler(pool, on_outcome=record, **FAST) as scheduler:
        await scheduler.schedule(slow, execution_time=datetime.now(UTC), args=("old",), job_id="rr2")
        await wait_for(lambda: ("start", "old") in events, message="first run started")
        await scheduler.schedule(
            slow,
            execution_time=datetime.now(UTC),
            args=("new",),
            job_id="rr2",
            conflict_resolution=ConflictResolution.REPLACE,
        )
        await wait_for(lambda: ("start", "new") in events, message="replacement started")
        # The worker that claims attempt 2 knows attempt 1's lease is gone: it stops that run.
        await wait_for(lambda: ("cancelled", "old") in events, message="old run stopped")
        await wait_for(lambda: any(a == 1 for a, _ in outcomes), message="old run reported")
        # Not-happening window: longer than a lease (2 s in FAST) plus a rescue pass, so that a
        # new run whose lease stopped being renewed would have been rescued by now.
        await asyncio.sleep(FAST["lease_seconds"] + 1.0)
        r = await job_row(pool, "rr2")
        assert r["status"] == "running" and r["attempt"] == 2, dict(r)
        gates["new"].set()
        await wait_for_status(scheduler, "rr2", "completed")
        await wait_for(lambda: len(outcomes) == 2, message="both runs reported")

    assert sorted(outcomes) == [(1, "lease_lost"), (2, "completed")]
    assert ("end", "new") in events and ("end", "old") not in events
    final = await job_row(pool, "rr2")
    assert final["status"] == "completed" and final["attempt"] == 2
    assert final["error_message"] is None


async def test_deterministic_job_ids_dedup_the_same_call(pool: asyncpg.Pool) -> None:
    # The 0.1 README promised "deterministic job ids based on function signature and
    # parameters": the same call gets the same id, so IGNORE schedules it once.
    @job
    async def report(day: str, *, region: str) -> None: ...

    a = deterministic_job_id(report, ("2026-11-28",), {"region": "eu"})
    assert a == deterministic_job_id(report, ["2026-11-28"], {"region": "eu"})
    assert a != deterministic_job_id(report, ("2026-11-29",), {"region": "eu"})
    scheduler = Scheduler(pool)
    when = datetime.now(UTC) + timedelta(hours=1)
    ids = [
        await scheduler.schedule(
            report,
            execution_time=when,
            args=("2026-11-28",),
            kwargs={"region": "eu"},
            job_id=a,
            conflict_resolution=ConflictResolution.IGNORE,
        )
        for _ in range(3)
    ]
    assert ids == [a, a, a]
    assert await pool.fetchval("SELECT count(*) FROM scheduled_jobs") == 1


# ============================================================================ 5. bulk


async def test_bulk_ignore_per_spec_returns_ids_in_input_order_with_none_for_skips(
    pool: asyncpg.Pool,
) -> None:
    @job
    async def task(x: int) -> None:
        pass

    scheduler = Scheduler(pool)
    when = later()
    specs = [JobSpec(task, when, args=(i,), job_id=jid) for i, jid in enumerate(["a", "b", "a", "c", "b"])]
    assert await scheduler.schedule_bulk(specs, per_spec=True) == ["a", "b", None, "c", None]
    assert await job_count(pool) == 3
    assert (await scheduler.get_job("a")).args == [0]  # type: ignore[union-attr]

    await scheduler.schedule(task, execution_time=when, args=(99,), job_id="x2")
    specs = [JobSpec(task, when, args=(i,), job_id=f"x{i}") for i in range(1, 5)]
    assert await scheduler.schedule_bulk(
        specs, conflict_resolution=ConflictResolution.IGNORE, per_spec=True
    ) == ["x1", None, "x3", "x4"]
    assert (await scheduler.get_job("x2")).args == [99]  # type: ignore[union-attr]
    assert await job_count(pool) == 3 + 4


async def test_bulk_ignore_returns_only_the_ids_it_wrote_as_0_2_3_did(pool: asyncpg.Pool) -> None:
    """A 0.2.3 program iterates the result as the jobs it created: no ``None`` in it, and an
    empty list when every spec was ignored."""

    @job
    async def task(x: int) -> None:
        pass

    scheduler = Scheduler(pool)
    when = later()
    specs = [JobSpec(task, when, args=(i,), job_id=jid) for i, jid in enumerate(["a", "b", "a", "c", "b"])]
    assert await scheduler.schedule_bulk(specs) == ["a", "b", "c"]
    assert await scheduler.schedule_bulk(specs) == []
    assert await scheduler.schedule_bulk(
        [JobSpec(task, when, job_id="b"), JobSpec(task, when, job_id="d")],
        conflict_resolution=ConflictResolution.IGNORE,
    ) == ["d"]
    assert await job_count(pool) == 4
    assert (await scheduler.get_job("a")).args == [0]  # type: ignore[union-attr]
    # Generated ids never conflict: every spec's id, in input order, either way.
    fresh = [JobSpec(task, when, args=(i,)) for i in range(3)]
    ids = await scheduler.schedule_bulk(fresh)
    assert len(set(ids)) == 3 and None not in ids
    rows = await pool.fetch(
        "SELECT job_id, task_data->'args'->>0 AS i FROM scheduled_jobs WHERE job_id = ANY($1)", ids
    )
    assert sorted((ids.index(r["job_id"]), int(r["i"])) for r in rows) == [(0, 0), (1, 1), (2, 2)]
    assert len(await scheduler.schedule_bulk(fresh, per_spec=True)) == 3


async def test_bulk_raise_writes_nothing_when_any_id_exists(pool: asyncpg.Pool) -> None:
    @job
    async def task(x: int) -> None:
        pass

    scheduler = Scheduler(pool)
    when = later()
    await scheduler.schedule(task, execution_time=when, args=(0,), job_id="r2")
    specs = [JobSpec(task, when, args=(i,), job_id=f"r{i}") for i in range(1, 4)]
    with pytest.raises(JobAlreadyExistsError, match="r2"):
        await scheduler.schedule_bulk(specs, conflict_resolution=ConflictResolution.RAISE)
    assert await job_count(pool) == 1

    # A repeat inside the batch is a conflict too, and still nothing is written.
    specs = [JobSpec(task, when, job_id="d1"), JobSpec(task, when, job_id="d1")]
    with pytest.raises(JobAlreadyExistsError, match="d1"):
        await scheduler.schedule_bulk(specs, conflict_resolution=ConflictResolution.RAISE)
    assert await job_count(pool) == 1


async def test_bulk_replace_with_a_repeated_id_keeps_the_last_spec(pool: asyncpg.Pool) -> None:
    @job
    async def task(x: int) -> None:
        pass

    scheduler = Scheduler(pool)
    when = later()
    await scheduler.schedule(task, execution_time=when, args=(0,), job_id="q")
    specs = [
        JobSpec(task, when, args=(1,), job_id="p"),
        JobSpec(task, when, args=(2,), job_id="q"),
        JobSpec(task, when, args=(3,), job_id="p", priority=JobPriority.HIGH),
    ]
    result = await scheduler.schedule_bulk(specs, conflict_resolution=ConflictResolution.REPLACE)
    assert result == ["p", "q"]  # the ids written, each once
    assert await scheduler.schedule_bulk(
        specs, conflict_resolution=ConflictResolution.REPLACE, per_spec=True
    ) == ["p", "q", "p"]
    p = await scheduler.get_job("p")
    q = await scheduler.get_job("q")
    assert p is not None and p.args == [3] and p.priority is JobPriority.HIGH
    assert q is not None and q.args == [2]
    assert await job_count(pool) == 2


async def test_bulk_of_ten_thousand_returns_ten_thousand_ids_in_order(
    pool: asyncpg.Pool,
) -> None:
    @job
    async def task(i: int) -> None:
        pass

    scheduler = Scheduler(pool)
    when = later()
    n = 10_000
    specs = [JobSpec(task, when, args=(i,)) for i in range(n)]
    ids = await scheduler.schedule_bulk(specs)
    assert len(ids) == n and None not in ids and len(set(ids)) == n
    assert await job_count(pool) == n
    sample = [0, 1, 2, 4_999, 5_000, 5_001, 7_777, n - 2, n - 1]
    rows = await pool.fetch(
        "SELECT job_id, task_data->'args'->>0 AS i FROM scheduled_jobs WHERE job_id = ANY($1)",
        [ids[i] for i in sample],
    )
    by_id = {r["job_id"]: int(r["i"]) for r in rows}
    assert [by_id[ids[i]] for i in sample] == sample


async def test_a_bad_spec_deep_in_a_streamed_bulk_writes_nothing_and_leaves_the_connection_usable(
    dsn: str,
) -> None:
    """The COPY path prepares rows while it sends them, so a bad spec after the first 512 KB
    aborts a COPY that is under way: nothing may land, the pooled connection must serve the next
    call, and a caller's own transaction (``connection=``) must survive the error."""

    @job
    async def task(i: int) -> None:
        pass

    now = datetime.now(UTC)
    bad = [JobSpec(task, now, args=(i,)) for i in range(20_000)]
    bad.append(JobSpec(task, datetime.now(), args=("naive",)))
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)  # one connection: reused
    try:
        scheduler = Scheduler(pool)
        with pytest.raises(InvalidJobError, match="naive"):
            await scheduler.schedule_bulk(bad)
        assert await job_count(pool) == 0
        assert len(await scheduler.schedule_bulk([JobSpec(task, now, args=(1,))])) == 1

        async with pool.acquire() as conn, conn.transaction():
            kept = await scheduler.schedule(task, execution_time=now, args=(2,), connection=conn)
            with pytest.raises(InvalidJobError):
                await scheduler.schedule_bulk(bad, connection=conn)
            after = await scheduler.schedule(task, execution_time=now, args=(3,), connection=conn)
        ids = {r["job_id"] for r in await pool.fetch("SELECT job_id FROM scheduled_jobs")}
        assert {kept, after} <= ids and len(ids) == 3
    finally:
        await pool.close()


async def test_bulk_copy_path_wakes_an_idle_worker_and_keeps_every_field(pool: asyncpg.Pool) -> None:
    """Without given ids, schedule_bulk writes with COPY: its insert trigger must still wake
    idle workers (their poll is 30 s here), and every column must land as with INSERT."""
    ran: list[int] = []

    @job
    async def copied(i: int) -> None:
        ran.append(i)

    async with Scheduler(pool, **{**FAST, "poll_interval_seconds": 30.0}) as worker:
        await wait_for(
            lambda: worker.worker is not None and worker.worker.listening, message="worker listening"
        )
        ids = await Scheduler(pool).schedule_bulk(
            [
                JobSpec(
                    copied,
                    datetime.now(UTC),
                    args=(i,),
                    priority=JobPriority.HIGH,
                    max_retries=2,
                    misfire_grace_time=None,
                    timeout_seconds=7.5,
                )
                for i in range(3)
            ]
        )
        await wait_for(lambda: len(ran) == 3, timeout=5, message="jobs woken by the COPY's notify")
    rows = await pool.fetch("SELECT * FROM scheduled_jobs WHERE job_id = ANY($1) ORDER BY job_id", ids)
    assert sorted(ran) == [0, 1, 2]
    assert {
        (r["priority"], r["max_retries"], r["misfire_grace_time"], r["timeout_seconds"], r["status"])
        for r in rows
    } == {(3, 2, None, 7.5, "completed")}


async def test_a_large_bulk_into_an_empty_queue_refreshes_the_planner_statistics(
    pool: asyncpg.Pool,
) -> None:
    """Statistics taken while the queue was empty made PostgreSQL claim through the wrong index,
    sorting every pending row at each claim (a 60,000-job burst drained 4x slower)."""

    @job
    async def burst(i: int) -> None:
        pass

    scheduler = Scheduler(pool)
    await scheduler.initialize_db()
    await pool.execute("ANALYZE scheduled_jobs")  # as autovacuum does while the queue is empty
    await scheduler.schedule_bulk([JobSpec(burst, datetime.now(UTC), args=(i,)) for i in range(6000)])
    assert await pool.fetchval("SELECT reltuples FROM pg_class WHERE relname = 'scheduled_jobs'") >= 6000
    plan = "\n".join(
        r[0]
        for r in await pool.fetch(
            """EXPLAIN SELECT ctid FROM scheduled_jobs AS j
            WHERE status = 'pending' AND execution_time <= now() AND job_name = ANY($1::text[])
            ORDER BY priority, execution_time LIMIT 20 FOR UPDATE SKIP LOCKED""",
            [scheduler.registry.name_of(burst)],
        )
    )
    assert "scheduled_jobs_claim_idx" in plan and "Sort" not in plan, plan
    async with pool.acquire() as conn:  # the refresh's smaller sample ends with it
        await conn.execute(queries.JOB_ANALYZE)
        assert await conn.fetchval("SHOW default_statistics_target") == await conn.fetchval(
            "SELECT reset_val FROM pg_settings WHERE name = 'default_statistics_target'"
        )


async def test_a_bursts_statistics_are_in_place_when_its_notification_wakes_the_workers(
    pool: asyncpg.Pool,
) -> None:
    """A worker woken by the burst's commit plans its first claims right away: the refreshed
    statistics must be visible then, not some milliseconds later."""

    @job
    async def burst(i: int) -> None:
        pass

    scheduler = Scheduler(pool)
    await scheduler.initialize_db()
    async with pool.acquire() as worker:
        woken = asyncio.Event()

        def wake(*_: object) -> None:
            woken.set()

        await worker.add_listener("pg_scheduler_jobs", wake)
        bulk = asyncio.create_task(
            scheduler.schedule_bulk([JobSpec(burst, datetime.now(UTC), args=(i,)) for i in range(6000)])
        )
        await asyncio.wait_for(woken.wait(), 30)
        # What the woken worker's planner sees now.
        believed = await worker.fetchval(queries.JOB_GET_PLANNER_ROWS)
        common = await worker.fetchval(
            "SELECT most_common_vals::text FROM pg_stats"
            " WHERE tablename = 'scheduled_jobs' AND attname = 'status'"
        )
        await bulk
        await worker.remove_listener("pg_scheduler_jobs", wake)
    assert believed >= 6000
    assert common == "{pending}"


# ============================================================================ 6. transactions


async def test_schedule_on_a_connection_follows_the_callers_transaction(
    pool: asyncpg.Pool,
) -> None:
    @job
    async def task() -> None:
        pass

    scheduler = Scheduler(pool)
    await scheduler.initialize_db()
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await scheduler.schedule(task, execution_time=later(), job_id="tx-rolled-back", connection=conn)
        # Visible inside the transaction, invisible outside until it commits.
        assert await conn.fetchval("SELECT count(*) FROM scheduled_jobs") == 1
        assert await job_count(pool) == 0
        await tx.rollback()
    assert await scheduler.get_job("tx-rolled-back") is None
    assert await job_count(pool) == 0

    async with pool.acquire() as conn, conn.transaction():
        await scheduler.schedule(task, execution_time=later(), job_id="tx-committed", connection=conn)
        ids = await scheduler.schedule_bulk([JobSpec(task, later(), job_id="tx-bulk")], connection=conn)
        assert ids == ["tx-bulk"]
    assert await scheduler.get_job("tx-committed") is not None
    assert await scheduler.get_job("tx-bulk") is not None
    assert await job_count(pool) == 2


# ============================================================================ 7. producers


async def test_never_started_scheduler_is_a_producer_on_an_empty_database(
    pool: asyncpg.Pool,
) -> None:
    @job
    async def task(x: int, *, label: str = "") -> None:
        pass

    assert await pool.fetchval("SELECT to_regclass('scheduled_jobs')") is None
    producer = Scheduler(pool)
    job_id = await producer.schedule(
        task,
        execution_time=later(),
        args=(7,),
        kwargs={"label": "seven"},
        priority=JobPriority.HIGH,
        max_retries=2,
    )
    assert await pool.fetchval("SELECT to_regclass('scheduled_jobs')") is not None

    j = await producer.get_job(job_id)
    assert j is not None
    assert j.status == "pending" and j.status is JobState.PENDING
    assert j.args == [7] and j.kwargs == {"label": "seven"}
    assert j.priority is JobPriority.HIGH
    assert j.attempt == 0 and j.max_retries == 2 and j.worker_id is None
    assert j["status"] == "pending" and type(j["status"]) is str
    assert j["args"] == [7]

    ids = await producer.schedule_bulk([JobSpec(task, later(), args=(i,), job_id=f"b{i}") for i in range(3)])
    assert ids == ["b0", "b1", "b2"]

    assert await producer.cancel_job(job_id) is True
    cancelled = await producer.get_job(job_id)
    assert cancelled is not None and cancelled.status is JobState.CANCELLED
    assert cancelled["status"] == "cancelled"
    assert await producer.cancel_job(job_id) is False  # already final
    assert await producer.cancel_job("no-such-job") is False
    assert await producer.get_job("no-such-job") is None

    await producer.initialize_db()
    await producer.initialize_db()
    await Scheduler(pool).initialize_db()  # a fresh instance finds the schema up to date
    assert await job_count(pool) == 4


async def test_producer_schedules_by_name_a_task_it_does_not_import(pool: asyncpg.Pool) -> None:
    producer = Scheduler(pool)
    job_id = await producer.schedule(
        "reports.jobs:build",
        execution_time=datetime.now(UTC),
        args=(2024,),
        kwargs={"fmt": "pdf"},
        job_id="by-name",
    )
    assert job_id == "by-name"
    assert "reports.jobs:build" not in registry
    assert (await job_row(pool, "by-name"))["job_name"] == "reports.jobs:build"

    # A consumer process that has the task registered under that name runs it.
    built: list[tuple[int, str]] = []

    @job(name="reports.jobs:build")
    async def build(year: int, fmt: str) -> None:
        built.append((year, fmt))

    async with Scheduler(pool, **FAST) as consumer:
        # The consumer ran the job scheduled by name.
        await wait_for_status(consumer, "by-name", "completed")
    assert built == [(2024, "pdf")]


# ============================================================================ 8. host hygiene


async def test_import_configures_no_logging() -> None:
    code = (
        "import logging, pg_scheduler\n"
        "root = logging.getLogger()\n"
        "print(len(root.handlers), logging.getLevelName(root.level))\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == ["0", "WARNING"]


async def test_scheduler_built_off_the_main_thread_installs_no_signal_handler(
    pool: asyncpg.Pool,
) -> None:
    @job
    async def task() -> None:
        pass

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def build() -> Scheduler:
        assert threading.current_thread() is not threading.main_thread()
        return Scheduler(pool)

    off_main = await asyncio.to_thread(build)  # 0.2.3: ValueError from signal.signal
    on_main = Scheduler(pool)
    assert {sig: signal.getsignal(sig) for sig in before} == before

    # The one built in a thread works as a producer in this loop.
    job_id = await off_main.schedule(task, execution_time=later())
    assert await on_main.get_job(job_id) is not None

    # Starting (install_signal_handlers defaults to False) leaves signals alone too.
    async with Scheduler(pool, **FAST):
        assert {sig: signal.getsignal(sig) for sig in before} == before
    assert {sig: signal.getsignal(sig) for sig in before} == before


# ============================================================================ 9. environment


async def test_environment_variables_configure_the_scheduler(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    @job
    async def task() -> None:
        pass

    monkeypatch.setenv("MAX_CONCURRENT_JOBS", "3")
    monkeypatch.setenv("MISFIRE_GRACE_TIME", "none")
    scheduler = Scheduler(pool)
    assert scheduler.config.max_concurrent_jobs == 3
    assert scheduler.config.misfire_grace_time is None
    job_id = await scheduler.schedule(task, execution_time=later())
    assert (await scheduler.get_job(job_id)).misfire_grace_time is None  # type: ignore[union-attr]

    explicit = Scheduler(pool, max_concurrent_jobs=7, misfire_grace_time=60)
    assert explicit.config.max_concurrent_jobs == 7
    assert explicit.config.misfire_grace_time == 60

    monkeypatch.setenv("MISFIRE_GRACE_TIME", "45")
    assert Scheduler(pool).config.misfire_grace_time == 45

    monkeypatch.setenv("MAX_CONCURRENT_JOBS", "abc")
    with pytest.raises(ConfigurationError, match="MAX_CONCURRENT_JOBS"):
        Scheduler(pool)
    monkeypatch.setenv("MAX_CONCURRENT_JOBS", "0")  # was silently read as the default, 25
    with pytest.raises(ConfigurationError, match="MAX_CONCURRENT_JOBS"):
        Scheduler(pool)
    monkeypatch.delenv("MAX_CONCURRENT_JOBS")
    monkeypatch.setenv("MISFIRE_GRACE_TIME", "soon")
    with pytest.raises(ConfigurationError, match="MISFIRE_GRACE_TIME"):
        Scheduler(pool)
