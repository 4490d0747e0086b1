"""`mlops test MODEL` (run the checks again on a registered version) and
`mlops reproduce RUN` (re-run a run from its recorded lineage and compare)."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from mlops_console.config import parse
from mlops_console.errors import MlopsError, NotFound
from mlops_console.pipeline_spec import PipelineSpec

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


def recorded_spec(ws: Workspace, run_id: str) -> PipelineSpec:
    rec = ws.runs.get(run_id)
    art = {a["name"]: a["hash"] for a in rec.artifacts}
    if "pipeline.json" not in art:
        raise MlopsError(
            f"Run {run_id[:8]} was not made by a pipeline (it has no pipeline.json); "
            "there is nothing to re-run or re-test it against."
        )
    return parse(
        PipelineSpec,
        json.loads(ws.artifacts.get_bytes(art["pipeline.json"])),
        f"run {run_id[:8]} pipeline.json",
    )


def recorded_dataset_version(ws: Workspace, run_id: str, spec: PipelineSpec) -> int | None:
    if not spec.data.dataset:
        return None
    for i in ws.runs.get(run_id).inputs:
        if i["name"] == spec.data.dataset and str(i["version"]).startswith("v"):
            return int(i["version"][1:])
    raise NotFound(
        f"Run {run_id[:8]} does not record which version of {spec.data.dataset} it read."
    )


def retest_version(ws: Workspace, ref: str, stage=lambda s: None) -> dict[str, Any]:
    from sklearn.base import clone

    from mlops_console.metrics import evaluate
    from mlops_console.testing.checks import CheckContext, run_checks
    from mlops_console.testing.gates import evaluate_gates
    from mlops_console.training.prepare import prepare

    mv = ws.models.resolve(ref)
    if not mv.run_id:
        raise MlopsError(f"{mv.ref} has no run; it was not trained by a pipeline.")
    spec = recorded_spec(ws, mv.run_id)
    dv = recorded_dataset_version(ws, mv.run_id, spec)
    stage(
        f"read the data {mv.ref} was trained on" + (f" ({spec.data.dataset} v{dv})" if dv else "")
    )
    p = prepare(ws, spec, None, dv, stage)
    bundle = ws.models.bundle(mv.ref)
    model = bundle.sklearn_model
    champion = None
    try:
        champ = ws.models.resolve(f"{mv.name}@{ws.config.registry.champion_alias}")
        if champ.version != mv.version:
            champion = ws.models.bundle(champ.ref, runtime="sklearn")
    except NotFound:
        pass
    ctx = CheckContext(
        spec=spec,
        prepared=p,
        model=model,
        bundle=bundle,
        cv_score=mv.metrics.get(f"cv_{spec.validation.primary_metric}"),
        champion=champion,
        fit_again=lambda: clone(model).fit(p.X_train, p.y_train),
        model_bytes=len(ws.artifacts.get_bytes(bundle.manifest["files"]["model.joblib"]["sha256"])),
    )
    stage("model checks")
    metrics = {
        f"holdout_{k}": v
        for k, v in evaluate(spec.task, model, p.X_hold, p.y_hold, p.positive_class).items()
    }
    checks = run_checks(ctx, stage, metrics)
    gates = evaluate_gates(spec, metrics, checks)
    ws.models.record_evaluation(mv.name, mv.version, checks, gates)
    return {
        "model": mv.name,
        "version": mv.version,
        "checks": checks,
        "gates": gates,
        "metrics": metrics,
    }


def reproduce(
    ws: Workspace, run_ref: str, tolerance: float = 1e-6, stage=lambda s: None
) -> dict[str, Any]:
    from mlops_console.tracking.lineage import environment, git_state
    from mlops_console.training.runner import train

    old = ws.runs.get(run_ref)
    spec = recorded_spec(ws, old.id)
    dv = recorded_dataset_version(ws, old.id, spec)
    result = train(ws, spec.name, stage=stage, register=False, spec=spec, dataset_version=dv)
    new = ws.runs.get(result.run_id)
    metrics = {}
    for k, v in old.metrics.items():
        if not (k.startswith(("holdout_", "cv_", "train_"))):
            continue
        w = new.metrics.get(k)
        same = w is not None and (abs(w - v) <= tolerance or (math.isnan(w) and math.isnan(v)))
        metrics[k] = {"recorded": v, "now": w, "match": same}
    old_lin = old.lineage
    now_git, then_git = git_state(ws.root), old_lin.get("git")
    env_then = (old_lin.get("environment") or {}).get("packages", {})
    env_now = environment()["packages"]
    differences: list[dict[str, Any]] = []
    data_then = {i["name"]: i["digest"] for i in old.inputs}
    data_now = {i["name"]: i["digest"] for i in new.inputs}
    if data_then != data_now:
        differences.append({"what": "data", "then": data_then, "now": data_now})
    if (then_git or {}).get("commit") != (now_git or {}).get("commit") or (then_git or {}).get(
        "diff_sha256"
    ) != (now_git or {}).get("diff_sha256"):
        differences.append({"what": "code", "then": then_git, "now": now_git})
    changed: dict[str, Any] = {
        k: [env_then.get(k), env_now.get(k)]
        for k in sorted(set(env_then) | set(env_now))
        if env_then.get(k) != env_now.get(k)
    }
    if changed:
        differences.append({"what": "environment", "packages": changed})
    py_then = (old_lin.get("environment") or {}).get("python")
    if py_then != environment()["python"]:
        differences.append({"what": "python", "then": py_then, "now": environment()["python"]})
    if old_lin.get("config_sha256") != new.lineage.get("config_sha256"):
        differences.append({"what": "workspace config (mlops.toml)"})
    with ws.db.write() as conn:
        conn.exec_driver_sql(
            "INSERT INTO tag (run_id, key, value) VALUES (?, 'reproduces', ?) "
            "ON CONFLICT(run_id, key) DO UPDATE SET value = excluded.value",
            (new.id, old.id),
        )
    return {
        "run": old.id,
        "reproduction": new.id,
        "tolerance": tolerance,
        "match": all(m["match"] for m in metrics.values()),
        "metrics": metrics,
        "differences": differences,
    }
