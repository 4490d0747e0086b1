"""The training data and pipelines of the fleet tests and of bench/fleet.py: a small churn-like
frame (a numeric signal, a noise column, a category) and pipelines over it, trained into a
real workspace with the real trainer."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

PIPELINE = (
    'name = "{name}"\nregister_as = "{model}"\nseed = {seed}\n'
    '[data]\ndataset = "{data}"\ntarget = "label"\ntime_column = "ts"\nentity_column = "id"\n'
    '[model]\nestimator = "{estimator}"\n'
    "params = {params}\n"
    '[search]\nmethod = "none"\n'
)
LR = "sklearn.linear_model.LogisticRegression"
RF = "sklearn.ensemble.RandomForestClassifier"


def lr(c: float) -> str:
    return f"{{ max_iter = 500, C = {c} }}"


def frame(seed: int, n: int = 600, invert: bool = False, freq: str = "h"):
    """Rows whose label follows x1 and the plan (inverted: a model that learns it is bad)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    plan = rng.choice(["basic", "pro", "max"], n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(2.5 * x1 + (plan == "pro"))))).astype(int)
    return pd.DataFrame(
        {
            "id": [f"u{i}" for i in range(n)],
            "ts": pd.date_range("2025-01-01", periods=n, freq=freq),
            "x1": x1.round(4),
            "x2": rng.normal(size=n).round(4),
            "plan": plan,
            "label": 1 - y if invert else y,
        }
    )


def train_workspace(
    root: Path,
    datasets: dict[str, object],
    pipelines: Iterable[tuple[str, str, str, int, str, str]],
    golden: str | None = None,
) -> Path:
    """A new workspace at `root` with `datasets` ({name: frame}) ingested and each pipeline
    (name, model, dataset, seed, estimator, params) trained in order; golden rows recorded
    from `golden` (a ref) when given."""
    from mlops_console.training.runner import train
    from mlops_console.workspace import Workspace

    ws = Workspace.init(root)
    try:
        for name, df in datasets.items():
            df.to_parquet(ws.root / "data" / f"{name}.parquet")  # type: ignore[attr-defined]
            ws.data.add(name, f"data/{name}.parquet", timestamp="ts", entities=["id"])
            ws.data.ingest(name)
        for name, model, data, seed, estimator, params in pipelines:
            (ws.root / "pipelines" / f"{name}.toml").write_text(
                PIPELINE.format(
                    name=name, model=model, data=data, seed=seed, estimator=estimator, params=params
                )
            )
            train(ws, name)
        if golden:
            from mlops_edge_ssh.service import FleetService

            with FleetService(ws) as svc:
                svc.record_golden(golden)
    finally:
        ws.close()
    return root


def standard_workspace(root: Path) -> Path:
    """m/1 and m/2 (good, slightly different weights), m/3 (trained on inverted labels: bad),
    and golden rows recorded from m/1."""
    return train_workspace(
        root,
        {"d": frame(0), "dbad": frame(0, invert=True)},
        [
            ("p1", "m", "d", 7, LR, lr(1.0)),
            ("p2", "m", "d", 7, LR, lr(0.3)),
            ("pbad", "m", "dbad", 7, LR, lr(1.0)),
        ],
        golden="m/1",
    )
