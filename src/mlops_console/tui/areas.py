"""What each console screen lists, shows and can do: plain functions over the Workspace,
so they are testable without a terminal (and run in worker threads)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _when(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _num(v: Any) -> str:
    return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


@dataclass
class Listing:
    columns: list[str]
    rows: list[tuple[str, list[str]]]  # (key, cells)


@dataclass
class Action:
    key: str
    name: str  # "area: verb" in the command palette
    description: str
    run: Callable[[Any, str], str]  # (ws, row key) -> message
    destructive: bool = True


@dataclass
class Area:
    name: str
    title: str
    help: str
    load: Callable[[Any], Listing]
    detail: Callable[[Any, str], str]
    actions: list[Action] = field(default_factory=list)


def _runs(ws) -> Listing:
    runs = ws.runs.search(limit=500)
    keys = sorted({k for r in runs for k in r.metrics if k.startswith("holdout_")})[:3]
    return Listing(
        ["run", "experiment", "status", "started", *keys],
        [
            (
                r.id,
                [
                    r.id[:8],
                    r.experiment,
                    r.status,
                    _when(r.start_time),
                    *(_num(r.metrics.get(k)) for k in keys),
                ],
            )
            for r in runs
        ],
    )


def _run_detail(ws, key: str) -> str:
    r = ws.runs.get(key)
    lines = [f"Run {r.id}", f"{r.experiment} / {r.name}: {r.status}", "", "Params:"]
    lines += [f"  {k} = {v}" for k, v in sorted(r.params.items())]
    lines += ["", "Metrics:"] + [f"  {k} = {_num(v)}" for k, v in sorted(r.metrics.items())]
    lines += ["", "Data read:"] + [
        f"  {i['name']} {i['version']} ({i['rows']} rows)" + (" FORCED" if i.get("forced") else "")
        for i in r.inputs
    ]
    git = r.lineage.get("git")
    lines += ["", f"Code: {(git or {}).get('commit', 'not under git')}"]
    return "\n".join(lines)


def _models(ws) -> Listing:
    rows = []
    for m in ws.models.list():
        for v in ws.models.versions(m["name"]):
            rows.append(
                (
                    v.ref,
                    [
                        v.ref,
                        v.status,
                        ", ".join("@" + a for a in v.aliases) or "-",
                        "pass" if v.gates_passed else ("FAIL" if v.gates_passed is False else "-"),
                        _num(v.metrics.get("holdout_roc_auc", v.metrics.get("holdout_rmse"))),
                        _when(v.created_at),
                    ],
                )
            )
    return Listing(["version", "status", "aliases", "gates", "metric", "registered"], rows)


def _model_detail(ws, key: str) -> str:
    from mlops_console.registry.cards import card_markdown

    return card_markdown(ws.models.card(key))


def _promote(ws, key: str) -> str:
    move = ws.models.promote(key, reason="from the console")
    return f"{move.model}@{move.alias}: v{move.from_version or '-'} -> v{move.to_version}"


def _rollback(ws, key: str) -> str:
    move = ws.models.rollback(key.split("/")[0], reason="from the console")
    return f"{move.model}@{move.alias}: v{move.from_version} -> v{move.to_version}"


def _data(ws) -> Listing:
    rows = []
    for d in ws.data.list():
        for v in ws.data.versions(d["name"]):
            rows.append(
                (
                    f"{d['name']}/{v.version}",
                    [
                        d["name"],
                        f"v{v.version}" + (" *" if v.version == d["current_version"] else ""),
                        v.status,
                        str(v.rows),
                        str(len(v.failed_rules) or "-"),
                        _when(v.created_at),
                    ],
                )
            )
    return Listing(["dataset", "version", "status", "rows", "failed rules", "ingested"], rows)


def _data_detail(ws, key: str) -> str:
    name, version = key.split("/")
    v = ws.data.version(name, int(version))
    lines = [
        f"{name} v{version}: {v.status}, {v.rows} rows",
        "Sources: " + ", ".join(s["path"] for s in v.sources),
        "",
    ]
    if v.failed_rules:
        lines.append("Failing contract rules:")
        lines += [f"  {r['rule']} {r['column'] or ''}: {r['detail']}" for r in v.failed_rules]
        lines.append("")
    prof = ws.data.profile(name, int(version))
    lines.append("Profile:")
    for col, p in prof.get("columns", {}).items():
        extra = (
            f"min {_num(p.get('min'))} median {_num(p.get('quantiles', {}).get('0.5'))} max {_num(p.get('max'))}"
            if "quantiles" in p
            else ", ".join(f"{t['value']}:{t['count']}" for t in p.get("top", [])[:3])
        )
        lines.append(f"  {col:18} {p['type']:9} nulls {p['nulls']:<6} {extra}")
    return "\n".join(lines)


def _deployments(ws) -> Listing:
    return Listing(
        ["deployment", "target", "serving", "canary", "status", "endpoint"],
        [
            (
                d["name"],
                [
                    d["name"],
                    d["target"],
                    f"{d['model']} v{d['version']}",
                    f"v{d['canary_version']} {d['canary_percent']:.0f}%"
                    if d["canary_version"]
                    else "-",
                    d["status"],
                    d["endpoint"],
                ],
            )
            for d in ws.deployments.list()
        ],
    )


def _deployment_detail(ws, key: str) -> str:
    st = ws.deployments.status(key)
    hist = ws.deployments.history(key)[-10:]
    lines = [
        json.dumps(
            {
                k: st[k]
                for k in (
                    "name",
                    "target",
                    "model",
                    "version",
                    "canary_version",
                    "status",
                    "endpoint",
                )
            },
            indent=2,
        ),
        "",
        "Live:",
        json.dumps(st["live"], indent=2, default=str)[:1500],
        "",
        "History:",
    ]
    lines += [
        f"  {_when(e['at'])} {e['action']} {e['from_version'] or '-'} -> {e['to_version'] or '-'} {e['detail'][:60]}"
        for e in hist
    ]
    return "\n".join(lines)


def _jobs(ws) -> Listing:
    return Listing(
        ["job", "pipeline", "status", "trigger", "created", "outcome"],
        [
            (
                str(j["id"]),
                [
                    str(j["id"]),
                    j["pipeline"],
                    j["status"],
                    j["trigger"],
                    _when(j["created_at"]),
                    j["detail"][:50],
                ],
            )
            for j in ws.jobs.list(limit=500)
            if j["kind"] in ("chain", "score")
        ],
    )


def _job_detail(ws, key: str) -> str:
    j = ws.jobs.get(int(key))
    steps = sorted(ws.jobs.list(chain_id=j["id"]), key=lambda s: s["id"])
    lines = [
        f"Job {j['id']} ({j['kind']}) for {j['pipeline']}: {j['status']}",
        j["detail"],
        "",
        "Steps:",
    ]
    lines += [f"  {s['kind']:9} {s['status']:10} {s['detail'][:70]}" for s in steps]
    lines += ["", "Log (tail):", ws.jobs.logs(j["id"], 40)]
    return "\n".join(lines)


def _plugins(ws) -> Listing:
    from mlops_console.plugins import load_plugins

    return Listing(
        ["plugin", "source", "loaded", "provides / error"],
        [
            (
                i.name,
                [
                    i.name,
                    i.source,
                    "yes" if i.loaded else "FAILED",
                    ", ".join(i.provides) if i.loaded else i.error,
                ],
            )
            for i in load_plugins().info
        ],
    )


def _overview(ws) -> Listing:
    rows = []
    for d in ws.deployments.list():
        rows.append(
            (
                f"deployment:{d['name']}",
                ["deployment", d["name"], f"{d['model']} v{d['version']}", d["status"]],
            )
        )
    for m in ws.models.list():
        rows.append(
            (
                f"model:{m['name']}",
                [
                    "model",
                    m["name"],
                    ", ".join(f"@{a}=v{v}" for a, v in m["aliases"].items()) or "-",
                    f"{m['versions']} versions",
                ],
            )
        )
    for r in ws.runs.search(limit=5):
        rows.append((f"run:{r.id}", ["run", r.id[:8], r.experiment, r.status]))
    for j in [j for j in ws.jobs.list(limit=20) if j["kind"] == "chain"][:5]:
        rows.append((f"job:{j['id']}", ["job", str(j["id"]), j["pipeline"], j["status"]]))
    return Listing(["kind", "name", "what", "state"], rows)


def _overview_detail(ws, key: str) -> str:
    kind, _, ident = key.partition(":")
    return {
        "deployment": _deployment_detail,
        "model": lambda w, k: _model_detail(w, k),
        "run": _run_detail,
        "job": _job_detail,
    }[kind](ws, ident)


def _cancel(ws, key: str) -> str:
    j = ws.jobs.cancel(int(key))
    return f"job {key}: {j['status']}" + (" (cancel requested)" if j["cancel_requested"] else "")


def _dep_promote(ws, key: str) -> str:
    return f"{key}: now serving v{ws.deployments.promote(key, 'from the console')['version']}"


def _dep_rollback(ws, key: str) -> str:
    return f"{key}: serving v{ws.deployments.rollback(key, 'from the console')['version']}"


AREAS = [
    Area(
        "overview",
        "Overview",
        "Deployments, models, the latest runs and chains at a glance.",
        _overview,
        _overview_detail,
    ),
    Area(
        "data",
        "Data",
        "Dataset versions: status, contract reports of quarantined versions, profiles.",
        _data,
        _data_detail,
    ),
    Area(
        "runs",
        "Runs",
        "Tracked runs with params, metrics and the data they read.",
        _runs,
        _run_detail,
    ),
    Area(
        "models",
        "Models",
        "Versions, aliases, gates and model cards.",
        _models,
        _model_detail,
        [
            Action("p", "model: promote", "Make the selected version champion", _promote),
            Action("b", "model: rollback", "Move champion back to its previous version", _rollback),
        ],
    ),
    Area(
        "deployments",
        "Deployments",
        "What serves where; canaries; history.",
        _deployments,
        _deployment_detail,
        [
            Action("p", "deployment: promote", "Promote the canary", _dep_promote),
            Action("b", "deployment: rollback", "Drop the canary / go back", _dep_rollback),
        ],
    ),
    Area(
        "automation",
        "Automation",
        "Chains of the daemon: state, steps, logs.",
        _jobs,
        _job_detail,
        [Action("c", "job: cancel", "Cancel the selected job", _cancel)],
    ),
    Area("plugins", "Plugins", "What is loaded, what failed and why.", _plugins, lambda ws, k: k),
]
BY_NAME = {a.name: a for a in AREAS}
