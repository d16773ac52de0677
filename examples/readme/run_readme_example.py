"""Run a code example of the pg-scheduler 0.1 README, unchanged, and report what it did.

    python examples/readme/run_readme_example.py examples/readme/quickstart_readme.py

The files next to this one are the README's code blocks byte for byte (see README.md here).
They were written for a reader, not for a machine: they connect as ``scheduler`` to
``localhost:5432``, sleep 300 s, schedule five minutes ahead, and some are fragments that use
names defined elsewhere (``scheduler``, ``dedup_key``, ``db_pool``, ``vacuum_config``) or a
top-level ``await``. This runner runs them as they are by changing their surroundings only:

- ``asyncpg.create_pool(...)`` connects to ``$DATABASE_URL`` (or the embedded PostgreSQL when it is
  unset); the hard-coded ``user/password/database/host/port`` are ignored, other options kept.
- ``asyncio.sleep`` is capped at ``$README_SLEEP_CAP`` seconds (default 3).
  Both changes apply to the example's own code only: the runner gives it stand-in ``asyncio`` and
  ``asyncpg`` modules through its imports; the library underneath is untouched.
- A file with an ``if __name__ == "__main__":`` block runs as a program. Any other file runs
  inside an async harness that provides the names it uses but does not define: ``db_pool`` (a
  pool), ``scheduler`` (a started Scheduler on it), ``dedup_key`` (the key of a periodic job the
  harness defines), ``vacuum_config`` (``VacuumConfig()``), and the public names of pg_scheduler
  plus ``timedelta``/``datetime``/``UTC``. A decorator with no function after it (the README's
  parameter list) is applied to a stub task.
- Afterwards the harness starts what the example built but did not start (a ``Scheduler``, or
  ``--nodes`` schedulers for its ``@periodic`` jobs), makes one window of each new periodic job
  due now instead of waiting for its interval (``--no-fire`` to skip), waits for those runs, and
  prints a report read back from the database. Report lines start with ``[runner]``.

Exit status 0 when the example ran and everything it started finished as expected.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import builtins
import inspect
import json
import logging
import os
import sys
import time
import types
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

import pg_scheduler
from pg_scheduler import Scheduler, VacuumConfig, periodic
from pg_scheduler.embedded import LocalPostgres
from pg_scheduler.shared.periodic import periodic_registry

NODES_BY_FILE = {"cross_node_dedup.py": 3}
"""The cross-node example is about several nodes; the others run on one."""

HARNESS_NAMES = ("scheduler", "dedup_key", "db_pool", "vacuum_config")
FINAL = ("completed", "failed", "cancelled", "expired")
WAIT_SECONDS = 20.0


def say(message: str) -> None:
    print(f"[runner] {message}", flush=True)


# --------------------------------------------------------------------------- the stand-ins


def sleep_cap() -> float:
    return float(os.environ.get("README_SLEEP_CAP", "3"))


def stand_in_asyncio() -> types.ModuleType:
    """``asyncio`` with ``sleep`` capped; everything else is the real module's."""

    class CappedAsyncio(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            return getattr(asyncio, name)

    module = CappedAsyncio("asyncio")
    real_sleep = asyncio.sleep

    async def sleep(delay: float, result: Any = None) -> Any:
        cap = sleep_cap()
        if delay > cap:
            say(f"asyncio.sleep({delay:g}) capped to {cap:g} s")
            delay = cap
        return await real_sleep(delay, result)

    module.sleep = sleep  # type: ignore[attr-defined]
    return module


def stand_in_asyncpg(url: str, pools: list[asyncpg.Pool]) -> types.ModuleType:
    """``asyncpg`` whose ``create_pool`` connects to ``url`` whatever the example hard-codes."""

    class RedirectedAsyncpg(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            return getattr(asyncpg, name)

    module = RedirectedAsyncpg("asyncpg")

    def create_pool(dsn: str | None = None, **kwargs: Any) -> asyncpg.Pool:
        ignored = {k: kwargs.pop(k) for k in ("user", "password", "database", "host", "port") if k in kwargs}
        if dsn is not None or ignored:
            say(
                f"asyncpg.create_pool: ignoring the example's connection settings "
                f"{sorted(ignored) + (['dsn'] if dsn else [])}; using DATABASE_URL"
            )
        pool = asyncpg.create_pool(url, **kwargs)
        pools.append(pool)
        return pool

    module.create_pool = create_pool  # type: ignore[attr-defined]
    return module


def example_builtins(asyncio_module: types.ModuleType, asyncpg_module: types.ModuleType) -> dict[str, Any]:
    real_import = builtins.__import__

    def example_import(
        name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        if level == 0 and name == "asyncio":
            return asyncio_module
        if level == 0 and name == "asyncpg":
            return asyncpg_module
        return real_import(name, globals, locals, fromlist, level)

    return {**vars(builtins), "__import__": example_import}


# --------------------------------------------------------------------------- reading the file


def compile_example(path: Path) -> tuple[types.CodeType, ast.Module, bool]:
    """Compile the file (top-level ``await`` allowed); returns the code, its tree, and whether a
    stub task had to be added after a trailing decorator."""
    source = path.read_text()
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    try:
        tree = ast.parse(source, str(path), feature_version=(3, 11))
        stubbed = False
    except SyntaxError:
        # The README's parameter list is a decorator on its own: give it a function to decorate.
        source += "\nasync def readme_decorated_task():\n    print('readme_decorated_task ran')\n"
        tree = ast.parse(source, str(path))
        stubbed = True
    return compile(source, str(path), "exec", flags=flags), tree, stubbed


def is_program(tree: ast.Module) -> bool:
    """True if the file has an ``if __name__ == "__main__":`` block."""
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            left = node.test.left
            if isinstance(left, ast.Name) and left.id == "__name__":
                return True
    return False


def free_names(tree: ast.Module) -> set[str]:
    """Names the file reads but never binds (at any level: a rough but sufficient test)."""
    loaded: set[str] = set()
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return loaded - bound - set(dir(builtins))


# --------------------------------------------------------------------------- the harness


async def harness_periodic_task() -> None:
    print("harness periodic job ran")


async def wait_until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT_SECONDS) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.1)


async def fire_now(pool: asyncpg.Pool, nodes: list[Scheduler], keys: list[str]) -> None:
    """Make the current window of each periodic job due now, as if its interval had passed:
    the cursor moves one interval back, and the leader's registrar coalesces the missed window
    into one row due now (the path a real missed window takes)."""
    await pool.execute(
        "UPDATE scheduler_periodic SET next_run_at = now() - make_interval(secs => every_seconds)"
        " WHERE dedup_key = ANY($1::text[]) AND every_seconds IS NOT NULL",
        keys,
    )
    for node in nodes:
        if node.periodic_registrar is not None and node.periodic_registrar.running:
            node.periodic_registrar.wake()


async def window_rows(pool: asyncpg.Pool, key: str) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT job_id, status, window_start, worker_id, attempt FROM scheduled_jobs"
            " WHERE dedup_key = $1 AND window_start IS NOT NULL ORDER BY window_start",
            key,
        )
    )


