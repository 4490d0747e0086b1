"""A trained workspace for the whole run (two versions of model `churn`, real training on a
small frame); no cluster is needed: see the README."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

PIPELINE = (
    'name = "churn"\nregister_as = "churn"\nseed = {seed}\n'
    '[data]\ndataset = "events"\ntarget = "label"\ntime_column = "ts"\nentity_column = "id"\n'
    '[model]\nestimator = "sklearn.linear_model.LogisticRegression"\n'
    "params = {{ max_iter = 300, C = {c} }}\n"
    '[search]\nmethod = "none"\n'
)


def _frame(n: int = 300):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    x1 = rng.normal(size=n)
    plan = rng.choice(["basic", "pro"], n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(2.0 * x1 + (plan == "pro"))))).astype(int)
    return pd.DataFrame(
        {
            "id": [f"u{i}" for i in range(n)],
            "ts": pd.date_range("2025-01-01", periods=n, freq="h"),
            "x1": x1.round(4),
            "plan": plan,
            "label": y,
        }
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """A workspace with churn v1 (trained) and v2 (the same model registered again, which
    is quicker than a second training); tests copy it, never change it."""
    import json

    from mlops_console.registry.bundle import BundleDraft
    from mlops_console.training.runner import train
    from mlops_console.workspace import Workspace

    root = tmp_path_factory.mktemp("k8sws") / "ws"
    ws = Workspace.init(root)
    try:
        _frame().to_parquet(ws.root / "data" / "events.parquet")
        ws.data.add("events", "data/events.parquet", timestamp="ts", entities=["id"])
        ws.data.ingest("events")
        (ws.root / "pipelines" / "churn.toml").write_text(PIPELINE.format(seed=1, c=1.0))
        train(ws, "churn")
        v1 = ws.models.get_version("churn", 1)
        manifest = json.loads(ws.artifacts.get_bytes(v1.artifact_hash))
        files = {n: ws.artifacts.get_bytes(m["sha256"]) for n, m in manifest["files"].items()}
        draft = BundleDraft(
            manifest["task"], manifest["signature"], files, packages=manifest["packages"]
        )
        ws.models.register("churn", bundle=draft, signature=manifest["signature"])
    finally:
        ws.close()
    return root


@pytest.fixture
def workspace(trained: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(trained, root, symlinks=True)
    return root
