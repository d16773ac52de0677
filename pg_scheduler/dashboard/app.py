"""The dashboard's ASGI application: :func:`create_app`.

Pages are rendered on the server (readable without JavaScript); htmx, served from
``/static``, refreshes their live part every few seconds by asking the same URL with an
``HX-Request`` header, which gets that part alone. Links are built from the request's
``root_path``, so the app works mounted under a prefix (``/admin/jobs``) in a host application.

Every change goes through the library's own API (a never-started :class:`Scheduler` on the
dashboard's pool, a producer), so fencing and notifications are those of code; every read runs
under a statement timeout (``reads.Reader``). Actions are POST only, checked against cross-site
requests (``security``), logged on ``pg_scheduler.dashboard`` with who did what to which jobs,
and answered with a 303 back to the page, the outcome in a short-lived cookie.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

import asyncpg
import jinja2
from starlette.applications import Starlette
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..scheduler import Scheduler
from ..shared.errors import ConfigurationError
from ..shared.job_filter import JobCursor, JobFilter
from ..shared.models import JobState
from .reads import COUNT_CAP, Reader, timed
from .render import ARGS_SHOWN, ERROR_SHOWN, age, chart, first_line, pathpart, pretty_json, shown
from .security import CSRF_COOKIE, BasicAuth, Guard, HostAllowlist, cross_site_refusal, csrf_token, who

log = logging.getLogger("pg_scheduler.dashboard")

HERE = Path(__file__).resolve().parent
FLASH_COOKIE = "pgs_flash"
PAGE_SIZE = 50
DEFAULT_STATE = JobState.FAILED
"""The jobs page opens on failed jobs: what an operator comes to look at."""
MAX_FORM_BYTES = 64 * 1024
DEFAULT_STATEMENT_TIMEOUT = 2.0
BULK_BATCH_SIZE = 500

JOB_ACTIONS = ("cancel", "retry", "run-now", "delete")
PERIODIC_ACTIONS = ("enable", "disable", "trigger")
QUEUE_ACTIONS = ("pause", "resume")
FILTER_KEYS = ("state", "queue", "task", "since", "until", "q")
MAX_JSON_DEPTH = 32
"""Deepest nesting of lists and objects a JSON search may have (deeper is refused, not parsed)."""


class _AnyPath(PathConvertor):
    """Starlette's ``path``, newlines included (``.*`` stops at one): a job id, periodic key
    or queue name may hold any character."""

    regex = "[\\s\\S]*"


register_url_convertor("pgs_any", _AnyPath())


class _Pool:
    """The dashboard's pool: the application's, or one it opens from a DSN on first use (a
    mounted app gets no lifespan events of its own, so it cannot open it at startup)."""

    def __init__(self, pool_or_dsn: asyncpg.Pool | str, statement_timeout: float) -> None:
        self._given = pool_or_dsn if not isinstance(pool_or_dsn, str) else None
        self._dsn = pool_or_dsn if isinstance(pool_or_dsn, str) else None
        self._owned: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self._statement_timeout = statement_timeout

    async def get(self) -> asyncpg.Pool:
        if self._given is not None:
            return self._given
        if self._owned is None:
            async with self._lock:
                if self._owned is None:
                    # Our own sessions: the statement timeout is their default, so the reads made
                    # through the Scheduler's API are bounded too (SET LOCAL still sets it per read).
                    self._owned = await asyncpg.create_pool(
                        self._dsn,
                        min_size=1,
                        max_size=4,
                        timeout=10,
                        server_settings={
                            "application_name": "pg-scheduler dashboard",
                            "statement_timeout": str(int(self._statement_timeout * 1000)),
                        },
                    )
        assert self._owned is not None
        return self._owned

    async def close(self) -> None:
        owned, self._owned = self._owned, None
        if owned is not None:
            await owned.close()


class Dashboard:
    """The state of one dashboard app: its pool, reads, producer and settings."""

    def __init__(
        self,
        pool_or_dsn: asyncpg.Pool | str,
        *,
        read_only: bool,
        statement_timeout: float,
        stale_seconds: float | None,
    ) -> None:
        self.pool = _Pool(pool_or_dsn, statement_timeout)
        self.reader = Reader(self.pool.get, statement_timeout)
        self.read_only = read_only
        self.statement_timeout = statement_timeout
        self.stale_seconds = stale_seconds
        self._scheduler: Scheduler | None = None
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")),
            autoescape=True,  # every value from the database is escaped
            undefined=jinja2.StrictUndefined,
        )
        env.filters["age"] = age
        env.filters["pathpart"] = pathpart
        env.filters["first_line"] = first_line
        self.templates = Jinja2Templates(env=env)

    async def scheduler(self) -> Scheduler:
        """A never-started Scheduler on the dashboard's pool: the API every action goes through."""
        if self._scheduler is None:
            self._scheduler = Scheduler(await self.pool.get())
        return self._scheduler

    @property
    def timeout_message(self) -> str:
        return f"This query took longer than {self.statement_timeout:g} s; narrow the filter."

    # ------------------------------------------------------------------ rendering

    def page(
        self,
        request: Request,
        template: str,
        context: dict[str, Any],
        *,
        live: str | None = None,
        status: int = 200,
    ) -> Response:
        """``template`` with the common context; an htmx refresh gets ``live`` (the page's live
        part) alone."""
        token, new_token = csrf_token(request)
        partial = live is not None and request.headers.get("hx-request") == "true"
        flash_cookie = None if partial else request.cookies.get(FLASH_COOKIE)
        flash = unquote(flash_cookie) if flash_cookie else None
        full = {
            "root": root(request),
            "read_only": self.read_only,
            "csrf": token,
            "flash": flash,
            "live_url": _own_url(request),
            "cap": COUNT_CAP,
            "title": context.get("title", "pg-scheduler"),
            "page": context.get("page", ""),
            **context,
        }
        name = live if partial and live is not None else template
        response = self.templates.TemplateResponse(request, name, full, status_code=status)
        response.headers["vary"] = "HX-Request"
        if new_token:
            response.set_cookie(
                CSRF_COOKIE,
                token,
                httponly=True,
                # Lax, not Strict: a Strict cookie is not sent when arriving from a link on another
                # site, so that page set a new token and the forms of every other open tab failed.
                # Cross-site POSTs are refused by Origin and Sec-Fetch-Site, and Lax is not sent
                # with them anyway.
                samesite="lax",
                secure=request.url.scheme == "https",
                path=cookie_path(request),
            )
        if flash_cookie is not None:
            response.delete_cookie(FLASH_COOKIE, path=cookie_path(request))
        return response

    def back(self, request: Request, path: str, message: str) -> Response:
        """303 to ``path`` (under the app's root), ``message`` shown there once."""
        response = RedirectResponse(root(request) + path, status_code=303)
        response.set_cookie(
            FLASH_COOKIE,
            quote(message[:300], safe=" .,:;()'"),  # a header is latin-1: any text, percent-encoded
            max_age=60,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=cookie_path(request),
        )
        return response

    def bad_request(self, request: Request, message: str) -> Response:
        """The 400 page of a filter or cursor that cannot be used, saying what is wrong."""
        return self.message(request, "Jobs", message, status=400, page="jobs")

    def message(
        self, request: Request, title: str, message: str, *, status: int, page: str = "", poll: bool = False
    ) -> Response:
        """A page saying ``message`` with ``status``; to an htmx refresh, the message inside the
        live part, with 200: htmx 2 swaps no 4xx or 5xx answer, so the page would stay as it was,
        silently, and stop being refreshed. ``poll``: the full page keeps asking too (the trouble
        may pass)."""
        context: dict[str, Any] = {"title": title, "message": message, "page": page}
        if not poll:  # a bad filter or a deleted job stays so: nothing to ask again
            context["live_url"] = None
        if request.headers.get("hx-request") == "true":
            return self.page(request, "message.html", context, live="timeout.html")
        return self.page(request, "message.html", context, status=status)

    # ------------------------------------------------------------------ pages

    async def overview(self, request: Request) -> Response:
        kwargs = {} if self.stale_seconds is None else {"stale_seconds": self.stale_seconds}
        o = await self.reader.overview(**kwargs)
        context = {"title": "Overview", "page": "overview", "o": o, "chart": chart(o.counts.minutes)}
        return self.page(request, "overview.html", context, live="_overview_live.html")

    async def jobs(self, request: Request) -> Response:
        params = request.query_params
        try:
            job_filter, form = parse_filter(params)
            after = parse_cursor(params.get("after"))
        except ConfigurationError as exc:
            return self.bad_request(request, str(exc))
        scheduler = await self.scheduler()
        try:
            # The server ends the query at the timeout (the pool may be the application's, whose
            # sessions have their own setting); the client's deadline is the backstop.
            async with asyncio.timeout(self.statement_timeout + 0.5):
                page = await timed(
                    scheduler.list_jobs(
                        job_filter, after=after, limit=PAGE_SIZE, statement_timeout=self.statement_timeout
                    )
                )
        except ConfigurationError as exc:  # what the API refuses that parse_filter let through
            return self.bad_request(request, str(exc))
        next_url = None
        if page.next is not None:
            next_query = {k: v for k, v in form.items() if v}
            next_query["after"] = format_cursor(page.next)
            next_url = f"{root(request)}/jobs?{urlencode(next_query)}"
        tabs = []
        for state in JobState:
            tab_query = {k: v for k, v in form.items() if v and k != "state"}
            tab_url = f"{root(request)}/jobs?{urlencode({'state': state.value, **tab_query})}"
            tabs.append((state.value, tab_url))
        context: dict[str, Any] = {
            "title": f"Jobs: {form['state']}",
            "page": "jobs",
            "jobs": page.jobs,
            "form": form,
            "tabs": tabs,
            "next_url": next_url,
            "first_url": f"{root(request)}/jobs?{urlencode({k: v for k, v in form.items() if v})}",
            "paged": after is not None,
            "filter_query": urlencode({k: v for k, v in form.items() if v}),
            "bulk": _bulk_actions(form["state"]),
            "summaries": {j.job_id: _summary(j.args, j.kwargs) for j in page.jobs},
        }
        return self.page(request, "jobs.html", context, live="_jobs_live.html")

    async def job(self, request: Request) -> Response:
        job_id: str = request.path_params["job_id"]
        if request.query_params.get("format") == "json":
            # A query parameter, not a suffix: a job's id may end in anything (``x.json``).
            return await self.job_json(request, job_id)
        row = None if "\x00" in job_id else await self.reader.job_row(job_id)
        if row is None:
            missing = f"No job {job_id!r}: it never existed or was deleted."
            return self.message(request, "No such job", missing, status=404, page="jobs")
        data = row.get("task_data") or {}
        arguments = {"args": data.get("args", []), "kwargs": data.get("kwargs", {})}
        args = shown(pretty_json(arguments), ARGS_SHOWN)
        error = shown(row["error_message"], ERROR_SHOWN) if row.get("error_message") else None
        result = shown(pretty_json(row["result"]), ARGS_SHOWN) if row.get("result") is not None else None
        context: dict[str, Any] = {
            "title": f"Job {job_id}",
            "page": "jobs",
            "live_url": f"{root(request)}/jobs/{pathpart(job_id)}",  # the id encoded as in links
            "job": row,
            "args": args,
            "error": error,
            "result": result,
        }
        return self.page(request, "job.html", context, live="_job_live.html")

    async def job_json(self, request: Request, job_id: str) -> Response:
        row = None if "\x00" in job_id else await self.reader.job_row(job_id)
        if row is None:
            return Response(json.dumps({"error": "no such job"}), 404, media_type="application/json")
        row.pop("awaited", None)
        body = json.dumps(row, default=_json_default, ensure_ascii=False, indent=2)
        return Response(body, media_type="application/json")

    async def periodic(self, request: Request) -> Response:
        now = datetime.now(UTC)
        rows = await self.reader.periodic(now)
        shown_rows = [
            {
                "info": r.info,
                "next_runs": r.next_runs,
                "last_run": r.last_run,
                "schedule": r.info.trigger.describe(),
                "last_run_at": _utc(r.last_run.get("started_at") or r.last_run.get("finished_at"))
                if r.last_run
                else None,
            }
            for r in rows
        ]
        context = {"title": "Periodic jobs", "page": "periodic", "rows": shown_rows}
        return self.page(request, "periodic.html", context, live="_periodic_live.html")

    async def queues(self, request: Request) -> Response:
        queues, counted = await self.reader.queues()
        context = {"title": "Queues", "page": "queues", "queues": queues, "counted": counted}
        return self.page(request, "queues.html", context, live="_queues_live.html")

    # ------------------------------------------------------------------ actions

    async def _checked_form(self, request: Request) -> dict[str, str] | Response:
        """The POST's form, or the 403 that refuses it (read-only, or cross-site)."""
        if self.read_only:
            return PlainTextResponse("this dashboard is read-only\n", status_code=403)
        body = await _capped_body(request)
        if isinstance(body, Response):
            return body
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        refusal = cross_site_refusal(request, form)
        if refusal is not None:
            log.warning("%s: POST %r refused: %s", who(request), request.url.path, refusal)
            return PlainTextResponse(refusal + "\n", status_code=403)
        return form

    async def _checked_action(
        self, request: Request, actions: Collection[str]
    ) -> tuple[dict[str, str], str] | Response:
        """The POST's form and its ``action`` path parameter, or the answer that refuses it:
        403 as :meth:`_checked_form` says, then 404 for an action not among ``actions``."""
        form = await self._checked_form(request)
        if isinstance(form, Response):
            return form
        action: str = request.path_params["action"]
        if action not in actions:
            return PlainTextResponse(f"unknown action {action!r}\n", status_code=404)
        return form, action

    async def job_action(self, request: Request) -> Response:
        checked = await self._checked_action(request, JOB_ACTIONS)
        if isinstance(checked, Response):
            return checked
        _, action = checked
        job_id: str = request.path_params["job_id"]
        scheduler = await self.scheduler()
        reason = _cancel_reason(request)
        calls: dict[str, Callable[[str], Awaitable[bool]]] = {
            "cancel": lambda i: scheduler.cancel_job(i, reason=reason),
            "retry": scheduler.retry_job,
            "run-now": scheduler.run_job_now,
            "delete": scheduler.delete_job,
        }
        done = await calls[action](job_id)
        log.info("%s: %s job %r: %s", who(request), action, job_id, "done" if done else "not applicable")
        if done:
            message = f"{_past(action)} job {job_id}."
        else:
            message = f"Job {job_id} was not {_past(action).lower()}: its state does not allow it."
        target = "/jobs" if action == "delete" and done else f"/jobs/{pathpart(job_id)}"
        return self.back(request, target, message)

    async def bulk_action(self, request: Request) -> Response:
        checked = await self._checked_action(request, JOB_ACTIONS)
        if isinstance(checked, Response):
            return checked
        form, action = checked
        if not form.get("state", "").strip():
            # The list's default tab is not assumed: a bulk action names the state it acts on.
            return PlainTextResponse("state: a bulk action needs the state it acts on\n", status_code=400)
        try:
            job_filter, shown_form = parse_filter(form)
        except ConfigurationError as exc:
            return PlainTextResponse(f"{exc}\n", status_code=400)
        scheduler = await self.scheduler()
        reason = _cancel_reason(request)
        described = _describe(job_filter)
        log.info("%s: %s every job matching %r: starting", who(request), action, described)
        count: int | None = None
        stopped_by: str | None = None
        try:
            if action == "cancel":
                count = await scheduler.cancel_jobs(job_filter, reason=reason, batch_size=BULK_BATCH_SIZE)
            elif action == "retry":
                count = await scheduler.retry_jobs(job_filter, batch_size=BULK_BATCH_SIZE)
            elif action == "run-now":
                count = await scheduler.run_jobs_now(job_filter, batch_size=BULK_BATCH_SIZE)
            else:
                count = await scheduler.delete_jobs(job_filter, batch_size=BULK_BATCH_SIZE)
        except ConfigurationError as exc:  # refused by the API before any change
            stopped_by = "refused before any change"
            return PlainTextResponse(f"{exc}\n", status_code=400)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            # Batches commit one by one: those before the failure stay done.
            stopped_by = type(exc).__name__
        finally:
            if count is not None:
                outcome = f"completed: {count} job(s)"
            elif stopped_by == "refused before any change":
                outcome = stopped_by
            else:
                # Failed part-way, or cancelled (the client went away, the server stops).
                why = stopped_by or "cancelled or failed"
                outcome = f"stopped ({why}): an unknown number of jobs were changed"
            log.info("%s: %s every job matching %r: %s", who(request), action, described, outcome)
        query = urlencode({k: v for k, v in shown_form.items() if v})
        if count is None:
            message = (
                f"The bulk {action} stopped part-way ({stopped_by}): an unknown number of jobs were changed "
                "before it stopped."
            )
            return self.back(request, f"/jobs?{query}", message)
        return self.back(request, f"/jobs?{query}", f"{_past(action)} {count:,} job(s) matching the filter.")

    async def periodic_action(self, request: Request) -> Response:
        checked = await self._checked_action(request, PERIODIC_ACTIONS)
        if isinstance(checked, Response):
            return checked
        _, action = checked
        key: str = request.path_params["key"]
        scheduler = await self.scheduler()
        if action == "trigger":
            job_id = await scheduler.trigger_periodic_job(key)
            outcome = f"job {job_id!r}" if job_id else "no such job"
            log.info("%s: trigger periodic job %r: %s", who(request), key, outcome)
            message = f"Triggered {key}: job {job_id}." if job_id else f"No periodic job {key}."
        else:
            enabled = action == "enable"
            toggle = scheduler.enable_periodic_job if enabled else scheduler.disable_periodic_job
            found = await toggle(key)
            outcome = "done" if found else "no such job"
            log.info("%s: %s periodic job %r: %s", who(request), action, key, outcome)
            message = f"{_past(action)} {key}." if found else f"No periodic job {key}."
        return self.back(request, "/periodic", message)

    async def queue_action(self, request: Request) -> Response:
        checked = await self._checked_action(request, QUEUE_ACTIONS)
        if isinstance(checked, Response):
            return checked
        _, action = checked
        name: str = request.path_params["name"]
        scheduler = await self.scheduler()
        try:
            found = await (scheduler.pause_queue(name) if action == "pause" else scheduler.resume_queue(name))
        except ConfigurationError as exc:  # not a queue name at all
            log.info("%s: %s queue %r: refused: not a queue name", who(request), action, name)
            return PlainTextResponse(f"{exc}\n", status_code=400)
        log.info("%s: %s queue %r: %s", who(request), action, name, "done" if found else "no such queue")
        message = f"{_past(action)} queue {name}." if found else f"Queue {name} has no row to {action}."
        return self.back(request, "/queues", message)

    # ------------------------------------------------------------------ errors

    async def on_timeout(self, request: Request, exc: Exception) -> Response:
        what = type(exc).__name__
        log.warning("%s %r: a read ran out of time (%s)", request.method, request.url.path, what)
        message = self.timeout_message
        searched = request.query_params.get("q", "").lstrip()[:1] in ("{", "[")
        if request.url.path.endswith("/jobs") and searched:
            # An argument search tests every row of the state in time order: a time range
            # bounds it, or the index docs/dashboard.md describes makes it an index lookup.
            message += (
                " An argument search reads every job of the state unless Since/Until bound it, or"
                " the optional index on task_data is there (docs/dashboard.md, Searching arguments)."
            )
        return self._trouble(request, message)

    async def on_database_error(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, asyncpg.UndefinedTableError):
            message = "This database has no pg_scheduler schema yet: run `pg-scheduler migrate`."
        else:
            message = "The database could not answer; try again in a moment."
        # Never the DSN or the server's own message, which may name hosts and users.
        log.warning("%s %r: %s", request.method, request.url.path, type(exc).__name__)
        return self._trouble(request, message)

    def _trouble(self, request: Request, message: str) -> Response:
        return self.message(request, "Unavailable", message, status=503, poll=True)