async def report_periodic(pool: asyncpg.Pool, nodes: list[Scheduler], keys: list[str], fire: bool) -> bool:
    ok = True
    producer = Scheduler(pool)
    jobs = await producer.get_periodic_jobs()
    for key in keys:
        info = jobs.get(key)
        if info is None:
            say(f"periodic {key}: NOT in scheduler_periodic")
            ok = False
            continue
        every = f"every {info.interval}" if info.interval else f"cron {info.cron!r}"
        say(
            f"periodic {info.job_name} ({every}, priority {info.priority.name}, max_retries "
            f"{info.max_retries}, advisory lock {info.use_advisory_lock}, enabled {info.enabled}):"
            f" registered in scheduler_periodic as {key}"
        )
        runs = await producer.get_periodic_next_runs(key, count=2)
        say(f"  next windows: {', '.join(f'{t:%Y-%m-%d %H:%M:%S} UTC' for t in runs)}")
    if not fire:
        return ok
    await fire_now(pool, nodes, keys)
    say(f"made the current window of {len(keys)} periodic job(s) due now")
    node_of = {node.worker_id: f"node-{i + 1}" for i, node in enumerate(nodes)}
    for key in keys:

        async def finished(key: str = key) -> bool:
            rows = await window_rows(pool, key)
            return bool(rows) and all(r["status"] in FINAL for r in rows)

        try:
            await wait_until(finished, f"the window of {key} to run")
        except TimeoutError as exc:
            say(str(exc))
            ok = False
        rows = await window_rows(pool, key)
        per_window: dict[datetime, list[asyncpg.Record]] = {}
        for r in rows:
            per_window.setdefault(r["window_start"], []).append(r)
        for window, same in per_window.items():
            r = same[0]
            say(
                f"  window {window:%H:%M:%S} of {key}: {len(same)} row(s), {r['status']} on "
                f"{node_of.get(r['worker_id'], r['worker_id'])} (attempt {r['attempt']})"
            )
            ok = ok and len(same) == 1 and r["status"] == "completed"
    return ok


