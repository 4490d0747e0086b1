"""Monitoring with a real local deployment: prediction logs, drift, labels, alerts, reports."""

from __future__ import annotations

import datetime
import http.server
import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
from tests.integration.serving_helpers import free_port, train_two_versions
from tests.unit.test_pipeline import make_data

from mlops_console.errors import MlopsError
from mlops_console.monitoring import collect as col
from mlops_console.workspace import Workspace

FEATURES = ["x1", "x2", "plan"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_PREDLOG_ROTATE", "0.5")  # segments close fast, so they are collected
    root = tmp_path_factory.mktemp("mon")
    ws, _ = train_two_versions(root / "ws")
    rec = ws.deployments.deploy("m/1", target="local", port=free_port())
    try:
        yield ws, rec.endpoint
    finally:
        ws.deployments.stop("m")
        ws.close()
        mp.undo()


def send(endpoint: str, frame: pd.DataFrame, prefix: str, chunk: int = 20) -> pd.DataFrame:
    """Score the rows; returns the request id and row of each, with its true label."""
    out = []
    for i in range(0, len(frame), chunk):
        part = frame.iloc[i : i + chunk]
        rid = f"{prefix}-{i}"
        r = httpx.post(
            endpoint + "/invocations",
            json={"dataframe_records": part[FEATURES].to_dict("records")},
            headers={"x-request-id": rid},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        out += [(rid, j, int(y)) for j, y in enumerate(part["label"])]
    return pd.DataFrame(out, columns=["request_id", "row", "label"])


def drifted(n: int, seed: int) -> pd.DataFrame:
    frame = make_data(n, seed=seed)
    frame["x1"] = frame["x1"] + 2.0
    return frame


def wait_collected(ws, prefix: str, n: int, seconds: float = 20) -> None:
    """Wait until the `n` rows of the `prefix` requests are written (the server writes its
    log off the request path, every second) and collected or readable in open segments."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        ws.monitor.collect("m")
        rows, _, _ = ws.monitor.frames("m", 0, time.time() + 1)
        if rows is not None and rows["request_id"].str.startswith(prefix + "-").sum() == n:
            return
        time.sleep(0.3)
    raise AssertionError(f"the rows of requests {prefix}* were not all written")


def test_drift_stability_performance_and_decay_per_window(served):
    ws, endpoint = served
    t0 = time.time()
    send(endpoint, make_data(400, seed=11), "calm")
    time.sleep(0.2)
    mid = time.time()
    # a failed request, logged before the rows below (so waiting for those covers it)
    assert httpx.post(endpoint + "/invocations", content=b"not json").status_code == 400
    labels = send(endpoint, drifted(400, seed=12), "shifted")
    # ground truth through the server, in one call
    r = httpx.post(
        endpoint + "/feedback",
        json=[{"request_id": a, "row": int(b), "label": int(c)} for a, b, c in labels.values],
    )
    assert r.status_code == 202 and r.json()["accepted"] == 400
    bad = httpx.post(endpoint + "/feedback", json=[{"request_id": "x", "label": 1}, {"row": 0}])
    assert bad.status_code == 400 and "Item 1" in bad.json()["message"]
    wait_collected(ws, "shifted", 400)
    deadline = time.time() + 20  # the feedback is written off the request path too
    while time.time() < deadline:
        fb = ws.monitor.frames("m", 0, time.time() + 1, kinds=("feedback",))[2]
        if fb is not None and fb["request_id"].str.startswith("shifted-").sum() == 400:
            break
        time.sleep(0.3)
    end = time.time()

    calm = ws.monitor.measure("m", window=f"{mid - t0:.3f}s", end=mid)
    assert calm.rows == 400 and calm.enough_rows
    assert calm.drift["drifted_columns"] == []
    shifted = ws.monitor.measure("m", window=f"{end - mid:.3f}s", end=end)
    assert shifted.rows == 400
    assert shifted.drift["drifted_columns"] == ["x1"]
    x1 = next(f for f in shifted.drift["features"] if f["column"] == "x1")
    assert x1["psi"] > 0.2 and x1["ks"] > 0.3
    assert shifted.drift["prediction"]["drifted"]  # x1 drives the prediction
    # x1 two standard deviations up: many values above anything seen in training
    assert shifted.stability["out_of_range"].get("x1", 0) > 0.02
    assert shifted.stability["nan_output_rate"] == 0 and not shifted.stability["collapsed"]
    perf = shifted.performance
    assert perf["requests"] == 21 and perf["errors"] == 1
    assert 0 < perf["latency_p50_ms"] <= perf["latency_p99_ms"]
    assert perf["memory_mb"] > 10
    decay = shifted.decay
    assert decay["labelled"] == 400
    assert set(decay["metrics"]) >= {"accuracy", "roc_auc", "log_loss"}
    assert decay["training"]["roc_auc"] == ws.models.get_version("m", 1).metrics["holdout_roc_auc"]
    assert shifted.staleness["model_age_days"] >= 0


def test_label_file_with_bad_rows_is_reported_and_nothing_is_lost(served, tmp_path):
    ws, endpoint = served
    labels = send(endpoint, make_data(60, seed=21), "lab")
    wait_collected(ws, "lab", 60)
    rows = [f"{a},{b},{c}" for a, b, c in labels.values[:50]]
    rows += [
        "nobody-asked,0,1",  # an unknown request id: kept, joins later
        f"{labels.values[0][0]},0,maybe",  # not one of the classes
        f"{labels.values[1][0]},{labels.values[1][1]},0",  # a duplicate of line 3 (later wins)
        ",0,1",  # no request id
        f"{labels.values[2][0]},x,1",  # a row that is not a number
    ]
    path = tmp_path / "labels.csv"
    path.write_text("request_id,row,label\n" + "\n".join(rows) + "\n")
    rep = ws.monitor.import_labels("m", path)
    assert rep["rows"] == 55
    assert rep["accepted"] == 51  # 49 + the correction of line 3 + the unknown id
    assert rep["unmatched"] == 1 and rep["unmatched_examples"] == ["nobody-asked"]
    assert rep["rejected"] == 4
    assert sum(rep["rejected_reasons"].values()) == 4
    rejected = pd.read_csv(rep["rejected_file"])
    assert sorted(rejected["line"]) == [3, 53, 55, 56]
    assert any("not one of the model's classes" in r for r in rejected["reason"])
    assert (tmp_path / "labels.csv").read_bytes() == Path(rep["kept_as"]).read_bytes()
    with pytest.raises(MlopsError, match="has no column"):
        ws.monitor.import_labels("m", path, label_column="truth")
    out = ws.monitor.export_dataset("m", "m_feedback")
    assert out["rows"] >= 49
    frame = ws.data.read("m_feedback")
    assert {"x1", "x2", "plan", "label", "ts"} <= set(frame.columns)


class Hook(http.server.BaseHTTPRequestHandler):
    calls: list = []
    fail_first = 1

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        Hook.calls.append(json.loads(body))
        status = 500 if len(Hook.calls) <= Hook.fail_first else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_alert_opens_notifies_with_retry_is_acknowledged_and_resolves(served, monkeypatch):
    ws, endpoint = served
    hook = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    monkeypatch.setenv("TEST_HOOK_URL", f"http://127.0.0.1:{hook.server_port}/hook")
    # with plugins left out, "pager" may be one of theirs: mlops.toml takes it, and its
    # delivery is what fails (with every plugin loaded, loading mlops.toml refuses it)
    monkeypatch.setenv("MLOPS_PLUGINS", "none")
    settings = (ws.root / "mlops.toml").read_text()
    (ws.root / "mlops.toml").write_text(
        settings
        + """
[monitoring]
min_rows = 100

[[alerts]]
name = "inputs drift"
measure = "drift_share"
above = 0.2
window = "3s"
notify = ["console", "log", "webhook", "pager"]

[notifiers.webhook]
url_env = "TEST_HOOK_URL"
"""
    )
    mine = Workspace.open(ws.root)
    seen = []
    from mlops_console.monitoring.alerts import Alerts

    alerts = Alerts(mine, on_event=seen.append, backoff=0.05)
    try:
        time.sleep(3.2)  # earlier tests' rows leave the window
        send(endpoint, drifted(300, seed=31), "alarm")
        wait_collected(mine, "alarm", 300)
        changes = alerts.evaluate(["m"])
        assert [c["state"] for c in changes] == ["open"], changes
        alerts.wait()
        alert = alerts.get(changes[0]["alert"])
        assert alert.state == "open" and "x1" in alert.detail
        kinds = [e.kind for e in alerts.events(alert.id)]
        assert kinds.count("notified") == 2  # log and webhook (after one retry)
        failed = [e for e in alerts.events(alert.id) if e.kind == "notify_failed"]
        assert len(failed) == 1 and "pager" in failed[0].detail
        assert len(Hook.calls) == 2 and "inputs drift" in Hook.calls[-1]["text"]
        assert "inputs drift" in (mine.state / "logs" / "alerts.log").read_text()
        assert seen and seen[0]["event"] == "alert" and seen[0]["kind"] == "opened"
        assert hook.server_port and str(hook.server_port) not in json.dumps(
            [e.to_dict() for e in alerts.events(alert.id)]
        )  # the URL is never recorded
        assert alerts.evaluate(["m"]) == []  # still breaching: the same alert, no new one
        assert alerts.acknowledge(alert.id, "tester").state == "acknowledged"
        time.sleep(3.2)
        send(endpoint, make_data(300, seed=32), "calm2")
        wait_collected(mine, "calm2", 300)
        changes = alerts.evaluate(["m"])
        assert [c["state"] for c in changes] == ["resolved"]
        kinds = [e.kind for e in alerts.events(alert.id)]
        assert kinds[0] == "opened"
        assert kinds.index("acknowledged") < kinds.index("resolved")
        assert alerts.get(alert.id).state == "resolved"
    finally:
        alerts.wait()
        alerts.close()
        hook.shutdown()
        mine.close()
        (ws.root / "mlops.toml").write_text(settings)  # later commands run without the env


def test_collector_takes_abandoned_segments_and_skips_torn_lines(ws):
    folder = col.log_dir(ws, "gone")
    folder.mkdir(parents=True)
    rec = {
        "ts": time.time(),
        "request_id": "r1",
        "model": "m",
        "version": 1,
        "role": "primary",
        "latency_ms": 1.5,
        "rows": 2,
        "inputs": {"x1": [0.5, None], "plan": ["pro", "basic"]},
        "outputs": {"predict": [1, 0], "predict_proba": [[0.2, 0.8], [0.9, 0.1]]},
    }
    seg = folder / "predictions-1-1-1.jsonl.open"
    seg.write_bytes(orjson.dumps(rec) + b"\n" + b'{"ts": 1, "torn')
    assert col.collect(ws, "gone")["segments"] == 0  # a server may still be writing it
    old = time.time() - 3600
    import os

    os.utime(seg, (old, old))
    done = col.collect(ws, "gone")
    assert done == {"segments": 1, "rows": 2, "requests": 1, "feedback": 0, "unreadable": 1}
    assert not seg.exists()
    rows = pd.read_parquet(col.monitor_dir(ws, "gone") / "rows" / "predictions-1-1-1.parquet")
    assert rows["proba"].tolist() == [0.8, 0.1]
    assert rows["in.plan"].tolist() == ["pro", "basic"] and np.isnan(rows["in.x1"][1])
    assert col.collect(ws, "gone")["segments"] == 0


def test_report_has_charts_and_no_raw_rows(served, tmp_path):
    ws, endpoint = served
    send(endpoint, drifted(200, seed=41), "rep")
    wait_collected(ws, "rep", 200)
    from mlops_console.monitoring.report import write_report

    paths = write_report(ws, "m", "30s", 4, str(tmp_path / "r"))
    names = {p.name for p in paths}
    assert {"report.md", "report.html", "psi.png", "distributions.png", "over_time.png"} <= names
    html = (tmp_path / "r" / "report.html").read_text()
    assert "x1" in html and "DRIFT" in html and "rep-0" not in html
    assert sum(p.stat().st_size for p in paths) < 400_000
    assert (tmp_path / "r" / "psi.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_monitor_alerts_and_clear_errors(served, tmp_path):
    from tests.conftest import run_cli

    ws, endpoint = served
    send(endpoint, drifted(150, seed=51), "cli")
    wait_collected(ws, "cli", 150)
    w = ("-w", str(ws.root))
    out = run_cli(*w, "monitor", "m", "--window", "10m", check=True).stdout
    assert "x1" in out and "DRIFT" in out and "latency" in out and "decay" in out
    data = json.loads(run_cli(*w, "monitor", "m", "--json", check=True).stdout)
    assert data["deployment"] == "m" and data["rows"] > 0
    hist = json.loads(
        run_cli(*w, "monitor", "m", "--window", "1m", "--history", "2", "--json", check=True).stdout
    )
    assert len(hist) == 3
    missing = run_cli(*w, "monitor", "labels", "m", str(tmp_path / "nope.csv"))
    assert (
        missing.returncode == 1
        and "No label file" in missing.stderr
        and "Traceback" not in missing.stderr
    )
    bad_window = run_cli(*w, "monitor", "m", "--window", "soon")
    assert bad_window.returncode == 1 and "not a duration" in bad_window.stderr
    unknown = run_cli(*w, "monitor", "nowhere")
    assert unknown.returncode == 1 and "No deployment 'nowhere'" in unknown.stderr
    assert run_cli(*w, "alerts", "list", check=True).returncode == 0
    rep = run_cli(
        *w,
        "monitor",
        "report",
        "m",
        "--window",
        "10m",
        "--windows",
        "2",
        "--out",
        str(tmp_path / "rp"),
        check=True,
    )
    assert "report.html" in rep.stdout


def test_error_rate_alert_rolls_the_deployment_back(served):
    ws, endpoint = served
    ws.deployments.deploy("m/2", name="m")  # a hot swap: m/1 -> m/2
    assert httpx.get(endpoint + "/version").json()["version"] == 2
    (ws.root / "mlops.toml").write_text(
        (ws.root / "mlops.toml").read_text().split("\n[monitoring]")[0]
        + """
[[alerts]]
name = "errors"
measure = "error_rate"
above = 0.2
window = "3s"
action = "rollback"
notify = ["log"]
"""
    )
    mine = Workspace.open(ws.root)
    from mlops_console.monitoring.alerts import Alerts

    alerts = Alerts(mine, backoff=0.05)
    try:
        time.sleep(3.2)
        for _ in range(10):  # bad requests: 10 of 11 fail
            assert httpx.post(endpoint + "/invocations", content=b"{").status_code == 400
        send(endpoint, make_data(20, seed=61), "ok", chunk=20)
        wait_collected(mine, "ok", 20)
        changes = alerts.evaluate(["m"])
        assert [c["state"] for c in changes] == ["open"], changes
        alert = alerts.get(changes[0]["alert"])
        assert alert.action_result == "rolled m back"
        assert httpx.get(endpoint + "/version").json()["version"] == 1
        assert mine.deployments.get("m").version == 1
        assert mine.deployments.history("m")[-1].action == "rollback"
    finally:
        alerts.wait()
        alerts.close()
        mine.close()


def test_labels_matched_by_entity_key_and_time(served, tmp_path):
    ws, endpoint = served
    frame = make_data(40, seed=71)
    frame["customer"] = [f"c{i}" for i in range(40)]  # not a model input: logged as a key
    before = time.time()
    for i in range(0, 40, 10):
        part = frame.iloc[i : i + 10][[*FEATURES, "customer"]]
        r = httpx.post(
            endpoint + "/invocations",
            json={"dataframe_records": part.to_dict("records")},
            headers={"x-request-id": f"ent-{i}"},
        )
        assert r.status_code == 200
    wait_collected(ws, "ent", 40)
    after = time.time() + 5
    iso = datetime.datetime.fromtimestamp(after, tz=datetime.UTC).isoformat()
    # epoch seconds and ISO 8601 times (pandas 3 parses those at microsecond resolution)
    lines = [f"c{i},{iso if i % 2 else after},{int(frame['label'][i])}" for i in range(40)]
    lines += [
        "c0,yesterday,1",  # not a time
        f"c1,{before - 3600},1",  # before any prediction for c1
        f"nobody,{after},0",  # no such entity
    ]
    path = tmp_path / "by_entity.csv"
    path.write_text("customer,at,label\n" + "\n".join(lines) + "\n")
    rep = ws.monitor.import_labels(
        "m", path, entity_column="customer", time_column="at", row_column=None
    )
    assert rep["rows"] == 43 and rep["accepted"] == 40 and rep["matched"] == 40
    assert rep["rejected"] == 3, rep
    reasons = " | ".join(rep["rejected_reasons"])
    assert "is not a time" in reasons and "no prediction for customer 'c1'" in reasons
    assert "'nobody'" in reasons
    stored = pd.concat(
        pd.read_parquet(p) for p in (col.monitor_dir(ws, "m") / "feedback").glob("labels-*.parquet")
    )
    mine = stored[stored["request_id"].str.startswith("ent-")]
    assert len(mine) == 40 and set(mine["row"]) == set(range(10))
    other = tmp_path / "by_account.csv"
    other.write_text("account,label\na1,1\n")
    with pytest.raises(MlopsError, match="No prediction of m carries 'account'"):
        ws.monitor.import_labels("m", other, entity_column="account", row_column=None)
