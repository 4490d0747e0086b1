"""mlops monitor DEPLOYMENT | monitor collect | report | labels | dataset; mlops alerts ..."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from mlops_console.cli.output import (
    Output,
    kv,
    num,
    output_options,
    pass_workspace,
    table,
    when,
)

if TYPE_CHECKING:
    from mlops_console.monitoring.alert_records import Alert
    from mlops_console.monitoring.window import WindowReport
    from mlops_console.workspace import Workspace


class DefaultShow(click.Group):
    """`mlops monitor NAME` means `mlops monitor show NAME`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultShow)
def monitor() -> None:
    """Drift, stability, decay and latency of deployments, from their prediction logs.

    \b
    mlops monitor DEPLOYMENT [--window 1h] [--json]
    mlops monitor DEPLOYMENT --device D | --group G | --per-device   (a fleet's devices)
    mlops monitor report DEPLOYMENT [--out DIR]
    mlops monitor labels DEPLOYMENT FILE
    mlops monitor dataset DEPLOYMENT [--name NAME]
    """


def print_window(r: WindowReport) -> None:
    perf = r.performance or {}
    stab = r.stability or {}
    drift = r.drift or {}
    decay = r.decay or {}
    stale = r.staleness or {}
    served = ", ".join(f"v{v['version']} {v['role']} {v['rows']}" for v in r.versions)
    kv(
        [
            (
                "deployment",
                r.subject
                + (
                    f" ({', '.join(r.devices)})"
                    if r.scope and r.devices and len(r.devices) > 1
                    else ""
                ),
            ),
            ("window", f"{r.window} ({when(r.start)} .. {when(r.end)})"),
            ("measured", f"{r.model} v{r.version}: {r.rows} rows"),
            ("served", served or "-"),
            (
                "traffic",
                f"{perf.get('requests', 0)} requests, {num(perf.get('rps', 0))} req/s, "
                f"{num(perf.get('rows_per_s', 0))} rows/s, errors {num(100 * perf.get('error_rate', 0))}%",
            ),
            (
                "latency",
                f"p50 {num(perf.get('latency_p50_ms'))} ms, p95 {num(perf.get('latency_p95_ms'))} ms, "
                f"p99 {num(perf.get('latency_p99_ms'))} ms"
                + (f"; server {num(perf['memory_mb'])} MB" if perf.get("memory_mb") else ""),
            ),
            (
                "drift",
                (
                    f"{len(drift.get('drifted_columns', []))}/{drift.get('columns', 0)} inputs drifted "
                    f"(share {num(drift.get('drift_share', 0))}), prediction PSI "
                    f"{num((drift.get('prediction') or {}).get('psi'))}"
                    + (
                        " -> DATASET DRIFT"
                        if drift.get("drifted") and r.enough_rows
                        else (" (too few rows for a verdict)" if not r.enough_rows else "")
                    )
                )
                if drift
                else "-",
            ),
            (
                "stability",
                (
                    f"NaN outputs {num(100 * stab.get('nan_output_rate', 0))}%, out of range "
                    f"{num(100 * stab.get('out_of_range_rate', 0))}%"
                    + (
                        f", saturated {num(100 * stab['saturated_rate'])}%"
                        if "saturated_rate" in stab
                        else ""
                    )
                    + (", COLLAPSED predictions" if stab.get("collapsed") else "")
                    + (
                        f", unseen categories in {sorted(stab['unseen_categories'])}"
                        if stab.get("unseen_categories")
                        else ""
                    )
                )
                if stab
                else "-",
            ),
            (
                "decay",
                (
                    f"{decay.get('labelled', 0)} labelled rows; "
                    + ", ".join(
                        f"{k} {num(v)} (trained {num(decay.get('training', {}).get(k))})"
                        for k, v in (decay.get("metrics") or {}).items()
                    )
                )
                if decay.get("labelled")
                else "no labels yet (POST /feedback or `mlops monitor labels`)",
            ),
            (
                "staleness",
                f"model {num(stale.get('model_age_days'))} days old; training data "
                f"{num(stale.get('data_age_days'))} days old"
                if stale
                else "-",
            ),
        ]
    )
    if drift.get("features"):
        click.echo("")
        rows = []
        for f in [*drift["features"], drift["prediction"]]:
            rows.append(
                [
                    f["column"],
                    f["kind"],
                    num(f.get("psi")),
                    num(f.get("ks")) if f["kind"] == "numeric" else num(f.get("js")),
                    num(f.get("ks_p")) if f["kind"] == "numeric" else num(f.get("chi2_p")),
                    ("DRIFT" if f.get("drifted") else "ok") if r.enough_rows else "(few rows)",
                ]
            )
        table(["column", "kind", "psi", "ks / js", "p-value", "verdict"], rows)
    if r.note:
        click.echo(f"\nnote: {r.note}")


