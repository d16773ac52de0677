"""The dashboard in a real headless Chromium (issue 22): what an operator does, end to end.

One database, server and browser for the module (see conftest.py); the tests run in file order
and each acts on jobs of its own: the overview loads; the jobs list is filtered to ``failed``
through its own filter form; a failed job's page shows the traceback; retrying a job makes it
``pending`` and then ``completed`` while the page updates itself (htmx polling, no reload); a
periodic schedule is triggered from its page and the new job appears; a queue is paused and
resumed from its page; a job whose arguments and error hold markup renders it as text and runs
none of it. Every page is saved as a screenshot (``PG_SCHEDULER_SCREENSHOTS``).

Waits are explicit (``WebDriverWait`` on a condition), never a sleep.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.site import PERIODIC_KEY, QUEUE, XSS_ATTRIBUTE, XSS_SCRIPT, Site

Shots = Callable[[WebDriver, str], Path]

WAIT = 10.0
"""Seconds for a page or an htmx swap; the retry's round trip through a worker gets more."""


# --------------------------------------------------------------------- helpers
def wait_until(driver: WebDriver, check: Callable[[WebDriver], Any], what: str, timeout: float = WAIT) -> Any:
    """``check`` until truthy (a stale element during an htmx swap counts as not yet)."""

    def guarded(d: WebDriver) -> Any:
        try:
            return check(d)
        except StaleElementReferenceException:
            return False

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(guarded, message=f"waiting for {what}")


def open_page(driver: WebDriver, url: str) -> None:
    driver.get(url)
    wait_until(driver, lambda d: d.execute_script("return document.readyState") == "complete", url)
    assert_sane(driver)


def assert_sane(driver: WebDriver) -> None:
    """A page a person can read: no server error, no raw template code."""
    text = body_text(driver)
    source = driver.page_source
    assert "Internal Server Error" not in text, text[:2000]
    for raw in ("{{", "{%", "%}"):
        assert raw not in text, f"raw template code {raw!r} on {driver.current_url}"
    assert "jinja2" not in source.lower()


def body_text(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)


def job_status_text(driver: WebDriver) -> str:
    """The state shown on a job's page (in the part htmx replaces every few seconds)."""
    return str(driver.find_element(By.CSS_SELECTOR, "#live dl.facts .state").text).strip().lower()


def press(driver: WebDriver, scope: Callable[[WebDriver], WebDriver | WebElement], action: str) -> None:
    """Press the button of the POST form that does ``action`` (its URL ends with it), found
    in ``scope(driver)`` again if htmx replaced the part in between."""

    def clicked(d: WebDriver) -> bool:
        scope(d).find_element(By.CSS_SELECTOR, f"form[action$='/{action}'] button[type=submit]").click()
        return True

    wait_until(driver, clicked, f"the {action} button")


def click(driver: WebDriver, by: str, selector: str) -> None:
    """Click the element, found again if htmx replaced it between finding and clicking."""

    def clicked(d: WebDriver) -> bool:
        d.find_element(by, selector).click()
        return True

    wait_until(driver, clicked, f"to click {selector}")


def flash(driver: WebDriver, expected: str) -> str:
    """The message an action left for the page it redirected to, once it says ``expected``
    (the page before the action may show an earlier one)."""

    def said(d: WebDriver) -> str | None:
        found = d.find_elements(By.CSS_SELECTOR, "p.flash")
        return str(found[0].text) if found and expected in found[0].text else None

    return str(wait_until(driver, said, f"a message saying {expected!r}"))


def job_link(job_id: str) -> str:
    return f"a[href$='/jobs/{quote(job_id, safe='')}']"


# --------------------------------------------------------------------- tests
def test_overview_loads(site: Site, driver: WebDriver, shots: Shots) -> None:
    open_page(driver, site.page("/"))
    assert driver.find_element(By.TAG_NAME, "h1").text == "Overview"
    failed_card = driver.find_element(By.CSS_SELECTOR, "a.card.state-failed")
    assert "failed" in failed_card.text.lower()
    # The scheduler of this test leads and heartbeats: the overview names it.
    wait_until(driver, lambda d: site.scheduler.worker_id in body_text(d), "the scheduler in the overview")
    shots(driver, "1-overview")


def test_jobs_are_filtered_to_failed_through_the_pages_own_filter(
    site: Site, driver: WebDriver, shots: Shots
) -> None:
    open_page(driver, site.page("/"))
    driver.find_element(By.LINK_TEXT, "Jobs").click()
    wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "nav.tabs"), "the jobs page")
    driver.find_element(By.XPATH, "//nav[contains(@class, 'tabs')]/a[normalize-space()='failed']").click()
    wait_until(driver, lambda d: "state=failed" in d.current_url, "the failed tab")
    current = driver.find_element(By.CSS_SELECTOR, "nav.tabs a[aria-current='page']")
    assert current.text.strip() == "failed"
    # ...and the filter form narrows it further: the flaky task only.
    task = driver.find_element(By.CSS_SELECTOR, "form.filters input[name='task']")
    task.clear()
    task.send_keys("browser.flaky")
    driver.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait_until(driver, lambda d: "task=browser.flaky" in d.current_url, "the task filter")
    assert "state=failed" in driver.current_url
    rows = wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "table.jobs tbody tr"), "rows")
    shown = {r.find_element(By.CSS_SELECTOR, "td a").text for r in rows}
    assert shown == {site.jobs["failed"], site.jobs["retry"]}
    assert all("flaky failure for" in r.text for r in rows)
    shots(driver, "2-jobs-failed")


