"""The framework recipes of docs/recipes.md, end to end, as a user runs them.

Each test starts ``pg-scheduler run`` on the recipe's tasks module (a pod, in the background,
on the test database), then the recipe's own process: the FastAPI app under uvicorn, the Django
project under ``manage.py runserver`` (both on a free loopback port, driven with httpx), or the
plain script. What happened is then checked in the database: the jobs and their results, and
what a rolled-back request did not leave.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.pods import Pod, start_pod
from tests.replicas import stop_process
from tests.support import ROOT, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

EXAMPLES = ROOT / "examples"
DJANGO_DIR = EXAMPLES / "django_project"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-6000:] if log.exists() else ""


def environ(dsn: str, **extra: str) -> dict[str, str]:
    # ROOT on PYTHONPATH: the pg_scheduler of this tree, whichever one the venv installed.
    return {**os.environ, "DATABASE_URL": dsn, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **extra}


@asynccontextmanager
async def serving(args: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> AsyncIterator[str]:
    """Run a web server (``python ARGS`` with ``{port}`` filled in) until the block ends; yields
    its base URL once it answers HTTP. Stopped by its PID: SIGTERM, then SIGKILL."""
    port = free_port()
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *(a.format(port=port) for a in args),
            cwd=str(cwd),
            env=env,
            stdout=log_fd,
            stderr=log_fd,
        )
    finally:
        os.close(log_fd)
    base = f"http://127.0.0.1:{port}"
    try:

        async def answers() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"server exited ({proc.returncode}):\n{tail(log)}")
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    await client.get(f"{base}/jobs/probe")
                return True
            except httpx.TransportError:
                return False

        await wait_for(answers, timeout=60, interval=0.1, message=f"{args} to answer on {base}")
        yield base
    finally:
        await stop_process(proc, term_grace=10.0)
        print(f"----- log of {args[:3]}\n{tail(log)}")


async def pod_for(
    dsn: str,
    pool: asyncpg.Pool,
    pods: list[Pod],
    tmp_path: Path,
    app: str,
    *,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> Pod:
    """A one-worker ``pg-scheduler run APP`` pod, ready; the ``pods`` fixture stops it."""
    pod = await start_pod(dsn, tmp_path, workers=1, app=app, env=env, cwd=cwd)
    pods.append(pod)
    await pod.wait_ready(pool, workers=1, timeout=60)
    return pod


# --------------------------------------------------------------------------- FastAPI


async def test_fastapi_recipe_enqueues_in_the_request_transaction_and_a_pod_runs_the_job(
    dsn: str, pool: asyncpg.Pool, pods: list[Pod], tmp_path: Path
) -> None:
    await pod_for(dsn, pool, pods, tmp_path, "examples.fastapi_app.tasks")
    args = ["-m", "uvicorn", "examples.fastapi_app.app:app", "--host", "127.0.0.1", "--port", "{port}"]
    async with (
        serving(args, cwd=ROOT, env=environ(dsn), log=tmp_path / "uvicorn.log") as base,
        httpx.AsyncClient(base_url=base, timeout=40) as client,
    ):
        created = await client.post("/orders", json={"item": "book", "quantity": 2})
        assert created.status_code == 201, created.text
        order = created.json()
        assert order["job_id"] == f"order-{order['order_id']}-fulfilment"

        shown = await client.get(f"/jobs/{order['job_id']}", params={"wait": 30})
        assert shown.status_code == 200, shown.text
        assert shown.json() == {
            "job_id": order["job_id"],
            "status": "completed",
            "result": {
                "order_id": order["order_id"],
                "shipped": "2 x book",
                "tracking": f"TRK-{order['order_id']:06d}",
                "attempt": 1,
            },
            "error": None,
        }

        # Not enough stock: the route fails after schedule(), inside the transaction, and the
        # rollback takes the order and its job with it.
        refused = await client.post("/orders", json={"item": "book", "quantity": 4})
        assert refused.status_code == 409, refused.text
        # Refused before the transaction: no order, no job either.
        invalid = await client.post("/orders", json={"item": "book", "quantity": 0})
        assert invalid.status_code == 422, invalid.text
        missing = await client.get("/jobs/order-999-fulfilment")
        assert missing.status_code == 404

    orders = await pool.fetch("SELECT order_id, item, quantity FROM orders ORDER BY order_id")
    assert [(r["order_id"], r["item"], r["quantity"]) for r in orders] == [(order["order_id"], "book", 2)]
    assert await pool.fetchval("SELECT stock FROM inventory WHERE item = 'book'") == 3
    jobs = await pool.fetch("SELECT job_id, job_name, status, result FROM scheduled_jobs")
    assert [(r["job_id"], r["job_name"], r["status"]) for r in jobs] == [
        (order["job_id"], "examples.fastapi_app.tasks:fulfil_order", "completed")
    ]


# --------------------------------------------------------------------------- Django


async def test_django_recipe_sync_views_enqueue_and_a_pod_with_the_settings_runs_the_jobs(
    dsn: str, pool: asyncpg.Pool, pods: list[Pod], tmp_path: Path
) -> None:
    # A value only the settings module knows, read by the job in the pod: the pod runs it with
    # the project's Django settings.
    sender = f"shop-{uuid.uuid4().hex[:8]}@example.com"
    django_env = {"DJANGO_SETTINGS_MODULE": "mysite.settings", "SHOP_FROM_EMAIL": sender}
    await pod_for(dsn, pool, pods, tmp_path, "mysite.tasks", env=django_env, cwd=DJANGO_DIR)

    args = ["manage.py", "runserver", "--noreload", "127.0.0.1:{port}"]
    async with (
        serving(args, cwd=DJANGO_DIR, env=environ(dsn), log=tmp_path / "runserver.log") as base,
        httpx.AsyncClient(base_url=base, timeout=40) as client,
    ):
        # Concurrent requests: runserver serves each in a thread, and they share one
        # SyncScheduler (the first requests also race to create it).
        emails = [f"user{i}@example.com" for i in range(6)]
        signups = await asyncio.gather(*(client.post("/signup", data={"email": e}) for e in emails))
        assert [r.status_code for r in signups] == [202] * len(emails), [r.text for r in signups]
        job_ids = [r.json()["job_id"] for r in signups]
        assert len(set(job_ids)) == len(emails)

        for email, job_id in zip(emails, job_ids, strict=True):
            shown = await client.get(f"/jobs/{job_id}", params={"wait": 30})
            assert shown.status_code == 200, shown.text
            assert shown.json() == {
                "job_id": job_id,
                "status": "completed",
                "result": {"to": email, "from": sender, "sent": 1},
                "error": None,
            }

        bad = await client.post("/signup", data={"email": "nobody"})
        assert bad.status_code == 400, bad.text
        assert (await client.get("/jobs/no-such-job")).status_code == 404

    rows = await pool.fetch("SELECT job_id, job_name, status FROM scheduled_jobs")
    assert sorted((r["job_id"], r["job_name"], r["status"]) for r in rows) == sorted(
        (job_id, "mysite.tasks:send_welcome_email", "completed") for job_id in job_ids
    )


# --------------------------------------------------------------------------- plain script


async def test_script_recipe_enqueues_with_the_sync_api_and_waits_for_the_results(
    dsn: str, pool: asyncpg.Pool, pods: list[Pod], tmp_path: Path
) -> None:
    await pod_for(dsn, pool, pods, tmp_path, "examples/script_tasks.py")
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "script.py"),
        cwd=str(tmp_path),  # anywhere: the script finds its tasks module beside itself
        env=environ(dsn, SCRIPT_TIMEOUT="30"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await stop_process(proc, term_grace=5.0)
    output = f"exit {proc.returncode}\n--- stdout ---\n{out.decode()}\n--- stderr ---\n{err.decode()}"
    assert proc.returncode == 0, output
    assert "scheduled 3 jobs; waiting for a pod to run them" in out.decode(), output
    assert "OK: every job completed" in out.decode(), output
    assert time.monotonic() - started < 60

    rows = await pool.fetch("SELECT job_name, status, result FROM scheduled_jobs")
    assert (
        sorted((r["job_name"], r["status"]) for r in rows) == [("script_tasks:count_words", "completed")] * 3
    )
    results = sorted((json.loads(r["result"]) for r in rows), key=lambda r: r["most_common"])
    assert results == [
        {"words": 10, "most_common": "postgresql", "times": 1},
        {"words": 12, "most_common": "the", "times": 3},
        {"words": 10, "most_common": "to", "times": 2},
    ]
