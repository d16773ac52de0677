"""``pg-scheduler run APP``: the supervisor and its worker processes."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile

import click

from ..embedded import database_url_or_embedded
from ..shared.app import load_app
from ..shared.config import KNOB_DEFAULTS, RESULT_MAX_BYTES_DEFAULT, SchedulerConfig
from ..shared.errors import AppLoadError, ConfigurationError
from ..shared.logs import configure as configure_logging
from ..shared.logs import parse_level
from ..shared.metrics import prepare_multiprocess_dir
from ..shared.models import UNSET, PollingConfig, _Unset
from ..supervisor.supervisor import WAIT_FOR_DATABASE_SECONDS_DEFAULT, Supervisor
from ..worker.event_loop import EVENT_LOOPS, resolve
from ..worker.process import WorkerSpec, worker_main
from .common import database_option, fail, run
from .dashboard import check_serving
from .dashboard import serve as serve_dashboard

log = logging.getLogger("pg_scheduler.cli")

WORKERS_DEFAULT = 2
DASHBOARD_STATEMENT_TIMEOUT = 2.0


def _seconds(knob: str, text: str) -> click.Option:
    """The option of a knob in seconds: ``--lease-seconds`` and ``PG_SCHEDULER_LEASE_SECONDS``
    for ``lease_seconds``, with the knob's default from ``KNOB_DEFAULTS``."""
    default = KNOB_DEFAULTS[knob]  # type: ignore[literal-required]
    return click.Option(
        [f"--{knob.replace('_', '-')}", knob],
        type=click.FloatRange(min=0, min_open=True),
        default=default,
        envvar=f"PG_SCHEDULER_{knob.upper()}",
        show_envvar=True,
        show_default=default is not None,
        metavar="SECONDS",
        help=text,
    )


