"""Training pipelines on a small synthetic dataset: search, bundle, checks, gates."""

import json

import numpy as np
import pandas as pd
import pytest

from mlops_console.errors import ConfigError, Conflict, MlopsError
from mlops_console.testing.retest import reproduce, retest_version
from mlops_console.training.runner import train

CHECKS = [
    "signature",
    "robustness",
    "out_of_time",
    "no_regression",
    "fairness",
    "interpretability",
    "performance",
    "reproducibility",
]


def make_data(n=800, seed=0, biased=False):
    rng = np.random.default_rng(seed)
    t = pd.date_range("2025-01-01", periods=n, freq="h")
    x1 = rng.normal(size=n)
    plan = rng.choice(["basic", "pro", "max"], n)
    group = rng.choice(["a", "b"], n)
    logit = 1.5 * x1 + (plan == "pro") * 1.0 + (2.5 * (group == "a") if biased else 0)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(
        {
            "id": [f"u{i}" for i in range(n)],
            "ts": t,
            "x1": x1.round(4),
            "x2": rng.normal(size=n).round(4),
            "plan": plan,
            "group": group,
            "label": y,
        }
    )
    if biased:
        frame["segment"] = group  # a proxy of the sensitive attribute
    return frame


SPEC = """
name = "p"
register_as = "m"
seed = 7
[data]
dataset = "d"
target = "label"
time_column = "ts"
entity_column = "id"
sensitive = "group"
[model]
estimator = "sklearn.linear_model.LogisticRegression"
params = {{ max_iter = 500 }}
[search]
method = "random"
candidates = 4
n_jobs = 1
[search.space]
C = {{ low = 0.01, high = 10.0, log = true }}
[checks]
fairness_max_gap = 0.2
[gates]
min = {{ roc_auc = 0.6 }}
auto_promote = {auto}
{extra}
"""


@pytest.fixture(autouse=True)
def _builtin_checks_only(monkeypatch):
    """The built-in checks only: an installed plugin (mlops-example) adds checks of its own
    (tests/integration/test_plugins.py tests those)."""
    from mlops_console.plugins import load_plugins

    monkeypatch.setenv("MLOPS_PLUGINS", "none")
    load_plugins.cache_clear()
    yield
    load_plugins.cache_clear()


@pytest.fixture
def pws(ws):
    make_data().to_parquet(ws.root / "data" / "d.parquet")
    ws.data.add("d", "data/d.parquet", timestamp="ts", entities=["id"])
    ws.data.ingest("d")
    return ws


def write_spec(ws, auto="true", extra="", name="p"):
    (ws.root / "pipelines" / f"{name}.toml").write_text(SPEC.format(auto=auto, extra=extra))


def test_pipeline_end_to_end(pws):
    write_spec(pws)
    r = train(pws, "p")
    assert [c["name"] for c in r.checks] == CHECKS and all(c["passed"] for c in r.checks), r.checks
    assert r.gates["passed"] and r.promoted and r.aliases == ["challenger", "champion"]
    assert len(r.search) == 4 and {"candidate", "params", "score", "std"} <= set(r.search[0])
    for key in (
        "holdout_roc_auc",
        "holdout_pr_auc",
        "holdout_log_loss",
        "holdout_f1",
        "holdout_accuracy",
        "holdout_calibration_error",
        "cv_roc_auc",
    ):
        assert key in r.metrics
    rec = pws.runs.get(r.run_id)
    assert [s for s, _, _ in pws.runs.metric_history(r.run_id, "search_score")] == [0, 1, 2, 3]
    assert rec.inputs[0]["name"] == "d" and rec.inputs[0]["version"] == "v1"
    mv = pws.models.resolve("m@champion")
    assert mv.gates_passed is True and len(mv.checks) == 8
    # the bundle: ONNX kept because it agrees with scikit-learn, both runtimes predict alike
    assert r.onnx["kept"], r.onnx
    onnx, sk = pws.models.bundle("m@champion"), pws.models.bundle("m@champion", runtime="sklearn")
    raw = make_data(50, seed=3)
    assert onnx.runtime == "onnx" and sk.runtime == "sklearn"
    np.testing.assert_allclose(onnx.predict_proba(raw), sk.predict_proba(raw), atol=1e-4)
    manifest = onnx.manifest
    assert manifest["name"] == "m" and manifest["version"] == 1 and manifest["labels"] == [0, 1]
    assert set(manifest["files"]) == {"model.joblib", "model.onnx"}
    assert {c["name"] for c in manifest["signature"]["inputs"]} == {"x1", "x2", "plan"}
    assert manifest["lineage"]["datasets"][0]["version"] == 1
    card = pws.models.card("m@champion")
    assert card["top_features"][0]["feature"] in {"x1", "plan"} and card["gates_passed"]