async def start_nodes(url: str, count: int) -> tuple[list[Scheduler], list[asyncpg.Pool]]:
    """``count`` schedulers, each on its own pool, like processes on separate machines."""
    pools = [await asyncpg.create_pool(url, min_size=1, max_size=5) for _ in range(count)]
    nodes = [Scheduler(p) for p in pools]
    for node in nodes:
        await node.start()
    await wait_until(lambda: _any_leader(nodes), "a leader")
    leader = next(i for i, n in enumerate(nodes) if n.is_leader)
    say(f"{count} node(s) share the database; node-{leader + 1} is the leader")
    return nodes, pools


async def _any_leader(nodes: list[Scheduler]) -> bool:
    return any(n.is_leader for n in nodes)


async def stop_nodes(nodes: list[Scheduler], pools: list[asyncpg.Pool]) -> None:
    for node in nodes:
        await node.shutdown()
    for p in pools:
        await p.close()


async def run_snippet(
    path: Path, code: types.CodeType, tree: ast.Module, stubbed: bool, url: str, nodes_wanted: int, fire: bool
) -> bool:
    pools: list[asyncpg.Pool] = []
    db_pool = await asyncpg.create_pool(url, min_size=1, max_size=10)
    ok = True
    harness_scheduler: Scheduler | None = None
    try:
        wanted = free_names(tree)
        ns: dict[str, Any] = {name: getattr(pg_scheduler, name) for name in pg_scheduler.__all__}
        ns.update(timedelta=timedelta, datetime=datetime, UTC=UTC)
        ns.update(
            __name__="__main__",
            __file__=str(path),
            __builtins__=example_builtins(stand_in_asyncio(), stand_in_asyncpg(url, pools)),
            db_pool=db_pool,
            vacuum_config=VacuumConfig(),
        )
        provided = sorted(n for n in wanted if n in HARNESS_NAMES)
        if "dedup_key" in wanted:
            periodic(every=timedelta(minutes=10), job_name="harness_periodic_job")(harness_periodic_task)
            ns["dedup_key"] = next(
                k for k, d in periodic_registry.all().items() if d.func is harness_periodic_task
            )
        if "scheduler" in wanted:
            harness_scheduler = Scheduler(db_pool)
            await harness_scheduler.start()
            ns["scheduler"] = harness_scheduler
        if provided:
            say(f"provided the names the example uses but does not define: {', '.join(provided)}")
        if stubbed:
            say(
                "the example is a decorator with no function after it: applied it to "
                "'async def readme_decorated_task()'"
            )
        periodic_before = set(periodic_registry.all())

        result = eval(code, ns)  # noqa: S307 - the README's own example, run on purpose
        if inspect.iscoroutine(result):
            await result
        say(f"{path.name} ran")

        new_keys = sorted(set(periodic_registry.all()) - periodic_before)

        # Management API: the example triggered a job; wait for it, then read the result back.
        if harness_scheduler is not None:
            ok = await report_management(ns, harness_scheduler, db_pool) and ok
            harness_scheduler = None

        # Schedulers the example built but did not start.
        built = [
            v for k, v in ns.items() if isinstance(v, Scheduler) and not k.startswith("_") and not v.started
        ]
        for sched in built:
            ok = await report_built_scheduler(sched) and ok

        if new_keys:
            count = nodes_wanted or NODES_BY_FILE.get(path.name, 1)
            nodes, node_pools = await start_nodes(url, count)
            try:
                ok = await report_periodic(db_pool, nodes, new_keys, fire) and ok
            finally:
                await stop_nodes(nodes, node_pools)
    finally:
        if harness_scheduler is not None:
            await harness_scheduler.shutdown()
        for pool in pools:  # pools the example created and left open
            await pool.close()
        await db_pool.close()
    return ok


async def report_management(ns: dict[str, Any], scheduler: Scheduler, pool: asyncpg.Pool) -> bool:
    ok = True
    key = ns.get("dedup_key")
    jobs = ns.get("periodic_jobs")
    if jobs is not None:
        say(f"get_periodic_jobs() listed {len(jobs)} job(s): {sorted(jobs)}")
    status = ns.get("status")
    if status is not None:
        value = status.value if hasattr(status, "value") else status
        shown = {k: value[k] for k in ("job_name", "enabled", "interval") if value and k in value}
        say(f"get_periodic_job_status({key!r}) -> {shown}")
    job_id = ns.get("job_id")
    if job_id:
        say(f"trigger_periodic_job({key!r}) -> {job_id}")

        async def final() -> Any:
            j = await scheduler.get_job(job_id)
            return j if j is not None and j.status.value in FINAL else None

        try:
            j = await wait_until(final, f"triggered job {job_id}")
            say(f"triggered job {job_id}: {j.status.value}")
            ok = j.status.value == "completed"
        except TimeoutError as exc:
            say(str(exc))
            ok = False
    # The plain calls (enable/disable without await) write in the background; shutdown waits for
    # those writes, then a fresh look at the database shows the cluster's state.
    await scheduler.shutdown()
    if key is not None:
        fresh = await Scheduler(pool).get_periodic_job_status(key)
        if fresh is None:
            say(f"periodic job {key} is not in the database")
            return False
        say(
            f"in the database afterwards: enabled={fresh['enabled']}, "
            f"last_run={fresh['last_run']}, last_status={fresh['last_status']}, "
            f"next_run={fresh['next_run']}"
        )
    return ok


