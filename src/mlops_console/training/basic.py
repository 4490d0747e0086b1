"""A first pipeline runner: read a table, split out-of-time, fit, evaluate, track, register.

The training issue grows this into search, model checks and gates; the shape of what it
records (run, lineage, signature, model artifact, version) is already final.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.config import PipelineSpec, load_pipeline
from mlops_console.errors import ConfigError, MlopsError

if TYPE_CHECKING:
    from mlops_console.registry.models import ModelVersion
    from mlops_console.workspace import Workspace

Stage = Callable[[str], None]


@dataclass
class TrainResult:
    run_id: str
    metrics: dict[str, float]
    version: ModelVersion | None
    promoted: bool
    champion_before: int | None
    seconds: float


def read_table(path: Path):
    import pandas as pd

    if not path.exists():
        raise MlopsError(f"Data file {path} does not exist; check [data].path in the pipeline.")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as exc:  # pandas raises many types for bad files
        raise MlopsError(f"Cannot read {path} as a table: {exc}") from None


def build_estimator(spec: PipelineSpec):
    path = spec.model.estimator
    module_name, _, attr = path.rpartition(".")
    if ":" in path:
        module_name, attr = path.split(":", 1)
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(
            f"[model].estimator {path!r} cannot be imported; give a full import path such as "
            "'sklearn.ensemble.HistGradientBoostingClassifier'."
        ) from None
    try:
        return cls(**spec.model.params)
    except TypeError as exc:
        raise ConfigError(f"[model].params do not fit {path}: {exc}") from None


def build_pipeline(spec: PipelineSpec, X):
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c].dtype)]
    categorical = [c for c in X.columns if c not in numeric]
    pre = ColumnTransformer(
        [
            (
                "num",
                Pipeline(
                    [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
                ),
                numeric,
            ),
            (
                "cat",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore")),
                    ]
                ),
                categorical,
            ),
        ]
    )
    return Pipeline([("preprocess", pre), ("model", build_estimator(spec))])


def evaluate(task: str, model, X, y) -> dict[str, float]:
    import numpy as np
    from sklearn import metrics as m

    if task == "classification":
        proba = model.predict_proba(X)
        pred = model.classes_[proba.argmax(axis=1)]
        out = {
            "accuracy": m.accuracy_score(y, pred),
            "log_loss": m.log_loss(y, proba, labels=model.classes_),
        }
        if len(model.classes_) == 2:
            out["roc_auc"] = m.roc_auc_score(y, proba[:, 1])
            out["pr_auc"] = m.average_precision_score(y, proba[:, 1], pos_label=model.classes_[1])
            out["f1"] = m.f1_score(y, pred, pos_label=model.classes_[1])
        return {k: float(v) for k, v in out.items()}
    pred = model.predict(X)
    return {
        "rmse": float(np.sqrt(m.mean_squared_error(y, pred))),
        "mae": float(m.mean_absolute_error(y, pred)),
        "r2": float(m.r2_score(y, pred)),
    }


LOWER_IS_BETTER = {"log_loss", "rmse", "mae", "mape", "calibration_error"}


def train(
    ws: Workspace,
    pipeline: str,
    stage: Stage = lambda s: None,
    overrides: dict[str, Any] | None = None,
) -> TrainResult:
    """Train one pipeline, log the run, register the model, promote it if it is better."""
    from mlops_console.training.signature import classification_outputs, infer_inputs

    t0 = time.perf_counter()
    spec_path = ws.pipeline_path(pipeline)
    spec = load_pipeline(spec_path)
    if overrides:
        spec = _apply_overrides(spec, overrides, spec_path)
    stage("read data")
    dataset_version = None
    if spec.data.dataset:
        dataset_version = ws.data.version(spec.data.dataset)
        frame = ws.data.read(spec.data.dataset, dataset_version.version)
        data_name, source = (
            spec.data.dataset,
            f"dataset {spec.data.dataset} v{dataset_version.version}",
        )
    else:
        data_path = (ws.root / spec.data.path).resolve()
        frame = read_table(data_path)
        digest = hashlib.sha256(data_path.read_bytes()).hexdigest()
        data_name, source = data_path.stem, str(spec.data.path)
    missing = [c for c in [spec.data.target, spec.data.time_column] if c and c not in frame.columns]
    if missing:
        raise MlopsError(
            f"{source} has no column(s) {', '.join(missing)} named in {spec_path.name}; "
            f"its columns are: {', '.join(frame.columns)}."
        )
    if dataset_version is not None and dataset_version.status == "forced":
        stage(f"WARNING: {source} broke its data contract and was accepted with --force")
    stage("split out-of-time")
    if spec.data.time_column:
        import pandas as pd

        frame = frame.assign(
            **{spec.data.time_column: pd.to_datetime(frame[spec.data.time_column])}
        )
        frame = frame.sort_values(spec.data.time_column, kind="stable").reset_index(drop=True)
    cut = int(len(frame) * (1 - spec.validation.holdout_fraction))
    drop = {spec.data.target, *spec.data.exclude}
    if spec.data.time_column:
        drop.add(spec.data.time_column)
    if spec.data.entity_column:
        drop.add(spec.data.entity_column)
    features = spec.data.features or [c for c in frame.columns if c not in drop]
    X, y = frame[features], frame[spec.data.target]
    X_train, y_train, X_hold, y_hold = X.iloc[:cut], y.iloc[:cut], X.iloc[cut:], y.iloc[cut:]

    experiment = spec.experiment or spec.name
    params = {
        "estimator": spec.model.estimator,
        **{f"model.{k}": v for k, v in spec.model.params.items()},
        "holdout_fraction": spec.validation.holdout_fraction,
        "features": len(features),
    }
    with ws.runs.start(
        experiment=experiment,
        params=params,
        seed=spec.seed,
        spec=spec_path,
        tags={"pipeline": spec.name, "task": spec.task},
    ) as run:
        if dataset_version is not None:
            ws.data.record_use(run, dataset_version)
        else:
            run.log_dataset(data_name, digest, rows=len(frame), source=source)
        stage(f"fit {spec.model.estimator.rsplit('.', 1)[-1]} on {len(X_train)} rows")
        model = build_pipeline(spec, X_train)
        model.fit(X_train, y_train)
        stage(f"evaluate on the {len(X_hold)} most recent rows")
        metrics = {f"holdout_{k}": v for k, v in evaluate(spec.task, model, X_hold, y_hold).items()}
        metrics.update(
            {f"train_{k}": v for k, v in evaluate(spec.task, model, X_train, y_train).items()}
        )
        run.log_metrics(metrics)
        stage("save model")
        import joblib

        buf = io.BytesIO()
        joblib.dump(model, buf)
        run.log_artifact(buf.getvalue(), "model")
        signature: dict[str, Any] = {"inputs": infer_inputs(X_train)}
        if spec.task == "classification":
            signature["outputs"], signature["labels"] = classification_outputs(model.classes_)
        else:
            signature["outputs"] = [{"name": "predict", "type": "double"}]
        run.log_artifact(_json_bytes(signature), "signature.json")
    version, promoted, before = None, False, None
    if spec.register_as:
        stage(f"register {spec.register_as}")
        version = ws.models.register(
            spec.register_as,
            run=run.id,
            signature=signature,
            metrics=metrics,
            description=f"Trained by pipeline {spec.name}.",
        )
        promoted, before = _promote_if_better(ws, version, spec)
    return TrainResult(run.id, metrics, version, promoted, before, time.perf_counter() - t0)


def _promote_if_better(ws: Workspace, version, spec: PipelineSpec) -> tuple[bool, int | None]:
    from mlops_console.errors import NotFound

    reg = ws.config.registry
    key = f"holdout_{spec.validation.primary_metric}"
    try:
        champion = ws.models.resolve(f"{version.name}@{reg.champion_alias}")
    except NotFound:
        ws.models.set_alias(
            version.name, reg.champion_alias, version.version, reason="first version of the model"
        )
        return True, None
    new, old = version.metrics.get(key), champion.metrics.get(key)
    better = old is None or (
        new is not None
        and (new < old if spec.validation.primary_metric in LOWER_IS_BETTER else new > old)
    )
    if better:
        ws.models.set_alias(
            version.name,
            reg.champion_alias,
            version.version,
            reason=f"{key} {new:.4f} beats {old if old is None else round(old, 4)} of v{champion.version}",
        )
    else:
        ws.models.set_alias(
            version.name,
            reg.challenger_alias,
            version.version,
            reason=f"{key} {new:.4f} does not beat v{champion.version}'s {old:.4f}",
        )
    return better, champion.version


def _apply_overrides(spec: PipelineSpec, overrides: dict[str, Any], path: Path) -> PipelineSpec:
    from mlops_console.config import parse

    data = spec.model_dump()
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {dotted}: {part!r} is not a section of the pipeline.")
            node = node[part]
        node[parts[-1]] = value
    return parse(PipelineSpec, data, f"{path} (with --set)")


def _json_bytes(obj: Any) -> bytes:
    import json

    return json.dumps(obj, indent=2, sort_keys=True).encode()