def test_exported_bundle_is_verified_before_loading(pws, tmp_path):
    from mlops_console.errors import ArtifactIntegrityError
    from mlops_console.registry.bundle import export_bundle, load_bundle_dir

    write_spec(pws)
    train(pws, "p")
    mv = pws.models.resolve("m@champion")
    folder = export_bundle(pws.artifacts, mv.artifact_hash, tmp_path / "b")
    assert load_bundle_dir(folder).predict(make_data(5, seed=9)).shape == (5,)
    (folder / "model.joblib").write_bytes(b"tampered")
    with pytest.raises(ArtifactIntegrityError, match="not loaded"):
        load_bundle_dir(folder, runtime="sklearn")


def test_failed_gates_register_but_take_no_alias(pws):
    write_spec(pws, extra="")
    path = pws.root / "pipelines" / "p.toml"
    path.write_text(path.read_text().replace("roc_auc = 0.6", "roc_auc = 0.99"))
    r = train(pws, "p")
    assert not r.gates["passed"] and r.aliases == [] and r.version.gates_passed is False
    failed = [g for g in r.gates["results"] if not g["passed"]]
    assert failed[0]["name"] == "min roc_auc" and failed[0]["threshold"] == 0.99
    with pytest.raises(Conflict, match="failed its promotion gates"):
        pws.models.promote("m/1", alias="challenger")
    with pytest.raises(Conflict, match="failed its promotion gates"):
        pws.models.promote("m/1")


def test_only_a_challenger_becomes_champion(pws):
    write_spec(pws, auto="false")
    r = train(pws, "p")
    assert r.aliases == ["challenger"] and not r.promoted
    pws.models.promote("m/1")  # the challenger may become champion
    assert pws.models.resolve("m@champion").version == 1
    r2 = train(pws, "p")
    pws.models.remove_alias("m", "challenger")
    pws.models.set_alias("m", "challenger", 1)
    with pytest.raises(
        Conflict, match="only a challenger"
    ):  # v2 passed, but is no longer challenger
        pws.models.promote(r2.version.ref)


def test_a_worse_model_fails_no_regression(pws):
    write_spec(pws)
    train(pws, "p")
    worse = train(pws, "p", overrides={"search.method": "none", "model.params": {"C": 1e-6}})
    check = next(c for c in worse.checks if c["name"] == "no_regression")
    assert not check["passed"] and "champion" in check["reason"]
    assert pws.models.resolve("m@champion").version == 1


def test_fairness_check_catches_a_biased_model(ws):
    make_data(biased=True).to_parquet(ws.root / "data" / "d.parquet")
    ws.data.add("d", "data/d.parquet", timestamp="ts", entities=["id"])
    ws.data.ingest("d")
    write_spec(ws)
    r = train(ws, "p")
    fair = next(c for c in r.checks if c["name"] == "fairness")
    assert not fair["passed"] and fair["measured"]["demographic_parity_difference"] > 0.2
    assert not r.gates["passed"]