async def report_built_scheduler(sched: Scheduler) -> bool:
    cfg = sched.config
    vac = cfg.vacuum_config
    policies = ", ".join(f"{state.value}={_policy(p)}" for state, p in vac.policies().items())
    say(
        f"the example built a Scheduler: max_concurrent_jobs={cfg.max_concurrent_jobs}, "
        f"misfire_grace_time={cfg.misfire_grace_time}, vacuum_enabled={cfg.vacuum_enabled}"
    )
    say(f"  vacuum: {policies}; every {vac.interval_minutes:g} min; track_metrics={vac.track_metrics}")
    await sched.start()
    try:
        await wait_until(lambda: _any_leader([sched]), "the scheduler to lead")
        say(f"started it: worker {sched.worker_id} is claiming jobs and leads the cluster")
        deleted = await sched.run_vacuum()
        say(f"one vacuum pass with these policies deleted: {deleted}")
        if vac.track_metrics:
            say(f"vacuum statistics: {json.dumps(await sched.get_total_vacuum_stats(), default=str)}")
    finally:
        await sched.shutdown()
    say("shut it down cleanly")
    return True


def _policy(policy: pg_scheduler.VacuumPolicy) -> str:
    if policy.days is not None:
        return f"after {policy.days:g} day(s)"
    if policy.keep_count is not None:
        return f"keep last {policy.keep_count}"
    return policy.trigger.value


# --------------------------------------------------------------------------- programs


def run_program(path: Path, code: types.CodeType, url: str) -> None:
    """Run the file as ``__main__`` (it calls ``asyncio.run`` itself)."""
    pools: list[asyncpg.Pool] = []
    ns: dict[str, Any] = {
        "__name__": "__main__",
        "__file__": str(path),
        "__builtins__": example_builtins(stand_in_asyncio(), stand_in_asyncpg(url, pools)),
    }
    started = time.monotonic()
    exec(code, ns)  # noqa: S102 - the README's own example, run on purpose
    say(f"{path.name} ran in {time.monotonic() - started:.1f} s")


async def report_jobs(url: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT job_id, job_name, status, priority, max_retries, task_data,"
            " extract(epoch FROM execution_time - now())::float8 AS due_in"
            " FROM scheduled_jobs ORDER BY created_at"
        )
    except asyncpg.UndefinedTableError:
        rows = []
    finally:
        await conn.close()
    say(f"jobs in scheduled_jobs: {len(rows)}")
    for r in rows:
        due = r["due_in"]
        when = f"due in {due / 60:.1f} min" if due > 0 else f"due {-due:.0f} s ago"
        say(
            f"  {r['job_id']}  {r['job_name']}  {r['status']}  {when}  priority={r['priority']}"
            f"  max_retries={r['max_retries']}  task_data={r['task_data']}"
        )
    return True


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("file", type=Path, help="one of the README example files")
    parser.add_argument(
        "--nodes",
        type=int,
        default=0,
        help="schedulers to run the example's periodic jobs on (default 3 for cross_node_dedup.py, else 1)",
    )
    parser.add_argument(
        "--no-fire", action="store_true", help="do not make the periodic jobs' current window due now"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[%(levelname)s %(name)s] %(message)s")

    path: Path = args.file
    code, tree, stubbed = compile_example(path)
    server: LocalPostgres | None = None
    url = os.environ.get("DATABASE_URL", "").strip()
    try:
        if not url:
            server = LocalPostgres().start()
            url = server.dsn
            say(f"DATABASE_URL is not set: using the embedded PostgreSQL at {server.display_dsn}")
        if is_program(tree):
            run_program(path, code, url)
            ok = asyncio.run(report_jobs(url))
        else:
            ok = asyncio.run(run_snippet(path, code, tree, stubbed, url, args.nodes, not args.no_fire))
    except pg_scheduler.ConfigurationError as exc:
        print(f"run_readme_example: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()
    say("OK" if ok else "NOT OK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
