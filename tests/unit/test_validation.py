"""Values a user can get wrong in mlops.toml and pipeline specs: refused at load, with the
file, the key and what to do (issue 19); the positive class the binary metrics describe."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlops_console.config import WorkspaceConfig, load_workspace_config, parse
from mlops_console.data.reading import DataError
from mlops_console.errors import ConfigError
from mlops_console.pipeline_spec import PipelineSpec, load_pipeline

SPEC = {"name": "p", "data": {"path": "d.csv", "target": "y"}}


def spec_error(**changes) -> str:
    with pytest.raises(ConfigError) as exc:
        parse(PipelineSpec, {**SPEC, **changes}, "pipelines/p.toml")
    return str(exc.value)


def config_error(data) -> str:
    with pytest.raises(ConfigError) as exc:
        parse(WorkspaceConfig, data, "mlops.toml")
    return str(exc.value)


def alert(measure="drift_share", **kw):
    return {"alerts": [{"name": "a", "measure": measure, "above": 0.5, **kw}]}


@pytest.mark.parametrize(
    ("space", "says"),
    [
        ({"C": {"low": 1.0, "high": 0.1}}, "space.C: low (1) must be below high (0.1)"),
        ({"C": {"low": 0, "high": 1, "log": True}}, "a log-scale range needs low above 0"),
        ({"C": {"low": -1, "high": 1, "log": True}}, "got -1"),
        ({"C": {"low": "a", "high": 1}}, "low and high must be numbers"),
        ({"C": {"low": 0.1, "hi": 1}}, "unknown key(s) ['hi']"),
    ],
)
def test_bad_search_ranges_are_one_sentence_naming_the_key(space, says):
    msg = spec_error(search={"method": "random", "space": space})
    assert msg.startswith("pipelines/p.toml: search: ") and says in msg


def test_good_ranges_pass_and_a_grid_needs_lists():
    ok = {"C": {"low": 0.01, "high": 10, "log": True}, "n": {"low": 3, "high": 3, "int": True}}
    parse(PipelineSpec, {**SPEC, "search": {"method": "random", "space": ok}}, "p.toml")
    msg = spec_error(search={"method": "grid", "space": {"C": {"low": 0.1, "high": 1}}})
    assert "a grid search tries lists of choices" in msg


def test_register_as_is_a_model_name_checked_at_load(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\nregister_as = "../churn"\n[data]\npath = "d.csv"\ntarget = "y"\n')
    with pytest.raises(ConfigError) as exc:
        load_pipeline(path)
    assert str(exc.value).startswith(f"{path}: register_as: Model name '../churn' is not allowed")
    assert ".." not in str(exc.value)[-3:]  # one sentence, one full stop
    assert parse(PipelineSpec, {**SPEC, "register_as": "churn-v2.x"}, "p").register_as


def test_positive_class_only_for_classification():
    msg = spec_error(
        task="regression",
        validation={"primary_metric": "rmse"},
        data={**SPEC["data"], "positive_class": "ja"},
    )
    assert msg == (
        "pipelines/p.toml: data.positive_class is for a classification task; remove it or "
        "set task = 'classification'."
    )
    assert "precision" in spec_error(gates={"min": {"nope": 1}})  # precision/recall gate too


def test_deploy_target_and_alias():
    msg = spec_error(deploy={"target": "k8s"})
    assert "deploy.target: unknown deploy target(s) ['k8s']" in msg
    assert "'docker'" in msg and "'local'" in msg
    assert "deploy.alias: Alias '' is not allowed" in spec_error(deploy={"alias": ""})
    for target in ("local", "docker"):
        parse(PipelineSpec, {**SPEC, "deploy": {"target": target}}, "p")


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (alert("psi:"), "alerts.0: alert 'a': measure 'psi:' names no column"),
        (alert("metric:"), "measure 'metric:' names no metric"),
        (alert("decay: "), "names no metric"),
        (alert("metric:f1"), "'f1' is not a metric monitoring measures on labelled rows"),
        (alert(notify=["pager"]), "notify: unknown notifier(s) ['pager']; known: ['console'"),
        ({"notify": {"notifiers": ["log", "pager"]}}, "notifiers: unknown notifier(s) ['pager']"),
        ({"registry": {"champion_alias": ""}}, "registry.champion_alias: Alias '' is not allowed"),
        ({"registry": {"challenger_alias": "champion"}}, "give them different names"),
    ],
)
def test_invalid_workspace_settings_name_file_and_key(data, says):
    msg = config_error(data)
    assert msg.startswith("mlops.toml: ") and says in msg, msg


def test_valid_workspace_settings_still_load(tmp_path):
    path = tmp_path / "mlops.toml"
    path.write_text(
        '[registry]\nchampion_alias = "prod"\n[notify]\nnotifiers = ["log", "webhook"]\n'
        '[[alerts]]\nname = "age"\nmeasure = "psi:Alter (Jahre)"\nabove = 0.2\n'
        'notify = ["console", "desktop"]\n'
        '[[alerts]]\nname = "auc"\nmeasure = "metric:roc_auc"\nbelow = 0.7\n'
    )
    cfg = load_workspace_config(path)
    assert [a.measure for a in cfg.alerts] == ["psi:Alter (Jahre)", "metric:roc_auc"]


# --- the positive class and the class count (training/metrics.py, runner.py) ---------


def rare_target(n=400, rate=0.1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = np.where(x + rng.normal(scale=0.8, size=n) > np.quantile(x, 1 - rate), "ja", "nein")
    return pd.DataFrame({"x": x}), y


def test_binary_metrics_describe_the_positive_class():
    from sklearn import metrics as m
    from sklearn.linear_model import LogisticRegression

    from mlops_console.metrics import classification_metrics, scorer

    X, y = rare_target()
    model = LogisticRegression().fit(X, y)
    ja, nein = (classification_metrics(model, X, y, c) for c in ("ja", "nein"))
    p_ja = model.predict_proba(X)[:, list(model.classes_).index("ja")]
    flagged = np.where(p_ja >= 0.5, "ja", "nein")
    assert ja["f1"] == pytest.approx(m.f1_score(y, flagged, pos_label="ja"))
    assert ja["recall"] == pytest.approx(m.recall_score(y, flagged, pos_label="ja"))
    assert ja["pr_auc"] == pytest.approx(m.average_precision_score(y == "ja", p_ja))
    assert nein["f1"] > 0.9 > ja["f1"]  # the 90% class's f1 says little about the rare one
    assert ja["roc_auc"] == pytest.approx(nein["roc_auc"])
    for metric in ("f1", "pr_auc", "recall", "precision", "calibration_error"):
        score, sign = scorer(metric, "ja")
        assert sign * score(model, X, y) == pytest.approx(ja[metric]), metric


def test_positive_class_inferred_given_or_refused():
    from mlops_console.training.prepare import positive_class

    y = pd.Series(["nein"] * 94 + ["ja"] * 6)
    pos, why = positive_class(y, ["ja", "nein"], None, "kauft", "p.toml")
    assert pos == "ja" and "minority (6.0% of rows)" in why
    assert positive_class(y, ["ja", "nein"], "nein", "kauft", "p.toml")[0] == "nein"
    ints = pd.Series([0] * 30 + [1] * 70)
    assert positive_class(ints, [0, 1], None, "t", "p")[0] == 0
    assert positive_class(ints, [0, 1], "1", "t", "p")[0] == 1  # TOML text for an int class
    assert positive_class(pd.Series([0, 1] * 5), [0, 1], None, "t", "p")[0] == 1  # a tie
    # a retrain keeps the champion's class, even when this month's minority is the other
    pos, why = positive_class(ints, [0, 1], None, "t", "p", champions=1)
    assert pos == 1 and "as the champion's" in why
    assert positive_class(ints, [0, 1], "0", "t", "p", champions=1)[0] == 0  # the spec wins
    with pytest.raises(ConfigError) as exc:
        positive_class(y, ["ja", "nein"], "yes", "kauft", "p.toml")
    assert str(exc.value) == (
        "p.toml: [data].positive_class 'yes' is not a class of the target 'kauft' (its "
        "classes: 'ja', 'nein'); set it to one of them."
    )
    with pytest.raises(ConfigError, match="for a binary target; 't' has 3 classes"):
        positive_class(pd.Series([0, 1, 2]), [0, 1, 2], 1, "t", "p")
    assert positive_class(pd.Series([0, 1, 2]), [0, 1, 2], None, "t", "p") == (None, "")


def test_a_target_with_too_many_classes_is_refused_with_counts():
    from mlops_console.training.prepare import check_class_count

    ids = pd.Series([f"K{i}" for i in range(19_874)] + ["K1"] * 126)
    with pytest.raises(ConfigError) as exc:
        check_class_count(ids, "kunden_id", "p.toml")
    assert str(exc.value) == (
        "p.toml: target 'kunden_id' has 19,874 distinct values in 20,000 rows; a "
        "classification target needs few classes (at most 100 here) — is it the right "
        "column ([data].target), or should task = 'regression'?"
    )
    check_class_count(pd.Series(np.arange(20_000) % 100), "t", "p")  # 100 classes: fine
    with pytest.raises(ConfigError, match="at most 30 here"):
        check_class_count(pd.Series(np.arange(300) % 31), "t", "p")


# --- a feature view's timestamp (features/spec.py, features/store.py) ---------------


def test_a_sql_view_with_a_text_timestamp_says_to_cast_it(ws):
    frame = pd.DataFrame(
        {
            "eid": ["a", "b"],
            "ts": [dt.datetime(2025, 1, 1), dt.datetime(2025, 1, 2)],
            "value": [1.0, 2.0],
        }
    )
    frame.to_parquet(ws.root / "data" / "f.parquet")
    ws.data.add("f", "data/f.parquet", timestamp="ts", entities=["eid"])
    ws.data.ingest("f")
    views = ws.root / "features"
    (views / "txt.toml").write_text(
        'entities = ["eid"]\ntimestamp = "day"\n'
        "sql = \"SELECT eid, strftime(ts, '%d.%m.%Y') AS day, value FROM f\"\n"
    )
    (views / "iso.toml").write_text(
        'entities = ["eid"]\ntimestamp = "day"\n'
        "sql = \"SELECT eid, strftime(ts, '%Y-%m-%d') AS day, value FROM f\"\n"
    )
    (views / "num.toml").write_text(
        'entities = ["eid"]\ntimestamp = "day"\nsql = "SELECT eid, 17 AS day, value FROM f"\n'
    )
    ent = pd.DataFrame({"eid": ["a", "b"], "event_timestamp": [dt.datetime(2025, 2, 1)] * 2})
    with pytest.raises(DataError) as exc:
        ws.features.training_frame(ent, ["txt:value"])
    msg = str(exc.value)
    assert msg.startswith("Feature view 'txt': its timestamp column 'day' is text")
    assert "'01.01.2025'" in msg and "strptime(day, " in msg and "CAST(day AS TIMESTAMP)" in msg
    with pytest.raises(DataError, match="'num': its timestamp column 'day' is INTEGER"):
        ws.features.materialize(["num"])
    out = ws.features.training_frame(ent, ["iso:value"])  # ISO text casts as it is
    assert out["value"].tolist() == [1.0, 2.0]