def test_grid_and_halving_search(pws):
    write_spec(pws, extra="")
    path = pws.root / "pipelines" / "p.toml"
    text = path.read_text()
    grid = text.replace('method = "random"', 'method = "grid"').replace(
        "C = { low = 0.01, high = 10.0, log = true }",
        "C = [0.1, 1.0]\nclass_weight = ['balanced', 'none']",
    )
    path.write_text(
        grid.replace("'none'", "'balanced'").replace("['balanced', 'balanced']", '["balanced"]')
    )
    assert len(train(pws, "p", register=False).search) == 2
    path.write_text(
        text.replace('method = "random"', 'method = "halving"').replace(
            "candidates = 4", "candidates = 6"
        )
    )
    r = train(pws, "p", register=False)
    assert len(r.search) >= 6 and "iteration" in r.search[0]


def test_regression_pipeline(ws):
    frame = make_data()
    frame["label"] = (
        frame["x1"] * 3
        + (frame["plan"] == "pro")
        + np.random.default_rng(1).normal(0, 0.1, len(frame))
    )
    frame.to_parquet(ws.root / "data" / "d.parquet")
    ws.data.add("d", "data/d.parquet", timestamp="ts", entities=["id"])
    ws.data.ingest("d")
    (ws.root / "pipelines" / "r.toml").write_text(
        'name = "r"\ntask = "regression"\nregister_as = "reg"\n[data]\ndataset = "d"\ntarget = "label"\n'
        'time_column = "ts"\nentity_column = "id"\n[model]\nestimator = "sklearn.linear_model.Ridge"\n'
        '[validation]\nprimary_metric = "rmse"\n[gates]\nmax = { rmse = 1.0 }\n'
        'checks = ["signature", "robustness", "out_of_time", "reproducibility"]\n'
    )
    r = train(ws, "r")
    assert {"holdout_rmse", "holdout_mae", "holdout_r2", "holdout_mape"} <= set(r.metrics)
    assert r.metrics["holdout_r2"] > 0.9 and r.gates["passed"], r.gates
    assert ws.models.bundle("reg").predict(frame.head(3)).shape == (3,)


def test_a_custom_estimator_from_workspace_code_and_robustness(pws):
    (pws.root / "fragile.py").write_text(
        "import numpy as np\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "class Fragile(LogisticRegression):\n"
        "    def predict_proba(self, X):\n"
        "        if np.abs(np.asarray(X.toarray() if hasattr(X, 'toarray') else X, float)).max() > 1e9:\n"
        "            raise RuntimeError('overflow in my model')\n"
        "        return super().predict_proba(X)\n"
        "def build(**params):\n"
        "    return Fragile(**params)\n"
    )
    write_spec(pws)
    path = pws.root / "pipelines" / "p.toml"
    path.write_text(
        path.read_text().replace('"sklearn.linear_model.LogisticRegression"', '"fragile:build"')
    )
    r = train(pws, "p")
    rob = next(c for c in r.checks if c["name"] == "robustness")
    assert not rob["passed"] and "extreme values" in rob["reason"]
    assert "CRASH: RuntimeError" in rob["measured"]["cases"]["extreme values"]
    assert "clear error" in rob["measured"]["cases"]["a missing column"]


@pytest.mark.parametrize(
    "edit, error, message",
    [
        (("[search]", "[search]\nmethd = 1"), ConfigError, "unknown key `search.methd`"),
        (("candidates = 4", 'candidates = "many"'), ConfigError, "search.candidates"),
        (
            ('"sklearn.linear_model.LogisticRegression"', '"sklearn.nope.Model"'),
            ConfigError,
            "cannot be imported",
        ),
        (
            ('entity_column = "id"', 'entity_column = "id"\nfeatures = ["x1", "nope"]'),
            ConfigError,
            "nope",
        ),
        (('target = "label"', 'target = "missing"'), ConfigError, "target 'missing'"),
        (("C = { low", "gamma = { low"), ConfigError, "does not take"),
        (("roc_auc = 0.6", "rmse = 0.6"), ConfigError, "not metrics of a classification task"),
        (("[model]", "[validation]\nmin_rows = 5000\n[model]"), MlopsError, "needs at least 5000"),
    ],
)
def test_bad_specs_fail_before_training(pws, edit, error, message):
    write_spec(pws)
    path = pws.root / "pipelines" / "p.toml"
    path.write_text(path.read_text().replace(*edit, 1))
    with pytest.raises(error, match=message) as err:
        train(pws, "p")
    assert "p.toml" in str(err.value)  # the file, the key and what to do
    assert all(r.status != "RUNNING" for r in pws.runs.search())
    assert pws.models.list() == []