async def _capped_body(request: Request) -> bytes | Response:
    """The request's body, read as it streams in and given up past :data:`MAX_FORM_BYTES` (413):
    never the whole of a huge body in memory. A ``Content-Length`` over the cap is refused
    before anything is read."""
    too_large = PlainTextResponse("form too large\n", status_code=413)
    length = request.headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            return PlainTextResponse("bad Content-Length\n", status_code=400)
        if int(length) > MAX_FORM_BYTES:
            return too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return too_large
    return bytes(body)


def root(request: Request) -> str:
    """The prefix every link of the app starts with (where it is mounted; empty at the top)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def cookie_path(request: Request) -> str:
    return root(request) or "/"


def _own_url(request: Request) -> str:
    """The URL of this request, for its page's refresh: the path encoded again (it arrives
    decoded: the page of job ``e%41`` would otherwise refresh job ``eA``)."""
    query = request.url.query
    return quote(request.url.path, safe="/") + (f"?{query}" if query else "")


def parse_filter(params: Any) -> tuple[JobFilter, dict[str, str]]:
    """The jobs filter of a query string or form (``state``, ``queue``, ``task``, ``since``,
    ``until``, ``q``), and the values as given, for links and forms. ``q`` is a job id, or a
    JSON list or object that the job's arguments must contain."""
    form = {key: str(params.get(key, "") or "").strip() for key in FILTER_KEYS}
    for name, value in form.items():
        if "\x00" in value:
            raise ConfigurationError(f"{name}: contains a NUL character, which no job can hold")
    form["state"] = form["state"] or DEFAULT_STATE.value
    job_filter: JobFilter = {}
    try:
        job_filter["state"] = JobState(form["state"]).value
    except ValueError:
        raise ConfigurationError(f"unknown state {form['state']!r}") from None
    if form["queue"]:
        job_filter["queue"] = form["queue"]
    if form["task"]:
        job_filter["task"] = form["task"]
    for key in ("since", "until"):
        if form[key]:
            job_filter[key] = _parse_time(key, form[key])
    if "since" in job_filter and "until" in job_filter and job_filter["since"] > job_filter["until"]:
        raise ConfigurationError(f"since ({form['since']}) is later than until ({form['until']})")
    q = form["q"]
    if q:
        if q[0] in "[{":
            job_filter["args"] = _parse_json_search(q)
        else:
            job_filter["job_id"] = q
    return job_filter, form


