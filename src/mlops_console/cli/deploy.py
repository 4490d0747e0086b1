"""mlops deploy | deployments ..."""

from __future__ import annotations

import click

from mlops_console.cli.output import emit_json, kv, num, open_workspace, table, when


def register(cli: click.Group) -> None:
    @cli.command("deploy")
    @click.argument("ref")
    @click.option(
        "-t",
        "--target",
        help="A deploy target (`mlops plugins list`; default: the deployment's, else local).",
    )
    @click.option("--name", help="Deployment name (default: the model's name).")
    @click.option(
        "--port", type=int, help="Port (default: the first free one from [serving].port)."
    )
    @click.option("--host", help="Address to bind (default: [serving].host, loopback).")
    @click.option(
        "--strategy", type=click.Choice(["replace", "canary"]), default="replace", show_default=True
    )
    @click.option("--canary-percent", type=float, default=10.0, show_default=True)
    @click.option("--runtime", type=click.Choice(["onnx", "sklearn"]))
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.pass_context
    def deploy(
        ctx, ref, target, name, port, host, strategy, canary_percent, runtime, as_json
    ) -> None:
        """Deploy MODEL[@alias|/version]: start it, hot-swap it in, or start a canary."""
        with open_workspace(ctx) as ws:
            rec = ws.deployments.deploy(
                ref,
                target=target,
                name=name,
                port=port,
                host=host,
                strategy=strategy,
                canary_percent=canary_percent,
                runtime=runtime,
            )
        if as_json:
            emit_json(rec)
            return
        canary = (
            f"; canary v{rec['canary_version']} at {num(rec['canary_percent'])}%"
            if rec["canary_version"]
            else ""
        )
        click.echo(
            f"{rec['name']}: {rec['model']} v{rec['version']} serving at {rec['endpoint']} "
            f"({rec['target']}){canary}."
        )

    @click.group()
    def deployments() -> None:
        """Deployments: status, logs, canary promote/rollback, stop, delete."""

    cli.add_command(deployments)

    @deployments.command("list")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def list_(ctx, as_json) -> None:
        """List deployments."""
        with open_workspace(ctx) as ws:
            found = ws.deployments.list()
        if as_json:
            emit_json({"deployments": found})
            return
        table(
            ["name", "target", "model", "version", "canary", "status", "endpoint", "updated"],
            [
                (
                    d["name"],
                    d["target"],
                    d["model"],
                    d["version"],
                    f"v{d['canary_version']} {num(d['canary_percent'])}%"
                    if d["canary_version"]
                    else "-",
                    d["status"],
                    d["endpoint"],
                    when(d["updated_at"]),
                )
                for d in found
            ],
            empty="No deployments. `mlops deploy MODEL@champion` starts one.",
        )

    @deployments.command("status")
    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def status(ctx, name, as_json) -> None:
        """Live status: what serves, requests, errors, latency of primary and canary."""
        with open_workspace(ctx) as ws:
            st = ws.deployments.status(name)
        if as_json:
            emit_json(st)
            return
        p, c = (
            (st.get("stats") or {}).get("primary_stats", {}),
            (st.get("stats") or {}).get("canary_stats", {}),
        )
        kv(
            [
                ("deployment", st["name"]),
                ("target", st["target"]),
                ("status", st["live"].get("status")),
                ("endpoint", st["endpoint"]),
                ("serving", f"{st['model']} v{st['version']}"),
                (
                    "canary",
                    f"v{st['canary_version']} at {num(st['canary_percent'])}%"
                    if st["canary_version"]
                    else "-",
                ),
                (
                    "primary",
                    f"{p.get('requests', 0)} requests, {p.get('errors', 0)} errors, p99 {num(p.get('p99_ms'))} ms",
                ),
                (
                    "canary stats",
                    f"{c.get('requests', 0)} requests, {c.get('errors', 0)} errors, p99 {num(c.get('p99_ms'))} ms",
                ),
            ]
        )

    @deployments.command("logs")
    @click.argument("name")
    @click.option("-n", "--tail", default=100, show_default=True)
    @click.pass_context
    def logs(ctx, name, tail) -> None:
        """The server's log."""
        with open_workspace(ctx) as ws:
            click.echo(ws.deployments.logs(name, tail))

    @deployments.command("history")
    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def history(ctx, name, as_json) -> None:
        """Every change: create, update, canary, promote, rollback, stop, failed deploys."""
        with open_workspace(ctx) as ws:
            events = ws.deployments.history(name)
        if as_json:
            emit_json({"deployment": name, "history": events})
            return
        table(
            ["when", "action", "from", "to", "detail"],
            [
                (
                    when(e["at"]),
                    e["action"],
                    e["from_version"] or "-",
                    e["to_version"] or "-",
                    e["detail"][:80],
                )
                for e in events
            ],
        )

    @deployments.command("promote")
    @click.argument("name")
    @click.option("-r", "--reason", default="")
    @click.pass_context
    def promote(ctx, name, reason) -> None:
        """Make the canary the primary version."""
        with open_workspace(ctx) as ws:
            rec = ws.deployments.promote(name, reason)
        click.echo(f"{name}: now serving v{rec['version']}.")

    @deployments.command("rollback")
    @click.argument("name")
    @click.option("-r", "--reason", default="")
    @click.pass_context
    def rollback(ctx, name, reason) -> None:
        """Drop the canary, or go back to the previously served version."""
        with open_workspace(ctx) as ws:
            rec = ws.deployments.rollback(name, reason)
        click.echo(f"{name}: serving v{rec['version']}.")

    @deployments.command("judge")
    @click.argument("name")
    @click.option("--max-error-rate", type=float, default=0.01, show_default=True)
    @click.option("--max-p99-ms", type=float, default=250.0, show_default=True)
    @click.option("--min-requests", type=int, default=50, show_default=True)
    @click.option(
        "--watch",
        type=float,
        default=0.0,
        help="Keep judging for up to this many seconds until it promotes or rolls back.",
    )
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def judge(ctx, name, max_error_rate, max_p99_ms, min_requests, watch, as_json) -> None:
        """Promote or roll back the canary by its error rate and p99 latency."""
        import time

        deadline = time.time() + watch
        with open_workspace(ctx) as ws:
            while True:
                v = ws.deployments.judge_canary(name, max_error_rate, max_p99_ms, min_requests)
                if v["decision"] != "wait" or time.time() >= deadline:
                    break
                if not as_json:
                    click.echo(
                        f"  .. waiting: {v['requests']}/{min_requests} canary requests", err=True
                    )
                time.sleep(min(5.0, max(0.5, watch / 20)))
        if as_json:
            emit_json(v)
            return
        click.echo(
            f"{name}: {v['decision']} (canary: {v['requests']} requests, {v['errors']} errors, "
            f"p99 {num(v['p99_ms'])} ms)"
        )

    @deployments.command("export")
    @click.argument("name")
    @click.option(
        "-o",
        "--output",
        required=True,
        type=click.Path(dir_okay=False),
        help="The tar file to write (docker load < FILE on the other side).",
    )
    @click.pass_context
    def export(ctx, name, output) -> None:
        """Write the deployment's image as a tar, for sites without a registry."""
        from pathlib import Path

        with open_workspace(ctx) as ws:
            path = ws.deployments.export(name, Path(output))
            base = ws.deployments.get(name)["config"].get("base_image")
        click.echo(
            f"Wrote {path} ({path.stat().st_size / 1e6:.0f} MB"
            + (f", built on {base}" if base else "")
            + f"). Load it with: docker load -i {path.name}"
        )

    @deployments.command("stop")
    @click.argument("name")
    @click.pass_context
    def stop(ctx, name) -> None:
        """Stop a deployment."""
        with open_workspace(ctx) as ws:
            ws.deployments.stop(name)
        click.echo(f"{name}: stopped.")

    @deployments.command("delete")
    @click.argument("name")
    @click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
    @click.pass_context
    def delete(ctx, name, yes) -> None:
        """Stop a deployment and remove its folder and prediction logs (its history stays)."""
        with open_workspace(ctx) as ws:
            rec = ws.deployments.get(name)
            if not yes and not click.confirm(
                f"Delete {name} ({rec['model']} v{rec['version']} on {rec['target']}, "
                f"{rec['status']}): stop it and remove its bundles and prediction logs?",
                default=False,
            ):
                raise click.exceptions.Exit(1)
            ws.deployments.delete(name)
        click.echo(f"{name}: deleted; `mlops deployments history {name}` still shows its history.")
