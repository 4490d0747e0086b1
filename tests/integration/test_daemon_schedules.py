"""The daemon's schedules, watchers, canary steps and live settings: a real daemon process,
real servers, real files (issue 13: no pickles outside the hash-checked store, no retrain
on unchanged data, canary judged by [deploy], mlops.toml reloaded, no alerts on stopped
deployments)."""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest
from tests.integration.test_daemon import DaemonProc, chains, wait_for
from tests.unit.test_pipeline import SPEC, make_data

from mlops_console.automation.client import DaemonClient
from mlops_console.errors import ConfigError
from mlops_console.workspace import Workspace

pytestmark = pytest.mark.slow

FAST_CHECKS = 'checks = ["signature"]\n'  # [gates]: the chain's training stays short


def make_ws(root, schedule="", extra=""):
    ws = Workspace.init(root)
    make_data().to_parquet(ws.root / "data" / "d.parquet")
    ws.data.add("d", "data/d.parquet", timestamp="ts", entities=["id"])
    ws.data.ingest("d")
    write_spec(ws, schedule, extra)
    return ws


def write_spec(ws, schedule="", extra=""):
    spec = SPEC.format(auto="true", extra=f"{FAST_CHECKS}[schedule]\n{schedule}\n{extra}")
    (ws.root / "pipelines" / "p.toml").write_text(
        spec.replace('method = "random"', 'method = "none"')
    )


