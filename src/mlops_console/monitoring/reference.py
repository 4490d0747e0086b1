"""The training reference of a model version: what monitoring compares production with.

At training time the runner stores `reference.parquet` as an artifact of the run: the
model's input columns for up to `MAX_ROWS` training and holdout rows (a seeded sample),
the model's prediction for each (`__prediction__`: the positive-class probability of a
binary classifier, the class of a multi-class one, the value of a regressor) and the label
(`__label__`). Monitoring prepares it once per version (sorted values, decile bins,
category shares) and caches that in memory.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from mlops_console.errors import NotFound
from mlops_console.monitoring.drift import RefColumn, prepare_column

MAX_ROWS = 50_000
PREDICTION = "__prediction__"
LABEL = "__label__"
ARTIFACT = "reference.parquet"


def prediction_values(task: str, labels, predict, proba) -> np.ndarray:
    """The one number (or class) per row that prediction drift is measured on."""
    if task == "classification" and proba is not None and labels is not None and len(labels) == 2:
        return np.asarray(proba, dtype=np.float64)[:, 1]
    if task == "classification":
        return np.asarray(predict).astype(str)
    return np.asarray(predict, dtype=np.float64)


def prediction_kind(task: str, labels) -> str:
    if task == "classification" and not (labels is not None and len(labels) == 2):
        return "categorical"
    return "numeric"


def build_reference(task: str, model, X, y, labels, seed: int = 0) -> bytes:
    """Parquet bytes of the reference sample (inputs, prediction, label)."""
    import pandas as pd

    frame = X.copy()
    frame[LABEL] = np.asarray(y)
    if len(frame) > MAX_ROWS:
        frame = frame.sample(MAX_ROWS, random_state=seed)
    inputs = frame.drop(columns=[LABEL])
    proba = model.predict_proba(inputs) if task == "classification" else None
    predict = model.predict(inputs)
    frame[PREDICTION] = prediction_values(task, labels, predict, proba)
    if frame[LABEL].dtype == object:
        frame[LABEL] = frame[LABEL].astype(str)
    buf = io.BytesIO()
    pd.DataFrame(frame).reset_index(drop=True).to_parquet(buf, index=False)
    return buf.getvalue()


@dataclass
class Reference:
    version: str
    task: str
    labels: list[Any] | None
    columns: dict[str, RefColumn]  # inputs and __prediction__
    rows: int
    metrics: dict[str, float]
    frame: Any  # the pandas frame (for plots and label metrics)


def column_kind(sig_col: dict[str, Any]) -> str:
    return "categorical" if sig_col["type"] in ("string", "boolean") else "numeric"


def load_reference(ws, mv) -> Reference:
    """The prepared reference of a model version (cached by artifact hash)."""
    run = ws.runs.get(mv.run_id) if mv.run_id else None
    found = [a for a in (run.artifacts if run else []) if a["name"] == ARTIFACT]
    if not found:
        raise NotFound(
            f"{mv.ref} has no training reference ({ARTIFACT}); it was trained before "
            "monitoring existed. Retrain it (`mlops train`) to monitor drift."
        )
    import json

    task = "classification" if mv.signature.get("labels") is not None else "regression"
    return _prepared(
        ws.artifacts, found[-1]["hash"], mv.ref, json.dumps(mv.signature, sort_keys=True), task
    )


@lru_cache(maxsize=16)
def _prepared(store, digest: str, ref: str, signature_json: str, task: str) -> Reference:
    import json

    import pyarrow.parquet as pq

    signature = json.loads(signature_json)
    table = pq.read_table(io.BytesIO(store.get_bytes(digest)))
    frame = table.to_pandas()
    labels = signature.get("labels")
    columns: dict[str, RefColumn] = {}
    for c in signature["inputs"]:
        if c["name"] in frame.columns:
            columns[c["name"]] = prepare_column(
                c["name"], frame[c["name"]].to_numpy(), column_kind(c)
            )
    columns[PREDICTION] = prepare_column(
        PREDICTION, frame[PREDICTION].to_numpy(), prediction_kind(task, labels)
    )
    return Reference(ref, task, labels, columns, len(frame), {}, frame)
