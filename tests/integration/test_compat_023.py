"""A program written for pg-scheduler 0.2.3 runs unchanged, against a real PostgreSQL.

What 0.2.3's programs and tests rely on, and what is proven here:

1. its module paths import: ``pg_scheduler.job_spec``, ``.job_priority``, ``.conflict_resolution``,
   ``.vacuum``, ``.polling``, ``.periodic``, ``.scheduler``, with its names;
2. its error messages keep their key phrases ("Expected an async function", "async functions",
   "both", "Either", "Invalid timezone") inside ours, and their builtin base classes;
3. ``VacuumConfig(completed=None)`` means the default policy (``tests/integration/test_vacuum.py``);
4. ``PeriodicJobInfo.timezone`` is a ``ZoneInfo``, while status dicts and the CLI's JSON keep the
   zone's name;
5. ``repr(JobPriority.X)`` shows ``db_value=``;
6. a task defined again (same module and qualified name: a reloaded module, a notebook cell run
   twice, a test's local function) replaces the earlier definition, and so do its periodic
   definitions, while another function under a taken name or dedup key is still refused;
7. ``schedule_bulk`` returns 0.2.3's shape (``tests/integration/test_producer_api.py``, section 5).

0.2.3's own suite, run against this package by hand: ``tests/compat/run_023_suite.py``
(docs/migrating-from-0.2.md says how, and which of its tests assert a deliberate difference).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

import pg_scheduler
from pg_scheduler import (
    InvalidScheduleError,
    JobPriority,
    JobSpec,
    NotACoroutineFunctionError,
    Scheduler,
    TaskNameConflictError,
    job,
    periodic,
)
from pg_scheduler.shared.periodic import periodic_registry
from pg_scheduler.shared.tasks import registry
from tests.support import FAST, run_cli, wait_for

REPO_ROOT = str(Path(pg_scheduler.__file__).resolve().parents[1])
"""Where ``pg_scheduler`` is imported from, for subprocesses (the suite runs it uninstalled)."""

HOUR = timedelta(hours=1)


def write_module(root: Path, name: str, source: str) -> None:
    (root / f"{name}.py").write_text(source)


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on ``sys.path`` for modules a test writes; they are forgotten afterwards. No
    bytecode is written: a module rewritten and reloaded within one second must be read anew."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", None) and str(tmp_path) in str(sys.modules[name].__file__):
            del sys.modules[name]


# ============================================================================ 1. module paths


OLD_MODULE_NAMES = {
    "pg_scheduler.conflict_resolution": ["ConflictResolution"],
    "pg_scheduler.job_priority": ["JobPriority"],
    "pg_scheduler.job_spec": ["JobSpec"],
    "pg_scheduler.periodic": ["periodic"],
    "pg_scheduler.polling": ["PollingConfig"],
    "pg_scheduler.vacuum": ["VacuumConfig", "VacuumPolicy", "VacuumTrigger"],
    "pg_scheduler.scheduler": [
        "Scheduler",
        "ConflictResolution",
        "JobPriority",
        "JobSpec",
        "PollingConfig",
        "VacuumConfig",
        "VacuumPolicy",
        "VacuumTrigger",
    ],
}
"""0.2.3's public modules and the public names programs import from each."""


def test_0_2_3_module_paths_import_the_same_objects() -> None:
    for path, names in OLD_MODULE_NAMES.items():
        module = importlib.import_module(path)
        for name in names:
            assert getattr(module, name) is getattr(pg_scheduler, name), f"{path}.{name}"
    from pg_scheduler.job_spec import _UNSET
    from pg_scheduler.periodic import PeriodicJobConfig

    assert JobSpec(func=periodic, execution_time=datetime.now(UTC)).misfire_grace_time is _UNSET
    assert PeriodicJobConfig is pg_scheduler.PeriodicJobInfo
    # The package attribute stays the decorator after its submodule was imported.
    assert pg_scheduler.periodic is periodic


