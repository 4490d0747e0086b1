"""`mlops run PIPELINE`: read, validate, search, fit, evaluate, bundle, test, gate, register.

Everything a user can get wrong in the spec or the data is checked before training
starts, with the file, the key and what to do.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.config import PipelineSpec, parse
from mlops_console.errors import ConfigError, MlopsError, NotFound

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace

Stage = Callable[[str], None]


@dataclass
class Prepared:
    """A spec resolved against its data: the frames every later step uses."""

    spec: PipelineSpec
    spec_path: Path | None
    frame: Any
    features: list[str]
    numeric: list[str]
    categorical: list[str]
    X_train: Any
    y_train: Any
    X_hold: Any
    y_hold: Any
    sensitive_hold: Any
    signature: dict[str, Any]
    hold_frame: Any = None  # the raw holdout rows (all columns), for checks on raw input
    dataset_version: Any = None
    data_source: str = ""
    # a binary target's class of interest (what roc_auc, f1, precision... describe)
    positive_class: Any = None
    positive_reason: str = ""  # how it was chosen, in the user's words


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


def apply_overrides(spec: PipelineSpec, overrides: dict[str, Any], source: Any) -> PipelineSpec:
    data = spec.model_dump()
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {dotted}: {part!r} is not a section of the pipeline.")
            node = node[part]
        node[parts[-1]] = value
    return parse(PipelineSpec, data, f"{source} (with --set)")


def load_spec(
    ws: Workspace, pipeline: str, overrides: dict[str, Any] | None
) -> tuple[PipelineSpec, Path]:
    found = ws.pipelines.get(pipeline)
    spec, path = found.spec, found.path
    if overrides:
        spec = apply_overrides(spec, overrides, path)
    return spec, path


def prepare(
    ws: Workspace,
    spec: PipelineSpec,
    spec_path: Path | None,
    dataset_version: int | None = None,
    stage: Stage = lambda s: None,
) -> Prepared:
    """Read the data and check everything before any training starts."""
    from mlops_console.registry.signature import prepare_inputs
    from mlops_console.training.build import build_estimator
    from mlops_console.training.signature import classification_outputs, infer_inputs

    where = spec_path.name if spec_path else spec.name
    try:
        build_estimator(spec, ws.root)  # fails now if the estimator does not import
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    d = spec.data
    dv = None
    if d.dataset:
        dv = ws.data.version(d.dataset, dataset_version)
        if not dv.usable:
            raise MlopsError(f"{d.dataset} v{dv.version} is quarantined; it cannot be trained on.")
        frame = ws.data.read(d.dataset, dv.version)
        source = f"dataset {d.dataset} v{dv.version}"
    else:
        from mlops_console.data.reading import read_file

        assert d.path is not None  # the spec names a dataset or a path (config checks it)
        path = (ws.root / d.path).resolve()
        if not path.exists():
            raise ConfigError(f"{where}: [data].path {d.path!r} does not exist.")
        frame = read_file(path, d.path).to_pandas()
        source = d.path
    cols = set(frame.columns)
    named = [
        ("target", d.target),
        ("time_column", d.time_column),
        ("entity_column", d.entity_column),
        ("sensitive", d.sensitive),
    ]
    for key, col in named:
        if col and col not in cols:
            raise ConfigError(
                f"{where}: [data].{key} {col!r} is not a column of {source} "
                f"(columns: {', '.join(frame.columns)})."
            )
    missing = [f for f in d.features + d.exclude if f not in cols]
    if missing:
        raise ConfigError(
            f"{where}: [data] names column(s) {', '.join(missing)} that {source} does not "
            f"have (columns: {', '.join(frame.columns)})."
        )
    view_cols: list[str] = []
    if d.feature_views:
        stage(f"join {len(d.feature_views)} feature(s) point-in-time")
        # Joined on the entity keys and times alone; named VIEW__FEATURE so they never
        # collide with the dataset's own columns.
        keys = frame[[d.entity_column, d.time_column]]
        joined = ws.features.training_frame(
            keys, d.feature_views, timestamp_column=d.time_column, full_feature_names=True
        )
        view_cols = [c for c in joined.columns if c not in keys.columns]
        frame = frame.assign(**{c: joined[c].to_numpy() for c in view_cols})
    if d.time_column:
        from mlops_console.data.reading import to_times

        frame = frame.assign(
            **{d.time_column: to_times(frame[d.time_column], d.time_column, source)}
        )
        frame = frame.sort_values(d.time_column, kind="stable").reset_index(drop=True)
    frame = frame[frame[d.target].notna()].reset_index(drop=True)
    if len(frame) < spec.validation.min_rows:
        raise MlopsError(
            f"{where}: only {len(frame)} labelled rows in {source}; the pipeline needs at "
            f"least {spec.validation.min_rows} ([validation].min_rows)."
        )
    skip = {d.target, d.time_column, d.entity_column, d.sensitive, *d.exclude} - {None}
    if d.features:
        features = list(dict.fromkeys([*d.features, *view_cols]))
    else:
        features = [c for c in frame.columns if c not in skip]
    if not features:
        raise ConfigError(
            f"{where}: no feature columns are left; check [data].features and exclude."
        )
    if spec.task == "classification":
        check_class_count(frame[d.target], d.target, where)
    cut = int(len(frame) * (1 - spec.validation.holdout_fraction))
    train, hold = frame.iloc[:cut], frame.iloc[cut:]
    folds = spec.search.cv_folds if spec.search.method != "none" else spec.validation.cv_folds
    if len(hold) < 10 or len(train) < 10 * folds:
        raise MlopsError(
            f"{where}: {len(frame)} rows are too few to split: {len(train)} for training "
            f"({folds} folds) and {len(hold)} for the holdout. Add data or lower "
            "[validation].holdout_fraction / cv_folds."
        )
    if spec.task == "classification":
        for part, y in (("training", train[d.target]), ("holdout", hold[d.target])):
            if y.nunique() < 2:
                raise MlopsError(
                    f"{where}: the target {d.target!r} has a single class "
                    f"({y.iloc[0]!r}) in the {part} slice; a classifier needs two or more."
                )
    from mlops_console.training.search import validate_space

    try:
        validate_space(spec, ws.root)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    inputs = infer_inputs(train[features])
    signature: dict[str, Any] = {"inputs": inputs}
    X_train = prepare_inputs(train[features], signature)
    X_hold = prepare_inputs(hold[features], signature)
    numeric = [c["name"] for c in inputs if c["type"] in ("integer", "float", "boolean")]
    categorical = [c["name"] for c in inputs if c["name"] not in numeric]
    positive, reason = None, ""
    if spec.task == "classification":
        signature["outputs"], signature["labels"] = classification_outputs(
            sorted(train[d.target].unique())
        )
        positive, reason = positive_class(
            train[d.target],
            signature["labels"],
            d.positive_class,
            d.target,
            where,
            _champions_positive(ws, spec),
        )
        if positive is not None:
            signature["positive_class"] = positive
    else:
        signature["outputs"] = [{"name": "predict", "type": "float"}]
    return Prepared(
        spec,
        spec_path,
        frame,
        features,
        numeric,
        categorical,
        X_train,
        train[d.target].to_numpy(),
        X_hold,
        hold[d.target].to_numpy(),
        hold[d.sensitive].to_numpy() if d.sensitive else None,
        signature,
        hold.reset_index(drop=True),
        dv,
        source,
        positive,
        reason,
    )


# A classifier's search scales with its classes; an id or a timestamp chosen as the target
# by mistake has thousands and hangs the search, so it is refused before it starts.
MAX_CLASSES = 100


def check_class_count(y, target: str, where: str) -> None:
    """Refuse a classification target with more classes than its rows can support."""
    n = int(y.nunique())
    limit = max(2, min(MAX_CLASSES, len(y) // 10))  # about ten rows a class at least
    if n > limit:
        raise ConfigError(
            f"{where}: target {target!r} has {n:,} distinct values in {len(y):,} rows; a "
            f"classification target needs few classes (at most {limit} here) — is it the "
            "right column ([data].target), or should task = 'regression'?"
        )


def _champions_positive(ws: Workspace, spec) -> Any:
    """The positive class the model's champion was measured for (None if none is known)."""
    if not spec.register_as:
        return None
    try:
        mv = ws.models.resolve(f"{spec.register_as}@{ws.config.registry.champion_alias}")
    except MlopsError:
        return None
    return (mv.signature or {}).get("positive_class")


