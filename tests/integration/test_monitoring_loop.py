"""The self-correcting loop, end to end: the sample data's drifted month reaches a served
model, the drift alert opens, the daemon retrains on the fresh data, and the new version
goes out through the canary. A real daemon, a real server, real files."""

from __future__ import annotations

import threading
import time

import httpx
import pandas as pd
import pytest
from tests.integration.test_daemon import DaemonProc, wait_for

from mlops_console.training.runner import train
from mlops_console.workspace import Workspace

pytestmark = pytest.mark.slow

FEATURES = [
    "tenure_months",
    "monthly_charges",
    "total_charges",
    "support_calls",
    "contract",
    "payment_method",
    "internet_service",
    "region",
]


def sample_workspace(root):
    ws = Workspace.init(root, sample=True)
    spec = (ws.root / "pipelines" / "churn.toml").read_text()
    # the quick profile (one thread, capped rows): the loop is under test, not the fit
    spec = spec.replace('method = "random"', 'method = "none"\nprofile = "quick"')
    spec = spec.replace('interval = "1d"\non_data_change = true', "on_data_change = false")
    spec = spec.replace(
        "canary_percent = 10", "canary_percent = 50\ncanary_minutes = 0.05\nauto = true"
    )
    (ws.root / "pipelines" / "churn.toml").write_text(spec)
    with open(ws.root / "mlops.toml", "a") as fh:
        fh.write(
            """
[monitoring]
every = "1s"
min_rows = 200

[[alerts]]
name = "input drift"
measure = "drift_share"
above = 0.2
window = "2m"
action = "retrain"
notify = ["console", "log"]
"""
        )
    ws.close()
    ws = Workspace.open(root)
    ws.data.add("churn", "data/churn.csv", timestamp="event_time", entities=["customer_id"])
    ws.data.ingest("churn")
    return ws


def test_drift_alert_retrains_and_the_new_version_goes_out_through_the_canary(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("MLOPS_PREDLOG_ROTATE", "1")
    ws = sample_workspace(tmp_path / "ws")
    train(ws, "churn")
    assert ws.models.resolve("churn@champion").version == 1
    dep = ws.deployments.deploy("churn@champion")
    endpoint = dep.endpoint
    # the fresh month lands in the dataset's file (no watcher on it: the alert triggers)
    with open(ws.root / "data" / "churn.csv", "a") as out:
        out.writelines((ws.root / "data" / "churn_2026_01.csv").read_text().splitlines(True)[1:])
    month = pd.read_csv(ws.root / "data" / "churn_2026_01.csv")
    records = month[FEATURES].astype(object).where(month[FEATURES].notna(), None)
    records = records.to_dict("records")
    stop = threading.Event()
    versions: dict[str, int] = {}

    def traffic():
        i = 0
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                batch = records[(i * 10) % len(records) :][:10]
                try:
                    r = client.post(endpoint + "/invocations", json={"dataframe_records": batch})
                    v = r.headers.get("x-model-version", "?")
                    versions[v] = versions.get(v, 0) + 1
                except httpx.HTTPError:
                    versions["failed"] = versions.get("failed", 0) + 1
                i += 1
                time.sleep(0.02)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    d = DaemonProc(ws)
    try:
        alert = wait_for(lambda: ws.alerts.list(), seconds=120)[0]
        assert alert.rule == "input drift" and alert.deployment == "churn"
        assert alert.value > 0.2
        chain = wait_for(
            lambda: [j for j in ws.jobs.list(limit=50) if j.kind == "chain"], seconds=60
        )[0]
        assert chain.trigger == f"alert {alert.id}"
        assert f"queued retrain chain {chain.id}" in ws.alerts.get(alert.id).action_result
        done = wait_for(
            lambda: (j := ws.jobs.get(chain.id)).status in ("succeeded", "failed") and j,
            seconds=300,
        )
        assert done.status == "succeeded", ws.jobs.logs(chain.id)
        steps = [s.kind for s in sorted(ws.jobs.list(chain_id=chain.id), key=lambda s: s.id)]
        assert steps[0] == "ingest" and "train" in steps and "deploy" in steps, steps
        assert ws.data.get("churn").current_version == 2  # trained on the fresh month
        assert ws.models.resolve("churn@champion").version == 2
        served = httpx.get(endpoint + "/version").json()
        assert served["version"] == 2 and served["canary"] is None
        actions = [e.action for e in ws.deployments.history("churn")]
        assert "canary" in actions and actions[-1] == "promote", actions
        assert versions.get("2", 0) > 0 and versions.get("failed", 0) == 0, versions
        kinds = [e.kind for e in ws.alerts.events(alert.id)]
        assert kinds[:1] == ["opened"] and "action" in kinds and "notified" in kinds
    finally:
        stop.set()
        sender.join(timeout=10)
        d.stop()
        for dp in ws.deployments.list():
            ws.deployments.stop(dp.name)
        ws.close()
