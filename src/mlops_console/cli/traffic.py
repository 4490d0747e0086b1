"""mlops deployments traffic NAME: bounded replayed traffic against a deployment."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING

import click

from mlops_console.cli.deploy import deployments
from mlops_console.cli.output import emit_json, pass_workspace

if TYPE_CHECKING:
    from mlops_console.loadgen import TrafficReport
    from mlops_console.workspace import Workspace


class ProgressLine:
    """One line on stderr that is rewritten in a terminal (a new line every few seconds
    in a log, so the log stays short)."""

    def __init__(self, bounds: str, every: float = 5.0) -> None:
        self.bounds, self.every = bounds, every
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.drawn = False

    def __call__(self, report: TrafficReport) -> None:
        now = time.monotonic()
        if not self.tty and now - self.last < self.every:
            return
        self.last = now
        failed = report.failed_total
        line = (
            f"sent {report.sent}{self.bounds}  ok {report.ok}  failed {failed}  "
            f"{report.rps:.1f}/s  p99 "
            + ("-" if report.latency_p99_ms is None else f"{report.latency_p99_ms:.1f} ms")
        )
        if self.tty:
            click.echo(f"\r{line:<78}", nl=False, err=True)
            self.drawn = True
        else:
            click.echo(line, err=True)

    def done(self) -> None:
        if self.drawn:
            click.echo("", err=True)


@deployments.command("traffic")
@click.argument("name")
@click.option(
    "--dataset",
    "dataset_ref",
    metavar="D[@VERSION]",
    help="Replay rows of this dataset version (default: the data the served version was "
    "trained on).",
)
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False),
    help="Or replay the rows of a CSV or Parquet file.",
)
@click.option("-n", "--requests", type=int, help="Stop after this many requests.")
@click.option("-s", "--seconds", type=float, help="Stop after this many seconds.")
@click.option(
    "-r", "--rate", type=float, default=20.0, show_default=True, help="Requests/s at most."
)
@click.option("--batch", type=int, default=1, show_default=True, help="Rows per request.")
@click.option(
    "--protocol",
    type=click.Choice(["mlflow", "v2"]),
    default="mlflow",
    show_default=True,
    help="MLflow's /invocations or the Open Inference Protocol v2.",
)
@click.option("--remote", is_flag=True, help="Allow an endpoint that is not on this machine.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_workspace
def traffic(
    ws: Workspace,
    name: str,
    dataset_ref: str | None,
    path: str | None,
    requests: int | None,
    seconds: float | None,
    rate: float,
    batch: int,
    protocol: str,
    remote: bool,
    as_json: bool,
) -> None:
    """Send replayed rows to deployment NAME, bounded by --requests and/or --seconds
    (200 requests if neither is given), at --rate requests per second at most."""
    from mlops_console.loadgen import parse_dataset_ref, send_traffic

    if dataset_ref and path:
        raise click.UsageError("give --dataset or --file, not both")
    dataset, version = parse_dataset_ref(dataset_ref) if dataset_ref else (None, None)
    bounds = f"/{requests}" if requests else ""
    if seconds:
        bounds += f" (up to {seconds:g} s)"
    line = ProgressLine(bounds)
    stop = threading.Event()
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["report"] = send_traffic(
                ws,
                name,
                dataset=dataset,
                version=version,
                path=path,
                requests=requests,
                seconds=seconds,
                rate=rate,
                batch=batch,
                protocol=protocol,
                progress=line,
                stop=stop,
                allow_remote=remote,
            )
        except BaseException as exc:  # handed to the main thread, which reports it
            box["error"] = exc

    # the replay runs in a thread so Ctrl-C stops it cleanly and still prints the report
    worker = threading.Thread(target=work, name="traffic", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        worker.join()
    line.done()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    report: TrafficReport = box["report"]  # type: ignore[assignment]
    if as_json:
        emit_json(report)
    else:
        click.echo(f"{name}: {report.summary()}")
    if report.ok == 0:
        click.echo(
            f"Error: no request to {name} succeeded; see `mlops deployments logs {name}`.", err=True
        )
        raise SystemExit(1)


COMMANDS: list[click.Command] = []  # `traffic` joins the `deployments` group of cli/deploy.py
