"""Day-one data gets in (issue 19): real training runs on the data users actually have —
column names with spaces and symbols, a rare ja/nein target, a mistaken id target."""

import json
import time

import numpy as np
import pandas as pd
import pytest
from tests.conftest import run_cli

from mlops_console.errors import ConfigError
from mlops_console.workspace import Workspace

ODD = ["Alter (Jahre)", "Umsatz €", "Kunden.Nr", "Region"]


def write_data(root, n=600, rate=0.056, seed=0):
    """A rare `ja` target (5.6%) that depends on odd-named columns."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    umsatz = rng.normal(100, 30, n).round(2)
    score = (age - 50) / 8 + rng.normal(scale=0.7, size=n)
    kauft = np.where(score > np.quantile(score, 1 - rate), "ja", "nein")
    frame = pd.DataFrame(
        {
            "Alter (Jahre)": age,
            "Umsatz €": umsatz,
            "Kunden.Nr": [f"K{i % 7}" for i in range(n)],
            "Region": rng.choice(["Nord", "Süd"], n),
            "kunden_id": [f"C{i:05d}" for i in range(n)],
            "kauft": kauft,
        }
    )
    frame.to_csv(root / "kunden.csv", index=False)
    return frame


def write_pipeline(
    root, name="kunden", estimator="sklearn.linear_model.LogisticRegression", **data
):
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in data.items())
    (root / "pipelines" / f"{name}.toml").write_text(
        f'name = "{name}"\nregister_as = "{name}"\nseed = 1\n'
        f'[data]\npath = "kunden.csv"\ntarget = "kauft"\nexclude = ["kunden_id"]\n{extra}'
        f'[model]\nestimator = "{estimator}"\n'
        '[validation]\nprimary_metric = "pr_auc"\n'
        '[gates]\nchecks = ["signature", "robustness"]\n'
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One workspace, one real run of the odd-named, rare-target data."""
    from mlops_console.training.runner import train

    root = tmp_path_factory.mktemp("inputs") / "ws"
    ws = Workspace.init(root)
    frame = write_data(root)
    write_pipeline(root)
    lines = []
    result = train(ws, "kunden", stage=lines.append)
    yield ws, frame, result, lines
    ws.close()


def test_odd_column_names_train_and_keep_onnx_under_their_own_names(trained):
    from mlops_console.serving.model import ServedModel

    ws, frame, result, _ = trained
    assert result.onnx["kept"], result.onnx
    assert ws.runs.get(result.run_id).tags["onnx"] == "included"
    onnx = ws.models.bundle("kunden/1", runtime="onnx")
    sk = ws.models.bundle("kunden/1", runtime="sklearn")
    assert [c["name"] for c in onnx.signature["inputs"]] == ODD
    rows = frame[ODD].head(50)
    assert np.allclose(onnx.predict_proba(rows), sk.predict_proba(rows), atol=1e-5)
    # the serving path feeds ONNX inputs by column name, as the signature has them
    served = ServedModel(onnx, "test")
    arrays = {c: rows[c].to_numpy(dtype=object if c in ODD[2:] else float) for c in ODD}
    out = served.predict(arrays, len(rows))
    assert np.allclose(out["predict_proba"], sk.predict_proba(rows), atol=1e-5)


def test_a_rare_ja_target_is_described_by_its_positive_class(trained):
    from sklearn import metrics as m

    ws, frame, result, lines = trained
    run = ws.runs.get(result.run_id)
    assert run.params["positive_class"] == "ja"
    assert "the minority" in run.tags["positive_class"]
    assert any(line.startswith("  positive class 'ja', the minority") for line in lines)
    assert ws.models.get_version("kunden", 1).signature["positive_class"] == "ja"
    # the holdout metrics are the rare class's, as sklearn computes them for pos_label="ja"
    model = ws.models.bundle("kunden/1", runtime="sklearn")
    hold = frame.iloc[int(len(frame) * 0.8) :]
    ja = list(model.sklearn_model.classes_).index("ja")
    p = model.predict_proba(hold[ODD])[:, ja]
    flagged = np.where(p >= 0.5, "ja", "nein")
    got = result.metrics
    assert got["holdout_f1"] == pytest.approx(m.f1_score(hold.kauft, flagged, pos_label="ja"))
    assert got["holdout_pr_auc"] == pytest.approx(m.average_precision_score(hold.kauft == "ja", p))
    assert got["holdout_recall"] == pytest.approx(
        m.recall_score(hold.kauft, flagged, pos_label="ja")
    )
    assert got["holdout_f1"] < 0.9  # not the 94% class's f1 (0.97 and up)
    assert 0 < got["cv_pr_auc"] < 0.9  # the search scored the rare class too


