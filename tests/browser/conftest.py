"""A real headless Chromium against the dashboard, served by uvicorn, on a real PostgreSQL.

Fixtures (module scope: one database, one server, one browser for the whole file, so the
run stays well under a minute on two cores):

* ``site``: a fresh database with a started in-process :class:`Scheduler` (it runs the jobs:
  a failed job retried from the page completes), a queue of its own, one periodic schedule,
  and the dashboard app (``create_app(dsn)``) served by uvicorn on a free loopback port. All of
  it lives on one event loop in a background thread; ``site.run(coro)`` runs a coroutine there.
* ``driver``: Debian's Chromium through Debian's chromedriver, headless, with a fresh profile;
  ``SE_OFFLINE=true`` so Selenium Manager never tries to download anything.
* ``shots``: ``shots(driver, "name")`` saves a full-page PNG in ``$PG_SCHEDULER_SCREENSHOTS``
  (default: a pytest tmp dir); the folder is printed at the end of the run.

Without ``/usr/bin/chromium`` or ``/usr/bin/chromedriver`` the tests are skipped, except when
``CI`` is set: there ``.ci/run`` installs both, so a missing browser is a failure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from tests.browser.site import (
    FLAKY_SEEN,
    PERIODIC_KEY,
    QUEUE,
    XSS_ATTRIBUTE,
    XSS_SCRIPT,
    Site,
    flaky,
    hourly_report,
    reject,
)
from tests.conftest import _admin_execute, quote_ident, run_isolated, with_dbname
from tests.support import FAST, isolated_registries

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS_ENV = "PG_SCHEDULER_SCREENSHOTS"

_screenshot_dir: Path | None = None


def _needed(what: str) -> None:
    """Skip for a missing browser part, or fail when ``CI`` is set (CI installs it)."""
    message = f"browser tests need {what}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: .ci/run installs chromium and chromium-driver)")
    pytest.skip(message)


def _require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        _needed(f"Debian's chromium and chromium-driver: missing {', '.join(missing)}")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _needed("selenium (pip install -e '.[dev]')")


@pytest.fixture
def _isolated_registries() -> Iterator[None]:
    """Overrides the suite's per-test registry reset: this file's scheduler, registered once
    for the module, must keep its tasks and periodic definition across tests (``site`` puts the
    registries back as they were)."""
    yield


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dashboard-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _wait(check: Callable[[], Coroutine[Any, Any, Any]], what: str, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def site(pg_server_dsn: str) -> Iterator[Site]:
    _require_browser()
    try:
        import uvicorn

        from pg_scheduler.dashboard import create_app
    except ImportError as exc:
        _needed(f"the dashboard extra (pip install -e '.[dashboard]'): {exc}")

    from pg_scheduler import Scheduler
    from pg_scheduler.shared.periodic import periodic

    name = f"test_{secrets.token_hex(8)}"
    run_isolated(_admin_execute(pg_server_dsn, f"CREATE DATABASE {quote_ident(name)}"))
    dsn = with_dbname(pg_server_dsn, name)

    # The module's registrations, made in start(), are undone at the end like a test's.
    registries = contextlib.ExitStack()
    registries.enter_context(isolated_registries())
    FLAKY_SEEN.clear()

    background = _Loop()
    server: Any = None
    serving: Future[None] | None = None
    scheduler: Any = None
    pool: asyncpg.Pool | None = None

    async def start() -> Site:
        nonlocal scheduler, pool, server, serving
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=6)
        scheduler = Scheduler(pool, dsn=dsn, max_concurrent_jobs=4, **FAST)
        scheduler.register(flaky, "browser.flaky")
        scheduler.register(reject, "browser.reject")
        periodic(every=timedelta(hours=1), dedup_key=PERIODIC_KEY)(hourly_report)
        await scheduler.start()
        await scheduler.set_queue_limits(QUEUE, concurrency=2)

        now = datetime.now(UTC)
        seeded = {
            "failed": await scheduler.schedule(
                "browser.flaky", execution_time=now, args=["invoice-17"], queue=QUEUE
            ),
            "retry": await scheduler.schedule(
                "browser.flaky", execution_time=now, args=["invoice-42"], queue=QUEUE
            ),
            "xss": await scheduler.schedule(
                "browser.reject", execution_time=now, args=[XSS_SCRIPT], kwargs={"label": XSS_ATTRIBUTE}
            ),
        }

        async def all_failed() -> bool:
            rows = await pool.fetch(
                "SELECT status FROM scheduled_jobs WHERE job_id = ANY($1::text[])", list(seeded.values())
            )
            return len(rows) == len(seeded) and all(r["status"] == "failed" for r in rows)

        await _wait(all_failed, "the seeded jobs to fail")

        config = uvicorn.Config(create_app(dsn), host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        serving = asyncio.ensure_future(server.serve())

        async def started() -> bool:
            if serving is not None and serving.done():
                serving.result()  # raises what stopped it
                raise AssertionError("uvicorn stopped before it started")
            return bool(server.started)

        await _wait(started, "uvicorn to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        return Site(
            url=f"http://127.0.0.1:{port}",
            dsn=dsn,
            loop=background.loop,
            scheduler=scheduler,
            pool=pool,
            jobs=seeded,
        )

    async def stop() -> None:
        if server is not None:
            server.should_exit = True
        if serving is not None:
            try:
                await asyncio.wait_for(serving, 10)
            except Exception as exc:  # a teardown problem must not hide the test's own result
                print(f"uvicorn did not stop cleanly: {exc!r}")
        if scheduler is not None:
            await scheduler.shutdown(timeout=5)
        if pool is not None:
            await asyncio.wait_for(pool.close(), 10)

    try:
        yield background.run(start())
    finally:
        try:
            background.run(stop())
        finally:
            background.close()
            registries.close()
            run_isolated(
                _admin_execute(pg_server_dsn, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
            )


# --------------------------------------------------------------------- the browser
@pytest.fixture(scope="module")
def driver(site: Site) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    offline = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a driver or browser
    profile = tempfile.mkdtemp(prefix="pg-scheduler-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",  # a container's small /dev/shm crashes tabs otherwise
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    try:
        browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            browser.set_window_size(1280, 900)
            browser.set_page_load_timeout(20)
            yield browser
        finally:
            browser.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
        if offline is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = offline


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any, str], Path]:
    global _screenshot_dir
    configured = os.environ.get(SCREENSHOTS_ENV)
    folder = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    _screenshot_dir = folder

    def save(browser: Any, name: str) -> Path:
        """The whole page, not only the window: Chrome's own capture beyond the viewport (a
        taller window would be clamped to the headless screen)."""
        size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        width, height = max(int(size["width"]), 1280), min(max(int(size["height"]), 900), 6000)
        shot = browser.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
        )
        path = folder / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        print(f"screenshot: {path}")
        return path

    return save


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _screenshot_dir is not None:
        terminalreporter.write_line(f"dashboard screenshots: {_screenshot_dir}")
