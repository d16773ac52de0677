"""The web dashboard over HTTP (httpx against the ASGI app), on a real PostgreSQL.

What is proven here:

- every page renders with data: the overview (counts, chart, queues, leader, processes), the
  jobs list of each state with its filters and keyset pages, a job's page and its raw JSON, the
  periodic and queues pages; an htmx refresh gets the live part alone;
- each action (cancel, retry, run now, delete; the same in bulk; periodic enable, disable,
  trigger; queue pause, resume) changes the rows as the Scheduler's API does, answers 303
  back to the page and says what it did, and is logged with who did it;
- read-only hides every action and refuses every POST with 403;
- a POST without the CSRF token, with a wrong one, marked cross-site by ``Sec-Fetch-Site``, or
  from a foreign ``Origin`` is refused with 403 and changes nothing;
- basic auth: 401 with ``WWW-Authenticate`` without or with wrong credentials, 200 with them,
  compared with ``hmac.compare_digest``;
- ``<script>`` and quotes in arguments and errors come back escaped; 100 KB of text is cut,
  with the count of what is left out and a link to the raw JSON;
- a read that outlasts the statement timeout shows the message, not a 500;
- mounted under ``/admin/jobs`` in a host Starlette app, every link, form and asset carries the
  prefix;
- every response carries the CSP, Server-Timing and no DSN or password.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.routing import Mount

from pg_scheduler import Scheduler
from pg_scheduler.cli.dashboard import serving_hosts
from pg_scheduler.dashboard import close_app, create_app
from pg_scheduler.dashboard import security as dashboard_security
from pg_scheduler.shared.queues import declare_queue
from tests.rows import Sql, ago, insert_job, insert_periodic, job_row

BASE = "http://testserver"
XSS = "<script>alert(1)</script>"


@pytest.fixture
async def producer(pool: asyncpg.Pool) -> Scheduler:
    scheduler = Scheduler(pool)
    await scheduler.initialize_db()
    return scheduler


def client_for(app: Any, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, **kwargs)


@pytest.fixture
async def client(pool: asyncpg.Pool, producer: Scheduler) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(pool)) as c:
        yield c


async def csrf(client: httpx.AsyncClient, path: str = "/") -> str:
    """The CSRF token of the client's session (a GET sets the cookie; forms echo it)."""
    response = await client.get(path)
    assert response.status_code == 200, response.text
    token = client.cookies.get("pgs_csrf")
    assert token
    return token


async def post(client: httpx.AsyncClient, path: str, data: dict[str, str] | None = None) -> httpx.Response:
    """A same-origin POST as a browser sends it: the session's token, ``Origin`` and
    ``Sec-Fetch-Site`` of this site."""
    token = await csrf(client)
    return await client.post(
        path,
        data={"csrf": token, **(data or {})},
        headers={"origin": BASE, "sec-fetch-site": "same-origin"},
    )


# --------------------------------------------------------------------------- pages


