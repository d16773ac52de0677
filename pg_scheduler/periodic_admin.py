"""Manages the periodic jobs for the Scheduler: local view, ordered toggles, sync, overrides, status.

Plain (un-awaited) calls answer from what this process knows; awaited ones ask the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from .awaitable import AwaitableDict, AwaitableList, AwaitableOptional
from .shared import queries
from .shared.errors import InvalidJobError, SchedulerStateError
from .shared.periodic import (
    PeriodicDefinition,
    PeriodicJobInfo,
    check_schedule,
    info_from_definition,
    info_from_row,
    next_runs,
    periodic_registry,
)
from .shared.periodic import publish as publish_periodic
from .shared.service import cancel_and_wait
from .supervisor.maintenance.periodic_registrar import PeriodicRegistrar

log = logging.getLogger("pg_scheduler")

PERIODIC_SYNC_SECONDS = 5.0


class PeriodicAdmin:
    """The Scheduler's periodic management: publishes this process's definitions, keeps a local
    view of the cluster's periodic jobs, and changes them for the whole cluster."""

    def __init__(
        self,
        db_pool: asyncpg.Pool,
        *,
        ready: Callable[[], Awaitable[None]],
        registrar: Callable[[], PeriodicRegistrar | None],
        spawn: Callable[[Coroutine[Any, Any, bool]], asyncio.Task[bool]],
    ) -> None:
        """``ready`` prepares the schema once; ``registrar`` is the leader's registrar while
        this process runs one (woken after a change); ``spawn`` runs a background write that
        shutdown() waits for."""
        self.db_pool = db_pool
        self._ready = ready
        self._registrar = registrar
        self._spawn = spawn
        self._state: dict[str, PeriodicJobInfo] = {}
        self._published: dict[str, PeriodicDefinition] = {}
        self._last_toggle: asyncio.Task[bool] | None = None
        self._sync_task: asyncio.Task[None] | None = None

    def start_sync(self) -> None:
        """Publish new definitions and refresh the local view every few seconds, until
        :meth:`stop_sync`."""
        self._sync_task = asyncio.create_task(self._sync_loop(), name="pg_scheduler:sync")

    async def stop_sync(self) -> None:
        """Stop the sync loop if it runs."""
        sync_task, self._sync_task = self._sync_task, None
        await cancel_and_wait(sync_task)

    def get_periodic_jobs(self) -> AwaitableDict[str, PeriodicJobInfo]:
        """All periodic jobs of the cluster. Plain call: what this process knows now; awaited:
        fresh from the database."""
        return AwaitableDict(self._local(), self._fetch)

    def get_periodic_job_status(self, dedup_key: str) -> AwaitableOptional[dict[str, Any]]:
        """Definition, enabled state, last run and next run. Await it for the database's view."""
        info = self._local().get(dedup_key)
        return AwaitableOptional(info.status() if info else None, lambda: self._fetch_status(dedup_key))

    def enable_periodic_job(self, dedup_key: str) -> AwaitableOptional[bool]:
        """Enable it in the whole cluster; its next window runs. Await for the result."""
        return self.set_enabled(dedup_key, True)

    def disable_periodic_job(self, dedup_key: str) -> AwaitableOptional[bool]:
        """Disable it in the whole cluster; its already-written future windows are cancelled."""
        return self.set_enabled(dedup_key, False)

    async def trigger_periodic_job(self, dedup_key: str) -> str | None:
        """Run the periodic job now, once, through the normal path (advisory lock included)."""
        await self._ready()
        job_id = f"manual_periodic:{dedup_key}:{uuid.uuid4().hex[:8]}"
        result = await self.db_pool.fetchval(queries.PERIODIC_TRIGGER, dedup_key, job_id)
        if result is None:
            log.warning("trigger_periodic_job: no periodic job %r", dedup_key)
            return None
        return str(result)

    async def set_periodic_schedule(
        self,
        dedup_key: str,
        *,
        every: timedelta | None = None,
        cron: str | None = None,
        timezone: str | None = None,
    ) -> bool:
        """Change a periodic job's schedule for the whole cluster, persisted in the database: it
        wins over the schedule in the code, across restarts, until
        :meth:`reset_periodic_schedule`. Windows written ahead under the old schedule are
        cancelled; the new one starts at its next window. False if there is no such job."""
        cron, tz_name = check_schedule(every, cron, timezone)
        every_seconds = every.total_seconds() if every is not None else None
        return await self._write_schedule(dedup_key, every_seconds, cron, tz_name, override=True)

    async def reset_periodic_schedule(self, dedup_key: str) -> bool:
        """Go back to the schedule the code declares. False if there is no such job."""
        return await self._write_schedule(dedup_key, None, None, None, override=False)

    async def _write_schedule(
        self,
        dedup_key: str,
        every_seconds: float | None,
        cron: str | None,
        timezone: str | None,
        *,
        override: bool,
    ) -> bool:
        await self._ready()
        async with self.db_pool.acquire() as conn, conn.transaction():
            await conn.execute(queries.PERIODIC_LOCK, dedup_key)  # see its comment
            row = await conn.fetchrow(
                queries.PERIODIC_SET_SCHEDULE, dedup_key, every_seconds, cron, timezone, override
            )
        if row is None:
            log.warning("periodic job %r not found", dedup_key)
            return False
        in_force = (await self._load())[dedup_key].trigger.describe()
        log.info(
            "periodic job %s: schedule %s %s for the cluster%s",
            dedup_key,
            "set to" if override else "reset to the code's,",
            in_force,
            f" ({row['dropped']} window(s) written ahead cancelled)" if row["dropped"] else "",
        )
        if (registrar := self._registrar()) is not None and registrar.running:
            registrar.wake()
        return True

    def get_periodic_next_runs(
        self, dedup_key: str, count: int = 10, after: datetime | None = None
    ) -> AwaitableList[datetime]:
        """The next ``count`` window starts (UTC) after ``after`` (default now)."""
        if after is not None and after.tzinfo is None:
            raise InvalidJobError("after must be a timezone-aware datetime")
        info = self._local().get(dedup_key)
        local = next_runs(info, count, after) if info else []

        async def fetch() -> list[datetime]:
            fresh = await self._fetch()
            return next_runs(fresh.get(dedup_key), count, after)

        return AwaitableList(local, fetch)

    async def publish(self, conn: asyncpg.Connection | None = None) -> None:
        """Upsert the periodic definitions this process has and has not published yet (the
        upsert writes only when a definition changed), then refresh the local view."""
        definitions = periodic_registry.all()
        new = [d for key, d in definitions.items() if self._published.get(key) != d]
        if conn is None:
            async with self.db_pool.acquire() as pooled:
                await self._upsert_definitions(pooled, new)
                await self._load(pooled)
            return
        await self._upsert_definitions(conn, new)
        await self._load(conn)

    async def _upsert_definitions(
        self, conn: asyncpg.Connection, definitions: Sequence[PeriodicDefinition]
    ) -> None:
        for d in definitions:
            await publish_periodic(conn, [d])
            self._published[d.dedup_key] = d

    def _local(self) -> dict[str, PeriodicJobInfo]:
        known = dict(self._state)
        for key, d in periodic_registry.all().items():
            if key not in known:
                known[key] = info_from_definition(d)
        return known

    async def _fetch(self) -> dict[str, PeriodicJobInfo]:
        await self._ready()
        return await self._load()

    async def _load(self, conn: asyncpg.Connection | None = None) -> dict[str, PeriodicJobInfo]:
        rows = await (conn or self.db_pool).fetch(queries.PERIODIC_LIST)
        local = periodic_registry.all()
        state = {}
        for r in rows:
            d = local.get(r["dedup_key"])
            state[r["dedup_key"]] = info_from_row(r, d.func if d else None)
        self._state = state
        return dict(state)

    async def _fetch_status(self, dedup_key: str) -> dict[str, Any] | None:
        fresh = await self._fetch()
        info = fresh.get(dedup_key)
        if info is None:
            return None
        runs = await self.db_pool.fetchrow(queries.PERIODIC_GET_RUNS, dedup_key)
        last = json.loads(runs["last_run"]) if runs["last_run"] else None
        status = info.status(last)
        pending = runs["next_pending"]
        if info.enabled:
            candidates = [t for t in (pending, info.next_run) if t is not None]
            status["next_run"] = min(candidates) if candidates else None
        else:
            status["next_run"] = None
        return status

    def set_enabled(self, dedup_key: str, enabled: bool) -> AwaitableOptional[bool]:
        """Enable or disable a periodic job here at once; awaited, in the whole cluster."""
        info = self._local().get(dedup_key)
        if info is not None:
            self._state[dedup_key] = replace(info, enabled=enabled)

        # Plain (un-awaited) calls write in the background: apply them in call order, or the
        # README's enable-then-disable could end enabled.
        previous = self._last_toggle

        async def write() -> bool:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            await self._ready()
            async with self.db_pool.acquire() as conn, conn.transaction():
                await conn.execute(queries.PERIODIC_LOCK, dedup_key)  # see its comment
                row = await conn.fetchrow(queries.PERIODIC_SET_ENABLED, dedup_key, enabled)
            changed = bool(row and row["changed"])
            if changed:
                log.info(
                    "periodic job %s %s for the cluster%s",
                    dedup_key,
                    "enabled" if enabled else "disabled",
                    f" ({row['dropped']} pending window(s) cancelled)" if row["dropped"] else "",
                )
                if (registrar := self._registrar()) is not None and registrar.running:
                    registrar.wake()
            else:
                log.warning("periodic job %r not found", dedup_key)
            return changed

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise SchedulerStateError(
                "enable/disable_periodic_job act on the database: call them from inside the "
                "event loop that uses the pool (plainly or with await)"
            ) from None
        task = self._spawn(write())
        self._last_toggle = task
        return AwaitableOptional(info is not None, lambda: task)

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(PERIODIC_SYNC_SECONDS)
            try:
                await self.publish()
            except Exception as exc:
                log.debug("periodic state refresh failed: %r", exc)
