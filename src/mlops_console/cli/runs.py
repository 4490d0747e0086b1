"""mlops runs list | show | compare."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from mlops_console.cli.output import (
    Output,
    duration,
    kv,
    num,
    open_workspace,
    output_options,
    pass_workspace,
    table,
    when,
)

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


@click.group()
def runs() -> None:
    """Tracked runs: list, show, compare."""


@runs.command("list")
@click.option("-e", "--experiment", multiple=True, help="Only runs of this experiment.")
@click.option(
    "-f",
    "--filter",
    "filter_",
    help="e.g. \"metrics.holdout_roc_auc > 0.8 and params.estimator = 'x'\"",
)
@click.option("-o", "--order-by", multiple=True, help="e.g. 'metrics.holdout_roc_auc DESC'.")
@click.option("-n", "--limit", default=50, show_default=True, help="At most this many runs.")
@click.option("-m", "--metric", "metric_cols", multiple=True, help="Metric columns to show.")
@output_options
@pass_workspace
def list_runs(
    ws: Workspace,
    experiment: tuple[str, ...],
    filter_: str | None,
    order_by: tuple[str, ...],
    limit: int,
    metric_cols: tuple[str, ...],
) -> Output:
    """List runs, newest first (or as --order-by says)."""
    found = ws.runs.search(
        experiment=list(experiment) or None,
        filter=filter_,
        order_by=list(order_by) or None,
        limit=limit,
    )
    # Default columns: holdout metrics first (what a model is judged on), then the rest.
    all_keys = {k for r in found for k in r.metrics}
    keys = (
        list(metric_cols) or sorted(all_keys, key=lambda k: (not k.startswith("holdout_"), k))[:4]
    )
    return Output(
        {"runs": [r.to_dict() for r in found]},
        lambda: table(
            ["run", "experiment", "name", "status", "started", "took", *keys],
            [
                (
                    r.id[:8],
                    r.experiment,
                    r.name,
                    r.status,
                    when(r.start_time),
                    duration(r.duration),
                    *(num(r.metrics.get(k)) for k in keys),
                )
                for r in found
            ],
            empty="No runs match. `mlops run PIPELINE` or `mlops demo` creates some.",
        ),
    )


@runs.command("show")
@click.argument("run")
@output_options
@pass_workspace
def show_run(ws: Workspace, run: str) -> Output:
    """Show one run: params, metrics, inputs, artifacts and lineage (RUN: id or prefix)."""
    r = ws.runs.get(run)
    return Output(r.to_dict(), lambda: _show_run(r))


def _show_run(r: Any) -> None:
    lin = r.lineage
    git = lin.get("git")
    code = "not under git"
    if git:
        code = f"{(git.get('commit') or 'no commit')[:12]}" + (
            " (dirty)" if git.get("dirty") else ""
        )
    env = lin.get("environment", {})
    kv(
        [
            ("run", r.id),
            ("name", r.name),
            ("experiment", r.experiment),
            ("status", r.status),
            ("started", when(r.start_time)),
            ("ended", when(r.end_time)),
            ("took", duration(r.duration)),
            ("user", r.user or "-"),
            ("seed", r.seed),
            ("code", code),
            ("spec", (lin.get("spec") or {}).get("path", "-")),
            ("python", env.get("python", "-")),
        ]
    )
    click.echo("\nParams")
    table(["param", "value"], sorted(r.params.items()))
    click.echo("\nMetrics (latest value)")
    table(["metric", "value"], [(k, num(v)) for k, v in sorted(r.metrics.items())])
    click.echo("\nData read")
    table(
        ["dataset", "version", "rows", "source"],
        [(i["name"], i["version"], num(i["rows"]), i["source"]) for i in r.inputs],
    )
    click.echo("\nArtifacts")
    table(["name", "size", "sha256"], [(a["name"], a["size"], a["hash"][:16]) for a in r.artifacts])
    if r.tags:
        click.echo("\nTags")
        table(["tag", "value"], sorted(r.tags.items()))


@runs.command("compare")
@click.argument("run_refs", nargs=-1, required=True, metavar="RUN RUN...")
@click.option("--all", "show_all", is_flag=True, help="Also show rows that are the same.")
@output_options
def compare_runs(run_refs: tuple[str, ...], show_all: bool) -> Output:
    """Compare params and metrics of two or more runs side by side."""
    if len(run_refs) < 2:
        raise click.UsageError("Give at least two runs to compare.")
    with open_workspace(click.get_current_context()) as ws:
        cmp = ws.runs.compare(list(run_refs))
    return Output(cmp, lambda: _compare_table(cmp, show_all))


def _compare_table(cmp: dict[str, Any], show_all: bool) -> None:
    heads = [r["id"][:8] for r in cmp["runs"]]
    rows = []
    for kind in ("params", "metrics"):
        for key, entry in cmp[kind].items():
            if entry["differs"] or show_all:
                mark = "*" if entry["differs"] else " "
                rows.append((f"{mark} {kind[:-1]}.{key}", *(num(v) for v in entry["values"])))
    table(["", *heads], rows, empty="The runs have the same params and metrics.")


COMMANDS: list[click.Command] = [runs]
