"""mlops serve MODEL[@alias|/version]."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mlops_console.cli.output import Output, open_workspace, output_options, pass_workspace

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


def _secret(path: Path) -> str:
    """A token kept in a 0600 file, made on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


@click.command("serve")
@click.argument("ref")
@click.option("--host", default=None, help="Address to bind (default: [serving].host, loopback).")
@click.option("--port", type=int, default=None, help="Port (default: [serving].port).")
@click.option(
    "--runtime", type=click.Choice(["onnx", "sklearn"]), help="Default: ONNX when present."
)
@click.option("--no-log", is_flag=True, help="Do not write the prediction log.")
@click.pass_context
def serve(
    ctx: click.Context,
    ref: str,
    host: str | None,
    port: int | None,
    runtime: str | None,
    no_log: bool,
) -> None:
    """Serve a model version over REST (MLflow /invocations and Open Inference v2)."""
    from mlops_console.registry.bundle import export_bundle
    from mlops_console.serving.app import run

    with open_workspace(ctx) as ws:
        mv = ws.models.resolve(ref)
        folder = (
            ws.state / "serving" / "bundles" / f"{mv.name}-v{mv.version}-{mv.artifact_hash[:12]}"
        )
        if not (folder / "bundle.json").exists():
            export_bundle(ws.artifacts, mv.artifact_hash, folder)
        log_dir = None if no_log else ws.state / "logs" / "predictions" / mv.name
        token_file = ws.state / "serving" / f"{mv.name}.admin-token"
        token = _secret(token_file)
        # [serving] settings reach the server as its environment (a set variable wins)
        for key, value in ws.config.serving.server_env().items():
            os.environ.setdefault(key, value)
        if ws.config.serving.feedback_token and "MLOPS_FEEDBACK_TOKEN" not in os.environ:
            fb_file = ws.state / "serving" / f"{mv.name}.feedback-token"
            os.environ["MLOPS_FEEDBACK_TOKEN"] = _secret(fb_file)
        host = host or ws.config.serving.host
        port = port or ws.config.serving.port
    _require_free(host, port)
    click.echo(
        f"Serving {mv.ref} on http://{host}:{port} (POST /invocations, /v2/models/{mv.name}/infer; "
        f"GET /metrics). Admin token in {token_file}. Ctrl-C stops.",
        err=True,
    )
    run(
        str(folder),
        host=host,
        port=port,
        log_dir=str(log_dir) if log_dir else None,
        admin_token=token,
        runtime=runtime,
    )


def _require_free(host: str, port: int) -> None:
    """Refuse a port another program holds before saying anything is served on it."""
    import socket

    from mlops_console.errors import MlopsError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise MlopsError(
                f"Cannot serve on {host}:{port}: {exc.strerror}. Pick another with --port "
                "(or stop what holds it: `mlops deployments list` shows the deployments' ports)."
            ) from None


@click.command("predict")
@click.argument("ref")
@click.option(
    "-i", "--input", "source", required=True, help="A dataset name or a CSV/Parquet file."
)
@click.option(
    "-o",
    "--output",
    required=True,
    help="FILE.parquet, FILE.csv, sqlite:PATH#TABLE or duckdb:PATH#TABLE.",
)
@output_options
@pass_workspace
def predict(ws: Workspace, ref: str, source: str, output: str) -> Output:
    """Score a dataset version or a file with a model version (batch), recorded as a run."""
    from mlops_console.scoring import batch_score

    out = batch_score(ws, ref, source, output)
    return Output(
        out,
        lambda: click.echo(
            f"Scored {out['rows']} rows of {out['input']} with {out['model']} into "
            f"{out['output']} (run {out['run_id'][:8]})."
        ),
    )


COMMANDS: list[click.Command] = [serve, predict]
