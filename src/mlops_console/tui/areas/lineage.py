"""The Lineage area: for each deployment (and each model that serves nowhere) the chain
data version -> run -> model version -> deployment -> alerts -> retrain, and, as its
detail, everything that happened to it in time order: ingests, runs, registrations, alias
moves with their reasons, deploy events, alerts opened and resolved, retrain chains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.markup import escape

from mlops_console.errors import MlopsError
from mlops_console.tui.areas.common import Area, Listing, _num, _when, champions, serving_gap

if TYPE_CHECKING:
    from mlops_console.automation.jobs import Job
    from mlops_console.deploy.records import Deployment
    from mlops_console.registry.records import ModelVersion
    from mlops_console.tracking.runs import RunRecord
    from mlops_console.workspace import Workspace

TIMELINE = 300  # the newest events a detail shows


@dataclass
class Event:
    """One line of a timeline: when, what kind of thing happened, and what."""

    at: float
    kind: str  # ingest, run, register, alias, deploy, alert, chain
    text: str


def _pipelines_by_model(ws: Workspace) -> dict[str, str]:
    """Which pipeline registers each model (its retrain), read once per load."""
    return {p.spec.register_as: p.name for p in ws.pipelines.list() if p.spec.register_as}


def _chains(ws: Workspace, pipeline: str | None, limit: int = 100) -> list[Job]:
    if pipeline is None:
        return []
    return [j for j in ws.jobs.list(pipeline=pipeline, limit=limit) if j.kind == "chain"]


def _version_of(job: Job, model: str) -> int | None:
    """The version of `model` a chain registered (its result says "m/3"), or None."""
    ref = job.result.get("version")
    name, _, version = str(ref or "").partition("/")
    return int(version) if name == model and version.isdigit() else None


def _retrain_cell(chains: list[Job], model: str, version: int) -> str:
    """The chain that produced the version after `version`, else one under way, else "-"."""
    produced = sorted(
        (v, j) for j in chains if (v := _version_of(j, model)) is not None and v > version
    )
    if produced:
        v, job = produced[0]
        return f"chain {job.id} -> v{v}"
    busy = next((j for j in chains if not j.status.final), None)
    if busy is not None:
        return f"chain {busy.id} {busy.status}"
    return "-"


def _run_of(ws: Workspace, mv: ModelVersion | None) -> RunRecord | None:
    if mv is None or not mv.run_id:
        return None
    try:
        return ws.runs.get(mv.run_id)
    except MlopsError:  # a run removed since: the version still shows
        return None


def _row(
    ws: Workspace,
    model: str,
    version: int | None,
    dep: Deployment | None,
    champion: int | None,
    pipeline: str | None,
) -> list[str]:
    mv = None
    if version is not None:
        try:
            mv = ws.models.get_version(model, version)
        except MlopsError:  # a version deleted under a stopped deployment
            mv = None
    run = _run_of(ws, mv)
    data = ", ".join(f"{i['name']} {i['version']}" for i in run.inputs) if run else "-"
    aliases = " " + " ".join("@" + a for a in mv.aliases) if mv and mv.aliases else ""
    deployed = "-"
    alerts = "-"
    if dep is not None:
        gap = serving_gap(champion, dep.version, dep.canary_version)
        deployed = f"{dep.name} {dep.status}" + (
            f" [red]{gap}[/]" if gap.startswith("NOT SERVING") else (f" {gap}" if gap else "")
        )
        found = ws.alerts.list(deployment=dep.name, limit=100)
        active = sum(1 for a in found if a.state.active)
        alerts = f"[red]{active} open[/] of {len(found)}" if active else str(len(found) or "-")
    return [
        dep.name if dep is not None else model,
        data,
        run.id[:8] if run else "-",
        f"{model} v{version}{aliases}" if version is not None else f"{model} (no version)",
        deployed,
        alerts,
        _retrain_cell(_chains(ws, pipeline), model, version) if version is not None else "-",
    ]


def _lineage(ws: Workspace) -> Listing:
    champ = champions(ws)
    pipelines = _pipelines_by_model(ws)
    rows: list[tuple[str, list[str]]] = []
    deployed: set[str] = set()
    for d in ws.deployments.list():
        deployed.add(d.model)
        rows.append(
            (
                f"dep:{d.name}",
                _row(ws, d.model, d.version, d, champ.get(d.model), pipelines.get(d.model)),
            )
        )
    for m in ws.models.list():
        if m.name in deployed:
            continue
        version = champ.get(m.name, m.latest_version)
        rows.append(
            (
                f"model:{m.name}",
                _row(ws, m.name, version, None, champ.get(m.name), pipelines.get(m.name)),
            )
        )
    return Listing(
        ["deployment / model", "data", "run", "version", "deployment", "alerts", "retrain"], rows
    )


# --- the timeline -------------------------------------------------------------------------


def _data_events(ws: Workspace, datasets: set[str]) -> list[Event]:
    out = []
    for name in sorted(datasets):
        try:
            versions = ws.data.versions(name)
        except MlopsError:  # the dataset was removed since the runs read it
            continue
        for dv in versions:
            failed = dv.failed_rules
            said = f"ingest {name} v{dv.version}: {dv.status}, {dv.rows} rows"
            if failed:
                said += " (" + "; ".join(
                    f"{r['rule']} {r['column'] or ''}".strip() for r in failed[:3]
                )
                said += f"{'; ...' if len(failed) > 3 else ''} failed)"
            out.append(Event(dv.created_at, "ingest", said))
    return out


def _run_events(runs: list[RunRecord]) -> list[Event]:
    out = []
    for r in runs:
        read = ", ".join(
            f"{i['name']} {i['version']}" + (" FORCED" if i.get("forced") else "") for i in r.inputs
        )
        out.append(
            Event(
                r.start_time,
                "run",
                f"run {r.id[:8]} ({r.experiment}) {r.status}" + (f", read {read}" if read else ""),
            )
        )
    return out


def _model_events(ws: Workspace, versions: list[ModelVersion]) -> list[Event]:
    out = []
    for mv in versions:
        gates = (
            "no gates"
            if mv.gates_passed is None
            else ("gates pass" if mv.gates_passed else "gates FAIL")
        )
        run = f" from run {mv.run_id[:8]}" if mv.run_id else ""
        out.append(Event(mv.created_at, "register", f"registered {mv.ref}{run}, {gates}"))
    if versions:
        for move in ws.models.history(versions[0].name):
            why = f": {move.reason}" if move.reason else ""
            out.append(
                Event(
                    move.at,
                    "alias",
                    f"{move.model}@{move.alias} v{move.from_version or '-'} -> "
                    f"v{move.to_version or '-'} ({move.kind} by {move.actor or '-'}{why})",
                )
            )
    return out


def _deployment_events(ws: Workspace, name: str) -> list[Event]:
    out = [
        Event(
            e.at,
            "deploy",
            f"{name}: {e.action} v{e.from_version or '-'} -> v{e.to_version or '-'}"
            + (f" ({e.detail})" if e.detail else ""),
        )
        for e in ws.deployments.history(name)
    ]
    for a in ws.alerts.list(deployment=name, limit=200):
        what = f"alert #{a.id} {a.rule} on {a.subject}"
        acted = f"; {a.action}: {a.action_result}" if a.action_result else ""
        out.append(
            Event(
                a.opened_at,
                "alert",
                f"{what} opened ({a.measure} {_num(a.value)}, threshold {_num(a.threshold)}){acted}",
            )
        )
        if a.acknowledged_at:
            out.append(
                Event(a.acknowledged_at, "alert", f"{what} acknowledged by {a.acknowledged_by}")
            )
        if a.resolved_at:
            out.append(Event(a.resolved_at, "alert", f"{what} resolved"))
    return out


def _chain_events(chains: list[Job], model: str) -> list[Event]:
    out = []
    for j in chains:
        out.append(Event(j.created_at, "chain", f"chain {j.id} queued ({j.trigger})"))
        if j.ended_at:
            made = _version_of(j, model)
            result = f", registered {model}/{made}" if made is not None else ""
            out.append(
                Event(
                    j.ended_at,
                    "chain",
                    f"chain {j.id} {j.status}{result}: {escape(j.detail[:120])}",
                )
            )
    return out


def timeline(ws: Workspace, key: str) -> list[Event]:
    """Everything that happened to the row's model and deployment, oldest first."""
    kind, _, ident = key.partition(":")
    dep = ws.deployments.get(ident) if kind == "dep" else None
    model = dep.model if dep is not None else ident
    versions = ws.models.versions(model)
    pipeline = _pipelines_by_model(ws).get(model)
    runs: dict[str, RunRecord] = {}
    if pipeline is not None:
        spec = ws.pipelines.get(pipeline).spec
        for r in ws.runs.search(experiment=spec.experiment or spec.name, limit=200, full=True):
            runs[r.id] = r
    for mv in versions:
        if mv.run_id and mv.run_id not in runs:
            run = _run_of(ws, mv)
            if run is not None:
                runs[run.id] = run
    events = [
        *_data_events(ws, {i["name"] for r in runs.values() for i in r.inputs}),
        *_run_events(list(runs.values())),
        *_model_events(ws, versions),
        *(_deployment_events(ws, dep.name) if dep is not None else []),
        *_chain_events(_chains(ws, pipeline, limit=200), model),
    ]
    return sorted(events, key=lambda e: e.at)


def _lineage_detail(ws: Workspace, key: str) -> str:
    kind, _, ident = key.partition(":")
    events = timeline(ws, key)
    head = f"Deployment {ident}" if kind == "dep" else f"Model {ident}"
    lines = [f"{head}: {len(events)} events, oldest first", ""]
    if len(events) > TIMELINE:
        lines.append(f"({len(events) - TIMELINE} older events left out)")
        events = events[-TIMELINE:]
    lines += [f"  {_when(e.at)}  {e.kind:8} {escape(e.text)}" for e in events]
    return "\n".join(lines)


AREA = Area(
    "lineage",
    "Lineage",
    "Where each deployment's model came from and what came after: data version -> run -> "
    "model version -> deployment -> alerts -> retrain; the detail is its timeline.",
    _lineage,
    _lineage_detail,
)
