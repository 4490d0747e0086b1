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


def positive_column(classes, positive) -> int:
    """The column of `predict_proba` that holds the positive class (the last by default)."""
    classes = list(classes)
    if positive is None:
        return len(classes) - 1
    for i, c in enumerate(classes):
        if c == positive or str(c) == str(positive):
            return i
    raise ValueError(f"the positive class {positive!r} is not one of the classes {classes}")


def classification_metrics(model, X, y, positive=None) -> dict[str, float]:
    """Holdout metrics; binary ones (roc_auc, pr_auc, f1, precision, recall, calibration)
    describe `positive`, the class of interest."""
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
        col = positive_column(classes, positive)
        pos = proba[:, col]
        y_bin = (np.asarray(y) == classes[col]).astype(int)
        out.update({k: binary_metric(k, y_bin, pos) for k in BINARY_METRICS})
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


def evaluate(task: str, model, X, y, positive=None) -> dict[str, float]:
    return (
        classification_metrics(model, X, y, positive)
        if task == "classification"
        else regression_metrics(model, X, y)
    )


def scorer(metric: str, positive=None):
    """(sklearn scoring, sign): the CV score is sign * sklearn's score.

    With `positive` (a binary target's class of interest) the binary metrics score that
    class, as `classification_metrics` does; sklearn's own names would take the class that
    sorts last, or the label 1."""
    from sklearn.metrics import make_scorer

    if positive is not None and metric in BINARY_METRICS:
        return make_scorer(
            _binary_score,
            response_method="predict_proba",  # the column of pos_label, as a 1-d array
            greater_is_better=metric not in LOWER_IS_BETTER,
            pos_label=positive,
            metric=metric,
        ), (-1 if metric in LOWER_IS_BETTER else 1)
    table = {
        "roc_auc": ("roc_auc", 1),
        "pr_auc": ("average_precision", 1),
        "log_loss": ("neg_log_loss", -1),
        "f1": ("f1", 1),
        "precision": ("precision", 1),
        "recall": ("recall", 1),
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


BINARY_METRICS = ("roc_auc", "pr_auc", "f1", "precision", "recall", "calibration_error")


def binary_metric(metric: str, y, proba) -> float:
    """`metric` of the positive class: `y` is 1 for it, `proba` its probability; f1,
    precision and recall flag a row at a probability of 0.5."""
    from sklearn import metrics as m

    flagged = (proba >= 0.5).astype(int)
    if metric == "roc_auc":
        return m.roc_auc_score(y, proba) if len(set(y)) == 2 else float("nan")
    if metric == "pr_auc":
        return m.average_precision_score(y, proba)
    if metric == "f1":
        return m.f1_score(y, flagged, zero_division=0)
    if metric == "precision":
        return m.precision_score(y, flagged, zero_division=0)
    if metric == "recall":
        return m.recall_score(y, flagged, zero_division=0)
    return calibration_error(y, proba)


def _binary_score(y, proba, pos_label, metric: str) -> float:
    import numpy as np

    return binary_metric(metric, (np.asarray(y) == pos_label).astype(int), np.asarray(proba))


def better(metric: str, new: float | None, old: float | None, margin: float = 0.0) -> bool:
    """Whether `new` is at least as good as `old` minus a margin."""
    if old is None:
        return True
    if new is None:
        return False
    return new <= old + margin if metric in LOWER_IS_BETTER else new >= old - margin
