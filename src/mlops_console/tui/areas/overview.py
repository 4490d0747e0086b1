"""The Overview area: the daemon, each deployment's health, open alerts, what other areas
add (`Area.overview`, e.g. a plugin's fleet), next schedules, models, the latest runs and
chains, each row detailed by the area it belongs to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

from mlops_console.tui.areas.automation import _job_detail, daemon_state
from mlops_console.tui.areas.common import (
    Area,
    Listing,
    _num,
    _when,
    cached_health,
    champions,
    serving_gap,
    warm_health,
)
from mlops_console.tui.areas.deployments import _deployment_detail
from mlops_console.tui.areas.models import _model_detail
from mlops_console.tui.areas.monitoring import _monitoring_detail
from mlops_console.tui.areas.runs import _run_detail

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


COLUMNS = ["kind", "name", "state", "req/s", "p99 ms", "errors", "drift", "what"]


def _row(kind: str, name: str, what: str, state: str, *figures: str) -> list[str]:
    """A row in COLUMNS order: what matters first, so 80 columns still show the figures."""
    cells = [kind, name, state, *figures]
    return cells + [""] * (len(COLUMNS) - 1 - len(cells)) + [what]


def _deployment_row(ws: Workspace, d, champion: int | None) -> list[str]:
    cached = cached_health(ws, d.name)
    h = cached[1] if cached else None
    report = None if isinstance(h, str) else h  # not measured yet, or failed: dashes
    perf = report.performance if report else {}
    drift = (report.drift if report else None) or {}
    split = f" + canary v{d.canary_version} {d.canary_percent:.0f}%" if d.canary_version else ""
    drift_state = (
        "..."  # measured after the screen is shown (see warm_health)
        if cached is None
        else "few rows"  # no verdict below [monitoring] min_rows, as the alerts
        if drift and report is not None and not report.enough_rows
        else "[red]DRIFT[/]"
        if drift.get("drifted")
        else ("[yellow]some[/]" if drift.get("drifted_columns") else "none")
        if drift
        else "-"
    )
    gap = serving_gap(champion, d.version, d.canary_version)
    state = d.status + (f" [red b]{gap}[/]" if gap.startswith("NOT") else "")
    return _row(
        "deployment",
        d.name,
        f"{d.model} v{d.version}{split}"
        + (f" ({gap})" if gap and not gap.startswith("NOT") else ""),
        state,
        _num(perf.get("rps")),
        _num(perf.get("latency_p99_ms")),
        _num(perf.get("error_rate")),
        drift_state,
    )


def _overview(ws: Workspace) -> Listing:
    rows: list[tuple[str, list[str]]] = []
    running, line, schedules = daemon_state(ws)
    rows.append(("daemon:", _row("daemon", "automation", line, "up" if running else "down")))
    best = champions(ws)
    for d in ws.deployments.list():
        rows.append((f"deployment:{d.name}", _deployment_row(ws, d, best.get(d.model))))
    for a in ws.alerts.list("active", limit=20):
        rows.append(
            (f"alert:{a.id}", _row("alert", f"#{a.id} {a.rule}", a.subject, f"[red]{a.state}[/]"))
        )
    rows += [(key, _row(c[0], c[1], c[2], c[3])) for key, c in _area_rows(ws)]
    for sc in sorted(schedules, key=lambda x: x.get("next_run") or 1e18)[:5]:
        rows.append(
            (
                f"schedule:{sc['id']}",
                _row(
                    "schedule",
                    sc["pipeline"],
                    sc["trigger"][:40],
                    "on new files"
                    if sc.get("watcher")
                    else ("paused" if sc["paused"] else f"next {_when(sc['next_run'])}"),
                ),
            )
        )
    for m in ws.models.list():
        rows.append(
            (
                f"model:{m.name}",
                _row(
                    "model",
                    m.name,
                    ", ".join(f"@{a}=v{v}" for a, v in m.aliases.items()) or "no aliases",
                    f"{m.versions} version{'s' if m.versions != 1 else ''}",
                ),
            )
        )
    for r in ws.runs.search(limit=5):
        rows.append((f"run:{r.id}", _row("run", r.id[:8], r.experiment, r.status)))
    for j in [j for j in ws.jobs.list(limit=20) if j.kind == "chain"][:5]:
        rows.append((f"job:{j.id}", _row("job", str(j.id), j.pipeline, j.status.value)))
    return Listing(COLUMNS, rows)


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
    live=True,  # traffic figures change with no daemon event: polled, and measured after
    warm=warm_health,
)
