"""The console's Monitoring and Overview screens on a real local deployment, alerts
acknowledged from the console, the command palette, key remapping, and live updates from
a real daemon's event stream."""

from __future__ import annotations

import time

import httpx
import pytest

from mlops_console.monitoring.alerts import Alerts
from mlops_console.tui.app import Confirm, MlopsConsole
from mlops_console.workspace import Workspace
from tests.integration.serving_helpers import free_port, train_two_versions
from tests.tui.test_console import settle
from tests.unit.test_pipeline import make_data

RULE = """
[monitoring]
min_rows = 50

[[alerts]]
name = "drift"
measure = "drift_share"
above = 0.2
window = "1h"
notify = ["console"]

[console]
keys = { refresh = "f5", "model-promote" = "P" }
"""


@pytest.fixture(scope="module")
def mws(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_PREDLOG_ROTATE", "0.5")
    root = tmp_path_factory.mktemp("tuimon") / "ws"
    ws, _ = train_two_versions(root)
    with open(root / "mlops.toml", "a") as fh:
        fh.write(RULE)
    ws.close()
    ws = Workspace.open(root)
    endpoint = ws.deployments.deploy("m/1", target="local", port=free_port()).endpoint
    frame = make_data(200, seed=5)
    frame["x1"] += 2.5  # drifted
    for i in range(0, 200, 20):
        part = frame.iloc[i : i + 20][["x1", "x2", "plan"]]
        r = httpx.post(
            endpoint + "/invocations", json={"dataframe_records": part.to_dict("records")}
        )
        assert r.status_code == 200
    deadline = time.time() + 20
    while time.time() < deadline:
        if ws.monitor.measure("m").rows == 200:
            break
        time.sleep(0.3)
    alerts = Alerts(ws)
    opened = alerts.evaluate(["m"])
    assert [c["state"] for c in opened] == ["open"]
    try:
        yield ws
    finally:
        ws.deployments.stop("m")
        ws.close()
        mp.undo()


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_monitoring_screen_shows_drift_and_acknowledges_an_alert(mws, size):
    app = MlopsConsole(mws, poll_seconds=3600)
    async with app.run_test(size=size) as pilot:
        await pilot.press("colon", *"monitoring", "enter")
        await settle(app, pilot)
        table = app.query_one("#table")
        keys = [k.value for k in table.rows]
        assert "dep:m" in keys and any(k.startswith("alert:") for k in keys)
        dep = dict(app.listing.rows)["dep:m"]
        assert dep[3] == "200" and dep[5] == "x1"
        assert dep[4].startswith("[yellow]")  # 1 of 3 inputs: some drift, under drift_share
        table.move_cursor(row=keys.index("dep:m"))
        await pilot.press("enter")
        await settle(app, pilot)
        detail = str(app.query_one("#detail").render())
        assert "x1" in detail and "DRIFT" in detail and "req/s" in detail
        assert set(app.chart_shown["series"]) == {"p99 ms", "req/s"}
        alert_key = next(k for k in keys if k.startswith("alert:"))
        table.move_cursor(row=keys.index(alert_key))
        await pilot.press("a")  # acknowledging is not destructive: no confirmation
        await settle(app, pilot)
        alert_id = int(alert_key.split(":")[1])
        assert mws.alerts.get(alert_id).state == "acknowledged"
        assert "acknowledged" in app.last_message
        await pilot.press("colon", *"overview", "enter")
        await settle(app, pilot)
        rows = dict(app.listing.rows)
        assert "daemon: off" in app.sub_title and rows["daemon:"][2] == "down"
        # the same state as the monitoring screen's yellow cell: 1 of 3 inputs drifted
        assert rows["deployment:m"][6] == "[yellow]some[/]"
        assert f"alert:{alert_id}" in rows


async def test_palette_offers_this_screens_actions_and_keys_are_remapped(mws):
    app = MlopsConsole(mws, poll_seconds=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("colon", *"models", "enter")
        await settle(app, pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "model: promote" in titles and "model: rollback" in titles
        assert "go: Monitoring" in titles and "job: cancel" not in titles
        await pilot.press("p")  # remapped to P in mlops.toml
        await pilot.pause()
        assert not isinstance(app.screen, Confirm)
        await pilot.press("P")
        await pilot.pause()
        assert isinstance(app.screen, Confirm)
        await pilot.press("escape")
        await pilot.press("question_mark")
        await pilot.pause()
        help_text = str(app.query_one("#detail").render())
        assert "f5" in help_text.lower()
        assert any(
            line.split()[:3] == ["P", "model:", "promote"] for line in help_text.splitlines()
        )


@pytest.mark.slow
async def test_live_updates_come_from_the_daemon(mws):
    from tests.integration.test_daemon import DaemonProc

    app = MlopsConsole(mws, poll_seconds=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert not app.daemon_running
        d = DaemonProc(mws)
        try:
            for _ in range(100):
                await pilot.pause(0.1)
                if app.daemon_running:
                    break
            assert app.daemon_running and "daemon: live" in app.sub_title
            d.client.call("POST", "/jobs", json={"pipeline": "p"})  # the daemon says so
            for _ in range(100):
                await pilot.pause(0.1)
                if app.events_seen:
                    break
            assert app.events_seen > 0
            await pilot.press("colon", *"overview", "enter")
            await settle(app, pilot)
            assert dict(app.listing.rows)["daemon:"][2] == "up"
        finally:
            d.stop()
            for j in mws.jobs.list(status="running") + mws.jobs.list(status="queued"):
                mws.jobs.cancel(j.id)


async def test_deployment_actions_canary_rollback_and_stop(mws):
    app = MlopsConsole(mws, poll_seconds=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("colon", *"deployments", "enter")
        await settle(app, pilot)
        assert [k.value for k in app.query_one("#table").rows] == ["m"]
        await pilot.press("d", *"m/2 30", "enter")
        await pilot.pause()
        assert isinstance(app.screen, Confirm)
        await pilot.press("y")
        await settle(app, pilot)
        rec = mws.deployments.get("m")
        assert rec.canary_version == 2 and rec.canary_percent == 30, app.last_message
        await pilot.press("p")  # promote the canary
        await pilot.pause()
        await pilot.press("y")
        await settle(app, pilot)
        rec = mws.deployments.get("m")
        assert rec.version == 2 and rec.canary_version is None, app.last_message
        await pilot.press("d", *"m/1 30", "enter")
        await pilot.pause()
        await pilot.press("y")
        await settle(app, pilot)
        assert mws.deployments.get("m").canary_version == 1
        await pilot.press("b")
        await pilot.pause()
        await pilot.press("y")
        await settle(app, pilot)
        assert mws.deployments.get("m").canary_version is None
        await pilot.press("s")
        await pilot.pause()
        await pilot.press("y")
        await settle(app, pilot)
        assert mws.deployments.get("m").status == "stopped", app.last_message