def test_single_class_target_fails_before_training(ws):
    frame = make_data()
    frame["label"] = 1
    frame.to_parquet(ws.root / "data" / "d.parquet")
    ws.data.add("d", "data/d.parquet", timestamp="ts", entities=["id"])
    ws.data.ingest("d")
    write_spec(ws)
    with pytest.raises(MlopsError, match="single class"):
        train(ws, "p")
    assert ws.runs.search() == []


def test_retest_and_reproduce(pws):
    write_spec(pws)
    r = train(pws, "p")
    out = retest_version(pws, "m@champion")
    assert [c["name"] for c in out["checks"]] == CHECKS and out["gates"]["passed"]
    rep = reproduce(pws, r.run_id)
    assert rep["match"] and rep["metrics"]["holdout_roc_auc"]["match"]
    assert pws.runs.get(rep["reproduction"]).tags["reproduces"] == r.run_id
    assert json.loads(json.dumps(rep))  # JSON-able for --json


def test_pipeline_with_feature_views_records_them(pws):
    (pws.root / "features" / "user.toml").write_text(
        'entities = ["id"]\ntimestamp = "ts"\nsource = "d"\nfeatures = ["x2"]\nttl = "2h"\n'
    )
    write_spec(pws)
    path = pws.root / "pipelines" / "p.toml"
    path.write_text(
        path.read_text().replace(
            'sensitive = "group"',
            'sensitive = "group"\nfeatures = ["x1", "plan"]\nfeature_views = ["user:x2"]',
        )
    )
    r = train(pws, "p", overrides={"search.method": "none"})
    names = {c["name"] for c in r.version.signature["inputs"]}
    assert names == {"x1", "plan", "user__x2"}
    inputs = {i["name"] for i in pws.runs.get(r.run_id).inputs}
    assert {"d", "features:user"} <= inputs


def test_batch_scoring_to_files_and_databases(pws, tmp_path):
    import duckdb

    from mlops_console.scoring import batch_score

    write_spec(pws)
    train(pws, "p")
    out = batch_score(pws, "m@champion", "d", str(tmp_path / "s.parquet"))
    frame = pd.read_parquet(tmp_path / "s.parquet")
    assert out["rows"] == len(frame) == 800 and {
        "prediction",
        "probability",
        "model_version",
    } <= set(frame.columns)
    make_data(30, seed=8).to_csv(pws.root / "data" / "new.csv", index=False)
    batch_score(pws, "m/1", "data/new.csv", f"duckdb:{tmp_path / 'w.duckdb'}#scores")
    assert (
        duckdb.connect(str(tmp_path / "w.duckdb"))
        .execute("SELECT count(*) FROM scores")
        .fetchone()[0]
        == 30
    )
    batch_score(pws, "m/1", "data/new.csv", f"sqlite:{tmp_path / 'w.db'}#scores")
    import sqlite3

    assert (
        sqlite3.connect(tmp_path / "w.db").execute("SELECT count(*) FROM scores").fetchone()[0]
        == 30
    )
    run = pws.runs.get(out["run_id"])
    assert (
        run.tags["kind"] == "batch-scoring"
        and run.inputs[0]["name"] == "d"
        and run.params["model"] == "m/1"
    )
    with pytest.raises(MlopsError, match="neither a dataset nor a file"):
        batch_score(pws, "m/1", "nope.csv", str(tmp_path / "x.csv"))