@click.command("run")
@click.argument("app", envvar="PG_SCHEDULER_APP", metavar="APP")
@database_option(
    embedded=False,
    help_suffix=" Unset: the embedded PostgreSQL of ./.pg-scheduler/pgdata, started (or joined "
    "if it runs) for the whole run (needs the 'embedded' extra).",
)
@click.option(
    "--leader-database-url",
    "leader_database_url",
    metavar="DSN",
    default=None,
    envvar="PG_SCHEDULER_LEADER_DATABASE_URL",
    show_envvar=True,
    help="DSN for the sessions that must keep one server connection: the leader's "
    "advisory-lock session and each worker's LISTEN and heartbeat sessions. Point "
    "it at PostgreSQL itself when --database-url goes through PgBouncer (these "
    "sessions set keepalive and timeout parameters that PgBouncer does not pass "
    "on).  [default: --database-url]",
)
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=WORKERS_DEFAULT,
    envvar="PG_SCHEDULER_WORKERS",
    show_envvar=True,
    show_default=True,
    help="Worker processes in this pod (set it to the pod's CPU limit).",
)
@click.option(
    "--queues",
    "-q",
    metavar="NAME[,NAME...]",
    default=None,
    envvar="PG_SCHEDULER_QUEUES",
    show_envvar=True,
    help="Claim only jobs of these queues (comma-separated, e.g. emails,reports). The pod "
    "that leads writes the periodic windows of every queue that some pod claims.  "
    "[default: every queue]",
)
@click.option(
    "--max-concurrent-jobs",
    "-c",
    type=click.IntRange(min=1),
    default=None,
    envvar="MAX_CONCURRENT_JOBS",
    show_envvar=True,
    help=f"Jobs each worker process runs at once.  [default: {KNOB_DEFAULTS['max_concurrent_jobs']}]",
)
@click.option(
    "--misfire-grace-time",
    type=str,
    default=None,
    envvar="MISFIRE_GRACE_TIME",
    show_envvar=True,
    metavar="SECONDS|none",
    help="How late a job may start before it ends 'expired'; 'none' never expires. "
    f"[default: {KNOB_DEFAULTS['misfire_grace_time']:g}]",
)
@click.option(
    "--vacuum/--no-vacuum",
    default=None,
    envvar="VACUUM_ENABLED",
    show_envvar=True,
    help="Delete old finished jobs (on the leader).  "
    f"[default: {'on' if KNOB_DEFAULTS['vacuum_enabled'] else 'off'}]",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    default=KNOB_DEFAULTS["shutdown_timeout_seconds"],
    envvar="PG_SCHEDULER_SHUTDOWN_TIMEOUT",
    show_envvar=True,
    show_default=True,
    help="On SIGTERM, how long running jobs may finish before their leases are "
    "handed back. Keep terminationGracePeriodSeconds above it plus 10 s.",
)
@click.option(
    "--result-max-bytes",
    type=click.IntRange(min=1),
    default=RESULT_MAX_BYTES_DEFAULT,
    envvar="PG_SCHEDULER_RESULT_MAX_BYTES",
    show_envvar=True,
    show_default=True,
    metavar="N",
    help="Largest return value a job may store, as bytes of JSON; a larger one fails the attempt.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=9464,
    envvar="PG_SCHEDULER_METRICS_PORT",
    show_envvar=True,
    show_default=True,
    help="Port of /metrics, /healthz and /readyz for this pod; 0 turns them off.",
)
@click.option(
    "--metrics-host",
    default=None,
    envvar="PG_SCHEDULER_METRICS_HOST",
    show_envvar=True,
    help="Address those endpoints listen on.  [default: every address, IPv4 and IPv6]",
)
@click.option(
    "--metrics-dir",
    type=click.Path(file_okay=False),
    default=None,
    envvar="PG_SCHEDULER_METRICS_DIR",
    show_envvar=True,
    help="Folder where every process of the pod writes its samples (its *.db files "
    "are deleted at start; give pg-scheduler a folder of its own). Exported to "
    "the workers as PROMETHEUS_MULTIPROC_DIR.  [default: a new temporary folder, "
    "removed at exit]",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    envvar="PG_SCHEDULER_LOG_LEVEL",
    show_envvar=True,
    show_default=True,
)
@click.option(
    "--wait-for-database",
    type=click.FloatRange(min=0),
    default=WAIT_FOR_DATABASE_SECONDS_DEFAULT,
    metavar="SECONDS",
    envvar="PG_SCHEDULER_WAIT_FOR_DATABASE",
    show_envvar=True,
    show_default=True,
    help="How long to wait at start for an unreachable database before giving up.",
)
@click.option(
    "--event-loop",
    type=click.Choice(EVENT_LOOPS),
    default="auto",
    envvar="PG_SCHEDULER_EVENT_LOOP",
    show_envvar=True,
    show_default=True,
    help="The worker processes' event loop: auto is uvloop where installed (the "
    "default on Linux and macOS), else asyncio.",
)
@click.option(
    "--dashboard-port",
    type=click.IntRange(1, 65535),
    default=None,
    envvar="PG_SCHEDULER_DASHBOARD_PORT",
    show_envvar=True,
    help="Also serve the web dashboard on this port, in the supervisor's process (needs the "
    "'dashboard' extra; same rules as `pg-scheduler dashboard`).  [default: not served]",
)
@click.option(
    "--dashboard-host",
    default="127.0.0.1",
    show_default=True,
    envvar="PG_SCHEDULER_DASHBOARD_HOST",
    show_envvar=True,
    help="Address of the dashboard. Any but loopback needs PG_SCHEDULER_DASHBOARD_USER and "
    "PG_SCHEDULER_DASHBOARD_PASSWORD.",
)
@click.option(
    "--dashboard-read-only",
    is_flag=True,
    envvar="PG_SCHEDULER_DASHBOARD_READ_ONLY",
    show_envvar=True,
    help="Show the dashboard without its actions, and refuse every POST.",
)
def run_command(
    app: str,
    database_url: str | None,
    leader_database_url: str | None,
    workers: int,
    queues: str | None,
    max_concurrent_jobs: int | None,
    misfire_grace_time: str | None,
    vacuum: bool | None,
    shutdown_timeout: float,
    result_max_bytes: int,
    log_level: str,
    metrics_port: int,
    metrics_host: str | None,
    metrics_dir: str | None,
    wait_for_database: float,
    event_loop: str,
    lease_seconds: float,
    heartbeat_seconds: float | None,
    leader_ttl_seconds: float,
    poll_interval_seconds: float | None,
    retry_delay_seconds: float,
    retry_max_delay_seconds: float,
    dashboard_port: int | None,
    dashboard_host: str,
    dashboard_read_only: bool,
) -> None:
    """Run the supervisor of this pod and its worker processes.

    APP is the module (myapp.tasks) or file (path/tasks.py) whose @job and @periodic
    definitions register the tasks; every worker process imports it. The supervisor holds or
    waits for leadership (the leader writes periodic windows, rescues orphaned jobs and
    vacuums), restarts workers that die, and never runs a job itself.

    SIGTERM or SIGINT: stop claiming, let jobs finish for --shutdown-timeout, hand the rest
    back, resign leadership, exit 0. A second signal hands jobs back at once.
    """
    if queues is None and "PG_SCHEDULER_QUEUES" in os.environ:
        queues = os.environ["PG_SCHEDULER_QUEUES"]  # click takes an empty variable for unset
    if queues is not None and not queues.strip():
        fail(
            "--queues (PG_SCHEDULER_QUEUES) is empty: name at least one queue, "
            "or unset it to claim every queue"
        )
    port_is_default = click.get_current_context().get_parameter_source("metrics_port") in (
        click.core.ParameterSource.DEFAULT,
        None,
    )
    dashboard_auth = check_serving(dashboard_host) if dashboard_port is not None else None
    level = parse_level(log_level)
    if logging.getLogger("pg_scheduler").level == logging.DEBUG:  # pg-scheduler --debug run ...
        level = logging.DEBUG
    configure_logging(level, "supervisor")
    try:
        config = SchedulerConfig.build(
            max_concurrent_jobs=max_concurrent_jobs,
            misfire_grace_time=_grace(misfire_grace_time),
            vacuum_enabled=vacuum,
            lease_seconds=lease_seconds,
            heartbeat_seconds=heartbeat_seconds,
            poll_interval_seconds=poll_interval_seconds,
            retry_delay_seconds=retry_delay_seconds,
            retry_max_delay_seconds=retry_max_delay_seconds,
            shutdown_timeout_seconds=shutdown_timeout,
            leader_ttl_seconds=leader_ttl_seconds,
            queues=queues,
            result_max_bytes=result_max_bytes,
        )
    except ConfigurationError as exc:
        fail(str(exc))
    try:
        loop_kind = resolve(event_loop)
    except ValueError as exc:
        fail(str(exc))
    log.info("worker processes run on the %s event loop", loop_kind)
    if config.queues is None:
        log.info("worker processes claim jobs of every queue")
    else:
        log.info("worker processes claim jobs of the queues %s only", ", ".join(config.queues))
    # Before the APP or anything else imports prometheus_client: every process of the pod writes
    # its samples to this folder, and the supervisor's /metrics sums them.
    own_dir = metrics_dir is None
    folder = prepare_multiprocess_dir(metrics_dir or tempfile.mkdtemp(prefix="pg-scheduler-metrics-"))

    async def supervise(dsn: str) -> int:
        def spec_for(slot: int, worker_id: str, supervisor_id: str) -> WorkerSpec:
            return WorkerSpec(
                app=app,
                dsn=dsn,
                worker_id=worker_id,
                supervisor_id=supervisor_id,
                slot=slot,
                config=config,
                log_level=level,
                session_dsn=leader_database_url,
                event_loop=loop_kind,
            )

        supervisor = Supervisor(
            dsn=dsn,
            workers=workers,
            config=config,
            worker_target=worker_main,
            spec_for=spec_for,
            wait_for_database_seconds=wait_for_database,
            metrics_host=metrics_host,
            metrics_port=metrics_port or None,
            metrics_port_is_default=port_is_default,
            session_dsn=leader_database_url,
        )
        if dashboard_port is None:
            return await supervisor.run()
        stop = asyncio.Event()
        dashboard = asyncio.create_task(serve_beside(dsn, stop))
        try:
            return await supervisor.run()
        finally:
            stop.set()
            await dashboard

    async def serve_beside(dsn: str, stop: asyncio.Event) -> None:
        """The dashboard in this process until the supervisor is done. A dashboard that cannot
        serve (its port taken, say) is logged, and the pod runs on without it."""
        assert dashboard_port is not None
        try:
            await serve_dashboard(
                dsn,
                dashboard_host,
                dashboard_port,
                read_only=dashboard_read_only,
                statement_timeout=DASHBOARD_STATEMENT_TIMEOUT,
                auth=dashboard_auth,
                stop=stop,
            )
        except (Exception, SystemExit) as exc:  # uvicorn exits on a port it cannot bind
            log.error("the dashboard stopped: %s", type(exc).__name__ if isinstance(exc, SystemExit) else exc)

    async def main() -> int:
        if database_url:
            return await supervise(database_url)
        # No DSN anywhere (the option reads DATABASE_URL): the embedded server, said loudly.
        async with database_url_or_embedded(echo=lambda line: log.warning("%s", line)) as url:
            return await supervise(url)

    try:
        load_app(app)
        code = run("run", database_url, main)
    except AppLoadError as exc:
        fail(str(exc))
    finally:
        if own_dir:
            shutil.rmtree(folder, ignore_errors=True)
    raise SystemExit(code)


def _grace(value: str | None) -> float | None | _Unset:
    if value is None:
        return UNSET
    if value.strip().lower() in ("none", "null", ""):
        return None
    try:
        return float(value)
    except ValueError:
        fail(f"--misfire-grace-time must be a number of seconds or 'none', got {value!r}")


for _option in (
    _seconds("lease_seconds", "A running job's lease; a job whose worker vanished runs again after it."),
    _seconds("heartbeat_seconds", "Lease renewal period.  [default: lease / 3]"),
    _seconds("leader_ttl_seconds", "How soon a frozen or cut-off leader loses leadership."),
    _seconds(
        "poll_interval_seconds",
        f"Fallback poll when no notification arrives.  [default: {PollingConfig().max_interval:g}]",
    ),
    _seconds("retry_delay_seconds", "First retry delay of a failed job; doubles each retry."),
    _seconds("retry_max_delay_seconds", "Cap of the retry delay."),
):
    run_command.params.append(_option)
