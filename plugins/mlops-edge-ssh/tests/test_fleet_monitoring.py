"""Drift of a fleet per device and per group: the core's monitoring, alerts and CLI over a
fleet deployment whose devices' prediction logs were pulled.

No SSH here: the fleet's devices are in fleet.toml (so the real FleetTarget tells the core
each device's groups), the deployment record is the one `mlops deploy --target fleet`
writes, and each device's segments are written by the server's own PredictionLog and
published under the name the target gives them (`STEM--DEVICE.jsonl`). Six devices serve
m/1; gw-01's inputs drift (x1 shifted), which a fleet-wide figure dilutes to below the
rule's threshold: the alert must name gw-01 (and its group), and resolve when it stops."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DEVICES = {f"gw-0{i}": ["m", "plant-a" if i <= 3 else "plant-b"] for i in range(1, 7)}
ROWS = 300  # per device and batch
SHIFT = 2.0  # gw-01's x1, in standard deviations of the training data
RULE = """
[monitoring]
min_rows = 100

[[alerts]]
name = "x1 drift"
measure = "psi:x1"
above = 0.2
window = "1m"
notify = ["console"]
"""


def _train(root: Path) -> Path:
    from mlops_console.training.runner import train
    from mlops_console.workspace import Workspace

    rng = np.random.default_rng(0)
    n = 600
    x1 = rng.normal(size=n)
    plan = rng.choice(["basic", "pro", "max"], n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * x1 + (plan == "pro"))))).astype(int)
    frame = pd.DataFrame(
        {
            "id": [f"u{i}" for i in range(n)],
            "ts": pd.date_range("2025-01-01", periods=n, freq="h"),
            "x1": x1.round(4),
            "x2": rng.normal(size=n).round(4),
            "plan": plan,
            "label": y,
        }
    )
    ws = Workspace.init(root)
    try:
        frame.to_parquet(ws.root / "data" / "d.parquet")
        ws.data.add("d", "data/d.parquet", timestamp="ts", entities=["id"])
        ws.data.ingest("d")
        (ws.root / "pipelines" / "p.toml").write_text(
            'name = "p"\nregister_as = "m"\nseed = 7\n'
            '[data]\ndataset = "d"\ntarget = "label"\ntime_column = "ts"\nentity_column = "id"\n'
            '[model]\nestimator = "sklearn.linear_model.LogisticRegression"\n'
            "params = { max_iter = 500 }\n"
            '[search]\nmethod = "none"\n'
        )
        train(ws, "p")
    finally:
        ws.close()
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("trained") / "ws")


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: a device that refuses at once


@pytest.fixture
def fleet_ws(trained, tmp_path):
    """A copy of the trained workspace with six devices in fleet.toml and deployment m on
    the fleet target (group m), recorded as the deploy service records it."""
    from mlops_console.workspace import Workspace

    root = tmp_path / "ws"
    shutil.copytree(trained, root)
    port = _closed_port()
    inv = [
        "[defaults]",
        'user = "root"',
        'key = "keys/fleet"',
        'known_hosts = "fleet_known_hosts"',
    ]
    for name, groups in DEVICES.items():
        inv += ["", "[[device]]", f'name = "{name}"', 'host = "127.0.0.1"', f"port = {port}"]
        inv.append("groups = [" + ", ".join(f'"{g}"' for g in groups) + "]")
    (root / "fleet.toml").write_text("\n".join(inv) + "\n")
    (root / "fleet_known_hosts").write_text("")  # no key known: every device refuses
    with open(root / "mlops.toml", "a") as fh:
        fh.write(RULE)
    ws = Workspace.open(root)
    now = time.time()
    with ws.db.write() as conn:
        conn.exec_driver_sql(
            "INSERT INTO deployment (name, target, model_name, version, canary_version, "
            "canary_percent, status, endpoint, config, created_at, updated_at) "
            "VALUES ('m', 'fleet', 'm', 1, NULL, 0, 'running', 'fleet:m', ?, ?, ?)",
            (json.dumps({"group": "m"}), now, now),
        )
    try:
        yield ws
    finally:
        ws.close()


def _publish(ws, device: str, ts: float, shift: float, seed: int) -> None:
    """ROWS rows device `device` served at time `ts`, as its server logs them, published
    where FleetTarget.fetch_prediction_logs puts a pulled segment."""
    from mlops_console.monitoring.collect import log_dir
    from mlops_console.serving.predlog import PredictionLog
    from mlops_edge_ssh.target import SEP

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x1": (rng.normal(size=ROWS) + shift).round(4),
            "x2": rng.normal(size=ROWS).round(4),
            "plan": rng.choice(["basic", "pro", "max"], ROWS),
        }
    )
    model = ws.models.load("m/1")
    predict, proba = model.predict(frame), model.predict_proba(frame)
    staging = ws.state / "deployments" / "m" / "predlog" / device
    plog = PredictionLog(staging, flush_seconds=0.05)
    for i in range(0, ROWS, 20):  # requests of 20 rows
        part = slice(i, i + 20)
        plog.append(
            {
                "ts": ts,
                "request_id": f"{device}-{seed}-{i}",
                "model": "m",
                "version": 1,
                "role": "primary",
                "status": 200,
                "latency_ms": 3.0,
                "rows": 20,
                "inputs": {c: frame[c].to_numpy()[part] for c in frame},
                "outputs": {"predict": predict[part], "predict_proba": proba[part]},
            }
        )
    plog.close()
    dest = log_dir(ws, "m")
    dest.mkdir(parents=True, exist_ok=True)
    for seg in staging.glob("*.jsonl"):
        os.link(seg, dest / f"{seg.name[: -len('.jsonl')]}{SEP}{device}.jsonl")
        seg.unlink()


def _cli(ws, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_WORKSPACE"}
    return subprocess.run(
        [sys.executable, "-m", "mlops_console.cli.main", "-w", str(ws.root), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )


def _open(ws) -> dict[str, float]:
    return {a.scope: a.value for a in ws.alerts.list("active", "m")}


def test_one_drifted_device_is_named_by_its_alert_and_resolves_alone(fleet_ws):
    ws = fleet_ws
    t0 = time.time()
    # gw-01's drifted rows are 57 s old: in the 1-minute window now, out of it in 4 s
    for i, dev in enumerate(DEVICES):
        if dev != "gw-01":
            _publish(ws, dev, t0 - 30, 0.0, seed=10 + i)
    _publish(ws, "gw-01", t0 - 57, SHIFT, seed=1)

    assert ws.monitor.scopes("m") == DEVICES
    start = time.perf_counter()
    changes = ws.alerts.evaluate()
    took = time.perf_counter() - start
    opened = {c.get("scope", ""): c for c in changes if c.get("state") == "open"}
    # the fleet-wide figure is diluted under the threshold; the device's and its group's are not
    newest = ws.monitor.measure_scopes("m", "1m", end=t0, collect_first=False)
    psi = {scope: r.value("psi:x1") for scope, r in newest.items()}
    assert psi[""] < 0.2 < psi["group plant-a"] < psi["device gw-01"], psi
    assert all(psi[f"device {d}"] < 0.2 for d in DEVICES if d != "gw-01"), psi
    assert psi["group plant-b"] < 0.2
    assert "group m" not in psi  # the group that is the whole deployment is the fleet
    assert set(opened) == {"device gw-01", "group plant-a"}, changes
    assert opened["device gw-01"]["detail"].startswith("device gw-01: psi:x1 = ")
    assert opened["group plant-a"]["detail"].startswith("group plant-a (gw-01, gw-02, gw-03): ")
    assert newest["device gw-01"].rows == ROWS and newest["group plant-b"].rows == 3 * ROWS
    print(f"\none evaluation of 1 rule over the fleet and its 8 scopes: {took:.2f} s")

    alert = next(a for a in ws.alerts.list("active") if a.scope == "device gw-01")
    assert (alert.deployment, alert.subject) == ("m", "m device gw-01")
    d = alert.to_dict()
    assert (d["deployment"], d["scope"], d["subject"]) == ("m", "device gw-01", "m device gw-01")
    assert ws.alerts.list("active", "m") and not ws.alerts.list("active", "m-other")

    # evaluated again while still drifted: the same alerts, none doubled
    assert [c for c in ws.alerts.evaluate() if c.get("state")] == []
    assert sorted(_open(ws)) == ["device gw-01", "group plant-a"]

    # the real CLI shows the device the alert is about, table and --json
    out = _cli(ws, "alerts", "list", "--json")
    assert out.returncode == 0, out.stderr
    listed = {a["subject"]: a for a in json.loads(out.stdout) if a["state"] == "open"}
    assert set(listed) == {"m device gw-01", "m group plant-a"}
    table = _cli(ws, "alerts", "list")
    assert "m device gw-01" in table.stdout and "m group plant-a" in table.stdout

    # gw-01 goes back to normal: its drifted rows leave the window, its new rows are fine
    time.sleep(max(0.0, t0 + 4 - time.time()))
    _publish(ws, "gw-01", time.time() - 1, 0.0, seed=2)
    changes = ws.alerts.evaluate()
    resolved = {c["scope"] for c in changes if c.get("state") == "resolved"}
    assert resolved == {"device gw-01", "group plant-a"}, changes
    assert _open(ws) == {}
    events = [e.kind for e in ws.alerts.events(alert.id)]
    assert events[0] == "opened" and events[-1] == "resolved"


def test_cli_monitors_one_device_or_one_group_against_the_fleets_version(fleet_ws):
    ws = fleet_ws
    now = time.time()
    for i, dev in enumerate(DEVICES):
        _publish(ws, dev, now - 20, SHIFT if dev == "gw-01" else 0.0, seed=20 + i)

    def show(*args: str) -> dict:
        out = _cli(ws, "monitor", *args, "--window", "1h", "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    fleet = show("m")
    assert "scope" not in fleet and fleet["rows"] == 6 * ROWS and fleet["version"] == 1

    one = show("m", "--device", "gw-01")
    assert (one["scope"], one["devices"], one["rows"]) == ("device gw-01", ["gw-01"], ROWS)
    assert (one["model"], one["version"]) == ("m", 1)  # the fleet's version and reference
    x1 = {f["column"]: f for f in one["drift"]["features"]}["x1"]
    assert x1["drifted"] and x1["psi"] > 0.2
    assert one["drift"]["drifted_columns"] == ["x1"]

    # NAME--DEVICE (the name the plugin gave a device's logs) is the same as --device
    def measured(report: dict) -> dict:  # what does not depend on when it was asked
        return {k: v for k, v in report.items() if k not in ("start", "end", "staleness")}

    assert measured(show("m--gw-01")) == measured(one)

    group = show("m", "--group", "plant-b")
    assert (group["scope"], group["devices"]) == ("group plant-b", ["gw-04", "gw-05", "gw-06"])
    assert group["rows"] == 3 * ROWS and group["drift"]["drifted_columns"] == []

    each = show("m", "--per-device")
    assert [r.get("scope", "") for r in each] == [
        "",
        *[f"device {d}" for d in DEVICES],
        "group plant-a",
        "group plant-b",
    ]
    assert [r["rows"] for r in each] == [6 * ROWS, *[ROWS] * 6, 3 * ROWS, 3 * ROWS]
    human = _cli(ws, "monitor", "m", "--per-device", "--window", "1h")
    assert human.returncode == 0 and "device gw-01" in human.stdout and "x1" in human.stdout

    # what a user gets wrong is said plainly
    bad = _cli(ws, "monitor", "m", "--device", "gw-99")
    assert bad.returncode == 1 and "has no device 'gw-99'" in bad.stderr
    assert "gw-01" in bad.stderr
    bad = _cli(ws, "monitor", "m", "--group", "plant-z")
    assert bad.returncode == 1 and "plant-a, plant-b" in bad.stderr
    both = _cli(ws, "monitor", "m", "--device", "gw-01", "--group", "plant-a")
    assert both.returncode == 2
