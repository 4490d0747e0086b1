"""mlops daemon | up | down | status, mlops jobs ..., mlops schedules ..."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from mlops_console.cli.output import (
    Output,
    duration,
    kv,
    open_workspace,
    output_options,
    pass_workspace,
    table,
    when,
    workspace_root,
)

if TYPE_CHECKING:
    from mlops_console.automation.client import DaemonClient
    from mlops_console.automation.jobs import Job
    from mlops_console.workspace import Workspace


def _client(ws: Workspace) -> DaemonClient:
    from mlops_console.automation.client import DaemonClient

    return DaemonClient(ws)


@click.command("daemon")
@click.option("--concurrency", type=int, default=1, show_default=True, help="Chains run at once.")
@click.option(
    "--job-timeout", type=float, default=3600, show_default=True, help="Seconds per chain."
)
@click.option(
    "--settle",
    type=float,
    default=2.0,
    show_default=True,
    help="Seconds a new file must stay unchanged before it triggers.",
)
@click.pass_context
def daemon(ctx: click.Context, concurrency: int, job_timeout: float, settle: float) -> None:
    """Run the automation daemon in the foreground (schedules, watchers, job queue)."""
    from mlops_console.automation import lifecycle

    ws = open_workspace(ctx)
    click.echo(
        f"mlops daemon for {ws.root} (pid {os.getpid()}); control socket "
        f"{lifecycle.paths(ws).socket}",
        err=True,
    )
    lifecycle.run(ws, concurrency=concurrency, job_timeout=job_timeout, settle=settle)


@click.command("up")
@click.option("--settle", type=float, default=2.0, show_default=True)
@pass_workspace
def up(ws: Workspace, settle: float) -> None:
    """Start a background daemon for this workspace."""
    from mlops_console.automation import lifecycle

    st = lifecycle.start(ws, settle=settle)
    if not st.launched:
        click.echo(f"A daemon already runs (pid {st.pid}).")
        return
    click.echo(f"Daemon started (pid {st.pid}); log in {st.log}.")


@click.command("down")
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop the background daemon (running chains are stopped and marked)."""
    from mlops_console.automation import lifecycle

    # not opening the workspace: a daemon can be stopped while mlops.toml is broken
    st = lifecycle.stop(workspace_root(ctx))
    if not st.running:
        click.echo("No daemon runs for this workspace.")
        return
    click.echo(f"Daemon (pid {st.pid}) stopped.")


@click.command("status")
@output_options
@click.pass_context
def status(ctx: click.Context) -> Output:
    """Whether a daemon runs, and what it is doing."""
    from mlops_console.automation import lifecycle

    st = lifecycle.status(workspace_root(ctx))  # works while mlops.toml is broken too

    def human() -> None:
        if not st.running:
            click.echo("No daemon runs for this workspace. `mlops up` starts one.")
            return
        kv(
            [
                ("daemon", f"running, pid {st.pid}, up {duration(st.uptime_s)}"),
                ("workspace", st.workspace),
                ("running chains", ", ".join(map(str, st.chains)) or "-"),
                ("queued", st.queued),
                ("schedules", st.schedules),
            ]
        )

    return Output(st.to_dict(), human)


@click.group()
def jobs() -> None:
    """The job queue and history (works without a daemon too)."""


@jobs.command("list")
@click.option(
    "--status", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"])
)
@click.option("-p", "--pipeline")
@click.option("--steps", is_flag=True, help="Also list the steps of each chain.")
@click.option("-n", "--limit", default=30, show_default=True)
@output_options
@pass_workspace
def jobs_list(
    ws: Workspace, status: str | None, pipeline: str | None, steps: bool, limit: int
) -> Output:
    """Chains (and their steps), newest first."""
    found = [
        j
        for j in ws.jobs.list(status=status, pipeline=pipeline, limit=limit * 8)
        # top-level jobs (chains and scheduled score jobs); steps only when asked
        if steps or j.chain_id is None
    ][:limit]
    return Output(
        {"jobs": [j.to_dict() for j in found]},
        lambda: table(
            [
                "job",
                "kind",
                "pipeline",
                "status",
                "outcome",
                "trigger",
                "try",
                "created",
                "took",
                "detail",
            ],
            [
                (
                    j.id,
                    j.kind if j.chain_id is None else f"  {j.kind}",
                    j.pipeline,
                    j.status,
                    j.outcome or "-",
                    j.trigger,
                    f"{j.attempt}/{j.max_attempts}",
                    when(j.created_at),
                    duration(j.seconds),
                    j.detail[:60],
                )
                for j in found
            ],
            empty="No jobs yet. `mlops jobs submit PIPELINE` or a schedule creates some.",
        ),
    )


