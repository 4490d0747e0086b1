"""mlops runs list | show | compare."""

from __future__ import annotations

import click

from mlops_console.cli.output import duration, emit_json, kv, num, open_workspace, table, when


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
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_runs(ctx, experiment, filter_, order_by, limit, metric_cols, as_json) -> None:
    """List runs, newest first (or as --order-by says)."""
    with open_workspace(ctx) as ws:
        found = ws.runs.search(
            experiment=list(experiment) or None,
            filter=filter_,
            order_by=list(order_by) or None,
            limit=limit,
        )
    if as_json:
        emit_json({"runs": [r.to_dict() for r in found]})
        return
    # Default columns: holdout metrics first (what a model is judged on), then the rest.
    all_keys = {k for r in found for k in r.metrics}
    keys = (
        list(metric_cols) or sorted(all_keys, key=lambda k: (not k.startswith("holdout_"), k))[:4]
    )
    table(
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
    )


@runs.command("show")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show_run(ctx, run: str, as_json: bool) -> None:
    """Show one run: params, metrics, inputs, artifacts and lineage (RUN: id or prefix)."""
    with open_workspace(ctx) as ws:
        r = ws.runs.get(run)
    if as_json:
        emit_json(r.to_dict())
        return
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
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def compare_runs(ctx, run_refs, show_all, as_json) -> None:
    """Compare params and metrics of two or more runs side by side."""
    if len(run_refs) < 2:
        raise click.UsageError("Give at least two runs to compare.")
    with open_workspace(ctx) as ws:
        cmp = ws.runs.compare(list(run_refs))
    if as_json:
        emit_json(cmp)
        return
    heads = [r["id"][:8] for r in cmp["runs"]]
    rows = []
    for kind in ("params", "metrics"):
        for key, entry in cmp[kind].items():
            if entry["differs"] or show_all:
                mark = "*" if entry["differs"] else " "
                rows.append((f"{mark} {kind[:-1]}.{key}", *(num(v) for v in entry["values"])))
    table(["", *heads], rows, empty="The runs have the same params and metrics.")
