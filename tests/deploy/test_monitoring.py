"""The monitoring assets in ``monitoring/``: alert rules checked and unit-tested with promtool,
the Grafana dashboard checked against the metric contract, and a real Prometheus scraping a
real pod.

promtool and prometheus come from the Debian package ``prometheus`` (``.ci/run`` installs it).
Without them these tests are skipped, with the reason, except under CI (``CI`` set), where
they fail: in CI a skip would hide untested alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import pytest
import yaml

from pg_scheduler import Scheduler
from pg_scheduler.embedded import free_port
from tests.pods import Pod, start_pod
from tests.replicas import ensure_events_table
from tests.support import ROOT, wait_for

MONITORING = ROOT / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = MONITORING / "alerts.test.yml"
DASHBOARD = MONITORING / "dashboard.json"

COUNTERS = {
    "pg_scheduler_jobs_claimed_total",
    "pg_scheduler_jobs_finished_total",
    "pg_scheduler_leader_elections_total",
    "pg_scheduler_worker_restarts_total",
    "pg_scheduler_orphans_rescued_total",
    "pg_scheduler_vacuumed_jobs_total",
    "pg_scheduler_db_errors_total",
}
QUEUE_GAUGES = {
    "pg_scheduler_queue_running",
    "pg_scheduler_queue_pending",
    "pg_scheduler_queue_oldest_due_age_seconds",
    "pg_scheduler_queue_limit",
    "pg_scheduler_queue_rate_period_seconds",
    "pg_scheduler_queue_paused",
    "pg_scheduler_queue_held_jobs",
}
GAUGES = {
    "pg_scheduler_is_leader",
    "pg_scheduler_leader_epoch",
    "pg_scheduler_workers",
    "pg_scheduler_jobs",
    "pg_scheduler_oldest_due_job_age_seconds",
    "pg_scheduler_oldest_worker_heartbeat_age_seconds",
    *QUEUE_GAUGES,
}
HISTOGRAMS = {
    "pg_scheduler_job_duration_seconds",
    "pg_scheduler_job_start_lag_seconds",
    "pg_scheduler_periodic_lag_seconds",
}
CONTRACT = COUNTERS | GAUGES | HISTOGRAMS
SERIES_NAMES = COUNTERS | GAUGES | {f"{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
LEADER_GAUGES = {
    "pg_scheduler_jobs",
    "pg_scheduler_oldest_due_job_age_seconds",
    "pg_scheduler_oldest_worker_heartbeat_age_seconds",
    *QUEUE_GAUGES,
}
JOB_STATES = {"pending", "running", "completed", "failed", "cancelled", "expired"}

# Panels that must show data after the end-to-end run (jobs completed, one leader, 2 workers).
PANELS_FED_BY_THE_E2E_RUN = {
    "Jobs finished by outcome",
    "Jobs claimed by task",
    "Job duration by task (p50 / p95 / p99)",
    "Start lag p95 by task",
    "Jobs by state",
    "Oldest due job age",
    "Oldest worker heartbeat age",
    "Leader by pod",
    "Pods claiming leadership",
    "Leader epoch",
    "Elections in range",
    "Live workers per pod",
    "Leader elections",
}

# What Grafana substitutes before sending a query; any valid value will do for checking.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$instance": ".*"}

PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "atan2",
}


def tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        why = (
            f"{name} not found: install the Debian package `prometheus` "
            "(apt-get install -y --no-install-recommends prometheus); .ci/run installs it"
        )
        if os.environ.get("CI"):  # CI installs it: missing there is a broken pipeline
            pytest.fail(why, pytrace=False)
        pytest.skip(why)  # a newcomer's machine: said in the summary, not hidden
    return path


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (label matchers, ranges, grouping labels and
    function names removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", expr):
        if re.match(r"\s*\(", expr[m.end() :]) or m.group().lower() in PROMQL_KEYWORDS:
            continue
        names.add(m.group())
    return names


def load_alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    assert [g["name"] for g in groups] == ["pg-scheduler"]
    rules: list[dict[str, Any]] = groups[0]["rules"]
    return rules


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def substitute_grafana_variables(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    # "$1" is label_replace's reference to its regex group: no variable has that name, and
    # Grafana leaves a reference to an unknown variable as it is.
    assert not re.search(r"\$(?!\d)", expr), f"unknown Grafana variable in {expr!r}"
    return expr


# ------------------------------------------------------------------------------ alert rules
def test_promtool_check_rules_accepts_the_alerts() -> None:
    result = promtool("check", "rules", str(ALERTS.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_alerts())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = promtool("test", "rules", ALERT_TESTS.name, cwd=MONITORING)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_severity_runbook_and_tests_that_fire_and_stay_silent() -> None:
    alerts = load_alerts()
    assert {a["alert"] for a in alerts} >= {
        "PgSchedulerNoLeader",
        "PgSchedulerSplitLeadership",
        "PgSchedulerJobsOverdue",
        "PgSchedulerWorkerRestarts",
        "PgSchedulerJobFailureRatioHigh",
        "PgSchedulerQueuePaused",
        "PgSchedulerQueueHeldBack",
    }
    fired: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    for alert in alerts:
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        for key in ("summary", "description", "runbook"):
            assert alert["annotations"].get(key, "").strip(), f"{name} has no {key}"
        assert promql_metric_names(alert["expr"]) <= SERIES_NAMES, name
        assert name in fired, f"no test shows {name} firing"
        assert name in silent, f"no test shows {name} staying silent"


# -------------------------------------------------------------------------------- dashboard
def test_metric_name_extraction_sees_through_promql_syntax() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, task) (rate(a_bucket{x=~"b{c}", d!="e"}[$__rate_interval])))'
        " / on(instance) group_left(pod) (b_total offset 5m > 0) or vector(0) and max(c) by (state)"
    )
    assert promql_metric_names(expr) == {"a_bucket", "b_total", "c"}


def test_dashboard_is_valid_and_uses_only_contract_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] == 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    assert variables["instance"]["datasource"]["uid"] == "${datasource}"

    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    assert PANELS_FED_BY_THE_E2E_RUN <= {p["title"] for p in panels}
    used: set[str] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            names = promql_metric_names(target["expr"])
            assert names, f"no metric in {target['expr']!r}"
            assert names <= SERIES_NAMES, f"{panel['title']!r}: not in the contract: {names - SERIES_NAMES}"
            used |= {n.removesuffix("_bucket") for n in names}
    assert used >= CONTRACT, f"metrics without a panel: {CONTRACT - used}"
    # Cluster-wide gauges come from the leader only: summing them would double-count during a
    # handover, and filtering them by pod would hide them when the leader is not selected.
    for expr in dashboard_exprs(dashboard):
        if promql_metric_names(expr) & LEADER_GAUGES:
            assert expr.startswith("max") and "sum" not in expr and "$instance" not in expr, expr
        if "pg_scheduler_jobs" in promql_metric_names(expr):
            assert expr == "max by (state) (pg_scheduler_jobs)", expr


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": substitute_grafana_variables(expr)}
                    for i, expr in enumerate(dashboard_exprs(dashboard))
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------- end to end: Prometheus scrapes a pod
def _http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback URLs we build
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


async def http_get(url: str) -> tuple[int, bytes]:
    return await asyncio.to_thread(_http_get, url)


async def http_ok(url: str) -> bool:
    status, _ = await http_get(url)
    return status == 200


async def query(api: str, promql: str) -> list[dict[str, Any]]:
    status, body = await http_get(f"{api}/api/v1/query?{urlencode({'query': promql})}")
    answer = json.loads(body) if body else {}
    assert status == 200 and answer.get("status") == "success", (promql, status, body[:500])
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


async def value(api: str, promql: str) -> float | None:
    result = await query(api, promql)
    return float(result[0]["value"][1]) if result else None


@contextlib.asynccontextmanager
async def scraping_prometheus(
    tmp_path: Path, metrics_port: int, honor_labels: bool = False
) -> AsyncIterator[str]:
    """A real Prometheus scraping the pod on ``metrics_port`` every second, with the alert
    rules loaded; yields its API's base URL and prints its log's tail when done."""
    prometheus = tool("prometheus")
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {
                        "job_name": "pg-scheduler",
                        "honor_labels": honor_labels,
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                    }
                ],
            }
        )
    )
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            stdout=log,
            stderr=log,
        )
    try:
        api = f"http://127.0.0.1:{prom_port}"
        await wait_for(lambda: http_ok(f"{api}/-/ready"), timeout=30, message="Prometheus ready")
        yield api
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        print(f"----- Prometheus log\n{log_path.read_text(errors='replace')[-4000:]}")


async def start_scraped_pod(
    dsn: str,
    pool: asyncpg.Pool,
    pods: list[Pod],
    tmp_path: Path,
    workers: int,
    env: dict[str, str] | None = None,
) -> int:
    """A pod whose metrics answer on a free loopback port; returns that port."""
    metrics_port = free_port()
    pod = await start_pod(
        dsn,
        tmp_path,
        workers=workers,
        env=env,
        **{"--metrics-port": metrics_port, "--metrics-host": "127.0.0.1"},
    )
    pods.append(pod)
    await pod.wait_ready(pool, workers)
    endpoint = f"http://127.0.0.1:{metrics_port}"
    for path in ("/healthz", "/readyz", "/metrics"):
        await wait_for(
            lambda p=path: http_ok(endpoint + p), timeout=20, message=f"GET {path} on the pod to answer 200"
        )
    return metrics_port


@pytest.mark.slow
async def test_prometheus_scrapes_a_pod_and_sees_its_jobs(
    dsn: str, pool: asyncpg.Pool, pods: list[Pod], tmp_path: Path
) -> None:
    tool("prometheus")
    await ensure_events_table(pool)
    metrics_port = await start_scraped_pod(dsn, pool, pods, tmp_path, workers=2)
    async with scraping_prometheus(tmp_path, metrics_port) as api:
        n = 5
        now = datetime.now(UTC)
        for i in range(n):
            await Scheduler(pool).schedule("apps.send_invoice", execution_time=now, args=(i,))

        async def scraped() -> dict[str, float | None] | None:
            seen = {
                "up": await value(api, 'up{job="pg-scheduler"}'),
                "completed": await value(api, 'sum(pg_scheduler_jobs_finished_total{outcome="completed"})'),
                "claimed": await value(api, "sum(pg_scheduler_jobs_claimed_total)"),
                "leader": await value(api, "max(pg_scheduler_is_leader)"),
                "workers": await value(api, "sum(pg_scheduler_workers)"),
            }
            done = seen == {"up": 1, "completed": n, "claimed": n, "leader": 1, "workers": 2}
            return None if not done else seen

        await wait_for(
            scraped, timeout=60, interval=0.5, message="Prometheus to see the jobs, the leader and 2 workers"
        )

        # The leader samples the queue: every job completed, nothing pending, states from the contract.
        async def queue_sampled() -> dict[str, float] | None:
            states = {
                r["metric"]["state"]: float(r["value"][1])
                for r in await query(api, "max by (state) (pg_scheduler_jobs)")
            }
            return states if states.get("completed") == n and not states.get("pending") else None

        states = await wait_for(queue_sampled, timeout=60, interval=0.5, message="the leader's queue gauges")
        assert set(states) <= JOB_STATES, states
        assert await value(api, "max(pg_scheduler_oldest_due_job_age_seconds)") == 0

        # Every dashboard query is accepted by a real Prometheus, and once rates have two samples
        # the panels this run feeds show data.
        async def scrapes() -> bool:
            return (await value(api, 'count_over_time(up{job="pg-scheduler"}[1m])') or 0) >= 3

        await wait_for(scrapes, timeout=20, interval=0.5, message="three scrapes")
        empty = []
        for panel in json.loads(DASHBOARD.read_text())["panels"]:
            for target in panel.get("targets", []):
                result = await query(api, substitute_grafana_variables(target["expr"]))
                if not result and panel["title"] in PANELS_FED_BY_THE_E2E_RUN:
                    empty.append(panel["title"])
        assert not empty, f"panels without data: {empty}"

        # The alert rules load and evaluate in a real server; with one healthy pod, the
        # leadership, queue and failure alerts have nothing to say.
        async def rules_evaluated() -> list[dict[str, Any]] | None:
            status, body = await http_get(f"{api}/api/v1/rules")
            groups = json.loads(body)["data"]["groups"] if status == 200 else []
            rules = [r for g in groups for r in g["rules"]]
            return rules if rules and all(r["health"] == "ok" for r in rules) else None

        rules = await wait_for(rules_evaluated, timeout=20, interval=0.5, message="alert rules evaluated")
        assert sorted(r["name"] for r in rules) == sorted(a["alert"] for a in load_alerts())
        for alert in load_alerts():
            result = await query(api, alert["expr"])
            if alert["alert"] in {
                "PgSchedulerNoLeader",
                "PgSchedulerSplitLeadership",
                "PgSchedulerJobsOverdue",
                "PgSchedulerJobFailureRatioHigh",
            }:
                assert result == [], (alert["alert"], result)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("honor_labels", "stored"),
    [
        (False, ("pg-scheduler", "apps.tick")),  # Prometheus' default, and the ServiceMonitor's
        (True, ("apps.tick", None)),
    ],
)
async def test_periodic_lag_panel_names_each_periodic_job(
    dsn: str,
    pool: asyncpg.Pool,
    pods: list[Pod],
    tmp_path: Path,
    honor_labels: bool,
    stored: tuple[str, str | None],
) -> None:
    """The histogram's ``job`` label (the contract's name for the dedup key) collides with the
    scrape's own ``job``: by default Prometheus keeps its own and files ours as
    ``exported_job``; a scrape that honors labels keeps ours. Either way the panel shows one
    line per periodic job, named."""
    tool("prometheus")
    await ensure_events_table(pool)
    metrics_port = await start_scraped_pod(dsn, pool, pods, tmp_path, workers=1, env={"APP_PERIODIC": "1"})
    (panel,) = [
        p
        for p in json.loads(DASHBOARD.read_text())["panels"]
        if "pg_scheduler_periodic_lag_seconds" in json.dumps(p.get("targets", []))
    ]
    (target,) = panel["targets"]
    legend = re.fullmatch(r"\{\{(\w+)\}\}", target["legendFormat"])
    assert legend is not None, target["legendFormat"]
    async with scraping_prometheus(tmp_path, metrics_port, honor_labels) as api:
        series = await wait_for(
            lambda: query(api, "pg_scheduler_periodic_lag_seconds_count"),
            timeout=60,
            interval=0.5,
            message="the periodic job's lag in Prometheus",
        )
        assert [(r["metric"]["job"], r["metric"].get("exported_job")) for r in series] == [stored]

        async def lines() -> set[str] | None:
            result = await query(api, substitute_grafana_variables(target["expr"]))
            names = {r["metric"].get(legend.group(1), "") for r in result}
            return names if result else None

        assert await wait_for(
            lines, timeout=60, interval=0.5, message="the panel's query to return data"
        ) == {"apps.tick"}
