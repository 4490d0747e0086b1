"""The real `mlops` command, in subprocesses, as a user runs it."""

import json

import pytest
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory):
    """The sample workspace with one quick run registered: what `init --sample` prints
    as its first next step. (`mlops demo`, the whole loop, has its own test_demo.py.)"""
    root = tmp_path_factory.mktemp("demo") / "mlops-demo"
    run_cli("init", str(root), "--sample", check=True)
    proc = run_cli("-w", str(root), "run", "churn", "--quick", check=True)
    assert "Registered churn/1; it is now churn@champion." in proc.stdout
    assert "[8/8]" in proc.stderr  # progress, stage by stage
    return root


def test_demo_trains_tracks_and_registers(demo_ws):
    runs = json.loads(run_cli("-w", str(demo_ws), "runs", "list", "--json", check=True).stdout)[
        "runs"
    ]
    assert len(runs) == 1  # one run
    run = runs[0]
    assert run["status"] == "FINISHED" and run["experiment"] == "churn"
    assert 0.7 < run["metrics"]["holdout_roc_auc"] < 0.95  # a real model on the sample data
    shown = json.loads(
        run_cli("-w", str(demo_ws), "runs", "show", run["id"][:8], "--json", check=True).stdout
    )
    assert shown["inputs"][0]["rows"] == 20004
    assert {a["name"] for a in shown["artifacts"]} == {
        "model.joblib",
        "model.onnx",
        "pipeline.json",
        "search.json",
        "signature.json",
        "reference.parquet",
    }
    assert shown["lineage"]["spec"]["path"] == "pipelines/churn.toml"
    mv = json.loads(
        run_cli("-w", str(demo_ws), "models", "show", "churn@champion", "--json", check=True).stdout
    )
    assert mv["version"] == 1 and mv["run_id"] == run["id"]
    names = {c["name"] for c in mv["signature"]["inputs"]}
    assert "gender" not in names and "churned" not in names and "tenure_months" in names


def test_second_run_registers_v2_and_history_and_rollback(demo_ws):
    proc = run_cli("-w", str(demo_ws), "run", "churn", "--quick", check=True)
    # same data and seed: an equal model passes no_regression and auto_promote makes it champion
    assert "Registered churn/2; it is now churn@champion (was v1)." in proc.stdout
    out = run_cli("-w", str(demo_ws), "models", "rollback", "churn", check=True).stdout
    assert "v2 -> v1 (rollback)" in out
    hist = json.loads(
        run_cli("-w", str(demo_ws), "models", "history", "churn", "--json", check=True).stdout
    )
    assert [h["kind"] for h in hist["history"] if h["alias"] == "champion"][-2:] == [
        "set",
        "rollback",
    ]
    listing = run_cli("-w", str(demo_ws), "models", "list", check=True).stdout
    assert "@champion=v1" in listing
    card = run_cli("-w", str(demo_ws), "models", "card", "churn@champion", check=True).stdout
    assert card.startswith("# Model card: churn version 1") and "holdout_roc_auc" in card
    cmp = json.loads(
        run_cli(
            "-w",
            str(demo_ws),
            "runs",
            "compare",
            *[
                r["id"]
                for r in json.loads(run_cli("-w", str(demo_ws), "runs", "list", "--json").stdout)[
                    "runs"
                ][:2]
            ],
            "--json",
            check=True,
        ).stdout
    )
    assert len(cmp["runs"]) == 2
    gc = json.loads(run_cli("-w", str(demo_ws), "gc", "--grace", "0", "--json", check=True).stdout)
    assert gc["removed"] == 0 and gc["kept"] >= 2


def test_user_errors_are_one_clear_line_and_exit_1(tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    proc = run_cli("runs", "list", cwd=empty)
    assert proc.returncode == 1
    assert (
        proc.stderr.startswith("Error: No mlops workspace here") and "Traceback" not in proc.stderr
    )
    assert list(empty.iterdir()) == []
    ws = tmp_path / "w"
    run_cli("init", str(ws), check=True)
    proc = run_cli("-w", str(ws), "models", "show", "nope")
    assert proc.returncode == 1 and "No model named 'nope'" in proc.stderr
    proc = run_cli("-w", str(ws), "runs", "list", "--filter", "metrics.auc >")
    assert proc.returncode == 1 and "Incomplete filter" in proc.stderr
    (ws / "mlops.toml").write_text("[serving]\nport = 'x'\n")
    proc = run_cli("-w", str(ws), "runs", "list")
    assert proc.returncode == 1 and "serving.port" in proc.stderr and "Traceback" not in proc.stderr
    # the daemon's status and stop do not need the settings: they answer all the same
    proc = run_cli("-w", str(ws), "status", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"running": False}
    assert run_cli("-w", str(ws), "down").returncode == 0


def test_usage_errors_exit_2(tmp_path):
    assert run_cli("runs", "frobnicate").returncode == 2
    assert run_cli("run", "churn", "--set", "novalue", "-w", str(tmp_path)).returncode == 2


def test_debug_shows_the_traceback(tmp_path):
    proc = run_cli("--debug", "-w", str(tmp_path), "runs", "list")
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_run_with_overrides(tmp_path):
    ws = tmp_path / "w"
    run_cli("init", str(ws), "--sample", check=True)  # the sample dataset is registered too
    proc = run_cli(
        "-w",
        str(ws),
        "run",
        "churn",
        "--set",
        "model.params.max_iter=20",
        "--set",
        "search.method=none",
        check=True,
    )
    assert "Registered churn/1" in proc.stdout
    runs = json.loads(run_cli("-w", str(ws), "runs", "list", "--json").stdout)["runs"]
    assert runs[0]["params"]["model.max_iter"] == "20"
    proc = run_cli("-w", str(ws), "run", "churn", "--set", "model.nonsense=1")
    assert proc.returncode == 1 and "model.nonsense" in proc.stderr


def test_init_sample_is_ready_to_run_as_printed(tmp_path):
    root = tmp_path / "fresh"
    proc = run_cli("init", str(root), "--sample", check=True)
    assert f"mlops -w {root} run churn --quick" in proc.stdout
    versions = json.loads(
        run_cli("-w", str(root), "data", "versions", "churn", "--json", check=True).stdout
    )
    assert versions, versions  # the dataset the sample pipeline reads is there
    proc = run_cli("-w", str(root), "run", "churn", "--set", "search.method=none")
    assert proc.returncode == 0, proc.stderr


def test_serve_on_a_port_in_use_is_one_clear_line(demo_ws):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = run_cli("-w", str(demo_ws), "serve", "churn@champion", "--port", str(port))
    assert proc.returncode == 1, proc.stderr
    assert f"Cannot serve on 127.0.0.1:{port}" in proc.stderr and "Serving" not in proc.stderr
    assert "Traceback" not in proc.stderr
