"""Model metrics, and the scikit-learn scorers used by the search."""

from __future__ import annotations

from typing import Any

LOWER_IS_BETTER = {"log_loss", "rmse", "mae", "mape", "calibration_error"}


def calibration_error(y_true, proba, bins: int = 10) -> float:
    """Expected calibration error of the positive class (equal-width bins)."""
    import numpy as np

    y = np.asarray(y_true, dtype=float)
    p = np.asarray(proba, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def classification_metrics(model, X, y) -> dict[str, float]:
    import numpy as np
    from sklearn import metrics as m

    proba = model.predict_proba(X)
    classes = model.classes_
    pred = classes[proba.argmax(axis=1)]
    out: dict[str, Any] = {
        "accuracy": m.accuracy_score(y, pred),
        "log_loss": m.log_loss(y, proba, labels=classes),
    }
    if len(classes) == 2:
        pos = proba[:, 1]
        y_bin = (np.asarray(y) == classes[1]).astype(int)
        out["roc_auc"] = m.roc_auc_score(y_bin, pos) if len(set(y_bin)) == 2 else float("nan")
        out["pr_auc"] = m.average_precision_score(y_bin, pos)
        out["f1"] = m.f1_score(y_bin, (pos >= 0.5).astype(int))
        out["calibration_error"] = calibration_error(y_bin, pos)
    else:
        out["roc_auc"] = m.roc_auc_score(y, proba, multi_class="ovr", labels=classes)
        out["f1"] = m.f1_score(y, pred, average="macro")
    return {k: float(v) for k, v in out.items()}


def regression_metrics(model, X, y) -> dict[str, float]:
    import numpy as np
    from sklearn import metrics as m

    pred = model.predict(X)
    return {
        "rmse": float(np.sqrt(m.mean_squared_error(y, pred))),
        "mae": float(m.mean_absolute_error(y, pred)),
        "r2": float(m.r2_score(y, pred)),
        "mape": float(m.mean_absolute_percentage_error(y, pred)),
    }


def evaluate(task: str, model, X, y) -> dict[str, float]:
    return (
        classification_metrics(model, X, y)
        if task == "classification"
        else regression_metrics(model, X, y)
    )


def scorer(metric: str):
    """(sklearn scoring, sign): the CV score is sign * sklearn's score."""
    from sklearn.metrics import make_scorer

    table = {
        "roc_auc": ("roc_auc", 1),
        "pr_auc": ("average_precision", 1),
        "log_loss": ("neg_log_loss", -1),
        "f1": ("f1", 1),
        "accuracy": ("accuracy", 1),
        "rmse": ("neg_root_mean_squared_error", -1),
        "mae": ("neg_mean_absolute_error", -1),
        "r2": ("r2", 1),
        "mape": ("neg_mean_absolute_percentage_error", -1),
    }
    if metric == "calibration_error":

        def _ece(y, proba):
            return calibration_error(y, proba[:, 1] if proba.ndim == 2 else proba)

        return make_scorer(_ece, greater_is_better=False, response_method="predict_proba"), -1
    return table[metric]


def better(metric: str, new: float | None, old: float | None, margin: float = 0.0) -> bool:
    """Whether `new` is at least as good as `old` minus a margin."""
    if old is None:
        return True
    if new is None:
        return False
    return new <= old + margin if metric in LOWER_IS_BETTER else new >= old - margin