def test_a_failed_jobs_page_shows_its_traceback(site: Site, driver: WebDriver, shots: Shots) -> None:
    failed = site.jobs["failed"]
    open_page(driver, site.page("/jobs?state=failed"))
    click(driver, By.CSS_SELECTOR, job_link(failed))
    wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "pre.error"), "the job's error")
    assert failed in driver.find_element(By.TAG_NAME, "h1").text
    error = driver.find_element(By.CSS_SELECTOR, "pre.error").text
    assert "Traceback (most recent call last)" in error
    assert "RuntimeError: flaky failure for invoice-17" in error
    assert job_status_text(driver) == "failed"
    shots(driver, "3-job-detail")


def test_a_retried_job_becomes_pending_then_completed_while_the_page_refreshes(
    site: Site, driver: WebDriver, shots: Shots
) -> None:
    job_id = site.jobs["retry"]
    # Paused, the queue holds the retried job in pending until the test has seen it there.
    assert site.run(site.scheduler.pause_queue(QUEUE))
    try:
        open_page(driver, site.page(f"/jobs/{quote(job_id, safe='')}"))
        assert job_status_text(driver) == "failed"
        press(driver, lambda d: d.find_element(By.ID, "live"), "retry")
        wait_until(driver, lambda d: job_status_text(d) == "pending", "the job to be pending")
        flash(driver, "Retried")
        assert site.status(job_id) == "pending"
        # Survives htmx swaps, not a reload: the page must update itself, nobody reloads it.
        driver.execute_script("window.__not_reloaded = true")
    finally:
        site.run(site.scheduler.resume_queue(QUEUE))
    wait_until(driver, lambda d: job_status_text(d) == "completed", "the page to show completed", 20)
    assert driver.execute_script("return window.__not_reloaded") is True
    assert site.status(job_id) == "completed"
    assert "done invoice-42" in body_text(driver)  # the result, in the swapped part
    shots(driver, "6-after-retry")


def test_a_periodic_job_is_triggered_from_the_periodic_page(
    site: Site, driver: WebDriver, shots: Shots
) -> None:
    # A manual run has no window: the registrar's own windows cannot be mistaken for it.
    manual = "SELECT job_id FROM scheduled_jobs WHERE dedup_key = $1 AND window_start IS NULL"
    assert site.run(site.pool.fetch(manual, PERIODIC_KEY)) == []
    open_page(driver, site.page("/periodic"))
    row = f"tr[id='p-{PERIODIC_KEY}']"
    wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, row), "the periodic job's row")
    shots(driver, "4-periodic")
    press(driver, lambda d: d.find_element(By.CSS_SELECTOR, row), "trigger")
    message = flash(driver, f"Triggered {PERIODIC_KEY}")
    assert driver.current_url.endswith("/periodic")
    rows = site.run(site.pool.fetch(manual, PERIODIC_KEY))
    assert len(rows) == 1, message
    new_id = rows[0]["job_id"]
    assert new_id in message
    # The row's last run is the new job, and its key leads to the list of its task's jobs.
    last_run = f"{row} {job_link(new_id)}"
    # A run is "last" once it has started: the page shows it at latest on its next refresh (5 s).
    wait_until(
        driver, lambda d: d.find_elements(By.CSS_SELECTOR, last_run), "the new job as the last run", 15
    )
    click(driver, By.CSS_SELECTOR, f"{row} td:first-child a")
    wait_until(driver, lambda d: "/jobs?" in d.current_url, "the periodic job's list")
    # The link names the state the job had on the periodic page; it has completed since.
    wait_until(driver, lambda d: site.status(new_id) == "completed", "the triggered job to complete")
    driver.find_element(By.XPATH, "//nav[contains(@class, 'tabs')]/a[normalize-space()='completed']").click()
    wait_until(
        driver, lambda d: d.find_elements(By.CSS_SELECTOR, job_link(new_id)), "the new job in the list"
    )
    assert "task=" in driver.current_url


def test_a_queue_is_paused_and_resumed_from_the_queues_page(
    site: Site, driver: WebDriver, shots: Shots
) -> None:
    paused = "SELECT paused FROM scheduler_queues WHERE name = $1"
    row = f"//tr[td[1]/a[normalize-space()='{QUEUE}']]"
    open_page(driver, site.page("/queues"))
    press(driver, lambda d: d.find_element(By.XPATH, row), "pause")
    flash(driver, "Paused")
    assert site.run(site.pool.fetchval(paused, QUEUE)) is True
    wait_until(driver, lambda d: "paused" in d.find_element(By.XPATH, row).text, "the queue shown paused")
    shots(driver, "5-queues")
    press(driver, lambda d: d.find_element(By.XPATH, row), "resume")
    flash(driver, "Resumed")
    assert site.run(site.pool.fetchval(paused, QUEUE)) is False


@pytest.mark.parametrize("page", ["list", "detail"])
def test_markup_in_arguments_and_errors_is_shown_as_text_and_never_runs(
    site: Site, driver: WebDriver, shots: Shots, page: str
) -> None:
    job_id = site.jobs["xss"]
    if page == "list":
        open_page(driver, site.page("/jobs?state=failed&task=browser.reject"))
        wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, job_link(job_id)), "the job")
        shown = [XSS_SCRIPT, json.dumps(XSS_ATTRIBUTE)[1:-1]]  # the arguments, as JSON
    else:
        open_page(driver, site.page(f"/jobs/{quote(job_id, safe='')}"))
        shown = [XSS_SCRIPT, XSS_ATTRIBUTE]  # in the error: as the task raised it
    text = body_text(driver)
    for literal in shown:
        assert literal in text
    assert driver.execute_script("return window.__xss") is None
    assert not driver.find_elements(By.CSS_SELECTOR, "img[src='x']")
    assert not [
        s
        for s in driver.find_elements(By.TAG_NAME, "script")
        if "__xss" in (s.get_attribute("innerHTML") or "")
    ]
    shots(driver, f"7-escaped-markup-{page}")