def _parse_json_search(q: str) -> Any:
    """A JSON search: finite numbers only, nested at most :data:`MAX_JSON_DEPTH` deep."""
    if _json_depth(q) > MAX_JSON_DEPTH:
        raise ConfigurationError(f"q: JSON nested deeper than {MAX_JSON_DEPTH} levels")

    def no_constant(name: str) -> Any:
        raise ConfigurationError(f"q: {name} is not a JSON number (give a finite number)")

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ConfigurationError(f"q: {text} is too large a number")
        return value

    try:
        return json.loads(q, parse_constant=no_constant, parse_float=finite)
    except ConfigurationError:
        raise
    except (ValueError, RecursionError):
        raise ConfigurationError("q: not JSON (give a job id, or a JSON list or object)") from None


def _json_depth(text: str) -> int:
    """How deep lists and objects nest in ``text`` (brackets inside strings not counted)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _parse_time(key: str, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(f"{key}: {text!r} is not a date and time (2026-01-31T14:00)") from None
    return _in_utc(key, text, value if value.tzinfo is not None else value.replace(tzinfo=UTC))


def _in_utc(key: str, text: str, value: datetime) -> datetime:
    """``value`` in UTC, or an error when it falls outside the years 1 to 9999 there."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ConfigurationError(f"{key}: {text!r} is out of range (years 1 to 9999, in UTC)") from None


