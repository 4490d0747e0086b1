"""The small workspace the console tests look at: one dataset, pipeline p, trained models."""

from __future__ import annotations

from mlops_console.training.runner import train
from tests.unit.test_pipeline import SPEC, make_data


def small_workspace(ws, auto: bool = False, versions: int = 2, job: bool = True):
    make_data().to_parquet(ws.root / "data" / "d.parquet")
    ws.data.add("d", "data/d.parquet", timestamp="ts", entities=["id"])
    ws.data.ingest("d")
    (ws.root / "pipelines" / "p.toml").write_text(
        SPEC.format(auto=str(auto).lower(), extra="").replace(
            'method = "random"', 'method = "none"'
        )
    )
    train(ws, "p")
    if versions > 1:
        train(ws, "p", overrides={"model.params": {"C": 0.3, "max_iter": 500}})
    if job:
        ws.jobs.submit("chain", "p")
    return ws