@monitor.command("show")
@click.argument("deployment")
@click.option("--window", help="Rolling window: 1h, 30m, 1d (default [monitoring].window).")
@click.option("--history", type=int, default=0, help="Also the N windows before, one line each.")
@click.option("--device", help="Only the rows one device of a fleet deployment served.")
@click.option("--group", help="Only the rows of the devices in one group of a fleet deployment.")
@click.option(
    "--per-device",
    is_flag=True,
    help="The deployment, then each of its devices and groups, one line each.",
)
@output_options
@pass_workspace
def show(
    ws: Workspace,
    deployment: str,
    window: str | None,
    history: int,
    device: str | None,
    group: str | None,
    per_device: bool,
) -> Output:
    """Every measure of DEPLOYMENT over the last window (of one device or group of it)."""
    if device and group:
        raise click.UsageError("Give --device or --group, not both.")
    if per_device:
        if device or group or history:
            raise click.UsageError(
                "--per-device shows every device: no --device, --group or --history."
            )
        scopes = ws.monitor.measure_scopes(deployment, window)
        return Output(
            [r.to_dict() for r in scopes.values()], lambda: _show_scopes(list(scopes.values()))
        )
    if history:
        results = ws.monitor.history(deployment, window, history + 1, device=device, group=group)
    else:
        results = [ws.monitor.measure(deployment, window, device=device, group=group)]
    return Output(results if history else results[0], lambda: _show_windows(results, history))


def _show_scopes(reports: list[WindowReport]) -> None:
    if len(reports) == 1:
        click.echo(f"{reports[0].deployment} is not served by devices; the whole deployment:\n")
    table(
        ["scope", "devices", "rows", "drift share", "drifted", "pred psi", "p99 ms", "errors %"],
        [
            [
                r.scope or "(all)",
                ",".join(r.devices or []) or "-",
                r.rows,
                num((r.drift or {}).get("drift_share"))
                + (" (few rows)" if r.enough_rows is False else ""),
                ", ".join((r.drift or {}).get("drifted_columns", [])) or "-",
                num(((r.drift or {}).get("prediction") or {}).get("psi")),
                num(r.performance.get("latency_p99_ms")),
                num(100 * r.performance.get("error_rate", 0)),
            ]
            for r in reports
        ],
    )


def _show_windows(results: list[WindowReport], history: int) -> None:
    print_window(results[0])
    if history:
        click.echo("")
        table(
            ["window end", "rows", "drift share", "pred psi", "p99 ms", "errors %", "nan %"],
            [
                [
                    when(r.end),
                    r.rows,
                    num((r.drift or {}).get("drift_share")),
                    num(((r.drift or {}).get("prediction") or {}).get("psi")),
                    num(r.performance.get("latency_p99_ms")),
                    num(100 * r.performance.get("error_rate", 0)),
                    num(100 * (r.stability or {}).get("nan_output_rate", 0)),
                ]
                for r in results
            ],
        )


@monitor.command("collect")
@click.argument("deployment", required=False)
@output_options
@pass_workspace
def collect_cmd(ws: Workspace, deployment: str | None) -> Output:
    """Move closed prediction-log segments into the monitoring store (the daemon does this)."""
    done = ws.monitor.collect(deployment)
    return Output(
        done,
        lambda: table(
            ["deployment", "segments", "rows", "requests", "feedback", "unreadable lines"],
            [
                [n, d["segments"], d["rows"], d["requests"], d["feedback"], d["unreadable"]]
                for n, d in done.items()
            ],
        ),
    )


@monitor.command("report")
@click.argument("deployment")
@click.option("--window", help="Rolling window (default [monitoring].window).")
@click.option("--windows", type=int, default=24, show_default=True, help="Windows in the charts.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Folder (default .mlops/reports/DEPLOYMENT-TIME).",
)
@pass_workspace
def report(
    ws: Workspace, deployment: str, window: str | None, windows: int, out: str | None
) -> None:
    """Write a Markdown and an HTML report with PNG charts (summaries only, no raw rows)."""
    from mlops_console.monitoring.report import write_report

    paths = write_report(ws, deployment, window, windows, out)
    for p in paths:
        click.echo(str(p))


@monitor.command("labels")
@click.argument("deployment")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--id-column", default="request_id", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option(
    "--row-column",
    default="row",
    show_default=True,
    help="Row within the request (optional column).",
)
@click.option(
    "--entity-column",
    help="Match by an entity key sent with the requests instead of request ids.",
)
@click.option(
    "--time-column", help="With --entity-column: the latest prediction at or before this time."
)
@output_options
@pass_workspace
def labels(
    ws: Workspace,
    deployment: str,
    file: str,
    id_column: str,
    label_column: str,
    row_column: str,
    entity_column: str | None,
    time_column: str | None,
) -> Output:
    """Import ground truth for DEPLOYMENT's predictions from a CSV/Parquet FILE.

    Rows name a prediction by request id (and row in the request), or by an entity key
    and a time (--entity-column, --time-column) when the requests carried that key."""
    rep = ws.monitor.import_labels(
        deployment, file, id_column, label_column, row_column, entity_column, time_column
    )
    return Output(rep, lambda: _report_labels(rep))