def format_cursor(cursor: JobCursor) -> str:
    """A page's cursor as one query parameter: its sort time, a space, its job id."""
    return f"{cursor.key.isoformat()} {cursor.job_id}"


def parse_cursor(text: str | None) -> JobCursor | None:
    if not text:
        return None
    key, sep, job_id = text.partition(" ")
    try:
        when = datetime.fromisoformat(key)
    except ValueError:
        when = None
    if not sep or when is None or when.tzinfo is None or "\x00" in job_id:
        raise ConfigurationError("after: not a cursor of this dashboard (follow the page's own links)")
    return JobCursor(_in_utc("after", key, when), job_id)


def _bulk_actions(state: str) -> list[tuple[str, str]]:
    if state in ("pending",):
        return [("run-now", "Run now"), ("cancel", "Cancel")]
    if state == "running":
        return [("cancel", "Cancel")]
    if state == "completed":
        return [("delete", "Delete")]
    return [("retry", "Retry"), ("delete", "Delete")]


def _summary(args: list[Any], kwargs: dict[str, Any]) -> str:
    text = json.dumps({"args": args, "kwargs": kwargs}, ensure_ascii=False, default=str)
    return text if len(text) <= 120 else text[:117] + "…"


def _past(action: str) -> str:
    return {
        "cancel": "Cancelled",
        "retry": "Retried",
        "run-now": "Made due now",
        "delete": "Deleted",
        "enable": "Enabled",
        "disable": "Disabled",
        "pause": "Paused",
        "resume": "Resumed",
    }[action]