def mlops(ws, *args, check=True):
    return subprocess.run(
        [sys.executable, "-m", "mlops_console.cli.main", "-w", str(ws.root), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
    )


class EventLog:
    """The daemon's events, read live from GET /events (those after `connected`)."""

    def __init__(self, ws):
        self.ws = ws
        self.events: list[dict] = []
        self.connected = threading.Event()
        threading.Thread(target=self._listen, daemon=True).start()
        assert self.connected.wait(30)

    def _listen(self):
        transport = httpx.HTTPTransport(uds=str(self.ws.state / "daemon.sock"))
        with (
            httpx.Client(transport=transport, base_url="http://daemon", timeout=60) as c,
            c.stream("GET", "/events") as r,
        ):
            for line in r.iter_lines():
                self.connected.set()
                if line.startswith("data: "):
                    self.events.append(json.loads(line[6:]))

    def of(self, kind: str) -> list[dict]:
        return [e for e in list(self.events) if e["event"] == kind]


# --- schedules: no pickle is ever read; the specs and our own table are the truth --------


class Planted:
    """Unpickling this creates a folder: proof that someone unpickled it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def plant(db, marker, rewind_to_0007=False):
    """What APScheduler's SQLAlchemy job store read at every start, with a planted pickle."""
    con = sqlite3.connect(db)
    if rewind_to_0007:  # a workspace from before 0008 (a restored backup, say)
        con.execute("DROP TABLE schedule_state")
        for table, column in (("run", "pid"), ("run", "pid_start"), ("run", "heartbeat_at")):
            con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")  # and what 0009 added
        con.execute("ALTER TABLE dataset DROP COLUMN read_options")
        con.execute("DROP INDEX ix_alert_state")  # and what 0010 changed
        con.execute("ALTER TABLE alert DROP COLUMN scope")
        con.execute("CREATE INDEX ix_alert_state ON alert (state, deployment)")
        con.execute("UPDATE alembic_version SET version_num = '0007_job_lease_outcome'")
    con.execute(
        "CREATE TABLE IF NOT EXISTS apscheduler_jobs (id VARCHAR(191) PRIMARY KEY, "
        "next_run_time FLOAT, job_state BLOB NOT NULL)"
    )
    con.execute(
        "INSERT OR REPLACE INTO apscheduler_jobs VALUES ('p:interval', ?, ?)",
        (time.time() - 30, pickle.dumps(Planted(marker))),
    )
    con.commit()
    con.close()


def tables(db) -> set[str]:
    con = sqlite3.connect(db)
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        con.close()


def rewind_last_run(db, seconds_ago):
    """As if the daemon had been down since its last run, `seconds_ago` seconds ago."""
    con = sqlite3.connect(db)
    con.execute(
        "UPDATE schedule_state SET last_run_at = ? WHERE id = 'p:interval'",
        (time.time() - seconds_ago,),
    )
    con.commit()
    con.close()


def schedule(client):
    found = client.call("GET", "/schedules")["schedules"]
    assert [s["id"] for s in found] == ["p:interval"], found
    return found[0]


def scheduled_chains(ws):
    return [c for c in chains(ws) if c.trigger == "schedule"]


def cancel_all(ws):
    for c in chains(ws):
        if c.status in ("queued", "running"):
            ws.jobs.cancel(c.id)


def test_a_planted_pickle_is_never_unpickled_and_schedules_keep_their_state(tmp_path):
    ws = make_ws(tmp_path / "ws", schedule='interval = "60s"')
    db = ws.state / "registry.db"
    marker = tmp_path / "UNPICKLED"
    plant(db, marker, rewind_to_0007=True)
    ws.close()
    up = mlops(ws, "up", "--settle", "1")  # migrates the registry to 0008, then starts
    ws = Workspace.open(tmp_path / "ws")
    client = DaemonClient(ws)
    try:
        assert "Daemon started" in up.stdout, up.stdout + up.stderr
        sch = schedule(client)  # built from pipelines/p.toml, not from the planted row
        assert not marker.exists()
        assert "apscheduler_jobs" not in tables(db) and "schedule_state" in tables(db)
        assert not sch["paused"] and sch["next_run"] > time.time()  # no planted "due" run
        assert "every 60s" in sch["name"]
        # a pause from the command line survives a restart, even with a table planted again
        assert "paused" in mlops(ws, "schedules", "pause", "p:interval").stdout
        mlops(ws, "down")
        earlier = {c.id for c in scheduled_chains(ws)}
        plant(db, marker)
        rewind_last_run(db, 185)  # three runs missed meanwhile: still paused, none runs
        d = DaemonProc(ws)
        assert schedule(d.client)["paused"] and not marker.exists()
        assert "apscheduler_jobs" in tables(db)  # there, and never read
        mlops(ws, "schedules", "resume", "p:interval")
        d.stop()
        # missed runs while the daemon was down: one run at start (coalesced), not three
        rewind_last_run(db, 185)
        before = time.time()
        d = DaemonProc(ws)
        sch = wait_for(
            lambda: (s := schedule(d.client))["last_run"] and s["last_run"] > before - 60 and s,
            seconds=60,
        )
        runs = [c for c in scheduled_chains(ws) if c.id not in earlier]
        assert len(runs) == 1 and runs[0].created_at >= before, runs
        assert not sch["paused"] and sch["next_run"] > time.time()
        assert abs(sch["next_run"] - sch["last_run"] - 60) < 1  # the cadence goes on from it
        cancel_all(ws)
        d.stop()
        # the spec's own `paused`, edited after the resume, wins over it
        write_spec(ws, 'interval = "60s"\npaused = true')
        d = DaemonProc(ws)
        assert schedule(d.client)["paused"]
        d.stop()
        assert not marker.exists()
    finally:
        if client.available():
            mlops(ws, "down", check=False)
        ws.close()


# --- watchers: only new bytes retrain ------------------------------------------------------


def test_touching_a_watched_file_starts_no_chain_but_a_change_does(tmp_path):
    ws = make_ws(tmp_path / "ws", schedule="on_data_change = true")
    data = ws.root / "data" / "d.parquet"
    d = DaemonProc(ws)
    try:
        events = EventLog(ws)
        os.utime(data)  # touched (an attribute event: not even a settle)
        data.write_bytes(data.read_bytes())  # saved again, the same bytes
        same = wait_for(lambda: events.of("watch_unchanged"), seconds=60)[0]
        assert same["pipeline"] == "p" and same["dataset"] == "d" and same["version"] == 1
        assert chains(ws) == [] and not events.of("triggered")
        make_data(900, seed=5).to_parquet(data)  # new rows: a chain
        done = wait_for(lambda: chains(ws, "succeeded"), seconds=180)
        assert done[0].trigger == "watch" and ws.data.get("d").current_version == 2
        n = len(events.of("watch_unchanged"))
        data.write_bytes(data.read_bytes())  # unchanged since version 2
        wait_for(lambda: len(events.of("watch_unchanged")) > n, seconds=60)
        assert events.of("watch_unchanged")[-1]["version"] == 2
        assert len(chains(ws)) == 1
    finally:
        d.stop()
        ws.close()


# --- the canary follows [deploy] --------------------------------------------------------


def test_deploy_settings_are_checked_with_clear_errors(tmp_path):
    from mlops_console.pipeline_spec import load_pipeline

    ws = make_ws(tmp_path / "ws")
    path = ws.root / "pipelines" / "p.toml"
    for deploy, expected in (
        ("canary_steps = [50, 10]", "canary_steps [50, 10]: each step must give the canary more"),
        ("canary_steps = [10, 150]", "each step is a percent above 0, up to 100"),
        ("canary_steps = [10, 50]\ncanary_percent = 20", "not both"),
        ("min_minutes = 5\ncanary_minutes = 1", "min_minutes (5) is longer than canary_minutes"),
        ("max_error_rate = 2", "max_error_rate"),
        ("min_requests = 0", "min_requests"),
    ):
        write_spec(ws, extra=f'[deploy]\ntarget = "local"\n{deploy}\n')
        with pytest.raises(ConfigError, match="deploy") as err:
            load_pipeline(path)
        assert expected in str(err.value), str(err.value)
    ws.close()


def test_a_chain_canary_goes_10_50_100_and_failing_thresholds_roll_back(tmp_path):
    deploy = (
        '[deploy]\ntarget = "local"\nauto = true\ncanary_steps = [10, 50, 100]\n'
        "min_requests = 8\nmin_minutes = 0.05\ncanary_minutes = 1\n"
    )
    ws = make_ws(tmp_path / "ws", extra=deploy)
    d = DaemonProc(ws)
    stop = threading.Event()
    seen: list[float] = []  # the canary's share of traffic, as the server reports it
    try:
        first = d.client.call("POST", "/jobs", json={"pipeline": "p"})
        wait_for(lambda: ws.jobs.get(first["id"]).status in ("succeeded", "failed"), 180)
        assert ws.jobs.get(first["id"]).result.get("deploy") == "first", ws.jobs.logs(first["id"])
        endpoint = ws.deployments.get("m").endpoint
        rows = json.loads(make_data(4, seed=5)[["x1", "x2", "plan"]].to_json(orient="records"))

        def traffic():
            with httpx.Client(timeout=10) as c:
                while not stop.is_set():
                    try:
                        c.post(endpoint + "/invocations", json={"instances": rows[:1]})
                        canary = c.get(endpoint + "/version").json()["canary"]
                        if canary and (not seen or seen[-1] != canary["percent"]):
                            seen.append(canary["percent"])
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.01)

        threading.Thread(target=traffic, daemon=True).start()
        second = d.client.call("POST", "/jobs", json={"pipeline": "p"})
        wait_for(lambda: ws.jobs.get(second["id"]).status in ("succeeded", "failed"), 240)
        out, log = ws.jobs.get(second["id"]), ws.jobs.logs(second["id"])
        assert out.result.get("deploy") == "promote", log
        assert seen == [10.0, 50.0, 100.0], (seen, log)
        for step in ("10", "50", "100"):
            assert f"judge at {step}%: healthy" in log, log
        history = [(e.action, e.detail) for e in ws.deployments.history("m")]
        assert [a for a, _ in history] == ["create", "canary", "canary", "canary", "promote"]
        assert [d for a, d in history if a == "canary"] == [
            "10.0% of traffic",
            "50.0% of traffic",
            "100.0% of traffic",
        ]
        assert httpx.get(endpoint + "/version").json()["version"] == 2
        assert ws.models.resolve("m@champion").version == 2
        # thresholds the canary cannot meet: rolled back at its first step
        write_spec(ws, extra=deploy + "max_p99_ms = 0.001\n")
        seen.clear()
        third = d.client.call("POST", "/jobs", json={"pipeline": "p"})
        wait_for(lambda: ws.jobs.get(third["id"]).status in ("succeeded", "failed"), 240)
        out, log = ws.jobs.get(third["id"]), ws.jobs.logs(third["id"])
        assert out.result.get("deploy") == "rollback", log
        assert "judge at 10%: rollback" in log and "at 50%" not in log, log
        assert seen == [10.0], seen
        served = httpx.get(endpoint + "/version").json()
        assert served["version"] == 2 and served["canary"] is None
        assert ws.deployments.history("m")[-1].action == "rollback"
        assert ws.models.resolve("m@champion").version == 2
    finally:
        stop.set()
        for dp in ws.deployments.list():
            ws.deployments.stop(dp.name)
        d.stop()
        ws.close()