def _report_labels(rep: dict[str, Any]) -> None:
    kv(
        [
            ("file", rep["file"]),
            ("kept as", rep["kept_as"]),
            ("rows", rep["rows"]),
            ("accepted", f"{rep['accepted']} ({rep['matched']} match a prediction)"),
            (
                "not matched yet",
                f"{rep['unmatched']} (kept; they join when those predictions are collected)"
                + (f", e.g. {', '.join(rep['unmatched_examples'])}" if rep["unmatched"] else ""),
            ),
            ("rejected", rep["rejected"]),
        ]
    )
    common = sorted(rep["rejected_reasons"].items(), key=lambda kv: -kv[1])
    for reason, n in common[:5]:  # a summary: every row's reason is in the rejected file
        click.echo(f"  {n} x {reason}")
    if len(common) > 5:
        rest = sum(n for _, n in common[5:])
        click.echo(f"  {rest} more rows, {len(common) - 5} other reasons")
    if rep["rejected_file"]:
        click.echo(f"Rejected rows, with their reasons: {rep['rejected_file']}")


@monitor.command("dataset")
@click.argument("deployment")
@click.option("--name", help="Dataset name (default DEPLOYMENT_feedback).")
@output_options
@pass_workspace
def dataset(ws: Workspace, deployment: str, name: str | None) -> Output:
    """Labelled predictions as a new version of a dataset (`mlops data`), to train on."""
    out = ws.monitor.export_dataset(deployment, name)
    return Output(
        out,
        lambda: click.echo(
            f"{out['rows']} labelled predictions -> dataset {out['dataset']} ({out['ingest']})"
        ),
    )


@click.group()
def alerts() -> None:
    """Alerts of the `[[alerts]]` rules in mlops.toml: list, show, acknowledge, check."""


def _alert_rows(items: list[Alert]) -> list[list[Any]]:
    return [
        [
            a.id,
            a.state,
            a.severity,
            a.rule,
            a.subject,
            num(a.value),
            when(a.opened_at),
            a.action_result or a.action,
        ]
        for a in items
    ]


@alerts.command("list")
@click.option("--state", type=click.Choice(["active", "open", "acknowledged", "resolved"]))
@click.option("--deployment")
@output_options
@pass_workspace
def alerts_list(ws: Workspace, state: str | None, deployment: str | None) -> Output:
    """Alerts, newest first."""
    items = ws.alerts.list(state, deployment)
    return Output(
        [a.to_dict() for a in items],
        lambda: table(
            ["id", "state", "severity", "rule", "deployment", "value", "opened", "action"],
            _alert_rows(items),
        ),
    )


@alerts.command("show")
@click.argument("alert_id", type=int)
@output_options
@pass_workspace
def alerts_show(ws: Workspace, alert_id: int) -> Output:
    """One alert and its history (opened, notified, action, acknowledged, resolved)."""
    a = ws.alerts.get(alert_id)
    events = ws.alerts.events(alert_id)

    def human() -> None:
        kv([(k, when(v) if k.endswith("_at") else v) for k, v in a.to_dict().items()])
        click.echo("")
        table(["at", "event", "detail"], [[when(e.at), e.kind, e.detail] for e in events])

    return Output({**a.to_dict(), "events": [e.to_dict() for e in events]}, human)


@alerts.command("ack")
@click.argument("alert_id", type=int)
@click.option("--by", default="", help="Who acknowledges (shown in the history).")
@pass_workspace
def alerts_ack(ws: Workspace, alert_id: int, by: str) -> None:
    """Acknowledge an open alert (it still resolves itself when the measure recovers)."""
    from mlops_console.users import current_user

    a = ws.alerts.acknowledge(alert_id, by or current_user())
    click.echo(f"Alert {a.id} acknowledged by {a.acknowledged_by}.")


@alerts.command("check")
@output_options
@pass_workspace
def alerts_check(ws: Workspace) -> Output | None:
    """Collect and evaluate every rule now (the daemon does this every [monitoring].every)."""
    if not ws.config.alerts:
        click.echo("No [[alerts]] rules in mlops.toml.")
        return None
    changes = ws.alerts.evaluate()
    ws.alerts.wait()
    return Output(changes, lambda: _report_changes(changes))


def _report_changes(changes: list[dict[str, Any]]) -> None:
    if not changes:
        click.echo("No alert opened or resolved.")
    for c in changes:
        click.echo(
            f"alert {c.get('alert', '-')} {c.get('state', '')} on {c['deployment']}"
            + (f" {c['scope']}" if c.get("scope") else "")
            + (f": {c['detail']}" if c.get("detail") else "")
            + (f": {c['error']}" if c.get("error") else "")
        )


COMMANDS: list[click.Command] = [monitor, alerts]
