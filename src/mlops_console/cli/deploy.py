"""mlops deploy | deployments ..."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from mlops_console.cli.output import (
    Output,
    emit_json,
    json_option,
    kv,
    num,
    output_options,
    pass_workspace,
    table,
    when,
)

if TYPE_CHECKING:
    from mlops_console.deploy.records import Deployment, DeploymentStatus
    from mlops_console.workspace import Workspace


@click.command("deploy")
@click.argument("ref")
@click.option(
    "-t",
    "--target",
    help="A deploy target (`mlops plugins list`; default: the deployment's, else local).",
)
@click.option("--name", help="Deployment name (default: the model's name).")
@click.option("--port", type=int, help="Port (default: the first free one from [serving].port).")
@click.option("--host", help="Address to bind (default: [serving].host, loopback).")
@click.option(
    "--strategy", type=click.Choice(["replace", "canary"]), default="replace", show_default=True
)
@click.option("--canary-percent", type=float, default=10.0, show_default=True)
@click.option("--runtime", type=click.Choice(["onnx", "sklearn"]))
@click.option(
    "-o",
    "--option",
    "option_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A setting of the target, kept with the deployment (e.g. -o group=plant-a for "
    "--target fleet); as a pipeline's [deploy] options.",
)
@click.option(
    "--address",
    metavar="URL",
    help="Where a remote target is reached (e.g. --target ray --address "
    "http://127.0.0.1:8265); the same as -o address=URL.",
)
@click.option(
    "--render",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Write the target's manifests to DIR (e.g. --target kubernetes); the same as "
    "-o render=DIR.",
)
@output_options
@pass_workspace
def deploy(
    ws: Workspace,
    ref: str,
    target: str | None,
    name: str | None,
    port: int | None,
    host: str | None,
    strategy: str,
    canary_percent: float,
    runtime: str | None,
    option_pairs: tuple[str, ...],
    address: str | None,
    render: str | None,
) -> Output:
    """Deploy MODEL[@alias|/version]: start it, hot-swap it in, or start a canary."""
    options: dict[str, Any] = {}
    for pair in option_pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise click.UsageError(f"--option {pair!r} is not KEY=VALUE, e.g. -o group=plant-a.")
        options[key.strip()] = _option_value(value.strip())
    if address:
        options["address"] = address
    if render:
        from pathlib import Path

        options["render"] = str(Path(render).resolve())
    rec = ws.deployments.deploy(
        ref,
        target=target,
        name=name,
        port=port,
        host=host,
        strategy=strategy,
        canary_percent=canary_percent,
        runtime=runtime,
        options=options or None,
    )
    return Output(rec.to_dict(), lambda: _report_deployed(rec))


def _option_value(text: str) -> Any:
    """A TOML value when it reads as one (true, 3, 0.5, "x", [1, 2]), else the text."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _report_deployed(rec: Deployment) -> None:
    canary = (
        f"; canary v{rec.canary_version} at {num(rec.canary_percent)}%"
        if rec.canary_version
        else ""
    )
    click.echo(
        f"{rec.name}: {rec.model} v{rec.version} serving at {rec.endpoint} ({rec.target}){canary}."
    )


@click.group()
def deployments() -> None:
    """Deployments: status, logs, canary promote/rollback, stop, delete."""


@deployments.command("list")
@output_options
@pass_workspace
def list_(ws: Workspace) -> Output:
    """List deployments."""
    found = ws.deployments.list()
    return Output(
        {"deployments": [d.to_dict() for d in found]},
        lambda: table(
            ["name", "target", "model", "version", "canary", "status", "endpoint", "updated"],
            [
                (
                    d.name,
                    d.target,
                    d.model,
                    d.version,
                    f"v{d.canary_version} {num(d.canary_percent)}%" if d.canary_version else "-",
                    d.status,
                    d.endpoint,
                    when(d.updated_at),
                )
                for d in found
            ],
            empty="No deployments. `mlops deploy MODEL@champion` starts one.",
        ),
    )


@deployments.command("status")
@click.argument("name")
@output_options
@pass_workspace
def status(ws: Workspace, name: str) -> Output:
    """Live status: what serves, requests, errors, latency of primary and canary."""
    st = ws.deployments.status(name)
    return Output(st.to_dict(), lambda: _show_status(st))


