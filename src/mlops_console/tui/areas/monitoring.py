"""The Monitoring area: drift, stability, latency and errors of each deployment's last
window, and the alerts; acknowledge an alert, import labels for a deployment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

from mlops_console.errors import MlopsError
from mlops_console.monitoring.alert_records import AlertState
from mlops_console.tui.areas.common import (
    Action,
    Area,
    Chart,
    Listing,
    _num,
    _when,
    cached_health,
    health,
    severity,
    spark,
    traffic_lines,
    warm_health,
)

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


def _monitoring_chart(ws: Workspace, key: str) -> Chart | None:
    kind, _, ident = key.partition(":")
    if kind != "dep":
        return None
    series = ws.monitor.performance_series(ident, "5m", 12)
    xs = list(range(-len(series) + 1, 1))
    p99 = [p["p99_ms"] if p["p99_ms"] is not None else 0.0 for p in series]
    rps = [p["rps"] for p in series]
    return {
        "title": f"{ident}: last hour in 5-minute windows (0 = now)",
        "ylabel": "p99 ms / req/s",
        "series": {"p99 ms": (xs, p99), "req/s": (xs, rps)},
    }


def _monitoring(ws: Workspace) -> Listing:
    rows: list[tuple[str, list[str]]] = []
    alerts = ws.alerts.list(limit=100)
    active: dict[str, int] = {}
    for a in alerts:
        if a.state.active:
            active[a.deployment] = active.get(a.deployment, 0) + 1
    for name in ws.monitor.deployments():
        cached = cached_health(ws, name)  # measured after the screen is shown (warm_health)
        h = cached[1] if cached else None
        report = None if isinstance(h, str) else h  # not measured yet, or failed: dashes
        drift = (report.drift if report else None) or {}
        perf = report.performance if report else {}
        stab = (report.stability if report else None) or {}
        share = drift.get("drift_share")
        colour = "red" if drift.get("drifted") else ("yellow" if share else "green")
        rows.append(
            (
                f"dep:{name}",
                [
                    "deployment",
                    name,
                    f"v{report.version if report else '-'}",
                    str(report.rows if report else 0),
                    f"[{colour}]{_num(share)}[/]" if drift else "-",
                    ", ".join(drift.get("drifted_columns", []))[:30] or "-",
                    _num(perf.get("latency_p99_ms")),
                    _num(perf.get("error_rate")),
                    _num(stab.get("nan_output_rate")),
                    str(active.get(name, 0)),
                ],
            )
        )
    for a in alerts:
        colour = {AlertState.OPEN: "red", AlertState.ACKNOWLEDGED: "yellow"}.get(a.state, "green")
        rows.append(
            (
                f"alert:{a.id}",
                [
                    "alert",
                    f"#{a.id} {a.rule}",
                    a.subject,
                    f"[{colour}]{a.state}[/]",
                    _num(a.value),
                    a.measure,
                    _when(a.opened_at),
                    (a.action_result or a.action)[:30],
                    "",
                    "",
                ],
            )
        )
    return Listing(
        [
            "kind",
            "name",
            "version / deployment",
            "rows / state",
            "drift share / value",
            "drifted / measure",
            "p99 ms / opened",
            "errors / action",
            "NaN",
            "alerts",
        ],
        rows,
    )


def _monitoring_detail(ws: Workspace, key: str) -> str:
    kind, _, ident = key.partition(":")
    if kind == "alert":
        a = ws.alerts.get(int(ident))
        lines = [
            f"Alert #{a.id} ({a.severity}): {a.rule} on {a.subject} - {a.state}",
            escape(a.detail),  # words from the data are text, not markup
            f"measure {a.measure} = {_num(a.value)} (threshold {_num(a.threshold)}, window {a.window})",
            f"action: {a.action} -> {escape(a.action_result or '-')}",
            "",
            "History:",
        ]
        lines += [
            f"  {_when(e.at)} {e.kind:14} {escape(e.detail[:70])}" for e in ws.alerts.events(a.id)
        ]
        return "\n".join(lines)
    h = health(ws, ident)
    if isinstance(h, str):
        return f"{ident}: {h}"
    drift = h.drift or {}
    stab = h.stability or {}
    decay = h.decay or {}
    perf = h.performance or {}
    lines = [
        f"{ident}: {h.model} v{h.version}, {h.rows} rows in the last {h.window}",
    ]
    if h.note:
        lines.append(f"note: {escape(h.note)}")  # e.g. "[monitoring] min_rows"
    limit = ws.config.monitoring.psi
    if drift:
        lines += ["", "Drift (PSI on the training deciles; KS or JS):"]
        for f in [*drift["features"], drift["prediction"]]:
            c = severity(f.get("drifted", False), f.get("psi"), limit)
            stat = f.get("ks") if f["kind"] == "numeric" else f.get("js")
            verdict = "DRIFT" if f.get("drifted") else "ok"
            lines.append(
                f"  {f['column'][:18]:18} [{c}]psi {_num(f.get('psi')):>8}  "
                f"{'ks' if f['kind'] == 'numeric' else 'js'} {_num(stat):>8}  {verdict}[/]"
            )
    if stab:
        lines += [
            "",
            f"Stability: NaN outputs {_num(stab.get('nan_output_rate'))}, out of range "
            f"{_num(stab.get('out_of_range_rate'))}, saturated {_num(stab.get('saturated_rate'))}"
            + (", [red]COLLAPSED[/]" if stab.get("collapsed") else ""),
        ]
    if decay.get("labelled"):
        lines.append(
            f"Decay ({decay['labelled']} labelled): "
            + ", ".join(
                f"{k} {_num(v)} (trained {_num((decay.get('training') or {}).get(k))})"
                for k, v in (decay.get("metrics") or {}).items()
            )
        )
    lines.append(
        f"Latency p50/p95/p99 ms: {_num(perf.get('latency_p50_ms'))} / "
        f"{_num(perf.get('latency_p95_ms'))} / {_num(perf.get('latency_p99_ms'))}"
    )
    lines += ["", *traffic_lines(ws, ident)]
    try:
        hist = ws.monitor.history(ident, count=8)[::-1]
        lines.append(
            f"  drift   {spark([(r.drift or {}).get('drift_share') for r in hist])}"
            f"  share of drifted inputs, 8 x {h.window}"
        )
    except Exception:
        pass
    return "\n".join(lines)


def _ack(ws: Workspace, key: str) -> str:
    kind, _, ident = key.partition(":")
    if kind != "alert":
        raise ValueError("select an alert row to acknowledge")
    from mlops_console.users import current_user

    a = ws.alerts.acknowledge(int(ident), f"{current_user()} (console)")
    return f"alert #{a.id} acknowledged"


def _import_labels(ws: Workspace, key: str, answer: str) -> str:
    """Ground truth for the deployment's predictions from a CSV or Parquet file, as `mlops
    monitor labels DEPLOYMENT FILE` imports it (request_id and label columns)."""
    kind, _, name = key.partition(":")
    if kind != "dep":
        raise ValueError("select a deployment row to import its labels")
    rel = answer.strip()
    if not rel:
        raise ValueError("type the labels file's path, relative to the workspace")
    path = ws.root / rel
    if not path.is_file():
        raise MlopsError(
            f"No labels file {rel} in the workspace ({ws.root}); give the path of a CSV or "
            "Parquet file with request_id and label columns, relative to the workspace."
        )
    rep = ws.monitor.import_labels(name, path)
    lines = [
        f"{name}: {rep['accepted']} of {rep['rows']} labels accepted ({rep['matched']} match a "
        f"prediction), {rep['unmatched']} not matched yet (kept: they join when those "
        f"predictions are collected), {rep['rejected']} rejected",
    ]
    common = sorted(rep["rejected_reasons"].items(), key=lambda kv: -kv[1])
    lines += [f"  {n} x {reason}" for reason, n in common[:3]]
    if rep["rejected_file"]:
        lines.append(f"Rejected rows, with their reasons: {rep['rejected_file']}")
    return "\n".join(lines)


AREA = Area(
    "monitoring",
    "Monitoring",
    "Drift, stability, latency and errors of each deployment's last window; alerts.",
    _monitoring,
    _monitoring_detail,
    [
        Action(
            "a",
            "alert: acknowledge",
            "Acknowledge the selected alert",
            _ack,
            False,
            applies=lambda key: key.startswith("alert:"),
        ),
        Action(
            "i",
            "labels: import",
            "Import ground truth for the selected deployment's predictions",
            _import_labels,
            False,
            ask="LABELS FILE (CSV or Parquet, relative to the workspace), e.g. data/labels.csv",
            applies=lambda key: key.startswith("dep:"),
            confirm=lambda ws, key, answer: (
                f"Import the labels in {answer.strip()} for deployment {key.partition(':')[2]}?"
            ),
        ),
    ],
    chart=_monitoring_chart,
    live=True,  # the windows move with no daemon event
    warm=warm_health,
)
