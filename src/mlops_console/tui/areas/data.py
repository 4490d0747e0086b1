"""The Data area: dataset versions (contract reports, profiles, the diff with the version
before) and feature views; ingest a dataset, train a pipeline."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlops_console.tui.areas.common import Action, Area, Listing, _num, _when, severity, spark

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


def _data(ws: Workspace) -> Listing:
    rows: list[tuple[str, list[str]]] = []
    for d in ws.data.list():
        for v in ws.data.versions(d.name):
            rows.append(
                (
                    f"{d.name}/{v.version}",
                    [
                        d.name,
                        f"v{v.version}" + (" *" if v.version == d.current_version else ""),
                        v.status,
                        str(v.rows),
                        str(len(v.failed_rules) or "-"),
                        _when(v.created_at),
                    ],
                )
            )
    try:
        views = ws.features.views()
    except Exception:  # a broken view file is shown in its detail, never breaks the list
        views = {}
    for name, view in views.items():
        rows.append(
            (
                f"view:{name}",
                [
                    name,
                    "feature view",
                    "sql" if view.sql else (view.source or "-"),
                    str(len(view.features) or "-"),
                    "-",
                    "-",
                ],
            )
        )
    return Listing(["dataset", "version", "status", "rows", "failed rules", "ingested"], rows)


def _data_detail(ws: Workspace, key: str) -> str:
    if key.startswith("view:"):
        return json.dumps(ws.features.describe(key[5:]), indent=2, default=str)
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
    lines.append("Profile (histogram of 20 bins, min to max):")
    for col, p in prof.get("columns", {}).items():
        hist = (p.get("histogram") or {}).get("counts")
        extra = (
            f"{spark(hist) if hist else '':20} min {_num(p.get('min'))} median "
            f"{_num(p.get('quantiles', {}).get('0.5'))} max {_num(p.get('max'))}"
            if "quantiles" in p
            else ", ".join(f"{t['value']}:{t['count']}" for t in p.get("top", [])[:3])
        )
        lines.append(f"  {col[:18]:18} {p['type']:9} nulls {p['nulls']:<6} {extra}")
    if int(version) > 1:
        try:
            d = ws.data.diff(name, int(version) - 1, int(version))
        except Exception as exc:  # e.g. the earlier version was quarantined and removed
            lines += ["", f"Diff with v{int(version) - 1}: not available ({exc})"]
        else:
            lines += ["", f"Diff with v{d['from']}: rows {d['rows'][0]} -> {d['rows'][1]}"]
            sch = d["schema"]
            if sch["added"] or sch["removed"] or sch["type_changed"]:
                lines.append(
                    f"  schema: added {sch['added']}, removed {sch['removed']}, "
                    f"type changed {sch['type_changed']}"
                )
            for col, e in d["columns"].items():
                if e.get("psi") is not None:
                    c = severity(e["psi"] >= 0.2, e["psi"])
                    lines.append(f"  {col[:18]:18} [{c}]psi {_num(e['psi'])}[/]")
    return "\n".join(lines)


def _is_dataset(key: str) -> bool:
    return not key.startswith("view:")


def _ingest(ws: Workspace, key: str, progress: Callable[[str], None] = lambda s: None) -> str:
    """A new version from the dataset's source files, with its contract report: accepted, or
    quarantined with the rules that fail (a quarantine is a result, not an error)."""
    name = key.split("/")[0]
    result = ws.data.ingest(name, stage=progress)
    dv = result.version
    if dv.status != "quarantined":
        return result.message
    failed = dv.failed_rules
    current = ws.data.get(name).current_version
    snapshot = ws.state / "lake" / dv.lake_path
    if snapshot.is_relative_to(ws.root):  # the state may live elsewhere
        snapshot = snapshot.relative_to(ws.root)
    lines = [
        f"{name} v{dv.version} QUARANTINED: {len(failed)} contract rule(s) fail"
        + ("" if result.created else " (the files are those of this quarantined version)"),
        *(
            f"  {r['rule']}{'(' + r['column'] + ')' if r['column'] else ''}: {r['detail']}"
            for r in failed[:8]
        ),
        f"Its snapshot is kept in quarantine ({snapshot}) and not used"
        + (f"; v{current} stays current." if current else "."),
        f"Fix the data or {ws.data.contract_path(name).relative_to(ws.root)} and ingest "
        f"again, or accept it with `mlops data ingest {name} --force`.",
    ]
    return "\n".join(lines)


def _train_request(ws: Workspace, answer: str) -> tuple[str, dict[str, Any]]:
    """(pipeline, overrides) from `PIPELINE [KEY=VALUE ...]`, read as `mlops run PIPELINE
    --set KEY=VALUE` reads its overrides."""
    import shlex

    from mlops_console.pipelines import parse_overrides

    try:
        words = shlex.split(answer)
    except ValueError as exc:  # an unclosed quote
        raise ValueError(f"cannot read {answer!r}: {exc}") from None
    if not words or "=" in words[0]:
        names = [p.name for p in ws.pipelines.list()]
        raise ValueError(
            "type the pipeline first, then any KEY=VALUE overrides, e.g. "
            f"'{names[0] if names else 'churn'} model.params.C=0.5' "
            f"(pipelines: {', '.join(names) or 'none in pipelines/'})"
        )
    try:
        overrides = parse_overrides(words[1:])
    except ValueError as exc:
        raise ValueError(
            f"{exc} Each override is KEY=VALUE, e.g. model.params.max_iter=200."
        ) from None
    return words[0], overrides


def _confirm_train(ws: Workspace, key: str, answer: str) -> str:
    from mlops_console.training.prepare import load_spec

    pipeline, overrides = _train_request(ws, answer)
    spec, _ = load_spec(ws, pipeline, overrides)  # a wrong pipeline or override: said now
    sets = ", ".join(f"{k}={v}" for k, v in overrides.items())
    said = f"Train pipeline {pipeline}" + (f" with {sets}" if sets else "")
    if not spec.register_as:
        return said + "?"
    champion = ws.config.registry.champion_alias
    then = (
        f"; if it passes its gates it becomes {spec.register_as}@{champion}"
        if spec.gates.auto_promote
        else ""
    )
    return f"{said}? It registers a new version of {spec.register_as}{then}."


def _train(
    ws: Workspace, key: str, answer: str, progress: Callable[[str], None] = lambda s: None
) -> str:
    """Train a pipeline with overrides, as `mlops run PIPELINE --set KEY=VALUE` does."""
    pipeline, overrides = _train_request(ws, answer)
    t0 = time.perf_counter()

    def stage(text: str) -> None:
        progress(f"{pipeline}: {text.strip()} ({time.perf_counter() - t0:.0f}s)")

    result = ws.pipelines.run(pipeline, stage=stage, overrides=overrides)
    primary = f"holdout_{ws.pipelines.get(pipeline).spec.validation.primary_metric}"
    said = f"run {result.run_id[:8]} of {pipeline} in {result.seconds:.0f}s" + (
        f": {primary} {_num(result.metrics[primary])}" if primary in result.metrics else ""
    )
    mv = result.version
    if mv is None:
        return said + "; nothing registered (the pipeline has no register_as)"
    if result.promoted:
        return said + f"; registered {mv.ref}, now {mv.name}@{ws.config.registry.champion_alias}"
    if result.aliases:
        return (
            said + f"; registered {mv.ref} as @{', @'.join(result.aliases)} (promote it in Models)"
        )
    failed = [g["name"] for g in result.gates.get("results", []) if not g["passed"]]
    return said + f"; registered {mv.ref}, which failed its gates ({', '.join(failed)})"


AREA = Area(
    "data",
    "Data",
    "Dataset versions: status, contract reports of quarantined versions, profiles with "
    "histograms, the diff with the version before; feature views. i ingests the selected "
    "dataset's files; t trains a pipeline, with overrides as `mlops run --set` takes them.",
    _data,
    _data_detail,
    [
        Action(
            "i",
            "data: ingest",
            "Take a new version of the selected dataset from its files, checked by its contract",
            _ingest,
            destructive=False,
            applies=_is_dataset,
            progress=True,
        ),
        Action(
            "t",
            "data: train",
            "Train a pipeline (with overrides) and register its model",
            _train,
            ask="PIPELINE [KEY=VALUE ...], e.g. churn model.params.C=0.5",
            confirm=_confirm_train,
            progress=True,
        ),
    ],
)
