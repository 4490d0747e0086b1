"""The Overview area: the daemon, each deployment's health, open alerts, what other areas
add (`Area.overview`, e.g. a plugin's fleet), next schedules, models, the latest runs and
chains, each row detailed by the area it belongs to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

from mlops_console.tui.areas.automation import _job_detail, daemon_state
from mlops_console.tui.areas.common import Area, Listing, _num, _when, health
from mlops_console.tui.areas.deployments import _deployment_detail
from mlops_console.tui.areas.models import _model_detail
from mlops_console.tui.areas.monitoring import _monitoring_detail
from mlops_console.tui.areas.runs import _run_detail

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


def _overview(ws: Workspace) -> Listing:
    rows: list[tuple[str, list[str]]] = []
    running, line, schedules = daemon_state(ws)
    rows.append(("daemon:", ["daemon", "automation", line, "up" if running else "down"]))
    for d in ws.deployments.list():
        h = health(ws, d.name)
        report = None if isinstance(h, str) else h  # a window that failed to measure: dashes
        perf = report.performance if report else {}
        drift = (report.drift if report else None) or {}
        split = f" + canary v{d.canary_version} {d.canary_percent:.0f}%" if d.canary_version else ""
        drift_state = (
            "drift: few rows"  # no verdict below [monitoring] min_rows, as the alerts
            if drift and report is not None and not report.enough_rows
            else "[red]DRIFT[/]"
            if drift.get("drifted")
            else ("[yellow]some drift[/]" if drift.get("drifted_columns") else "no drift")
            if drift
            else "drift -"
        )
        rows.append(
            (
                f"deployment:{d.name}",
                [
                    "deployment",
                    d.name,
                    f"{d.model} v{d.version}{split}",
                    f"{d.status} | {_num(perf.get('rps'))} req/s | p99 "
                    f"{_num(perf.get('latency_p99_ms'))} ms | err {_num(perf.get('error_rate'))} | "
                    + drift_state,
                ],
            )
        )
    for a in ws.alerts.list("active", limit=20):
        rows.append(
            (
                f"alert:{a.id}",
                ["alert", f"#{a.id} {a.rule}", a.subject, f"[red]{a.state}[/]"],
            )
        )
    rows += _area_rows(ws)
    for sc in sorted(schedules, key=lambda x: x.get("next_run") or 1e18)[:5]:
        rows.append(
            (
                f"schedule:{sc['id']}",
                [
                    "schedule",
                    sc["pipeline"],
                    sc["trigger"][:40],
                    "on new files"
                    if sc.get("watcher")
                    else ("paused" if sc["paused"] else f"next {_when(sc['next_run'])}"),
                ],
            )
        )
    for m in ws.models.list():
        rows.append(
            (
                f"model:{m.name}",
                [
                    "model",
                    m.name,
                    ", ".join(f"@{a}=v{v}" for a, v in m.aliases.items()) or "-",
                    f"{m.versions} versions",
                ],
            )
        )
    for r in ws.runs.search(limit=5):
        rows.append((f"run:{r.id}", ["run", r.id[:8], r.experiment, r.status]))
    for j in [j for j in ws.jobs.list(limit=20) if j.kind == "chain"][:5]:
        rows.append((f"job:{j.id}", ["job", str(j.id), j.pipeline, j.status.value]))
    return Listing(["kind", "name", "what", "state"], rows)


def _area_rows(ws: Workspace) -> list[tuple[str, list[str]]]:
    """The rows areas add through `Area.overview` (keys "area:NAME:KEY"); one that fails
    is a row saying so, never a broken Overview."""
    from mlops_console.tui.areas import AREAS  # the list plugins' areas are appended to

    rows: list[tuple[str, list[str]]] = []
    for area in AREAS:
        if area.overview is None:
            continue
        try:
            got = area.overview(ws)
        except Exception as exc:
            rows.append(
                (f"area:{area.name}:", [area.name, area.title, "[red]failed[/]", escape(str(exc))])
            )
            continue
        rows += [(f"area:{area.name}:{key}", (list(cells) + [""] * 4)[:4]) for key, cells in got]
    return rows


def _area_detail(ws: Workspace, ident: str) -> str:
    from mlops_console.tui.areas import BY_NAME

    name, _, key = ident.partition(":")
    area = BY_NAME[name]
    if not key:
        return f"The {area.title} area could not add its rows here; its screen says more."
    return area.detail(ws, key)


def _overview_detail(ws: Workspace, key: str) -> str:
    kind, _, ident = key.partition(":")
    return {
        "area": _area_detail,
        "daemon": lambda w, k: daemon_state(w)[1],
        "deployment": _deployment_detail,
        "alert": lambda w, k: _monitoring_detail(w, f"alert:{k}"),
        "schedule": lambda w, k: f"Schedule {k} (see the Automation screen)",
        "model": lambda w, k: _model_detail(w, k),
        "run": _run_detail,
        "job": _job_detail,
    }[kind](ws, ident)


AREA = Area(
    "overview",
    "Overview",
    "The daemon, each deployment's health, open alerts, next schedules, models, the "
    "latest runs and chains.",
    _overview,
    _overview_detail,
)
