import io
import time

import joblib
import pytest

from mlops_console.errors import ArtifactIntegrityError, Conflict, MlopsError, NotFound
from mlops_console.registry.cards import card_markdown


def _version(ws, auc, name="churn"):
    with ws.runs.start(experiment="churn", params={"auc_target": auc}) as run:
        run.log_metric("auc", auc)
        buf = io.BytesIO()
        joblib.dump({"weights": [auc]}, buf)
        run.log_artifact(buf.getvalue(), "model")
        run.log_dataset("churn", "cd" * 32, rows=100)
    return ws.models.register(
        name, run=run, signature={"inputs": [{"name": "x", "type": "double"}]}
    )


def test_register_resolve_and_load(ws):
    v1 = _version(ws, 0.7)
    v2 = _version(ws, 0.8)
    assert (v1.version, v2.version) == (1, 2)
    assert ws.models.resolve("churn").version == 2
    assert ws.models.resolve("churn/1").metrics == {"auc": 0.7}
    assert ws.models.load("churn/1") == {"weights": [0.7]}
    assert v2.lineage["datasets"][0]["rows"] == 100
    assert v2.lineage["run"]["params"] == {"auc_target": "0.8"}
    with pytest.raises(NotFound, match="no version 9"):
        ws.models.resolve("churn/9")
    with pytest.raises(NotFound, match="no alias"):
        ws.models.resolve("churn@champion")
    with pytest.raises(NotFound, match="No model named"):
        ws.models.resolve("nope")
    with pytest.raises(MlopsError, match="not a model reference"):
        ws.models.resolve("a@b@c")


def test_aliases_history_and_rollback(ws):
    for auc in (0.7, 0.8, 0.9):
        _version(ws, auc)
    ws.models.promote("churn/1", reason="first")
    ws.models.promote("churn/2")
    ws.models.promote("churn/3")
    assert ws.models.resolve("churn@champion").version == 3
    move = ws.models.rollback("churn", reason="p99 regression")
    assert (move.from_version, move.to_version, move.kind) == (3, 2, "rollback")
    assert ws.models.rollback("churn").to_version == 1
    with pytest.raises(Conflict, match="no earlier version"):
        ws.models.rollback("churn")
    hist = ws.models.history("churn", "champion")
    assert [(m.kind, m.from_version, m.to_version) for m in hist] == [
        ("set", None, 1),
        ("set", 1, 2),
        ("set", 2, 3),
        ("rollback", 3, 2),
        ("rollback", 2, 1),
    ]
    assert hist[3].reason == "p99 regression" and hist[0].actor


def test_alias_at_answers_what_was_in_production(ws):
    for auc in (0.7, 0.8):
        _version(ws, auc)
    ws.models.promote("churn/1")
    t_between = time.time()
    time.sleep(0.01)
    ws.models.promote("churn/2")
    assert ws.models.alias_at("churn", "champion", t_between) == 1
    assert ws.models.alias_at("churn", "champion", time.time()) == 2
    assert ws.models.alias_at("churn", "champion", 0) is None


def test_archive_and_delete_protect_aliased_versions(ws):
    _version(ws, 0.7)
    _version(ws, 0.8)
    ws.models.promote("churn/2")
    with pytest.raises(Conflict, match="champion"):
        ws.models.archive("churn/2")
    with pytest.raises(Conflict, match="champion"):
        ws.models.delete_version("churn", 2)
    ws.models.archive("churn/1")
    with pytest.raises(Conflict, match="archived"):
        ws.models.promote("churn/1")
    ws.models.restore("churn/1")
    ws.models.delete_version("churn", 1)
    assert [v.version for v in ws.models.versions("churn")] == [2]
    with pytest.raises(Conflict, match="--force"):
        ws.models.delete_model("churn")
    assert ws.models.delete_model("churn", force=True) == 1
    assert ws.models.list() == []


def test_deleted_version_artifacts_are_collected(ws):
    v1 = _version(ws, 0.7)
    v2 = _version(ws, 0.8)
    # the run still refers to the artifact, so deleting the version alone frees nothing
    ws.models.delete_version("churn", 1)
    assert ws.gc(grace_seconds=0).removed == []
    assert ws.artifacts.exists(v1.artifact_hash) and ws.artifacts.exists(v2.artifact_hash)


def test_rollback_skips_deleted_versions(ws):
    for auc in (0.6, 0.7, 0.8):
        _version(ws, auc)
    for v in (1, 2, 3):
        ws.models.promote(f"churn/{v}")
    ws.models.promote("churn/1", alias="other")
    ws.models.remove_alias("churn", "other")
    ws.models.delete_version("churn", 2)
    assert ws.models.rollback("churn").to_version == 1


def test_model_card(ws):
    _version(ws, 0.75)
    ws.models.promote("churn/1", reason="first")
    card = ws.models.card("churn@champion")
    assert card["metrics"] == {"auc": 0.75} and card["aliases"] == ["champion"]
    assert card["data"][0]["name"] == "churn"
    md = card_markdown(card)
    assert "# Model card: churn version 1" in md and "| auc | 0.75 |" in md
    assert "No model checks have run" in md and "first" in md


def test_load_refuses_a_tampered_model(ws):
    import os

    v = _version(ws, 0.7)
    path = ws.artifacts.path_of(v.artifact_hash)
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ArtifactIntegrityError):
        ws.models.load("churn/1")


def test_bad_names(ws):
    with pytest.raises(MlopsError, match="not allowed"):
        ws.models.register("bad name", artifact=b"x")
    ws.models.register("ok", artifact=b"x")
    with pytest.raises(MlopsError, match="not allowed"):
        ws.models.set_alias("ok", "42", 1)