async def test_importing_pg_scheduler_periodic_first_keeps_the_package_name_the_decorator() -> None:
    code = (
        "import types\n"
        "import pg_scheduler.periodic\n"
        "import pg_scheduler.job_spec, pg_scheduler.vacuum, pg_scheduler.polling\n"
        "from pg_scheduler import periodic\n"
        "assert not isinstance(periodic, types.ModuleType), periodic\n"
        "assert pg_scheduler.periodic is periodic\n"
        "from pg_scheduler.periodic import periodic as again\n"
        "assert again is periodic\n"
        "print('ok')\n"
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
    assert out.decode().split() == ["ok"]


# ============================================================================ 2. error messages


async def test_errors_keep_0_2_3_key_phrases_and_write_nothing(pool: asyncpg.Pool) -> None:
    # 0.2.3 refused plain functions; they are tasks now (run in a worker thread: a documented
    # difference, docs/migrating-from-0.2.md). What can be no task keeps 0.2.3's words.
    def generator(x: int) -> Iterator[int]:
        yield x

    scheduler = Scheduler(pool)
    await scheduler.initialize_db()
    now = datetime.now(UTC)

    with pytest.raises(TypeError, match="Expected an async function") as caught:
        await scheduler.schedule(generator, execution_time=now)
    assert isinstance(caught.value, NotACoroutineFunctionError)
    assert "generator" in str(caught.value) and "async def" in str(caught.value)
    with pytest.raises(TypeError, match="Expected an async function"):
        await scheduler.schedule_bulk([JobSpec(func=generator, execution_time=now)])
    with pytest.raises(TypeError, match="Expected an async function"):
        periodic(every=HOUR)(generator)
    with pytest.raises(TypeError, match="async"):
        periodic(cron="* * * * *")(generator)
    with pytest.raises(TypeError, match="Expected an async function"):
        job(generator)
    assert await pool.fetchval("SELECT count(*) FROM scheduled_jobs") == 0
    assert periodic_registry.all() == {}

    with pytest.raises(ValueError, match="both") as both:
        periodic(every=HOUR, cron="* * * * *")
    assert isinstance(both.value, InvalidScheduleError)
    assert "every=" in str(both.value) and "cron=" in str(both.value)
    with pytest.raises(ValueError, match="Either") as neither:
        periodic()
    assert "exactly one" in str(neither.value)
    with pytest.raises(ValueError, match="Invalid timezone") as zone:
        periodic(cron="0 0 * * *", timezone="Invalid/Timezone")
    assert "'Invalid/Timezone'" in str(zone.value)
    with pytest.raises(ValueError, match="timezone.*cron"):
        periodic(every=HOUR, timezone="Europe/Lisbon")


# ============================================================================ 4. time zones


async def test_periodic_job_info_timezone_is_a_zoneinfo_and_status_keeps_the_name(
    dsn: str, pool: asyncpg.Pool
) -> None:
    @periodic(cron="0 0 * * *", timezone="Europe/London", dedup_key="tz-london")
    async def london() -> None: ...

    @periodic(cron="0 0 * * *", timezone=ZoneInfo("Asia/Tokyo"), dedup_key="tz-tokyo")
    async def tokyo() -> None: ...

    @periodic(cron="0 0 * * *", dedup_key="tz-utc")
    async def utc() -> None: ...

    scheduler = Scheduler(pool)
    local = scheduler.get_periodic_jobs()  # before the database was read
    await scheduler.initialize_db()
    stored = await scheduler.get_periodic_jobs()
    for jobs in (local, stored):
        assert jobs["tz-london"].timezone == ZoneInfo("Europe/London")
        assert isinstance(jobs["tz-london"].timezone, ZoneInfo)
        assert str(jobs["tz-london"].timezone) == "Europe/London"
        assert jobs["tz-tokyo"]["timezone"] == ZoneInfo("Asia/Tokyo")
        assert jobs["tz-utc"].timezone is None
    status = await scheduler.get_periodic_job_status("tz-tokyo")
    assert status is not None and status["timezone"] == "Asia/Tokyo"
    assert "Asia/Tokyo" in stored["tz-tokyo"].trigger.describe()

    result = run_cli("periodic", "list", "--json", env={"DATABASE_URL": dsn})
    assert result.returncode == 0, result.stderr
    assert '"timezone": "Europe/London"' in result.stdout

    # A zone this process's tz database does not know (another replica's may) does not break
    # the listing; reading it says what is wrong.
    await pool.execute("UPDATE scheduler_periodic SET timezone = 'Mars/Olympus' WHERE dedup_key = 'tz-utc'")
    listed = await scheduler.get_periodic_jobs()
    assert listed["tz-utc"].timezone_name == "Mars/Olympus"
    with pytest.raises(InvalidScheduleError, match="Invalid timezone"):
        _ = listed["tz-utc"].timezone


# ============================================================================ 5. JobPriority


def test_job_priority_repr_and_str_are_0_2_3s() -> None:
    assert repr(JobPriority.CRITICAL) == "<JobPriority.CRITICAL: critical (db_value=1)>"
    assert [repr(p).endswith(f"(db_value={p.db_value})>") for p in JobPriority] == [True] * 4
    assert str(JobPriority.HIGH) == "high" and f"{JobPriority.LOW}" == "low"


# ============================================================================ 6. redefinition


def make_recorder(runs: list[str], label: str) -> Any:
    """A task defined anew at each call, as a test's local function or a fixture's is."""

    @job
    async def record() -> None:
        runs.append(label)

    return record


async def test_a_local_task_defined_again_replaces_the_earlier_one_and_runs(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    first_runs: list[str] = []
    second_runs: list[str] = []
    first = make_recorder(first_runs, "first")
    with caplog.at_level(logging.DEBUG, logger="pg_scheduler.shared.tasks"):
        second = make_recorder(second_runs, "second")
    name = registry.name_of(second)
    assert name == f"{__name__}:make_recorder.<locals>.record"
    assert registry.get(name).func is second
    assert any("defined again" in r.getMessage() and name in r.getMessage() for r in caplog.records)

    async with Scheduler(pool, **FAST) as scheduler:
        job_id = await scheduler.schedule(second, execution_time=datetime.now(UTC))
        await wait_for(lambda: second_runs, message="the latest definition ran")
        j = await wait_for(lambda: scheduler.get_job(job_id), message="job row")
        assert j.job_name == name
    assert first_runs == [] and second_runs == ["second"]

    # Scheduling the earlier function object again makes it the latest (0.2.3's task_map did
    # the same): one name, one function, the one last given.
    await Scheduler(pool).schedule(first, execution_time=datetime.now(UTC) + HOUR)
    assert registry.get(name).func is first


async def test_a_reloaded_module_replaces_its_tasks_and_periodic_definitions(
    module_dir: Path,
) -> None:
    source = (
        "from datetime import timedelta\n"
        "from pg_scheduler import job, periodic\n"
        "VERSION = {version!r}\n\n"
        "@job(name='reports.build')\n"
        "async def build() -> str:\n"
        "    return VERSION\n\n"
        "@periodic(every=timedelta(hours=1))\n"
        "async def hourly() -> str:\n"
        "    return VERSION\n\n"
        "@periodic(every=timedelta(hours=1), dedup_key='cleanup')\n"
        "async def cleanup() -> str:\n"
        "    return VERSION\n"
    )
    write_module(module_dir, "reloaded_jobs", source.format(version="one"))
    module = importlib.import_module("reloaded_jobs")
    definitions = periodic_registry.all()
    assert len(definitions) == 2 and "cleanup" in definitions

    # Edited (longer: another line for each function) and reloaded, as a notebook cell or a
    # development server does: the same names, now the new functions; no error.
    write_module(module_dir, "reloaded_jobs", "# edited\n" + source.format(version="two"))
    module = importlib.reload(module)
    assert registry.get("reports.build").func is module.build
    assert await registry.get("reports.build").func() == "two"
    after = periodic_registry.all()
    assert after.keys() == definitions.keys()
    assert {d.func for d in after.values()} == {module.hourly, module.cleanup}


async def test_another_module_or_function_under_a_taken_name_or_dedup_key_is_refused(
    module_dir: Path,
) -> None:
    write_module(
        module_dir,
        "billing_jobs",
        (
            "from datetime import timedelta\n"
            "from pg_scheduler import job, periodic\n\n"
            "@job(name='emails.send')\n"
            "async def send(to: str) -> None: ...\n\n"
            "@periodic(every=timedelta(hours=1), dedup_key='nightly')\n"
            "async def nightly() -> None: ...\n"
        ),
    )
    write_module(
        module_dir,
        "marketing_jobs",
        ("from pg_scheduler import job\n\n@job(name='emails.send')\nasync def send(to: str) -> None: ...\n"),
    )
    billing = importlib.import_module("billing_jobs")
    with pytest.raises(TaskNameConflictError, match="emails.send"):
        importlib.import_module("marketing_jobs")
    assert registry.get("emails.send").func is billing.send

    # The same module, another function: refused too, for a task name and for a dedup key.
    async def send(to: str) -> None: ...

    with pytest.raises(TaskNameConflictError, match="emails.send"):
        job(name="emails.send")(send)

    async def nightly() -> None: ...

    with pytest.raises(TaskNameConflictError, match="nightly"):
        periodic(every=HOUR, dedup_key="nightly")(nightly)
    assert periodic_registry.get("nightly").func is billing.nightly  # type: ignore[union-attr]


def test_periodic_functions_of_one_name_in_two_scopes_keep_a_definition_each() -> None:
    """0.2.3's default dedup key hashed the bare ``__name__``: two nested functions of one name
    and schedule shared a key, and the later silently took the earlier's place. The qualified
    name keeps them apart; a module-level function keeps 0.2.3's key (tests/processes/test_examples.py)."""

    def declare_in_first_scope() -> Any:
        @periodic(every=HOUR)
        async def cleanup() -> None: ...

        return cleanup

    def declare_in_second_scope() -> Any:
        @periodic(every=HOUR)
        async def cleanup() -> None: ...

        return cleanup

    first, second = declare_in_first_scope(), declare_in_second_scope()
    definitions = periodic_registry.all()
    assert len(definitions) == 2
    assert {d.func for d in definitions.values()} == {first, second}

    # Declared again (a test or a cell run twice): still one definition per scope, the latest.
    again = declare_in_first_scope()
    definitions = periodic_registry.all()
    assert len(definitions) == 2 and {d.func for d in definitions.values()} == {again, second}


def test_one_task_may_have_several_schedules() -> None:
    """Stacked decorators, or 0.2.3's loops declaring one job per cron expression: one task, one
    definition per schedule, each running the function defined last."""
    expressions = ["0 * * * *", "0 0 * * *", "0 0 * * SUN"]
    for expression in expressions:

        @periodic(cron=expression, job_name=f"every {expression}")
        async def report() -> None: ...

    definitions = periodic_registry.all()
    assert sorted(d.job_name for d in definitions.values()) == sorted(f"every {e}" for e in expressions)
    assert {d.task_name for d in definitions.values()} == {registry.name_of(report)}
    assert {d.func for d in definitions.values()} == {report}
