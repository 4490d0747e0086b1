"""`mlops run PIPELINE`: read, validate, search, fit, evaluate, bundle, test, gate, register.

Everything a user can get wrong in the spec or the data is checked before training
starts, with the file, the key and what to do.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_console.errors import ConfigError, MlopsError, NotFound
from mlops_console.pipeline_spec import PipelineSpec, effective_spec
from mlops_console.training.prepare import Stage, load_spec, prepare

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


@dataclass
class TrainResult:
    run_id: str
    metrics: dict[str, float]
    version: Any
    promoted: bool
    champion_before: int | None
    seconds: float
    checks: list[dict[str, Any]] = field(default_factory=list)
    gates: dict[str, Any] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    search: list[dict[str, Any]] = field(default_factory=list)
    onnx: dict[str, Any] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)


def train(
    ws: Workspace,
    pipeline: str,
    stage: Stage = lambda s: None,
    overrides: dict[str, Any] | None = None,
    register: bool = True,
    spec: PipelineSpec | None = None,
    dataset_version: int | None = None,
    promote: bool = True,
    run_tags: dict[str, str] | None = None,
    quick: bool = False,
    compute: str | None = None,
    scheduler: str | None = None,
) -> TrainResult:
    """Run a pipeline end to end; see the module doc. `run_tags` are added to its run;
    `quick` trains with the quick profile (as `[search] profile = "quick"` does);
    `compute`/`scheduler` override mlops.toml's [compute] backend and scheduler."""
    spec_path = None
    if spec is None:
        spec, spec_path = load_spec(ws, pipeline, overrides)
    if quick:
        spec = spec.model_copy(
            update={"search": spec.search.model_copy(update={"profile": "quick"})}
        )
    spec = effective_spec(spec)
    where = (compute, scheduler)
    if spec.search.profile != "quick":
        return _train(
            ws, spec, spec_path, stage, register, dataset_version, promote, run_tags, where
        )
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # see pipeline_spec.QUICK
        return _train(
            ws, spec, spec_path, stage, register, dataset_version, promote, run_tags, where
        )


