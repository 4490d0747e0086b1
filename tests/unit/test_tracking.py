import math
import subprocess
import time

import pytest

from mlops_console.errors import Conflict, MlopsError, NotFound
from mlops_console.tracking.query import QueryError
from mlops_console.workspace import Workspace


def test_run_records_params_metrics_status_and_times(ws):
    with ws.runs.start(
        experiment="churn", params={"lr": 0.1, "depth": 3}, tags={"team": "a"}
    ) as run:
        run.log_params({"model": "rf"})
        run.log_metric("loss", 0.5)
        run.log_metric("loss", 0.25)
        run.log_metrics({"auc": 0.9, "acc": 0.8}, step=7)
    rec = ws.runs.get(run.id)
    assert rec.status == "FINISHED" and rec.end_time >= rec.start_time
    assert rec.params == {"lr": "0.1", "depth": "3", "model": "rf"}
    assert rec.metrics == {"loss": 0.25, "auc": 0.9, "acc": 0.8}
    assert rec.tags == {"team": "a"}
    assert ws.runs.metric_history(run.id, "loss") == [
        (0, 0.5, pytest.approx(time.time(), abs=60)),
        (1, 0.25, pytest.approx(time.time(), abs=60)),
    ]
    assert ws.runs.metric_history(run.id, "auc")[0][0] == 7


def test_failed_run_is_marked_failed_with_the_error(ws):
    with pytest.raises(ValueError), ws.runs.start(experiment="x") as run:
        run.log_metric("m", 1)
        raise ValueError("bad data")
    rec = ws.runs.get(run.id)
    assert rec.status == "FAILED"
    assert rec.metrics == {"m": 1.0}
    assert "bad data" in rec.tags["error"]


def test_params_are_immutable(ws):
    with ws.runs.start(params={"a": 1}) as run:
        run.log_param("a", 1)  # same value is fine
        with pytest.raises(Conflict, match="cannot change"):
            run.log_param("a", 2)


def test_metrics_are_batched_then_flushed_by_the_timer(ws):
    run = ws.runs.start()
    run.log_metric("m", 1.0)
    with ws.db.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM metric").scalar() == 0
    deadline = time.time() + 10
    while time.time() < deadline:
        with ws.db.read() as conn:
            if conn.exec_driver_sql("SELECT count(*) FROM metric").scalar() == 1:
                break
        time.sleep(0.05)
    else:
        pytest.fail("buffered metric was never flushed by the timer")
    run.end()


def test_nan_and_inf_survive(ws):
    with ws.runs.start() as run:
        run.log_metric("nan", float("nan"))
        run.log_metric("inf", float("inf"))
    rec = ws.runs.get(run.id)
    assert math.isnan(rec.metrics["nan"]) and rec.metrics["inf"] == math.inf


def test_artifacts_and_datasets_are_recorded(ws, tmp_path):
    folder = tmp_path / "report"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "sub" / "b.txt").write_text("b")
    with ws.runs.start() as run:
        h = run.log_artifact(b"model-bytes", "model")
        run.log_artifact(folder)
        run.log_dataset("churn", "ab" * 32, version="v1", rows=10, source="data/churn.csv")
    rec = ws.runs.get(run.id)
    names = {a["name"]: a["hash"] for a in rec.artifacts}
    assert names["model"] == h and "report/a.txt" in names and "report/sub/b.txt" in names
    assert rec.inputs == [
        {
            "name": "churn",
            "version": "v1",
            "digest": "ab" * 32,
            "rows": 10,
            "source": "data/churn.csv",
            "forced": False,
        }
    ]
    assert ws.artifacts.get_bytes(h) == b"model-bytes"


def test_lineage_records_environment_config_seed_and_spec(ws):
    spec = ws.root / "pipelines" / "p.toml"
    spec.write_text("name = 'p'\n")
    with ws.runs.start(seed=123, spec="pipelines/p.toml") as run:
        pass
    lin = ws.runs.get(run.id).lineage
    assert lin["seed"] == 123 and ws.runs.get(run.id).seed == 123
    assert lin["config_sha256"] == ws.config_sha256
    assert lin["spec"]["path"] == "pipelines/p.toml" and len(lin["spec"]["sha256"]) == 64
    assert lin["environment"]["python"].startswith("3.")
    assert "scikit-learn" in lin["environment"]["packages"]
    assert lin["git"] is None