def _show_status(st: DeploymentStatus) -> None:
    stats = st.stats or {}
    p, c = stats.get("primary_stats", {}), stats.get("canary_stats", {})
    kv(
        [
            ("deployment", st.name),
            ("target", st.target),
            ("status", st.live_status),
            ("endpoint", st.endpoint),
            ("serving", f"{st.model} v{st.version}"),
            (
                "canary",
                f"v{st.canary_version} at {num(st.canary_percent)}%" if st.canary_version else "-",
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
@pass_workspace
def logs(ws: Workspace, name: str, tail: int) -> None:
    """The server's log."""
    click.echo(ws.deployments.logs(name, tail))


@deployments.command("history")
@click.argument("name")
@output_options
@pass_workspace
def history(ws: Workspace, name: str) -> Output:
    """Every change: create, update, canary, promote, rollback, stop, failed deploys."""
    events = ws.deployments.history(name)
    return Output(
        {"deployment": name, "history": [e.to_dict() for e in events]},
        lambda: table(
            ["when", "action", "from", "to", "detail"],
            [
                (when(e.at), e.action, e.from_version or "-", e.to_version or "-", e.detail[:80])
                for e in events
            ],
        ),
    )


@deployments.command("promote")
@click.argument("name")
@click.option("-r", "--reason", default="")
@pass_workspace
def promote(ws: Workspace, name: str, reason: str) -> None:
    """Make the canary the primary version."""
    rec = ws.deployments.promote(name, reason)
    click.echo(f"{name}: now serving v{rec.version}.")


@deployments.command("rollback")
@click.argument("name")
@click.option("-r", "--reason", default="")
@pass_workspace
def rollback(ws: Workspace, name: str, reason: str) -> None:
    """Drop the canary, or go back to the previously served version."""
    rec = ws.deployments.rollback(name, reason)
    click.echo(f"{name}: serving v{rec.version}.")


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
@json_option
@pass_workspace
def judge(
    ws: Workspace,
    name: str,
    max_error_rate: float,
    max_p99_ms: float,
    min_requests: int,
    watch: float,
    as_json: bool,
) -> None:
    """Promote or roll back the canary by its error rate and p99 latency."""
    import time

    deadline = time.time() + watch
    while True:
        v = ws.deployments.judge_canary(name, max_error_rate, max_p99_ms, min_requests)
        if v.decision != "wait" or time.time() >= deadline:
            break
        if not as_json:  # progress goes to stderr, and not at all with --json
            click.echo(f"  .. waiting: {v.requests}/{min_requests} canary requests", err=True)
        time.sleep(min(5.0, max(0.5, watch / 20)))
    if as_json:
        emit_json(v.to_dict())
        return
    click.echo(
        f"{name}: {v.decision} (canary: {v.requests} requests, {v.errors} errors, "
        f"p99 {num(v.p99_ms)} ms)"
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
@pass_workspace
def export(ws: Workspace, name: str, output: str) -> None:
    """Write the deployment's image as a tar, for sites without a registry."""
    from pathlib import Path

    path = ws.deployments.export(name, Path(output))
    base = ws.deployments.get(name).config.get("base_image")
    click.echo(
        f"Wrote {path} ({path.stat().st_size / 1e6:.0f} MB"
        + (f", built on {base}" if base else "")
        + f"). Load it with: docker load -i {path.name}"
    )


@deployments.command("stop")
@click.argument("name")
@pass_workspace
def stop(ws: Workspace, name: str) -> None:
    """Stop a deployment."""
    ws.deployments.stop(name)
    click.echo(f"{name}: stopped.")


@deployments.command("delete")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_workspace
def delete(ws: Workspace, name: str, yes: bool) -> None:
    """Stop a deployment and remove its folder and prediction logs (its history stays)."""
    rec = ws.deployments.get(name)
    if not yes and not click.confirm(
        f"Delete {name} ({rec.model} v{rec.version} on {rec.target}, "
        f"{rec.status}): stop it and remove its bundles and prediction logs?",
        default=False,
    ):
        raise click.exceptions.Exit(1)
    ws.deployments.delete(name)
    click.echo(f"{name}: deleted; `mlops deployments history {name}` still shows its history.")


COMMANDS: list[click.Command] = [deploy, deployments]
