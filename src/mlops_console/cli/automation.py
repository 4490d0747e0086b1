"""mlops daemon | up | down | status, mlops jobs ..., mlops schedules ..."""

from __future__ import annotations

import os

import click

from mlops_console.cli.output import duration, emit_json, kv, open_workspace, table, when


def _client(ws):
    from mlops_console.automation.client import DaemonClient

    return DaemonClient(ws)


def register(cli: click.Group) -> None:
    @cli.command("daemon")
    @click.option(
        "--concurrency", type=int, default=1, show_default=True, help="Chains run at once."
    )
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

    @cli.command("up")
    @click.option("--settle", type=float, default=2.0, show_default=True)
    @click.pass_context
    def up(ctx: click.Context, settle: float) -> None:
        """Start a background daemon for this workspace."""
        from mlops_console.automation import lifecycle

        st = lifecycle.start(open_workspace(ctx), settle=settle)
        if not st.launched:
            click.echo(f"A daemon already runs (pid {st.pid}).")
            return
        click.echo(f"Daemon started (pid {st.pid}); log in {st.log}.")

    @cli.command("down")
    @click.pass_context
    def down(ctx: click.Context) -> None:
        """Stop the background daemon (running chains are stopped and marked)."""
        from mlops_console.automation import lifecycle

        st = lifecycle.stop(open_workspace(ctx))
        if not st.running:
            click.echo("No daemon runs for this workspace.")
            return
        click.echo(f"Daemon (pid {st.pid}) stopped.")

    @cli.command("status")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def status(ctx: click.Context, as_json: bool) -> None:
        """Whether a daemon runs, and what it is doing."""
        from mlops_console.automation import lifecycle

        st = lifecycle.status(open_workspace(ctx))
        if as_json:
            emit_json(st.to_dict())
            return
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

    @click.group()
    def jobs() -> None:
        """The job queue and history (works without a daemon too)."""

    cli.add_command(jobs)

    @jobs.command("list")
    @click.option(
        "--status", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"])
    )
    @click.option("-p", "--pipeline")
    @click.option("--steps", is_flag=True, help="Also list the steps of each chain.")
    @click.option("-n", "--limit", default=30, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def jobs_list(ctx, status, pipeline, steps, limit, as_json) -> None:
        """Chains (and their steps), newest first."""
        with open_workspace(ctx) as ws:
            found = [
                j
                for j in ws.jobs.list(status=status, pipeline=pipeline, limit=limit * 8)
                # top-level jobs (chains and scheduled score jobs); steps only when asked
                if steps or j["chain_id"] is None
            ][:limit]
        if as_json:
            emit_json({"jobs": found})
            return
        table(
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
                    j["id"],
                    j["kind"] if j["chain_id"] is None else f"  {j['kind']}",
                    j["pipeline"],
                    j["status"],
                    j["outcome"] or "-",
                    j["trigger"],
                    f"{j['attempt']}/{j['max_attempts']}",
                    when(j["created_at"]),
                    duration(j.get("seconds")),
                    j["detail"][:60],
                )
                for j in found
            ],
            empty="No jobs yet. `mlops jobs submit PIPELINE` or a schedule creates some.",
        )

    @jobs.command("show")
    @click.argument("job_id", type=int)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def jobs_show(ctx, job_id, as_json) -> None:
        """A job with its steps, timings and outcomes."""
        with open_workspace(ctx) as ws:
            j = ws.jobs.get(job_id)
            j["steps"] = sorted(ws.jobs.list(chain_id=job_id, limit=100), key=lambda s: s["id"])
        if as_json:
            emit_json(j)
            return
        kv(
            [
                ("job", j["id"]),
                ("pipeline", j["pipeline"]),
                ("status", j["status"]),
                ("outcome", j["outcome"] or "-"),
                ("trigger", j["trigger"]),
                ("attempt", f"{j['attempt']}/{j['max_attempts']}"),
                ("created", when(j["created_at"])),
                ("took", duration(j.get("seconds"))),
                ("detail", j["detail"] or "-"),
                ("log", j["log_path"]),
            ]
        )
        if j["steps"]:
            click.echo("")
            table(
                ["step", "status", "outcome", "took", "detail"],
                [
                    (
                        s["kind"],
                        s["status"],
                        s["outcome"] or "-",
                        duration(s.get("seconds")),
                        s["detail"][:80],
                    )
                    for s in j["steps"]
                ],
            )

    @jobs.command("logs")
    @click.argument("job_id", type=int)
    @click.option("-n", "--tail", default=200, show_default=True)
    @click.pass_context
    def jobs_logs(ctx, job_id, tail) -> None:
        """The log of a chain and its steps."""
        with open_workspace(ctx) as ws:
            click.echo(ws.jobs.logs(job_id, tail))

    @jobs.command("cancel")
    @click.argument("job_id", type=int)
    @click.pass_context
    def jobs_cancel(ctx, job_id) -> None:
        """Cancel a queued or running chain."""
        with open_workspace(ctx) as ws:
            j = ws.jobs.cancel(job_id)
        click.echo(
            f"Job {job_id}: {'cancelled' if j['status'] == 'cancelled' else 'cancel requested'}."
        )

    @jobs.command("submit")
    @click.argument("pipeline")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def jobs_submit(ctx, pipeline, as_json) -> None:
        """Queue a chain for PIPELINE (the daemon runs it)."""
        with open_workspace(ctx) as ws:
            ws.pipelines.path(pipeline)
            client = _client(ws)
            j = (
                client.call("POST", "/jobs", json={"pipeline": pipeline})
                if client.available()
                else ws.jobs.submit("chain", pipeline, trigger="manual")
            )
            running = client.available()
        if as_json:
            emit_json(j)
            return
        click.echo(
            f"Queued job {j['id']} for {pipeline}."
            + (
                ""
                if running
                else " No daemon runs: `mlops up` starts one, or `mlops run` trains now in this process."
            )
        )

    @click.group()
    def schedules() -> None:
        """Schedules of the running daemon (from each pipeline's [schedule])."""

    cli.add_command(schedules)

    @schedules.command("list")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def schedules_list(ctx, as_json) -> None:
        """Every schedule with its next run."""
        with open_workspace(ctx) as ws:
            found = _client(ws).call("GET", "/schedules")["schedules"]
        if as_json:
            emit_json({"schedules": found})
            return
        table(
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
        )

    def _action(action):
        @click.argument("schedule_id")
        @click.pass_context
        def cmd(ctx, schedule_id) -> None:
            with open_workspace(ctx) as ws:
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
        return cmd

    for action in ("pause", "resume", "trigger"):
        schedules.command(action)(_action(action))