def _train(
    ws: Workspace,
    spec: PipelineSpec,
    spec_path: Any,
    stage: Stage,
    register: bool,
    dataset_version: int | None,
    promote: bool,
    run_tags: dict[str, str] | None,
    where: tuple[str | None, str | None] = (None, None),
) -> TrainResult:
    import joblib
    import numpy as np
    import pandas as pd

    from mlops_console.metrics import evaluate
    from mlops_console.registry.bundle import BundleDraft, LoadedBundle
    from mlops_console.testing.checks import CheckContext, run_checks
    from mlops_console.testing.gates import evaluate_gates
    from mlops_console.tracking.lineage import environment
    from mlops_console.training.onnx_export import export
    from mlops_console.training.search import open_compute, search

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    mark = [time.perf_counter()]

    def step(name: str, text: str) -> None:
        now = time.perf_counter()
        timings[name] = now - mark[0]
        mark[0] = now
        stage(text)

    stage(
        "validate the spec and read the data"
        + (" (quick profile)" if spec.search.profile == "quick" else "")
    )
    p = prepare(ws, spec, spec_path, dataset_version, stage)
    if p.dataset_version is not None and p.dataset_version.status == "forced":
        stage(f"WARNING: {p.data_source} broke its data contract and was accepted with --force")
    if p.positive_class is not None:
        stage(f"  positive class {p.positive_class!r}, {p.positive_reason}")
    # connected and version-checked before any run starts: a skew is refused here
    compute = open_compute(ws, spec, *where, stage=stage) if spec.search.method != "none" else None
    timings["prepare"] = time.perf_counter() - mark[0]
    mark[0] = time.perf_counter()

    experiment = spec.experiment or spec.name
    params = {
        "estimator": spec.model.estimator,
        **{f"model.{k}": v for k, v in spec.model.params.items()},
        "search": spec.search.method,
        "search.profile": spec.search.profile,
        "search.candidates": spec.search.candidates,
        "search.cv_folds": spec.search.cv_folds,
        "holdout_fraction": spec.validation.holdout_fraction,
        "features": len(p.features),
    }
    tags = {"pipeline": spec.name, "task": spec.task, "profile": spec.search.profile}
    if spec.search.max_rows is not None:
        params["search.max_rows"] = spec.search.max_rows
    if p.positive_class is not None:
        params["positive_class"] = p.positive_class
        tags["positive_class"] = p.positive_reason
    spec_json = spec.model_dump_json(indent=2).encode()
    with ws.runs.start(
        experiment=experiment,
        params=params,
        seed=spec.seed,
        spec=spec_path,
        tags={**tags, **(run_tags or {})},
    ) as run:
        if p.dataset_version is not None:
            ws.data.record_use(run, p.dataset_version)
        if spec.data.feature_views:
            ws.features.record_lineage(
                run,
                {
                    r.split(":")[0]: ws.features.view(r.split(":")[0])
                    for r in spec.data.feature_views
                },
                [],
            )
        run.log_artifact(spec_json, "pipeline.json")
        step(
            "setup",
            f"search: {spec.search.method}"
            + (
                f", up to {spec.search.candidates} candidates"
                if spec.search.method in ("random", "halving")
                else ""
            ),
        )
        try:
            found = search(ws, p, run, stage, compute)
        finally:
            if compute is not None:
                compute.close()
        used = compute.describe() if compute is not None else {"backend": "local"}
        run.log_params({"compute.backend": used["backend"]})
        run.set_tags(
            {f"compute.{k}": used[k] for k in ("scheduler", "fallback", "requested") if k in used}
        )
        if used.get("events"):
            run.set_tag("compute.events", "; ".join(used["events"]))
        if compute is not None and (compute.session is not None or compute.fallback):
            run.log_artifact(json.dumps(used, indent=2, default=str).encode(), "compute.json")
            run.add_lineage("compute", used)
        run.log_params({f"best.{k}": v for k, v in found.best_params.items()})
        run.log_metrics(
            {
                f"cv_{spec.validation.primary_metric}": found.best_score,
                f"cv_{spec.validation.primary_metric}_std": found.best_std,
            }
        )
        step("search", f"fit the best candidate on {len(p.X_train)} rows")
        model = found.fit_best(p.X_train, p.y_train)
        step("fit", f"evaluate on the {len(p.X_hold)} most recent rows (out-of-time holdout)")
        pos = p.positive_class
        metrics = {
            f"holdout_{k}": v
            for k, v in evaluate(spec.task, model, p.X_hold, p.y_hold, pos).items()
        }
        metrics.update(
            {
                f"train_{k}": v
                for k, v in evaluate(spec.task, model, p.X_train, p.y_train, pos).items()
            }
        )
        metrics[f"cv_{spec.validation.primary_metric}"] = found.best_score
        run.log_metrics(metrics)
        step("evaluate", "bundle: scikit-learn pipeline, ONNX when it converts faithfully")
        buf = io.BytesIO()
        joblib.dump(model, buf)
        files = {"model.joblib": buf.getvalue()}
        # workspace code the model's pickle refers to travels with it (hash-checked)
        from mlops_console.codefiles import CodeError, collect

        try:
            files.update(collect(spec.model.estimator, ws.root))
        except CodeError as exc:
            raise ConfigError(str(exc)) from None
        onnx_bytes, onnx_report = export(model, p.signature, spec.task, p.X_hold)
        if onnx_bytes is not None:
            files["model.onnx"] = onnx_bytes
        run.set_tag(
            "onnx",
            "included" if onnx_bytes is not None else f"not included: {onnx_report['reason']}",
        )
        for name, data in files.items():
            run.log_artifact(data, name)
        run.log_artifact(json.dumps(found.table, indent=2, default=str).encode(), "search.json")
        run.log_artifact(json.dumps(p.signature, indent=2).encode(), "signature.json")
        from mlops_console.monitoring.reference import ARTIFACT, build_reference

        run.log_artifact(
            build_reference(
                spec.task,
                model,
                pd.concat([p.X_train, p.X_hold]),
                np.concatenate([np.asarray(p.y_train), np.asarray(p.y_hold)]),
                p.signature.get("labels"),
                seed=spec.seed,
            ),
            ARTIFACT,
        )  # what monitoring compares production with
        draft = BundleDraft(
            task=spec.task,
            signature=p.signature,
            files=files,
            packages=environment()["packages"],
            lineage={
                "run_id": run.id,
                "experiment": experiment,
                "pipeline": spec.name,
                "spec_sha256": __import__("hashlib").sha256(spec_json).hexdigest(),
                "datasets": [
                    {
                        "name": p.dataset_version.dataset,
                        "version": p.dataset_version.version,
                        "digest": p.dataset_version.digest,
                    }
                ]
                if p.dataset_version
                else [],
                "compute": used,
            },
            onnx_check=onnx_report,
        )
        step("bundle", "model checks")
        champion = None
        reg = ws.config.registry
        if spec.register_as:
            try:
                champion = ws.models.bundle(
                    f"{spec.register_as}@{reg.champion_alias}", runtime="sklearn"
                )
            except (NotFound, MlopsError):
                champion = None
        bundle = LoadedBundle(
            json.loads(draft.manifest(spec.register_as or spec.name, 0, {n: "" for n in files})),
            files,
        )  # ONNX when it converted: what servers will run
        ctx = CheckContext(
            spec=spec,
            prepared=p,
            model=model,
            bundle=bundle,
            cv_score=found.best_score,
            champion=champion,
            fit_again=lambda: found.fit_best(p.X_train, p.y_train),
            model_bytes=len(files["model.joblib"]),
        )
        checks = run_checks(ctx, stage)
        gates = evaluate_gates(spec, metrics, checks)
        for c in checks:
            run.log_metric(f"check_{c['name']}", 1.0 if c["passed"] else 0.0)
        step(
            "checks",
            "gates: "
            + (
                "all pass"
                if gates["passed"]
                else "FAILED: " + ", ".join(g["name"] for g in gates["results"] if not g["passed"])
            ),
        )
    version, promoted, before, aliases = None, False, None, []
    if register and spec.register_as:
        version = ws.models.register(
            spec.register_as,
            run=run.id,
            signature=p.signature,
            metrics=metrics,
            description=spec.description or f"Trained by pipeline {spec.name}.",
            intended_use=spec.intended_use,
            bundle=draft,
            checks=checks,
            gates=gates,
        )
        if gates["passed"]:
            ws.models.set_alias(
                version.name, reg.challenger_alias, version.version, reason="passed every gate"
            )
            aliases.append(reg.challenger_alias)
            try:
                before = ws.models.resolve(f"{version.name}@{reg.champion_alias}").version
            except NotFound:
                before = None
            if spec.gates.auto_promote and promote:
                ws.models.set_alias(
                    version.name,
                    reg.champion_alias,
                    version.version,
                    reason="auto_promote: passed every gate, no regression",
                )
                promoted = True
                aliases.append(reg.champion_alias)
        version = ws.models.get_version(version.name, version.version)
        step(
            "register",
            f"registered {version.ref}"
            + (f" as @{', @'.join(aliases)}" if aliases else " (no alias: gates failed)"),
        )
    timings["total"] = time.perf_counter() - t0
    return TrainResult(
        run.id,
        metrics,
        version,
        promoted,
        before,
        timings["total"],
        checks,
        gates,
        timings,
        found.table,
        onnx_report,
        aliases,
    )
