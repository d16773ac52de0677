"""``pg-scheduler status``: the cluster as the database sees it."""

from __future__ import annotations

import click

from ..shared.models import JobState
from .common import connect, database_option, require_schema, run, stale_seconds_option
from .inspection import ClusterStatus, ProcessInfo, cluster_status
from .output import seconds, table, to_json, utc


@click.command("status")
@database_option()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@stale_seconds_option("A process whose last heartbeat is older than this is counted as stale, not live.")
def status_command(database_url: str, as_json: bool, stale_seconds: float) -> None:
    """Show the cluster: leader, live processes, job counts, lag, queues, unrunnable tasks.

    Lists the leader, the live supervisors with their worker processes and the in-process
    Schedulers, job counts by state, how late the oldest due job is, each queue's pending, due
    and running jobs with the processes that claim from it, and the tasks of pending jobs that
    no live process can run (they wait until a process that registers the task, and claims
    their queue, starts).

    Reads only; exits 1 if the database cannot be reached or has no pg_scheduler schema.
    """

    async def read() -> ClusterStatus:
        conn = await connect(database_url)
        try:
            await require_schema(conn)
            return await cluster_status(conn, stale_seconds=stale_seconds)
        finally:
            await conn.close()

    status = run("read the status", database_url, read)
    click.echo(to_json(status.to_dict()) if as_json else render(status))


def render(status: ClusterStatus) -> str:
    """The status as text: leader, live processes, job counts, due lag, unrunnable tasks."""
    out: list[str] = []
    leader = status.leader
    if leader is None:
        out.append("leader: none (no session holds the leader lock)")
    else:
        kind = f"{leader.kind} " if leader.kind else ""
        out.append(
            f"leader: {kind}{leader.id} (host {leader.host}, pid {leader.pid}, "
            f"epoch {leader.epoch}, elected {utc(leader.elected_at)})"
        )
    out.append("")

    out.append(f"supervisors: {len(status.supervisors)} live")
    if status.supervisors:
        out.append(
            table(
                ["ID", "HOST", "PID", "LEADER", "WORKERS", "HEARTBEAT", "STARTED"],
                [
                    [
                        p.id,
                        p.host,
                        p.pid,
                        "*" if p.is_leader else "",
                        sum(1 for w in status.workers if w.supervisor_id == p.id),
                        seconds(p.heartbeat_age_seconds) + " ago",
                        p.started_at,
                    ]
                    for p in status.supervisors
                ],
                indent="  ",
            )
        )
    out.append(f"workers: {len(status.workers)} live")
    if status.workers:
        out.append(_processes(status.workers, supervisor=True))
    out.append(f"in-process schedulers: {len(status.schedulers)} live")
    if status.schedulers:
        out.append(_processes(status.schedulers, supervisor=False))
    if status.stale_processes:
        out.append(
            f"stale processes: {status.stale_processes} "
            f"(no heartbeat for more than {status.stale_seconds:g}s)"
        )
    out.append("")

    out.append("jobs:")
    counts = sorted(status.jobs.items(), key=_state_order)
    out.append(table(["STATE", "COUNT"], [[state, n] for state, n in counts], indent="  "))
    lag = status.oldest_due_lag_seconds
    out.append("oldest due job: " + ("none due" if lag is None else f"{lag:.1f}s past its time"))
    out.append("")

    if status.queues:
        out.append("queues:")
        out.append(
            table(
                ["QUEUE", "STATE", "LIMITS", "PENDING", "DUE", "RUNNING", "CLAIMED BY"],
                [
                    [
                        q.queue,
                        q.state,
                        q.limits.describe() if q.limits.limited else "-",
                        q.pending,
                        q.due,
                        q.running,
                        f"{q.claimed_by} process(es)",
                    ]
                    for q in status.queues
                ],
                indent="  ",
            )
        )
    else:
        out.append("queues: no unfinished jobs")
    if status.unaware_of_limits:
        out.append(
            f"warning: {len(status.unaware_of_limits)} live process(es) of an earlier version do not "
            f"enforce queue limits and may claim limited queues past them: "
            f"{', '.join(status.unaware_of_limits)} (upgrade them; docs/queues.md)"
        )
    out.append("")

    if status.unrunnable_tasks:
        out.append("tasks nobody can run (no live process registered them, or claims their queue):")
        out.append(
            table(
                ["TASK", "QUEUE", "PENDING", "OLDEST DUE"],
                [[t.task, t.queue, t.pending, t.oldest_execution_time] for t in status.unrunnable_tasks],
                indent="  ",
            )
        )
    else:
        out.append("tasks nobody can run: none")
    return "\n".join(out)


def _processes(processes: list[ProcessInfo], *, supervisor: bool) -> str:
    headers = [
        "ID",
        *(["SUPERVISOR"] if supervisor else []),
        "HOST",
        "PID",
        *([] if supervisor else ["LEADER"]),
        "HEARTBEAT",
        "TASKS",
        "QUEUES",
    ]
    rows = [
        [
            p.id,
            *([p.supervisor_id] if supervisor else []),
            p.host,
            p.pid,
            *([] if supervisor else ["*" if p.is_leader else ""]),
            seconds(p.heartbeat_age_seconds) + " ago",
            len(p.tasks),
            "-" if p.kind == "supervisor" else "all" if p.queues is None else ",".join(p.queues),
        ]
        for p in processes
    ]
    return table(headers, rows, indent="  ")


_STATES = [state.value for state in JobState]


def _state_order(item: tuple[str, int]) -> tuple[int, str]:
    state = item[0]
    return (_STATES.index(state) if state in _STATES else len(_STATES), state)