def positive_class(
    y, labels: list[Any], given: Any, target: str, where: str, champions: Any = None
) -> tuple[Any, str]:
    """(the class binary metrics describe, how it was chosen); (None, "") unless binary.

    Unset, it is the champion's (so a retrain's metrics compare with the champion's even
    when the classes are near 50/50), else the minority class: a rare event is what a
    binary model is usually for, and sklearn's default (the class sorting last) would
    report a 94% class's f1."""
    if given is not None:
        match = [c for c in labels if c == given or str(c) == str(given)]
        if not match:
            raise ConfigError(
                f"{where}: [data].positive_class {given!r} is not a class of the target "
                f"{target!r} (its classes: {', '.join(repr(c) for c in labels)}); set it to "
                "one of them."
            )
        if len(labels) != 2:
            raise ConfigError(
                f"{where}: [data].positive_class is for a binary target; {target!r} has "
                f"{len(labels)} classes (metrics average over them). Remove it."
            )
        return match[0], "as [data].positive_class says"
    if len(labels) != 2:
        return None, ""
    if champions is not None and champions in labels:
        return champions, "as the champion's; [data].positive_class changes it"
    counts = y.value_counts()
    share = {c: int(counts.get(c, 0)) / len(y) for c in labels}
    rare = min(reversed(labels), key=lambda c: share[c])  # a tie: the class sorting last
    return rare, f"the minority ({share[rare]:.1%} of rows); [data].positive_class changes it"


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
) -> TrainResult:
    """Run a pipeline end to end; see the module doc. `run_tags` are added to its run."""
    import joblib
    import numpy as np
    import pandas as pd

    from mlops_console.registry.bundle import BundleDraft, LoadedBundle
    from mlops_console.testing.checks import CheckContext, run_checks
    from mlops_console.testing.gates import evaluate_gates
    from mlops_console.tracking.lineage import environment
    from mlops_console.training.metrics import evaluate
    from mlops_console.training.onnx_export import export
    from mlops_console.training.search import search

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    mark = [time.perf_counter()]

    def step(name: str, text: str) -> None:
        now = time.perf_counter()
        timings[name] = now - mark[0]
        mark[0] = now
        stage(text)

    spec_path = None
    if spec is None:
        spec, spec_path = load_spec(ws, pipeline, overrides)
    stage("validate the spec and read the data")
    p = prepare(ws, spec, spec_path, dataset_version, stage)
    if p.dataset_version is not None and p.dataset_version.status == "forced":
        stage(f"WARNING: {p.data_source} broke its data contract and was accepted with --force")
    if p.positive_class is not None:
        stage(f"  positive class {p.positive_class!r}, {p.positive_reason}")
    timings["prepare"] = time.perf_counter() - mark[0]
    mark[0] = time.perf_counter()

    experiment = spec.experiment or spec.name
    params = {
        "estimator": spec.model.estimator,
        **{f"model.{k}": v for k, v in spec.model.params.items()},
        "search": spec.search.method,
        "holdout_fraction": spec.validation.holdout_fraction,
        "features": len(p.features),
    }
    tags = {"pipeline": spec.name, "task": spec.task}
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
        found = search(ws, p, run, stage)
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