def _describe(job_filter: JobFilter) -> str:
    return json.dumps(dict(job_filter), default=str, sort_keys=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _cancel_reason(request: Request) -> str:
    """The reason a job cancelled from the dashboard is given: who cancelled it."""
    return f"cancelled from the dashboard by {who(request)}"


def _utc(text: str | None) -> datetime | None:
    """An ISO 8601 time of the periodic API, in UTC (None when absent or unreadable)."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


async def close_app(app: Starlette) -> None:
    """Close the pool a dashboard app opened from its DSN, if it did (a pool given to
    :func:`create_app` is left open). Call it from the lifespan of an application the dashboard
    is mounted in, after serving: a mounted app gets no lifespan events of its own::

        dashboard = create_app(os.environ["DATABASE_URL"])

        @contextlib.asynccontextmanager
        async def lifespan(app):
            yield
            await close_app(dashboard)
    """
    await app.state.dashboard_close()


def create_app(
    pool_or_dsn: asyncpg.Pool | str,
    *,
    read_only: bool = False,
    auth: BasicAuth | tuple[str, str] | None = None,
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
    stale_seconds: float | None = None,
    allowed_hosts: Sequence[str] | None = None,
) -> Starlette:
    """The dashboard as an ASGI app, to serve or to mount in a Starlette or FastAPI app::

        app.mount("/admin/jobs", create_app(pool, read_only=True))

    :param pool_or_dsn: the application's asyncpg pool (used as it is: its sessions' settings are
        left alone, and it is never closed), or a DSN, from which the app opens a small pool of
        its own on first use. Served on its own, the app closes that pool at shutdown; mounted,
        it gets no lifespan events, so the host application must close it from its own lifespan
        with ``await close_app(dashboard)`` (or ``await dashboard.state.dashboard_close()``).
        Passing your own pool avoids that.
    :param read_only: hide every action and answer 403 to every POST.
    :param auth: HTTP basic credentials every request must carry (``(user, password)``); None
        leaves authentication to the mounting application (or to a loopback-only bind).
    :param statement_timeout: seconds any of the dashboard's queries may run; a page whose read
        runs out says so (503) instead of failing.
    :param stale_seconds: a process with no heartbeat for this long is stale (default: the
        ``status`` command's).
    :param allowed_hosts: the host names a request's ``Host`` header may name (ports ignored;
        ``*.example.com`` for subdomains), any other refused with 400: e.g.
        ``allowed_hosts=["jobs.example.com"]``. None (the default) accepts any, leaving the check
        to the mounting application or its proxy. Served without authentication on a loopback
        address, a dashboard needs it: a page of another site re-pointing its name to 127.0.0.1
        (DNS rebinding) could otherwise read it and post to it; ``pg-scheduler dashboard`` then
        allows the loopback names only.
    """
    if statement_timeout <= 0:
        raise ConfigurationError(f"statement_timeout must be > 0 seconds, got {statement_timeout!r}")
    credentials = BasicAuth(*auth) if isinstance(auth, tuple) else auth
    dash = Dashboard(
        pool_or_dsn, read_only=read_only, statement_timeout=statement_timeout, stale_seconds=stale_seconds
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await dash.pool.close()

    routes = [
        Route("/", dash.overview, methods=["GET"], name="overview"),
        Route("/jobs", dash.jobs, methods=["GET"], name="jobs"),
        # Not under /jobs/: no job id can make a job's action URL reach the bulk actions.
        Route("/bulk/jobs/{action}", dash.bulk_action, methods=["POST"], name="bulk_action"),
        Route("/jobs/{job_id:pgs_any}/{action}", dash.job_action, methods=["POST"], name="job_action"),
        Route("/jobs/{job_id:pgs_any}", dash.job, methods=["GET"], name="job"),
        Route("/periodic", dash.periodic, methods=["GET"], name="periodic"),
        Route("/periodic/{key:pgs_any}/{action}", dash.periodic_action, methods=["POST"], name="periodic_do"),
        Route("/queues", dash.queues, methods=["GET"], name="queues"),
        Route("/queues/{name:pgs_any}/{action}", dash.queue_action, methods=["POST"], name="queue_action"),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            asyncpg.QueryCanceledError: dash.on_timeout,
            TimeoutError: dash.on_timeout,
            asyncpg.PostgresError: dash.on_database_error,
            asyncpg.InterfaceError: dash.on_database_error,
            OSError: dash.on_database_error,
        },
    )
    app.state.dashboard = dash
    app.state.dashboard_close = dash.pool.close
    hosts = None if allowed_hosts is None else HostAllowlist(allowed_hosts)
    app.add_middleware(Guard, auth=credentials, allowed_hosts=hosts)
    return app


__all__ = ["create_app", "close_app", "BasicAuth", "Dashboard", "parse_filter"]
