"""Golden rows (`mlops fleet golden REF`) are real rows the model was trained on, in the
columns its server takes, with the bundle's own answers: on the bundled sample (plain and
joined with its feature views) and on the fleet tests' small pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import fleetdata
import pytest

from mlops_edge_ssh.gate import GOLDEN_ROWS


def _plain_rows(frame) -> set[tuple]:
    from mlops_edge_ssh.gate import _plain

    return {tuple(_plain(v) for v in r) for r in frame.itertuples(index=False, name=None)}


def check_golden(ws, ref: str) -> dict:
    """Record golden rows from `ref` and check them against what it was trained on."""
    import pandas as pd

    from mlops_console.monitoring.reference import load_reference
    from mlops_edge_ssh.service import FleetService

    mv = ws.models.resolve(ref)
    with FleetService(ws) as svc:
        path = svc.record_golden(ref)
    doc = json.loads(path.read_text())
    inputs = [c["name"] for c in mv.signature["inputs"]]
    assert doc["columns"] == inputs
    rows = [tuple(r) for r in doc["data"]]
    assert len(rows) == len(set(rows)) == GOLDEN_ROWS
    trained_on = _plain_rows(load_reference(ws, mv).frame[inputs])
    assert set(rows) <= trained_on  # real rows, none made up
    for col in range(len(inputs)):  # no placeholder column: values vary as in the data
        assert len({r[col] for r in rows}) > 1, inputs[col]
    bundle = ws.models.bundle(mv.ref, runtime="onnx")
    answers = [
        v.item() if hasattr(v, "item") else v
        for v in bundle.predict(pd.DataFrame(doc["data"], columns=doc["columns"]))
    ]
    assert doc["labels"] == answers
    assert len(set(answers)) > 1  # both classes: the agreement check means something
    return doc


@pytest.fixture(scope="module")
def sample_ws(tmp_path_factory):
    """`mlops init --sample`, its churn pipeline trained, and a copy of it whose rows are
    joined with the sample's customer feature view (columns the dataset does not have)."""
    from mlops_console.training.runner import train
    from mlops_console.workspace import Workspace

    ws = Workspace.init(tmp_path_factory.mktemp("sample") / "ws", sample=True)
    # what `mlops init --sample` does besides: the sample dataset registered and ingested
    ws.data.add("churn", "data/churn.csv", timestamp="event_time", entities=["customer_id"])
    ws.data.ingest("churn")
    pipelines = ws.root / "pipelines"
    spec = (pipelines / "churn.toml").read_text()
    (pipelines / "churn_fv.toml").write_text(
        spec.replace('name = "churn"', 'name = "churn_fv"')
        .replace('register_as = "churn"', 'register_as = "churn_fv"')
        .replace(
            'sensitive = "gender"',
            'sensitive = "gender"\nfeature_views = ["customer:support_calls", "customer:contract"]',
        )
    )
    fast = {"search.method": "none"}  # the search does not change which rows are used
    train(ws, "churn", overrides=fast)
    train(ws, "churn_fv", overrides=fast)
    yield ws
    ws.close()


def test_golden_rows_of_the_sample_are_real_training_rows(sample_ws):
    doc = check_golden(sample_ws, "churn@champion")
    assert doc["recorded_from"] == "churn/1"


def test_golden_rows_of_a_feature_view_pipeline_carry_the_joined_features(sample_ws):
    doc = check_golden(sample_ws, "churn_fv/1")
    joined = [c for c in doc["columns"] if c.startswith("customer__")]
    assert joined, doc["columns"]


def test_golden_rows_of_the_fleet_pipeline(tmp_path: Path):
    from mlops_console.workspace import Workspace
    from mlops_edge_ssh.gate import build_golden

    root = fleetdata.train_workspace(
        tmp_path / "ws",
        {"d": fleetdata.frame(0)},
        [("p1", "m", "d", 7, fleetdata.LR, fleetdata.lr(1.0))],
    )
    with Workspace.open(root) as ws:
        doc = check_golden(ws, "m/1")
        assert doc["columns"] == ["x1", "x2", "plan"]
        # the rollout's golden request: the recorded rows, expected answers the bundle's
        g = build_golden(ws, ws.models.resolve("m/1"), root / "golden" / "m.json")
        assert g.rows == doc["data"] and g.expected == doc["labels"] == g.labels
        assert json.loads(g.body())["dataframe_split"]["data"] == doc["data"]
