"""Every measure of one monitoring window: drift, stability, decay, computational performance.

Inputs are pandas frames of the collected rows (one per scored row), requests and
feedback (see `collect.py`), and the prepared reference of the version served.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from mlops_console.monitoring.drift import Thresholds, dataset_drift, measure_column
from mlops_console.monitoring.reference import PREDICTION, Reference

SATURATED = 1e-3  # a probability this close to 0 or 1 is saturated


def prediction_column(rows, ref: Reference) -> np.ndarray:
    """The monitored prediction per row, in the same form as the reference's."""
    if ref.columns[PREDICTION].kind == "numeric":
        if ref.task == "classification":
            return rows["proba"].to_numpy(dtype=np.float64, na_value=np.nan)
        return _floats(rows["predict"])
    return rows["predict"].astype(str).to_numpy()


def _floats(series) -> np.ndarray:
    import pandas as pd

    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def drift(rows, ref: Reference, t: Thresholds) -> dict[str, Any]:
    results = []
    for name, col in ref.columns.items():
        if name == PREDICTION:
            continue
        key = f"in.{name}"
        if key not in rows:
            results.append(
                {"column": name, "kind": col.kind, "psi": None, "drifted": False, "missing": True}
            )
            continue
        values = rows[key].to_numpy() if col.kind == "categorical" else _floats(rows[key])
        results.append(measure_column(col, values, t))
    summary = dataset_drift(results, t)
    pred = measure_column(ref.columns[PREDICTION], prediction_column(rows, ref), t)
    pred["column"] = "prediction"
    return {**summary, "features": results, "prediction": pred}


def stability(rows, ref: Reference) -> dict[str, Any]:
    n = len(rows)
    out: dict[str, Any] = {"rows": n}
    if n == 0:
        return out
    if ref.task == "classification":
        pred_missing = rows["predict"].isin(["None", "nan", ""]).to_numpy()
        proba = rows["proba"].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = (
            pred_missing | ~np.isfinite(proba)
            if ref.labels and len(ref.labels) == 2
            else pred_missing
        )
        finite = proba[np.isfinite(proba)]
        out["saturated_rate"] = (
            float(((finite < SATURATED) | (finite > 1 - SATURATED)).mean()) if len(finite) else 0.0
        )
    else:
        values = _floats(rows["predict"])
        bad = ~np.isfinite(values)
    out["nan_output_rate"] = float(np.mean(bad))
    values = prediction_column(rows, ref)
    ref_col = ref.columns[PREDICTION]
    if ref_col.kind == "numeric":
        v = values[np.isfinite(values)]
        std = float(v.std()) if len(v) else 0.0
        out["prediction_std"] = std
        out["collapsed"] = bool(
            len(v) >= 50 and (std == 0.0 or (ref_col.std > 0 and std < 0.01 * ref_col.std))
        )
    else:
        distinct = len(set(values.tolist()))
        out["prediction_distinct"] = distinct
        out["collapsed"] = bool(n >= 50 and distinct <= 1 and len(ref_col.categories) > 1)
    out_of_range, unseen, missing = {}, {}, {}
    any_bad = np.zeros(n, dtype=bool)
    for name, col in ref.columns.items():
        key = f"in.{name}"
        if name == PREDICTION or key not in rows:
            continue
        if col.kind == "numeric":
            x = _floats(rows[key])
            nulls = np.isnan(x)
            outside = (~nulls) & ((x < col.lo) | (x > col.hi) | ~np.isfinite(x))
            out_of_range[name] = float(outside.mean())
            any_bad |= outside
        else:
            x = rows[key]
            nulls = x.isna().to_numpy()
            new = (~nulls) & ~x.astype(str).isin(list(col.categories)).to_numpy()
            unseen[name] = float(new.mean())
            any_bad |= new
        share = float(nulls.mean())
        if share > col.null_share + 0.01:
            missing[name] = share
    out["out_of_range"] = {k: v for k, v in out_of_range.items() if v > 0}
    out["unseen_categories"] = {k: v for k, v in unseen.items() if v > 0}
    out["missing_inputs"] = missing
    out["out_of_range_rate"] = float(any_bad.mean())
    return out


def performance(requests, seconds: float) -> dict[str, Any]:
    n = len(requests)
    if n == 0:
        return {"requests": 0}
    ok = requests[requests["status"] == 200]
    lat = ok["latency_ms"].to_numpy(dtype=np.float64)
    span = max(seconds, 1e-9)
    p50, p95, p99 = np.percentile(lat, [50, 95, 99]).tolist() if len(lat) else [math.nan] * 3
    return {
        "requests": int(n),
        "errors": int(n - len(ok)),
        "error_rate": float((n - len(ok)) / n),
        "rps": n / span,
        "rows_per_s": float(ok["rows"].sum()) / span,
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "latency_p99_ms": p99,
    }


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic (average ranks for ties)."""
    import pandas as pd

    ranks = pd.Series(score).rank(method="average").to_numpy()
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def decay(rows, feedback, ref: Reference, trained: dict[str, float]) -> dict[str, Any]:
    """Metrics on the rows whose labels arrived, against the same metrics at training time.

    Its metric names are config.DECAY_METRICS: what alert rules may name as decay:/metric:."""
    if feedback is None or len(feedback) == 0 or len(rows) == 0:
        return {"labelled": 0}
    # the first label for a row wins: a later one cannot rewrite the ground truth
    fb = feedback.sort_values("ts", kind="stable").drop_duplicates(
        ["request_id", "row"], keep="first"
    )
    joined = rows.merge(fb[["request_id", "row", "label"]], on=["request_id", "row"], how="inner")
    out: dict[str, Any] = {"labelled": len(joined)}
    if len(joined) < 10:
        return out
    labels = [json.loads(v) for v in joined["label"]]
    current: dict[str, float] = {}
    if ref.task == "classification":
        y = np.array([str(v) for v in labels])
        pred = joined["predict"].astype(str).to_numpy()
        current["accuracy"] = float(np.mean(y == pred))
        if ref.labels and len(ref.labels) == 2:
            pos = str(ref.labels[1])
            yb = (y == pos).astype(int)
            p = joined["proba"].to_numpy(dtype=np.float64, na_value=np.nan)
            ok = np.isfinite(p)
            if len(set(yb[ok])) == 2:
                current["roc_auc"] = roc_auc(yb[ok], p[ok])
            if ok.any():
                q = np.clip(p[ok], 1e-15, 1 - 1e-15)
                current["log_loss"] = float(
                    -np.mean(yb[ok] * np.log(q) + (1 - yb[ok]) * np.log(1 - q))
                )
    else:
        y = np.array([float(v) for v in labels])
        pred = _floats(joined["predict"])
        ok = np.isfinite(pred)
        current["rmse"] = float(np.sqrt(np.mean((y[ok] - pred[ok]) ** 2)))
        current["mae"] = float(np.mean(np.abs(y[ok] - pred[ok])))
    out["metrics"] = current
    from mlops_console.metrics import LOWER_IS_BETTER

    drops = {}
    for k, v in current.items():
        base = trained.get(f"holdout_{k}")
        if base is None or not math.isfinite(base):
            continue
        drops[k] = (v - base) if k in LOWER_IS_BETTER else (base - v)  # > 0: worse than trained
    out["training"] = {k: trained[f"holdout_{k}"] for k in drops}
    out["drop"] = drops
    return out