@jobs.command("show")
@click.argument("job_id", type=int)
@output_options
@pass_workspace
def jobs_show(ws: Workspace, job_id: int) -> Output:
    """A job with its steps, timings and outcomes."""
    j = ws.jobs.get(job_id)
    steps = sorted(ws.jobs.list(chain_id=job_id, limit=100), key=lambda s: s.id)
    return Output(
        {**j.to_dict(), "steps": [s.to_dict() for s in steps]}, lambda: _show_job(j, steps)
    )


def _show_job(j: Job, steps: list[Job]) -> None:
    kv(
        [
            ("job", j.id),
            ("pipeline", j.pipeline),
            ("status", j.status),
            ("outcome", j.outcome or "-"),
            ("trigger", j.trigger),
            ("attempt", f"{j.attempt}/{j.max_attempts}"),
            ("created", when(j.created_at)),
            ("took", duration(j.seconds)),
            ("detail", j.detail or "-"),
            ("log", j.log_path),
        ]
    )
    if steps:
        click.echo("")
        table(
            ["step", "status", "outcome", "took", "detail"],
            [
                (
                    s.kind,
                    s.status,
                    s.outcome or "-",
                    duration(s.seconds),
                    s.detail[:80],
                )
                for s in steps
            ],
        )


@jobs.command("logs")
@click.argument("job_id", type=int)
@click.option("-n", "--tail", default=200, show_default=True)
@pass_workspace
def jobs_logs(ws: Workspace, job_id: int, tail: int) -> None:
    """The log of a chain and its steps."""
    click.echo(ws.jobs.logs(job_id, tail))


@jobs.command("cancel")
@click.argument("job_id", type=int)
@pass_workspace
def jobs_cancel(ws: Workspace, job_id: int) -> None:
    """Cancel a queued or running chain."""
    from mlops_console.automation.jobs import JobStatus

    j = ws.jobs.cancel(job_id)
    click.echo(
        f"Job {job_id}: {'cancelled' if j.status is JobStatus.CANCELLED else 'cancel requested'}."
    )


@jobs.command("submit")
@click.argument("pipeline")
@output_options
@pass_workspace
def jobs_submit(ws: Workspace, pipeline: str) -> Output:
    """Queue a chain for PIPELINE (the daemon runs it)."""
    ws.pipelines.path(pipeline)
    client = _client(ws)
    j = (
        client.call("POST", "/jobs", json={"pipeline": pipeline})
        if client.available()
        else ws.jobs.submit("chain", pipeline, trigger="manual").to_dict()
    )
    running = client.available()
    return Output(
        j,
        lambda: click.echo(
            f"Queued job {j['id']} for {pipeline}."
            + (
                ""
                if running
                else " No daemon runs: `mlops up` starts one, or `mlops run` trains now in this process."
            )
        ),
    )


@click.group()
def schedules() -> None:
    """Schedules of the running daemon (from each pipeline's [schedule])."""


@schedules.command("list")
@output_options
@pass_workspace
def schedules_list(ws: Workspace) -> Output:
    """Every schedule with its next run."""
    found = _client(ws).call("GET", "/schedules")["schedules"]
    return Output(
        {"schedules": found},
        lambda: table(
            ["schedule", "pipeline", "trigger", "next run", "paused"],
            [
                (
                    s["id"],
                    s["pipeline"],
                    s["trigger"],
                    when(s["next_run"]),
                    "yes" if s["paused"] else "-",
                )
                for s in found
            ],
            empty="No schedules: add [schedule] cron or interval to a pipeline.",
        ),
    )


def _schedule_action(action: str) -> click.Command:
    @click.argument("schedule_id")
    @pass_workspace
    def cmd(ws: Workspace, schedule_id: str) -> None:
        out = _client(ws).call("POST", f"/schedules/{schedule_id}/{action}")
        if action == "trigger":
            click.echo(f"Queued job {out['job']['id']} for {out['job']['pipeline']}.")
        else:
            click.echo(f"{schedule_id}: {action}d.")

    cmd.__doc__ = {
        "pause": "Pause a schedule.",
        "resume": "Resume a schedule.",
        "trigger": "Run a schedule's pipeline now.",
    }[action]
    return schedules.command(action)(cmd)


for _action in ("pause", "resume", "trigger"):
    _schedule_action(_action)

COMMANDS: list[click.Command] = [daemon, up, down, status, jobs, schedules]