def test_lineage_records_git_commit_and_dirty_diff(tmp_path):
    root = tmp_path / "repo"
    ws = Workspace.init(root)
    git = ["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    with ws.runs.start() as clean:
        pass
    (root / "mlops.toml").write_text((root / "mlops.toml").read_text() + "\n# edit\n")
    with ws.runs.start() as dirty:
        pass
    g1, g2 = ws.runs.get(clean.id).lineage["git"], ws.runs.get(dirty.id).lineage["git"]
    assert g1["commit"] == head and g1["dirty"] is False and g1["diff_sha256"] is None
    assert g2["commit"] == head and g2["dirty"] is True and len(g2["diff_sha256"]) == 64
    ws.close()


def _make_runs(ws):
    ids = {}
    for name, auc, model in [
        ("a", 0.7, "lr"),
        ("b", 0.9, "rf"),
        ("c", 0.8, "rf"),
        ("d", None, "gb"),
    ]:
        with ws.runs.start(
            experiment="e1" if name != "d" else "e2",
            name=name,
            params={"model": model},
            tags={"kind": "t"},
        ) as run:
            if auc is not None:
                run.log_metric("auc", auc)
        ids[name] = run.id
    return ids


def test_search_filter_order_limit(ws):
    _make_runs(ws)
    names = lambda rs: [r.name for r in rs]  # noqa: E731
    assert names(ws.runs.search(order_by="metrics.auc DESC")) == ["b", "c", "a", "d"]
    assert names(ws.runs.search(order_by=["metrics.auc ASC"])) == ["a", "c", "b", "d"]
    assert names(ws.runs.search(filter="metrics.auc > 0.75", order_by="name")) == ["b", "c"]
    assert names(ws.runs.search(filter="params.model = 'rf' and metrics.auc < 0.85")) == ["c"]
    assert names(ws.runs.search(experiment="e2")) == ["d"]
    assert names(ws.runs.search(filter="name like 'a%' ")) == ["a"]
    assert names(ws.runs.search(filter="params.model ilike 'RF'", order_by="name")) == ["b", "c"]
    assert len(ws.runs.search(limit=2)) == 2
    assert names(
        ws.runs.search(filter="status = 'FINISHED' and tags.kind != 'x'", order_by="name")
    ) == list("abcd")


@pytest.mark.parametrize(
    "bad",
    [
        "metrics.auc >",
        "auc > 1",
        "metrics.auc > 'x'",
        "metrics.auc > 1 or name = 'a'",
        "metrics.auc ~ 1",
    ],
)
def test_bad_filters_say_what_is_wrong(ws, bad):
    with pytest.raises(QueryError):
        ws.runs.search(filter=bad)


def test_get_by_prefix_and_compare(ws):
    ids = _make_runs(ws)
    assert ws.runs.get(ids["b"][:8]).name == "b"
    with pytest.raises(NotFound):
        ws.runs.get("ffffffffff")
    cmp = ws.runs.compare([ids["b"], ids["c"]])
    assert cmp["params"]["model"] == {"values": ["rf", "rf"], "differs": False}
    assert cmp["metrics"]["auc"] == {"values": [0.9, 0.8], "differs": True}


def test_logging_after_end_is_an_error(ws):
    run = ws.runs.start()
    run.end()
    with pytest.raises(MlopsError, match="has ended"):
        run.log_metric("x", 1)


def test_git_lineage_runs_none_of_the_repositorys_own_programs(tmp_path):
    """A copied workspace's .git/config can name programs git would run on status and diff."""
    import subprocess

    from mlops_console.tracking.lineage import git_state

    repo = tmp_path / "repo"
    repo.mkdir()
    marker = tmp_path / "ran"
    run = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    run("config", "user.email", "t@example.com")
    run("config", "user.name", "t")
    (repo / "a.txt").write_text("one\n")
    (repo / ".gitattributes").write_text("*.txt filter=evil diff=evil\n")
    run("add", "a.txt")
    run("-c", "filter.evil.clean=cat", "commit", "-qm", "first")
    hostile = f"sh -c 'echo $0 >> {marker}'"
    for key, value in (
        ("core.fsmonitor", hostile),
        ("filter.evil.clean", hostile),
        ("filter.evil.process", hostile),
        ("filter.evil.required", "true"),
        ("diff.evil.textconv", hostile),
        ("diff.external", hostile),
    ):
        run("config", key, value)
    (repo / "a.txt").write_text("two\n")  # dirty: status and diff have work to do
    state = git_state(repo)
    assert state is not None and state["dirty"] is True and state["commit"]
    assert not marker.exists(), marker.read_text()


def test_the_latest_value_is_the_highest_step_and_the_later_one_on_a_tie(ws):
    """One flush writes one latest_metric row per key: the one the per-value upsert kept."""
    with ws.runs.start(experiment="e") as run:
        for step, value in ((5, 0.1), (3, 0.2), (5, 0.3), (4, 0.4)):
            run.log_metric("loss", value, step=step)
        run.log_metric("acc", 0.9)
    got = ws.runs.get(run.id)
    assert got.metrics == {"loss": 0.3, "acc": 0.9}
    assert [s for s, _, _ in ws.runs.metric_history(run.id, "loss")] == [3, 4, 5, 5]  # all kept