# --- mlops.toml without a restart; no alerts on stopped deployments -------------------------

RULE = """
[monitoring]
every = "1s"

[[alerts]]
name = "old model"
measure = "model_age_days"
above = 0
window = "1m"
notify = ["console"]
"""


def test_an_edited_mlops_toml_takes_effect_and_stopped_deployments_raise_no_alert(tmp_path):
    from mlops_console.training.runner import train

    ws = make_ws(tmp_path / "ws")
    train(ws, "p")
    ws.deployments.deploy("m@champion", name="old")  # "old" is evaluated before "web"
    ws.deployments.stop("old")
    ws.deployments.deploy("m@champion", name="web")
    config = ws.root / "mlops.toml"
    original = config.read_text()
    d = DaemonProc(ws)
    try:
        events = EventLog(ws)
        config.write_text(original + RULE)  # a rule every deployment breaches at once
        reloaded = wait_for(lambda: events.of("config_reloaded"), seconds=60)[0]
        assert {"alerts", "monitoring"} <= set(reloaded["changed"])
        opened = wait_for(lambda: ws.alerts.list("active"), seconds=60)
        assert [(a.rule, a.deployment) for a in opened] == [("old model", "web")]
        # an invalid edit is reported, and the rule above stays in force
        config.write_text(original + RULE.replace('"model_age_days"', '"model_age"'))
        bad = wait_for(lambda: events.of("config_invalid"), seconds=60)[0]
        assert "unknown measure 'model_age'" in bad["detail"]
        assert "previous settings stay in force" in bad["detail"]
        assert "Traceback" not in bad["detail"]
        ws.deployments.stop("web")  # its open alert settles: nothing measures it any more
        resolved = wait_for(
            lambda: [a for a in ws.alerts.list() if a.state == "resolved"], seconds=60
        )
        assert resolved[0].deployment == "web"
        assert "the deployment is stopped" in ws.alerts.events(resolved[0].id)[-1].detail
        assert [a.deployment for a in ws.alerts.list()] == ["web"]  # never one on "old"
        assert len(events.of("config_invalid")) == 1  # reported once, not every second
    finally:
        for dp in ws.deployments.list():
            ws.deployments.stop(dp.name)
        d.stop()
        ws.close()