async def test_the_overview_shows_counts_the_last_hour_queues_leader_and_processes(
    pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    async with client_for(create_app(pool)) as empty:  # an app of its own: counts are cached
        assert "none due" in (await empty.get("/")).text
    for i in range(3):
        await insert_job(pool, f"done-{i}", status="completed", finished_at=ago(timedelta(minutes=i)))
    await insert_job(pool, "broken", status="failed", finished_at=ago(timedelta(minutes=5)))
    await insert_job(pool, "late", execution_time=ago(timedelta(minutes=2)), queue="mail")
    await insert_job(pool, "later", execution_time=Sql("now() + interval '1 hour'"), queue="mail")
    await pool.execute(
        "INSERT INTO scheduler_workers (worker_id, kind, host, pid, tasks, last_heartbeat, started_at)"
        " VALUES ('pod-a:1', 'supervisor', 'pod-a', 1, '{}', now(), now()),"
        "        ('pod-a:2', 'worker', 'pod-a', 2, '{t}', now(), now())"
    )
    response = await client.get("/")
    assert response.status_code == 200
    page = response.text
    assert re.search(r"completed</span>\s*<span class=\"value\">3<", page)
    assert re.search(r"failed</span>\s*<span class=\"value\">1<", page)
    assert re.search(r"pending</span>\s*<span class=\"value\">2<", page)
    assert re.search(r"due, waiting</span>\s*<span class=\"value\">1<", page)
    assert re.search(r"oldest 2m 0\ds late", page)
    assert "3 completed, 1 failed." in page
    assert page.count('<rect class="completed"') == 60
    assert "mail" in page and "pod-a:2" in page and "No leader" in page
    assert 'hx-get="/"' in page and 'hx-trigger="every 2s"' in page

    live = await client.get("/", headers={"HX-Request": "true"})
    assert live.text.lstrip().startswith('<div id="live"') and "<html" not in live.text


async def test_the_jobs_list_filters_by_state_queue_task_time_and_arguments_and_pages_by_cursor(
    pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    for i in range(60):
        await insert_job(
            pool,
            f"f-{i:02d}",
            status="failed",
            finished_at=Sql(f"now() - interval '{i} minutes'"),
            queue="mail" if i % 2 else "default",
            task_data={"args": [i], "kwargs": {"user": i}},
            error_message=f"boom {i}",
        )
    first = await client.get("/jobs")
    assert first.status_code == 200
    ids = re.findall(r'href="/jobs/(f-\d\d)"', first.text)
    assert ids == [f"f-{i:02d}" for i in range(50)]  # failed by default, newest first
    next_url = re.search(r'href="([^"]*after=[^"]*)" rel="next"', first.text)
    assert next_url is not None
    second = await client.get(next_url.group(1).replace("&amp;", "&"))
    assert re.findall(r'href="/jobs/(f-\d\d)"', second.text) == [f"f-{i:02d}" for i in range(50, 60)]
    assert 'rel="next"' not in second.text

    mail = await client.get("/jobs", params={"state": "failed", "queue": "mail"})
    assert set(re.findall(r'href="/jobs/(f-\d\d)"', mail.text)) == {f"f-{i:02d}" for i in range(1, 60, 2)}
    by_args = await client.get("/jobs", params={"state": "failed", "q": '{"user": 7}'})
    assert re.findall(r'href="/jobs/(f-\d\d)"', by_args.text) == ["f-07"]
    by_list = await client.get("/jobs", params={"state": "failed", "q": "[8]"})
    assert re.findall(r'href="/jobs/(f-\d\d)"', by_list.text) == ["f-08"]
    by_id = await client.get("/jobs", params={"state": "failed", "q": "f-09"})
    assert re.findall(r'href="/jobs/(f-\d\d)"', by_id.text) == ["f-09"]
    since = (datetime.now(UTC) - timedelta(minutes=2, seconds=30)).isoformat()
    recent = await client.get("/jobs", params={"state": "failed", "since": since})
    assert re.findall(r'href="/jobs/(f-\d\d)"', recent.text) == ["f-00", "f-01", "f-02"]
    by_task = await client.get("/jobs", params={"state": "failed", "task": "nobodys_task", "q": "f-03"})
    assert re.findall(r'href="/jobs/(f-\d\d)"', by_task.text) == ["f-03"]
    pending = await client.get("/jobs", params={"state": "pending"})
    assert "No pending jobs match." in pending.text

    bad = await client.get("/jobs", params={"state": "nope"})
    assert bad.status_code == 400 and "unknown state" in bad.text
    bad_json = await client.get("/jobs", params={"q": "{not json"})
    assert bad_json.status_code == 400


BAD_FILTERS = [
    ({"since": "2026-02-01T00:00", "until": "2026-01-01T00:00"}, "is later than until"),
    ({"q": "[NaN]"}, "NaN is not a JSON number"),
    ({"q": '{"a": Infinity}'}, "Infinity is not a JSON number"),
    ({"q": "[1e999]"}, "too large a number"),
    ({"q": "[" * 5000 + "]" * 5000}, "nested deeper than 32"),
    ({"q": "[" * 15_000}, "nested deeper than 32"),
    ({"queue": "mail\x00"}, "NUL character"),
    ({"q": "job\x00id"}, "NUL character"),
    ({"since": "0001-01-01T00:00+05:00"}, "out of range"),
    ({"until": "9999-12-31T23:00-05:00"}, "out of range"),
]


async def test_a_filter_that_cannot_be_used_is_a_400_that_says_why_on_the_list_and_in_bulk(
    pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    await insert_job(pool, "f-1", status="failed")
    for params, reason in BAD_FILTERS:
        response = await client.get("/jobs", params={"state": "failed", **params})
        assert response.status_code == 400, (params, response.text[:300])
        assert reason in response.text, params
        bulk = await post(client, "/bulk/jobs/delete", {"state": "failed", **params})
        assert bulk.status_code == 400 and reason in bulk.text, params
    for after in ("0001-01-01T00:00:00+05:00 f-1", "2026-01-01T00:00:00+00:00 f\x001"):
        response = await client.get("/jobs", params={"state": "failed", "after": after})
        assert response.status_code == 400 and "after" in response.text, after
    missing = await client.get("/jobs/f%001")
    assert missing.status_code == 404 and "No job" in missing.text
    live = await client.get("/jobs", params={"q": "[NaN]"}, headers={"HX-Request": "true"})
    assert live.status_code == 200 and "<html" not in live.text and "NaN is not" in live.text
    # A filter that cannot be used, or a job deleted meanwhile, stays so: the message replaces
    # the live part, which then asks no more.
    assert "hx-trigger" not in live.text
    gone = await client.get("/jobs/deleted-meanwhile", headers={"HX-Request": "true"})
    assert gone.status_code == 200 and "No job" in gone.text and "hx-trigger" not in gone.text
    assert (await job_row(pool, "f-1"))["status"] == "failed"


async def test_a_job_page_shows_its_fields_error_periodic_window_and_lease(
    pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    await insert_job(
        pool,
        "win/1",
        status="running",
        worker_id="pod-b:7:abc",
        dedup_key="nightly",
        window_start=Sql("date_trunc('hour', now())"),
        task_data={"args": [1, "two"], "kwargs": {"x": True}},
        error_message="Traceback (most recent call last):\n  ValueError: earlier attempt",
    )
    response = await client.get("/jobs/win%2F1")
    assert response.status_code == 200
    page = response.text
    for text in (
        "running",
        "pod-b:7:abc",
        "Lease until",
        "Last heartbeat",
        "nightly",
        "window",
        "ValueError",
    ):
        assert text in page, text
    assert "&#34;two&#34;" in page or "&quot;two&quot;" in page
    assert 'action="/jobs/win%2F1/cancel"' in page and "/retry" not in page

    raw = await client.get("/jobs/win%2F1?format=json")
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.json()["task_data"] == {"args": [1, "two"], "kwargs": {"x": True}}
    missing = await client.get("/jobs/nope")
    assert missing.status_code == 404 and "No job" in missing.text


async def test_a_job_of_any_id_opens_refreshes_and_acts_on_itself(
    pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    ids = ["bulk", "x.json", "e%41", "eA", "a/b", "a", XSS, "100%", "two\nlines", "end\n"]
    for job_id in ids:
        await insert_job(pool, job_id, status="failed", task_data={"args": [job_id], "kwargs": {}})
    for job_id in ids:
        path = f"/jobs/{quote(job_id, safe='')}"
        page = await client.get(path)
        assert page.status_code == 200, job_id
        assert f'hx-get="{path}"' in page.text.replace("&amp;", "&"), job_id
        live = await client.get(path, headers={"HX-Request": "true"})
        assert f'hx-get="{path}"' in live.text.replace("&amp;", "&"), job_id
        assert f'action="{path}/retry"' in live.text.replace("&amp;", "&"), job_id
        assert f'href="{path}?format=json"' in page.text.replace("&amp;", "&"), job_id
        raw = await client.get(f"{path}?format=json")
        assert raw.headers["content-type"].startswith("application/json"), job_id
        assert raw.json()["job_id"] == job_id
    for job_id in ids:
        assert (await post(client, f"/jobs/{quote(job_id, safe='')}/retry")).status_code == 303
        statuses = dict(await pool.fetch("SELECT job_id, status FROM scheduled_jobs"))
        done = ids[: ids.index(job_id) + 1]
        assert statuses == {i: "pending" if i in done else "failed" for i in ids}, job_id


async def test_the_periodic_and_queues_pages_list_schedules_and_queues(
    pool: asyncpg.Pool, producer: Scheduler, client: httpx.AsyncClient
) -> None:
    await insert_periodic(pool, "hourly-report")
    await insert_job(
        pool, "report-run", status="failed", dedup_key="hourly-report", window_start=ago(timedelta(hours=1))
    )
    declare_queue("partner", concurrency=3)
    async with pool.acquire() as conn:
        from pg_scheduler.shared.queue_limits import publish_declared

        await publish_declared(conn)
    await insert_job(pool, "queued", queue="partner")

    periodic = await client.get("/periodic")
    assert periodic.status_code == 200
    assert "hourly-report" in periodic.text and "every 1:00:00" in periodic.text
    assert periodic.text.count("<time") >= 5  # next runs
    assert 'href="/jobs/report-run">failed</a>' in periodic.text

    queues = await client.get("/queues")
    assert queues.status_code == 200
    assert "partner" in queues.text and "0 / 3" in queues.text
    assert 'action="/queues/partner/pause"' in queues.text


async def test_every_live_part_carries_its_own_refresh_so_it_refreshes_again(
    pool: asyncpg.Pool, producer: Scheduler, client: httpx.AsyncClient
) -> None:
    """An outerHTML swap replaces the wrapper with what the partial answers: without the
    wrapper in it, the page refreshed once and then held still."""
    await insert_job(pool, "f-1", status="failed")
    await insert_periodic(pool, "nightly")
    for path in ("/", "/jobs?state=failed", "/jobs/f-1", "/periodic", "/queues"):
        live = await client.get(path, headers={"HX-Request": "true"})
        assert live.status_code == 200 and "<html" not in live.text, path
        wrapper = re.search(r'(<div id="live"[^>]*>)', live.text)
        assert wrapper is not None, path
        assert 'hx-get="' in wrapper.group(1) and 'hx-trigger="every ' in wrapper.group(1), path
        assert 'hx-swap="outerHTML"' in wrapper.group(1), path
        assert live.text.count('id="live"') == 1, path
        full = await client.get(path)
        assert full.text.count('id="live"') == 1, path


# --------------------------------------------------------------------------- actions


async def test_job_actions_change_the_row_as_the_api_does_and_say_so(
    pool: asyncpg.Pool, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pg_scheduler.dashboard")
    await insert_job(pool, "p-1")
    await insert_job(pool, "p-2", execution_time=Sql("now() + interval '1 day'"))
    await insert_job(pool, "f-1", status="failed", error_message="boom")
    await insert_job(pool, "c-1", status="completed")

    response = await post(client, "/jobs/p-1/cancel")
    assert response.status_code == 303 and response.headers["location"] == "/jobs/p-1"
    assert (await job_row(pool, "p-1"))["status"] == "cancelled"
    shown = await client.get("/jobs/p-1")
    assert "Cancelled job p-1." in shown.text
    assert "Cancelled job p-1." not in (await client.get("/jobs/p-1")).text  # shown once

    assert (await post(client, "/jobs/p-2/run-now")).status_code == 303
    row = await job_row(pool, "p-2")
    assert row["status"] == "pending" and row["execution_time"] <= await pool.fetchval("SELECT now()")

    assert (await post(client, "/jobs/f-1/retry")).status_code == 303
    assert (await job_row(pool, "f-1"))["status"] == "pending"

    deleted = await post(client, "/jobs/c-1/delete")
    assert deleted.headers["location"] == "/jobs"
    assert await pool.fetchval("SELECT count(*) FROM scheduled_jobs WHERE job_id = 'c-1'") == 0

    refused = await post(client, "/jobs/f-1/delete")  # pending now: not deletable
    assert refused.status_code == 303
    assert "was not deleted" in (await client.get("/jobs/f-1")).text
    assert (await job_row(pool, "f-1"))["status"] == "pending"

    await insert_job(pool, "ジョブ/1 <b>")
    odd_path = "/jobs/%E3%82%B8%E3%83%A7%E3%83%96%2F1%20%3Cb%3E"  # a slash, a space, markup
    odd = await post(client, odd_path + "/cancel")
    assert odd.status_code == 303 and odd.headers["location"] == odd_path
    assert "Cancelled job ジョブ/1 &lt;b&gt;." in (await client.get(odd.headers["location"])).text

    logged = [r.getMessage() for r in caplog.records if r.name == "pg_scheduler.dashboard"]
    assert any(m.startswith("client ") and "cancel job 'p-1': done" in m for m in logged), logged
    assert any("delete job 'f-1': not applicable" in m for m in logged), logged


async def test_bulk_actions_act_on_every_job_matching_the_filter_and_no_other(
    pool: asyncpg.Pool, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pg_scheduler.dashboard")
    for i in range(7):
        await insert_job(pool, f"mail-{i}", status="failed", queue="mail")
    await insert_job(pool, "other", status="failed", queue="default")
    for i in range(3):
        await insert_job(pool, f"later-{i}", execution_time=Sql("now() + interval '1 day'"), queue="mail")
    await insert_job(pool, "done", status="completed", queue="mail")

    response = await post(client, "/bulk/jobs/retry", {"state": "failed", "queue": "mail"})
    assert response.status_code == 303
    assert response.headers["location"] == "/jobs?state=failed&queue=mail"
    rows = {r["job_id"]: r["status"] for r in await pool.fetch("SELECT job_id, status FROM scheduled_jobs")}
    assert all(rows[f"mail-{i}"] == "pending" for i in range(7)) and rows["other"] == "failed"
    assert "Retried 7 job(s) matching the filter." in (await client.get(response.headers["location"])).text

    await post(client, "/bulk/jobs/run-now", {"state": "pending", "queue": "mail", "q": "later-1"})
    due = await pool.fetchval("SELECT execution_time <= now() FROM scheduled_jobs WHERE job_id = 'later-1'")
    not_due = await pool.fetchval(
        "SELECT execution_time > now() FROM scheduled_jobs WHERE job_id = 'later-2'"
    )
    assert due and not_due

    await post(client, "/bulk/jobs/cancel", {"state": "pending", "queue": "mail"})
    assert await pool.fetchval("SELECT count(*) FROM scheduled_jobs WHERE status = 'cancelled'") == 10

    await post(client, "/bulk/jobs/delete", {"state": "completed"})
    assert await pool.fetchval("SELECT count(*) FROM scheduled_jobs WHERE job_id = 'done'") == 0
    logged = [r.getMessage() for r in caplog.records if r.name == "pg_scheduler.dashboard"]
    described = '{"queue": "mail", "state": "failed"}'
    assert any(f"retry every job matching '{described}': starting" in m for m in logged), logged
    assert any(f"retry every job matching '{described}': completed: 7 job(s)" in m for m in logged), logged


async def test_a_bulk_action_stopped_part_way_says_some_jobs_may_have_changed(
    pool: asyncpg.Pool, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pg_scheduler.dashboard")
    await insert_job(pool, "f-1", status="failed")
    with mock.patch.object(Scheduler, "retry_jobs", side_effect=asyncpg.QueryCanceledError("timeout")):
        response = await post(client, "/bulk/jobs/retry", {"state": "failed"})
    assert response.status_code == 303 and response.headers["location"] == "/jobs?state=failed"
    page = (await client.get(response.headers["location"])).text
    assert "The bulk retry stopped part-way (QueryCanceledError)" in page
    assert "an unknown number of jobs were changed before it stopped." in page
    logged = [r.getMessage() for r in caplog.records if r.name == "pg_scheduler.dashboard"]
    assert any("retry every job matching" in m and m.endswith(": starting") for m in logged), logged
    assert any("stopped (QueryCanceledError): an unknown number of jobs were changed" in m for m in logged), (
        logged
    )


async def test_a_job_named_bulk_is_acted_on_alone_and_a_bulk_action_needs_its_state(
    pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    await insert_job(pool, "bulk", status="failed")
    await insert_job(pool, "other", status="failed")
    page = (await client.get("/jobs/bulk")).text
    assert 'action="/jobs/bulk/delete"' in page
    deleted = await post(client, "/jobs/bulk/delete")
    assert deleted.status_code == 303 and deleted.headers["location"] == "/jobs"
    ids = {r["job_id"] for r in await pool.fetch("SELECT job_id FROM scheduled_jobs")}
    assert ids == {"other"}  # the job named bulk, and no other failed job

    for data in ({}, {"state": ""}, {"queue": "default"}):
        refused = await post(client, "/bulk/jobs/delete", data)
        assert refused.status_code == 400 and "state" in refused.text, data
    bad = await post(client, "/bulk/jobs/delete", {"state": "nope"})
    assert bad.status_code == 400 and "unknown state" in bad.text
    assert await pool.fetchval("SELECT count(*) FROM scheduled_jobs") == 1


async def test_ids_keys_and_names_are_logged_quoted_so_they_cannot_forge_log_lines(
    pool: asyncpg.Pool, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pg_scheduler.dashboard")
    forged = "x: done\nuser admin: delete job y"
    await insert_job(pool, forged, status="failed")
    await insert_periodic(pool, forged)
    part = quote(forged, safe="")
    for path in (f"/jobs/{part}/retry", f"/periodic/{part}/disable", f"/periodic/{part}/trigger"):
        assert (await post(client, path)).status_code == 303, path
    await client.post(f"/jobs/{part}/retry", data={"csrf": "wrong" * 5})  # refused, logged
    await post(client, "/bulk/jobs/delete", {"state": "completed", "queue": forged})
    messages = [r.getMessage() for r in caplog.records if r.name == "pg_scheduler.dashboard"]
    assert len(messages) == 6, messages
    for message in messages:
        assert "\n" not in message and "delete job y" in message, message
    assert sum(repr(forged) in m for m in messages) == 3, messages  # the job's and the schedule's


async def test_periodic_and_queue_actions_go_through_the_api(
    pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    await insert_periodic(pool, "nightly")
    response = await post(client, "/periodic/nightly/disable")
    assert response.status_code == 303 and response.headers["location"] == "/periodic"
    assert await pool.fetchval("SELECT enabled FROM scheduler_periodic WHERE dedup_key = 'nightly'") is False
    assert 'action="/periodic/nightly/enable"' in (await client.get("/periodic")).text
    await post(client, "/periodic/nightly/enable")
    assert await pool.fetchval("SELECT enabled FROM scheduler_periodic WHERE dedup_key = 'nightly'") is True
    await post(client, "/periodic/nightly/trigger")
    triggered = await pool.fetchval("SELECT job_id FROM scheduled_jobs WHERE dedup_key = 'nightly'")
    assert triggered.startswith("manual_periodic:nightly:")
    assert f"Triggered nightly: job {triggered}." in (await client.get("/periodic")).text

    declare_queue("partner", concurrency=2)
    async with pool.acquire() as conn:
        from pg_scheduler.shared.queue_limits import publish_declared

        await publish_declared(conn)
    assert (await post(client, "/queues/partner/pause")).status_code == 303
    assert await pool.fetchval("SELECT paused FROM scheduler_queues WHERE name = 'partner'") is True
    assert 'action="/queues/partner/resume"' in (await client.get("/queues")).text
    await post(client, "/queues/partner/resume")
    assert await pool.fetchval("SELECT paused FROM scheduler_queues WHERE name = 'partner'") is False
    bad = await post(client, "/queues/no%20such%0Aqueue/pause")
    assert bad.status_code == 400 and "invalid queue name" in bad.text


# --------------------------------------------------------------------------- refusals

ACTION_POSTS = [
    ("/jobs/j-failed/retry", {}),
    ("/jobs/j-failed/delete", {}),
    ("/jobs/j-pending/cancel", {}),
    ("/jobs/j-pending/run-now", {}),
    ("/bulk/jobs/retry", {"state": "failed"}),
    ("/bulk/jobs/delete", {"state": "failed"}),
    ("/bulk/jobs/cancel", {"state": "pending"}),
    ("/bulk/jobs/run-now", {"state": "pending"}),
    ("/periodic/nightly/disable", {}),
    ("/periodic/nightly/enable", {}),
    ("/periodic/nightly/trigger", {}),
    ("/queues/partner/pause", {}),
    ("/queues/partner/resume", {}),
]


async def _refusal_fixture(pool: asyncpg.Pool) -> str:
    await insert_job(pool, "j-failed", status="failed")
    await insert_job(pool, "j-pending", execution_time=Sql("now() + interval '1 day'"))
    await insert_periodic(pool, "nightly")
    await pool.execute("INSERT INTO scheduler_queues (name) VALUES ('partner')")
    return await _snapshot(pool)


async def _snapshot(pool: asyncpg.Pool) -> str:
    jobs = await pool.fetch("SELECT job_id, status, execution_time FROM scheduled_jobs ORDER BY job_id")
    periodic = await pool.fetch("SELECT dedup_key, enabled FROM scheduler_periodic ORDER BY 1")
    queues = await pool.fetch("SELECT name, paused FROM scheduler_queues ORDER BY 1")
    return repr([list(map(tuple, rows)) for rows in (jobs, periodic, queues)])


async def test_read_only_hides_every_action_and_refuses_every_post(
    pool: asyncpg.Pool, producer: Scheduler
) -> None:
    before = await _refusal_fixture(pool)
    async with client_for(create_app(pool, read_only=True)) as client:
        for path in ("/", "/jobs?state=failed", "/jobs?state=pending", "/jobs/j-failed", "/jobs/j-pending"):
            page = (await client.get(path)).text
            assert 'method="post"' not in page, path
            assert "read-only" in page
        for path in ("/periodic", "/queues"):
            page = (await client.get(path)).text
            assert 'method="post"' not in page, path
            assert "nightly" in page or "partner" in page, path
        for path, data in ACTION_POSTS:
            response = await post(client, path, data)
            assert response.status_code == 403, path
            assert "read-only" in response.text
    assert await _snapshot(pool) == before


async def test_cross_site_posts_are_refused_whatever_the_action(
    pool: asyncpg.Pool, producer: Scheduler
) -> None:
    before = await _refusal_fixture(pool)
    async with client_for(create_app(pool)) as client:
        token = await csrf(client)
        same = {"origin": BASE, "sec-fetch-site": "same-origin"}
        attempts = [
            ({}, same, "CSRF token"),  # no token
            ({"csrf": "x" * 43}, same, "CSRF token"),  # a wrong one
            ({"csrf": token}, {"sec-fetch-site": "cross-site"}, "Sec-Fetch-Site"),
            ({"csrf": token}, {"sec-fetch-site": "same-site"}, "Sec-Fetch-Site"),
            ({"csrf": token}, {"origin": "http://evil.example"}, "Origin"),
            ({"csrf": token}, {"origin": f"{BASE}.evil.example"}, "Origin"),
            ({"csrf": token}, {"origin": f"{BASE}:8443"}, "Origin"),
        ]
        for path, data in ACTION_POSTS:
            for form, headers, reason in attempts:
                response = await client.post(path, data={**data, **form}, headers=headers)
                assert response.status_code == 403, (path, form, headers)
                assert reason in response.text
        # A request the browser marks as typed by the user, or with no fetch metadata, passes.
        ok = await client.post(
            "/jobs/j-failed/retry", data={"csrf": token}, headers={"sec-fetch-site": "none"}
        )
        assert ok.status_code == 303
        # Behind a proxy that ends TLS, the browser's Origin is https for this same host.
        https_origin = BASE.replace("http://", "https://", 1)
        ok = await client.post(
            "/jobs/j-failed/cancel",
            data={"csrf": token},
            headers={"origin": https_origin, "sec-fetch-site": "same-origin"},
        )
        assert ok.status_code == 303
    assert await _snapshot(pool) != before


async def test_the_csrf_cookie_is_lax_and_httponly_and_an_existing_token_is_kept(
    pool: asyncpg.Pool, producer: Scheduler
) -> None:
    async with client_for(create_app(pool)) as client:
        first = await client.get("/")
        cookie = first.headers["set-cookie"].lower()
        assert cookie.startswith("pgs_csrf=") and "samesite=lax" in cookie and "httponly" in cookie
        token = client.cookies["pgs_csrf"]
        # Arriving from a link on another site: the browser sends a Lax cookie along.
        again = await client.get("/jobs", headers={"sec-fetch-site": "cross-site"})
        assert "set-cookie" not in again.headers and client.cookies["pgs_csrf"] == token
        await insert_job(pool, "f-1", status="failed")
        assert f'name="csrf" value="{token}"' in (await client.get("/jobs/f-1")).text


async def test_a_form_over_the_cap_is_refused_without_reading_it_whole(
    pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    await insert_job(pool, "f-1", status="failed")
    token = await csrf(client)
    headers = {"origin": BASE, "sec-fetch-site": "same-origin"}
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        yield f"csrf={token}&pad=".encode()
        for _ in range(1_000):  # 64 MB, were it all read
            sent.append(1)
            yield b"x" * 65_536

    streamed = await client.post("/jobs/f-1/retry", content=endless(), headers=headers)
    assert streamed.status_code == 413 and "form too large" in streamed.text
    assert len(sent) <= 3, len(sent)  # stopped at the cap, not after the whole body

    announced = await client.post(
        "/jobs/f-1/retry",
        content=b"csrf=" + token.encode(),
        headers={**headers, "content-length": "999999999"},
    )
    assert announced.status_code == 413
    small = await client.post("/jobs/f-1/retry", data={"csrf": token, "pad": "x" * 60_000}, headers=headers)
    assert small.status_code == 303
    assert (await job_row(pool, "f-1"))["status"] == "pending"


async def test_basic_auth_guards_every_route_and_compares_in_constant_time(
    pool: asyncpg.Pool, producer: Scheduler
) -> None:
    app = create_app(pool, auth=("admin", "s3cret pass"))
    good = "Basic " + base64.b64encode(b"admin:s3cret pass").decode()
    bad = "Basic " + base64.b64encode(b"admin:wrong").decode()
    async with client_for(app) as client:
        for path in ("/", "/jobs", "/periodic", "/queues", "/static/htmx.min.js", "/jobs/x.json"):
            for header in ({}, {"authorization": bad}, {"authorization": "Bearer abc"}):
                response = await client.get(path, headers=header)
                assert response.status_code == 401, (path, header)
                assert response.headers["www-authenticate"].startswith("Basic realm=")
        refused = await client.post("/bulk/jobs/retry", data={"state": "failed"})
        assert refused.status_code == 401
        with mock.patch.object(
            dashboard_security.hmac, "compare_digest", wraps=hmac.compare_digest
        ) as compare:
            response = await client.get("/", headers={"authorization": good})
        assert response.status_code == 200
        assert compare.call_count >= 2  # user name and password, both compared
        assert "s3cret" not in response.text


async def test_served_without_auth_only_loopback_host_names_are_answered(
    pool: asyncpg.Pool, producer: Scheduler
) -> None:
    """DNS rebinding: another site's page, its name re-pointed to 127.0.0.1, sends its own name
    as Host. The command's configuration (no credentials) answers loopback names only."""
    await insert_job(pool, "f-1", status="failed")
    app = create_app(pool, allowed_hosts=serving_hosts("127.0.0.1", None, ()))
    async with client_for(app) as client:
        for host in ("evil.example:8080", "evil.example", "127.0.0.1.evil.example:8080", "localhost.evil"):
            response = await client.get("/", headers={"host": host})
            assert response.status_code == 400 and response.text == "invalid host\n", host
            token = client.cookies.get("pgs_csrf") or "x" * 43
            refused = await client.post(
                "/jobs/f-1/retry",
                data={"csrf": token},
                headers={"host": host, "origin": f"http://{host}", "sec-fetch-site": "same-origin"},
            )
            assert refused.status_code == 400, host
        for host in ("127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "127.0.0.1"):
            response = await client.get("/jobs", headers={"host": host})
            assert response.status_code == 200, host
    assert (await job_row(pool, "f-1"))["status"] == "failed"
    proxied = create_app(pool, allowed_hosts=serving_hosts("127.0.0.1", None, ("jobs.example.com",)))
    async with client_for(proxied) as client:
        assert (await client.get("/", headers={"host": "jobs.example.com"})).status_code == 200
        assert (await client.get("/", headers={"host": "evil.example"})).status_code == 400
    assert serving_hosts("0.0.0.0", ("u", "p"), ()) is None  # behind basic auth: as before


# --------------------------------------------------------------------------- escaping, limits


async def test_scripts_quotes_and_huge_texts_from_the_database_render_as_text_and_truncated(
    pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    huge = "A" * 100_000
    await insert_job(
        pool,
        "evil",
        status="failed",
        job_name=f"mod:{XSS}",
        queue='q"><img src=x>',
        task_data={"args": [XSS, 'it\'s "quoted"', huge], "kwargs": {XSS: "x"}},
        error_message=f"Traceback:\n{XSS}\n' \" end\n" + "B" * 100_000,
    )
    pages = {
        "list": await client.get("/jobs", params={"state": "failed"}),
        "detail": await client.get("/jobs/evil"),
        "overview": await client.get("/"),
    }
    for name, response in pages.items():
        assert response.status_code == 200, name
        assert XSS not in response.text, name
        assert "<img src=x>" not in response.text, name
    detail = pages["detail"].text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail
    assert "it&#39;s \\&#34;quoted\\&#34;" in detail  # JSON's backslash, then the escaped quote
    assert re.search(r"… [\d,]+ more characters", detail)
    assert len(detail) < 60_000
    assert 'href="/jobs/evil?format=json"' in detail
    raw = await client.get("/jobs/evil?format=json")
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.json()["task_data"]["args"][2] == huge  # the whole text, as JSON, not HTML


async def test_a_read_that_outlasts_the_statement_timeout_shows_a_message_not_a_500(
    pool: asyncpg.Pool, producer: Scheduler, dsn: str
) -> None:
    await insert_job(pool, "j", status="failed")
    app = create_app(pool, statement_timeout=0.2)
    locker = await asyncpg.connect(dsn)
    try:
        # A real wait: the table is locked by another session, so every read of it runs until
        # its timeout cancels it.
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("LOCK TABLE scheduled_jobs IN ACCESS EXCLUSIVE MODE")
        async with client_for(app) as client:
            for path in ("/", "/jobs?state=failed", "/jobs/j"):
                response = await client.get(path)
                assert response.status_code == 503, path
                assert "This query took longer than 0.2 s; narrow the filter." in response.text, path
            # An argument search says what bounds it.
            search = await client.get("/jobs", params={"state": "failed", "q": '{"customer": 7}'})
            assert search.status_code == 503
            assert "unless Since/Until bound it" in search.text and "index on task_data" in search.text
            # The queues need no job row to be listed, and paused.
            assert "took longer than the statement timeout" in (await client.get("/queues")).text
            for path in ("/", "/jobs?state=failed", "/jobs/j"):
                # htmx 2 swaps no 503: the refresh gets 200 and the message in the live part,
                # which keeps polling.
                live = await client.get(path, headers={"HX-Request": "true"})
                assert live.status_code == 200 and "<html" not in live.text, path
                assert "took longer" in live.text, path
                assert f'id="live" hx-get="{path.replace("&", "&amp;")}" hx-trigger="every 2s"' in live.text
        await transaction.rollback()
    finally:
        await locker.close()
    async with client_for(app) as client:
        assert (await client.get("/jobs?state=failed")).status_code == 200


async def test_queues_too_slow_to_count_are_still_listed_and_pausable(
    pool: asyncpg.Pool, producer: Scheduler, dsn: str
) -> None:
    await pool.execute("INSERT INTO scheduler_queues (name) VALUES ('partner')")
    app = create_app(pool, statement_timeout=0.2)
    locker = await asyncpg.connect(dsn)
    try:
        # Counting reads the rate-limit starts too; held locked, the count runs out of time.
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("LOCK TABLE scheduler_queue_starts IN ACCESS EXCLUSIVE MODE")
        async with client_for(app) as client:
            queues = await client.get("/queues")
            assert queues.status_code == 200
            assert "took longer than the statement timeout" in queues.text
            assert "<td>?</td>" in queues.text and 'action="/queues/partner/pause"' in queues.text
            overview = await client.get("/")
            assert overview.status_code == 200 and "lists them uncounted" in overview.text
        await transaction.rollback()
    finally:
        await locker.close()


# --------------------------------------------------------------------------- serving


async def test_mounted_under_a_prefix_every_link_form_and_asset_carries_it(
    pool: asyncpg.Pool, producer: Scheduler
) -> None:
    await insert_job(pool, "f-1", status="failed", dedup_key="nightly")
    await insert_periodic(pool, "nightly")
    await pool.execute("INSERT INTO scheduler_queues (name) VALUES ('partner')")
    host = Starlette(routes=[Mount("/admin/jobs", app=create_app(pool))])
    async with client_for(host) as client:
        for path in ("/", "/jobs?state=failed", "/jobs/f-1", "/periodic", "/queues"):
            response = await client.get("/admin/jobs" + path)
            assert response.status_code == 200, path
            urls = re.findall(r'(?:href|src|action|hx-get)="([^"#][^"]*)"', response.text)
            assert urls, path
            for url in urls:
                assert url.startswith("/admin/jobs/") or url == "/admin/jobs", (path, url)
        assert (await client.get("/admin/jobs/static/htmx.min.js")).status_code == 200
        token = client.cookies.get("pgs_csrf")
        response = await client.post(
            "/admin/jobs/jobs/f-1/retry",
            data={"csrf": token},
            headers={"origin": BASE, "sec-fetch-site": "same-origin"},
        )
        assert response.status_code == 303 and response.headers["location"] == "/admin/jobs/jobs/f-1"
    assert (await job_row(pool, "f-1"))["status"] == "pending"


async def test_a_mounted_app_on_a_dsn_has_its_pool_closed_by_the_host_lifespan(
    dsn: str, producer: Scheduler
) -> None:
    dashboard = create_app(dsn)
    closed: list[bool] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await close_app(dashboard)
        closed.append(True)

    host = Starlette(routes=[Mount("/admin/jobs", app=dashboard)], lifespan=lifespan)
    async with host.router.lifespan_context(host):
        async with client_for(host) as client:
            assert (await client.get("/admin/jobs/jobs")).status_code == 200
        owned = dashboard.state.dashboard.pool._owned
        assert owned is not None and not owned._closed
    assert closed and owned._closed
    await close_app(create_app(dsn))  # never opened: nothing to close


async def test_every_response_carries_a_strict_csp_and_server_timing_and_never_the_dsn(
    dsn: str, producer: Scheduler
) -> None:
    app = create_app(dsn)
    async with client_for(app) as client:
        for path in ("/", "/jobs", "/jobs/none", "/periodic", "/queues", "/static/style.css"):
            response = await client.get(path)
            assert response.status_code in (200, 404), path
            assert "script-src 'self'" in response.headers["content-security-policy"]
            assert response.headers["x-frame-options"] == "DENY"
            assert re.fullmatch(r"db;dur=[\d.]+, total;dur=[\d.]+", response.headers["server-timing"])
            assert dsn not in response.text
            assert "<script>" not in response.text and " on" + "click=" not in response.text
        page = (await client.get("/")).text
        assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/htmx.min.js" defer>']
    await app.state.dashboard.pool.close()


# --------------------------------------------------------------------------- helpers


class _HostAuth(AuthenticationBackend):
    """The host application's own authentication: every request is alice's."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser]:
        return AuthCredentials(["authenticated"]), SimpleUser("alice")


async def test_an_action_in_a_host_app_is_logged_as_the_host_apps_user(
    pool: asyncpg.Pool, producer: Scheduler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pg_scheduler.dashboard")
    await insert_job(pool, "f-1", status="failed")
    host = Starlette(
        routes=[Mount("/admin/jobs", app=create_app(pool))],
        middleware=[Middleware(AuthenticationMiddleware, backend=_HostAuth())],
    )
    async with client_for(host) as client:
        await client.get("/admin/jobs/")
        response = await client.post(
            "/admin/jobs/jobs/f-1/retry",
            data={"csrf": client.cookies.get("pgs_csrf", "")},
            headers={"origin": BASE, "sec-fetch-site": "same-origin"},
        )
        assert response.status_code == 303
    logged = [r.getMessage() for r in caplog.records if r.name == "pg_scheduler.dashboard"]
    assert "user alice: retry job 'f-1': done" in logged


async def test_an_unreachable_database_is_a_503_that_names_neither_host_nor_password() -> None:
    app = create_app("postgresql://nobody:hunter2@127.0.0.1:1/secretdb", statement_timeout=1)
    async with client_for(app) as client:
        for path in ("/", "/jobs", "/jobs/x", "/periodic", "/queues"):
            response = await client.get(path)
            assert response.status_code == 503, path
            assert "The database could not answer" in response.text
            assert "hunter2" not in response.text and "secretdb" not in response.text
