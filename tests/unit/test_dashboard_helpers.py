"""The dashboard's pure helpers, without a database: the jobs filter and cursor read from a
query string, basic-auth parsing, the loopback test of ``pg-scheduler dashboard``, truncation
and the chart's layout."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pg_scheduler.cli.dashboard import is_loopback, split_hosts
from pg_scheduler.dashboard import reads
from pg_scheduler.dashboard.app import format_cursor, parse_cursor, parse_filter
from pg_scheduler.dashboard.reads import COUNT_CAP, MinuteBar, StateCount
from pg_scheduler.dashboard.render import age, chart, pathpart, shown
from pg_scheduler.dashboard.security import BasicAuth, HostAllowlist, host_name
from pg_scheduler.shared.errors import ConfigurationError
from pg_scheduler.shared.job_filter import JobCursor


def test_the_filter_defaults_to_failed_and_reads_q_as_a_job_id_or_json() -> None:
    assert parse_filter({}) == (
        {"state": "failed"},
        {**dict.fromkeys(("queue", "task", "since", "until", "q"), ""), "state": "failed"},
    )
    job_filter, _ = parse_filter({"state": "pending", "queue": " mail ", "q": "abc-1"})
    assert job_filter == {"state": "pending", "queue": "mail", "job_id": "abc-1"}
    assert parse_filter({"q": '{"user": 7}'})[0]["args"] == {"user": 7}
    assert parse_filter({"q": "[1, 2]"})[0]["args"] == [1, 2]
    since = parse_filter({"since": "2026-01-31T14:00"})[0]["since"]
    assert since == datetime(2026, 1, 31, 14, tzinfo=UTC)  # naive times are UTC
    for bad in ({"state": "done"}, {"q": "{oops"}, {"until": "yesterday"}):
        with pytest.raises(ConfigurationError):
            parse_filter(bad)


def test_a_cursor_survives_its_query_parameter_and_a_forged_one_is_refused() -> None:
    cursor = JobCursor(datetime(2026, 1, 1, 12, 30, 1, 5, tzinfo=UTC), "id with spaces")
    assert parse_cursor(format_cursor(cursor)) == cursor
    assert parse_cursor(None) is None and parse_cursor("") is None
    for forged in ("nonsense", "2026-01-01T00:00:00 ", "2026-01-01T00:00:00 x"):
        with pytest.raises(ConfigurationError):
            parse_cursor(forged)


def test_basic_auth_accepts_only_the_exact_credentials() -> None:
    auth = BasicAuth("ops", "pa:ss word")

    def header(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode()).decode()

    assert auth.check(header("ops:pa:ss word")) == "ops"
    for wrong in (
        header("ops:pa:ss"),
        header("op:pa:ss word"),
        header("ops"),
        "Basic !!!",
        "Bearer x",
        "",
        None,
    ):
        assert auth.check(wrong) is None


def test_only_loopback_addresses_count_as_loopback() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "example.com", "192.168.1.5"):
        assert not is_loopback(host), host


def test_texts_are_cut_with_the_count_of_what_is_left_out() -> None:
    assert shown("abc", 3) == shown("abc", 10)
    cut = shown("x" * 25_000, 20_000)
    assert len(cut.text) == 20_000 and cut.more == 5_000
    assert pathpart("a/b c?") == "a%2Fb%20c%3F"
    assert [age(s) for s in (None, 3.25, 42, 125, 7300, 200_000)] == [
        "–",
        "3.2s",
        "42s",
        "2m 05s",
        "2h 01m",
        "2d 7h",
    ]


def test_the_chart_scales_its_bars_to_the_busiest_minute() -> None:
    start = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    minutes = [
        MinuteBar(start + timedelta(minutes=i), completed=i, failed=1 if i == 59 else 0) for i in range(60)
    ]
    laid = chart(minutes, width=600, height=80)
    assert laid.max == 60 and len(laid.bars) == 60
    last = laid.bars[-1]
    assert last.completed_h + last.failed_h == pytest.approx(80)
    assert last.failed_y == pytest.approx(0)
    assert laid.bars[0].completed_h == 0 and (laid.first, laid.last) == ("10:00", "10:59")
    assert chart([MinuteBar(start, 0, 0)]).max == 0


def test_the_host_allowlist_ignores_ports_and_case_and_matches_whole_names() -> None:
    assert host_name("[::1]:8080") == "::1" and host_name("LocalHost:80") == "localhost"
    allow = HostAllowlist(["localhost", "127.0.0.1", "[::1]", "*.example.com"])
    for host in ("localhost:1", "127.0.0.1", "[::1]:8080", "jobs.example.com:443"):
        assert allow.allows(host), host
    for host in (None, "", "evil.example:8080", "example.com", "localhost.evil", "127.0.0.2"):
        assert not allow.allows(host), host
    assert HostAllowlist(["*"]).allows("anything")
    assert split_hosts(["a.example,b.example", " c.example ", ""]) == ("a.example", "b.example", "c.example")


class _BigTable:
    """A connection to a table of 10 million rows, by the planner's estimate, whose statistics
    have completed and failed jobs among their most common values and the other states not."""

    def __init__(self, exact: dict[str, int]) -> None:
        self.exact = exact

    async def fetchrow(self, query: str, *args: Any) -> dict[str, Any]:
        assert query == reads.queries.JOB_COUNT_ESTIMATED_BY_STATUS
        return {"total": 10_000_000.0, "states": ["completed", "failed"], "freqs": [0.9, 0.1]}

    async def fetchval(self, query: str, state: str, limit: int) -> int:
        assert query == reads.queries.JOB_COUNT_CAPPED and limit == COUNT_CAP + 1
        return min(self.exact.get(state, 0), limit)


async def test_rare_states_are_counted_and_running_jobs_over_the_cap_are_shown_capped() -> None:
    conn = _BigTable({"pending": 5, "running": 250_000, "cancelled": 12, "expired": 0})
    counts = {c.state: c for c in await reads._state_counts(conn)}  # type: ignore[arg-type]
    assert counts["completed"] == StateCount("completed", 9_000_000, approximate=True)
    assert counts["failed"] == StateCount("failed", 1_000_000, approximate=True)
    assert counts["cancelled"] == StateCount("cancelled", 12)  # not "≈ 0"
    assert counts["expired"] == StateCount("expired", 0)
    assert counts["running"] == StateCount("running", COUNT_CAP, capped=True)  # "100,000+"
    assert counts["pending"] == StateCount("pending", 5)