def test_psi_of_a_column_the_model_lacks_is_named_when_evaluated(trained):
    from mlops_console.config import AlertRule
    from mlops_console.monitoring.alerts import unknown_column

    ws = trained[0]
    bad = AlertRule(name="age", measure="psi:alter", above=0.2)
    msg = unknown_column(ws, bad, "kunden", 1)
    assert msg.startswith("alert 'age': measure 'psi:alter' names no input of kunden v1")
    assert "Alter (Jahre)" in msg
    good = AlertRule(name="age", measure="psi:Alter (Jahre)", above=0.2)
    assert unknown_column(ws, good, "kunden", 1) is None


def test_onnx_that_cannot_be_used_ships_scikit_learn_and_says_why(trained):
    from mlops_console.training.onnx_export import export

    ws, frame, _, _ = trained
    model = ws.models.bundle("kunden/1", runtime="sklearn")
    # the agreement check itself fails (a column it needs is not in the check frame)
    data, report = export(
        model.sklearn_model, model.signature, "classification", frame[ODD[:3]].head(20)
    )
    assert data is None and report["kept"] is False
    assert report["reason"].startswith("the agreement check could not run: KeyError")


def test_cli_run_prints_the_choices_and_refuses_mistakes(trained, tmp_path):
    root = tmp_path / "ws"
    Workspace.init(root).close()
    write_data(root, n=300)
    # no ONNX converter for this estimator: the run ships scikit-learn and says why
    write_pipeline(root, estimator="sklearn.dummy.DummyClassifier")
    proc = run_cli("-w", str(root), "run", "kunden")
    assert proc.returncode == 0, proc.stderr
    assert "positive class 'ja', the minority" in proc.stderr
    assert "ONNX: not included (conversion failed: MissingShapeCalculator" in proc.stdout
    with Workspace.open(root) as ws:
        (run,) = ws.runs.search()
        assert run.tags["onnx"].startswith("not included: conversion failed")
        assert ws.models.bundle("kunden/1").runtime == "sklearn"
    # an unknown positive class: one sentence before any training (no new run)
    write_pipeline(root, name="typo", positive_class="yes")
    proc = run_cli("-w", str(root), "run", "typo")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert (
        "typo.toml: [data].positive_class 'yes' is not a class of the target 'kauft' (its "
        "classes: 'ja', 'nein'); set it to one of them." in proc.stderr
    )
    with Workspace.open(root) as ws:
        assert len(ws.runs.search()) == 1


def test_an_id_as_target_is_refused_before_the_search(tmp_path):
    from mlops_console.training.runner import train

    root = tmp_path / "ws"
    with Workspace.init(root) as ws:
        write_data(root, n=2000)
        (root / "pipelines" / "ids.toml").write_text(
            'name = "ids"\n[data]\npath = "kunden.csv"\ntarget = "kunden_id"\n'
            '[search]\nmethod = "random"\ncandidates = 50\n'
            "[search.space]\nC = { low = 0.01, high = 10, log = true }\n"
        )
        t0 = time.perf_counter()
        with pytest.raises(ConfigError) as exc:
            train(ws, "ids")
        assert time.perf_counter() - t0 < 10
        assert str(exc.value).endswith(
            "ids.toml: target 'kunden_id' has 2,000 distinct values in 2,000 rows; a "
            "classification target needs few classes (at most 100 here) — is it the right "
            "column ([data].target), or should task = 'regression'?"
        )
        assert ws.runs.search() == []
