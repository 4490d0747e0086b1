"""mlops run | gc | test | reproduce (init and demo: cli/demo.py)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click

from mlops_console.cli.output import (
    Output,
    emit_json,
    json_option,
    num,
    open_workspace,
    output_options,
    pass_workspace,
    table,
)

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


class StageProgress:
    """Prints each stage of a long job with its elapsed time (a line per stage, so the
    output stays readable in logs and over SSH)."""

    def __init__(self, total: int | None = None) -> None:
        self.total, self.n, self.t0 = total, 0, time.perf_counter()

    def __call__(self, text: str) -> None:
        elapsed = time.perf_counter() - self.t0
        if text.startswith("  "):  # a step within the current stage
            click.echo(f"      {text.strip()[:100]:<100} {elapsed:6.1f}s", err=True)
            return
        self.n += 1
        prefix = f"[{self.n}/{self.total}]" if self.total else f"[{self.n}]"
        click.echo(f"{prefix} {text:<100} {elapsed:6.1f}s", err=True)


def _parse_sets(values: tuple[str, ...]) -> dict[str, Any]:
    from mlops_console.pipelines import parse_overrides

    try:
        return parse_overrides(values)
    except ValueError as exc:
        raise click.UsageError(f"--set {exc}") from None


@click.command("run")
@click.argument("pipeline")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a pipeline setting, e.g. --set model.params.max_iter=100.",
)
@click.option(
    "--quick",
    is_flag=True,
    help="Train with the quick profile: a few candidates on capped rows, in seconds "
    '(as [search] profile = "quick" does).',
)
@click.option(
    "--compute",
    metavar="BACKEND",
    help='Where the search runs, instead of [compute].backend: "local", or a plugin\'s '
    'backend such as "dask".',
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="The cluster to use, instead of [compute].scheduler (e.g. tcp://HOST:8786, or "
    '"local-cluster").',
)
@click.pass_context
def run_cmd(
    ctx: click.Context,
    pipeline: str,
    sets: tuple[str, ...],
    quick: bool,
    compute: str | None,
    scheduler: str | None,
) -> None:
    """Train PIPELINE (pipelines/NAME.toml), log the run and register the model."""
    overrides = _parse_sets(sets)
    with open_workspace(ctx) as ws:
        result = ws.pipelines.run(
            pipeline,
            stage=StageProgress(total=8),
            overrides=overrides,
            quick=quick,
            compute=compute,
            scheduler=scheduler,
        )
        _print_result(ws, result)


@click.command()
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@click.option(
    "--grace",
    type=int,
    default=None,
    help="Keep unreferenced objects younger than this many seconds "
    "(default: [store].gc_grace_seconds).",
)
@click.option(
    "--trust-registry",
    is_flag=True,
    help="Remove what the registry does not refer to even when that is more than half "
    "of the store (gc refuses otherwise: the registry may be an old backup).",
)
@output_options
@pass_workspace
def gc(ws: Workspace, dry_run: bool, grace: int | None, trust_registry: bool) -> Output:
    """Remove artifacts and lake snapshots that nothing refers to."""
    report = ws.gc(dry_run=dry_run, grace_seconds=grace, trust_registry=trust_registry)
    verb = "Would remove" if dry_run else "Removed"
    return Output(
        report.to_dict(),
        lambda: click.echo(
            f"{verb} {len(report.removed)} object(s) and "
            f"{len(report.lake_files_removed)} lake snapshot(s), {report.bytes_freed / 1e6:.2f} MB; "
            f"kept {report.kept} in use, {report.young} unreferenced but younger than "
            f"the grace period; {report.temp_files_removed} stale temp file(s)."
        ),
    )


def _print_result(ws: Workspace, result: Any) -> None:
    click.echo(f"\nRun {result.run_id} finished in {result.seconds:.1f}s")
    table(["metric", "value"], [(k, num(v)) for k, v in sorted(result.metrics.items())])
    if result.checks:
        click.echo("\nModel checks")
        table(
            ["check", "result", "reason"],
            [
                (c["name"], "pass" if c["passed"] else "FAIL", c["reason"][:110])
                for c in result.checks
            ],
        )
    failed = [g for g in result.gates.get("results", []) if not g["passed"]]
    if failed:
        click.echo("\nGates FAILED")
        table(
            ["gate", "measured", "threshold", "detail"],
            [(g["name"], num(g["value"]), g["threshold"], g["detail"][:90]) for g in failed],
        )
    onnx = result.onnx or {}
    click.echo(
        "\nONNX: "
        + (
            f"included (max difference from scikit-learn {onnx.get('max_abs_diff', 0):.2g})"
            if onnx.get("kept")
            else f"not included ({onnx.get('reason', 'not converted')})"
        )
    )
    mv = result.version
    if mv is None:
        return
    reg = ws.config.registry
    if result.promoted:
        since = f" (was v{result.champion_before})" if result.champion_before else ""
        click.echo(f"\nRegistered {mv.ref}; it is now {mv.name}@{reg.champion_alias}{since}.")
    elif result.aliases:
        click.echo(
            f"\nRegistered {mv.ref} as {mv.name}@{reg.challenger_alias}; promote it with "
            f"`mlops models promote {mv.ref}`."
        )
    else:
        click.echo(f"\nRegistered {mv.ref}; it failed its gates, so it takes no alias.")
    click.echo(f"Bundle: {ws.artifacts.path_of(mv.artifact_hash)} (bundle.json)")


@click.command("test")
@click.argument("ref")
@json_option
@pass_workspace
def test_cmd(ws: Workspace, ref: str, as_json: bool) -> None:
    """Run the model checks and gates again on a registered version (MODEL[@alias|/v])."""
    out = ws.pipelines.retest(ref, stage=(lambda s: None) if as_json else StageProgress())
    if as_json:
        emit_json(out)
        return
    table(
        ["check", "result", "reason"],
        [(c["name"], "pass" if c["passed"] else "FAIL", c["reason"][:110]) for c in out["checks"]],
    )
    ok = out["gates"]["passed"]
    click.echo(f"\n{out['model']}/{out['version']}: gates {'pass' if ok else 'FAIL'}")
    for g in out["gates"]["results"]:
        if not g["passed"]:
            click.echo(f"  {g['name']}: {g['detail']}")
    if not ok:
        raise click.exceptions.Exit(1)


@click.command("reproduce")
@click.argument("run")
@click.option(
    "--tolerance",
    type=float,
    default=1e-6,
    show_default=True,
    help="Largest metric difference that still counts as the same.",
)
@json_option
@pass_workspace
def reproduce_cmd(ws: Workspace, run: str, tolerance: float, as_json: bool) -> None:
    """Re-run RUN from its recorded lineage (spec, data version, seed) and compare."""
    out = ws.pipelines.reproduce(
        run, tolerance, stage=(lambda s: None) if as_json else StageProgress()
    )
    if as_json:
        emit_json(out)
        return
    table(
        ["metric", "recorded", "now", "same"],
        [
            (k, num(m["recorded"]), num(m["now"]), "yes" if m["match"] else "NO")
            for k, m in sorted(out["metrics"].items())
        ],
    )
    verdict = "reproduced" if out["match"] else "NOT reproduced"
    click.echo(
        f"\nRun {out['run'][:8]} {verdict} by run {out['reproduction'][:8]} "
        f"(tolerance {tolerance})."
    )
    if out["differences"]:
        click.echo("What differs since:")
        for d in out["differences"]:
            click.echo(f"  {d['what']}: {_describe_difference(d)}")
    else:
        click.echo("Same data, code, environment and configuration.")
    if not out["match"]:
        raise click.exceptions.Exit(1)


def _describe_difference(d: dict[str, Any]) -> str:
    if d["what"] == "code":

        def side(g: dict[str, Any] | None) -> str:
            if not g:
                return "not under git"
            return (g.get("commit") or "no commit")[:10] + (
                " (uncommitted changes)" if g.get("dirty") else ""
            )

        return f"{side(d.get('then'))} -> {side(d.get('now'))}"
    if d["what"] == "environment":
        return ", ".join(f"{k} {a} -> {b}" for k, (a, b) in d["packages"].items())
    if "then" in d:
        return f"{d['then']} -> {d['now']}"
    return "changed"


COMMANDS: list[click.Command] = [run_cmd, gc, test_cmd, reproduce_cmd]
