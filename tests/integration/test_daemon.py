"""A real daemon process, real files, real chains."""

import os
import signal
import subprocess
import sys
import time

import pytest
from tests.unit.test_pipeline import SPEC, make_data

from mlops_console.automation.client import DaemonClient
from mlops_console.workspace import Workspace

pytestmark = pytest.mark.slow


def make_ws(root, schedule="on_data_change = true", extra_spec=""):
    ws = Workspace.init(root)
    make_data().to_parquet(ws.root / "data" / "d.parquet")
    ws.data.add("d", "data/d.parquet", timestamp="ts", entities=["id"])
    ws.data.ingest("d")
    spec = SPEC.format(auto="true", extra=f"[schedule]\n{schedule}\n{extra_spec}")
    (ws.root / "pipelines" / "p.toml").write_text(
        spec.replace('method = "random"', 'method = "none"')
    )
    return ws


class DaemonProc:
    def __init__(self, ws, *args):
        self.ws = ws
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlops_console.cli.main",
                "-w",
                str(ws.root),
                "daemon",
                "--settle",
                "1",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.client = DaemonClient(ws)
        deadline = time.time() + 60
        while not self.client.available():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(self.proc.stderr.read())
            time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


def wait_for(fn, seconds=90, every=0.3):
    deadline = time.time() + seconds
    while time.time() < deadline:
        out = fn()
        if out:
            return out
        time.sleep(every)
    raise AssertionError("timed out waiting")


def chains(ws, status=None):
    return [j for j in ws.jobs.list(status=status, limit=200) if j.kind == "chain"]


def test_one_daemon_per_workspace_and_a_burst_is_one_chain(tmp_path):
    ws = make_ws(tmp_path / "ws")
    d = DaemonProc(ws)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "mlops_console.cli.main", "-w", str(ws.root), "daemon"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1 and f"pid {d.proc.pid}" in second.stderr
        for seed in (2, 3, 4):  # a burst of writes to the watched file
            make_data(900, seed=seed).to_parquet(ws.root / "data" / "d.parquet")
            time.sleep(0.2)
        done = wait_for(lambda: chains(ws, "succeeded"))
        time.sleep(3)
        assert len(chains(ws)) == 1, chains(ws)
        steps = [s.kind for s in sorted(ws.jobs.list(chain_id=done[0].id), key=lambda s: s.id)]
        assert steps == ["ingest", "train"]
        assert ws.data.get("d").current_version == 2
        assert ws.models.resolve("m@champion").version == 1
        assert "chain succeeded" in ws.jobs.logs(done[0].id)
    finally:
        d.stop()
        ws.close()


def test_bad_data_stops_the_chain_and_the_champion_stays(tmp_path):
    ws = make_ws(tmp_path / "ws")
    d = DaemonProc(ws)
    try:
        d.client.call("POST", "/jobs", json={"pipeline": "p"})
        wait_for(lambda: chains(ws, "succeeded"))
        champion = ws.models.resolve("m@champion").version
        bad = make_data(900, seed=7)
        bad["plan"] = "enterprise"  # a category the contract does not allow
        bad.to_parquet(ws.root / "data" / "d.parquet")
        failed = wait_for(lambda: chains(ws, "failed"))
        assert "quarantined" in failed[0].detail
        assert ws.models.resolve("m@champion").version == champion
        assert len(ws.models.versions("m")) == 1
        time.sleep(3)
        assert len(chains(ws, "queued")) == 0  # a contract failure is not retried
    finally:
        d.stop()
        ws.close()


def test_interval_schedule_pause_resume_and_trigger_now(tmp_path):
    ws = make_ws(tmp_path / "ws", schedule='interval = "3s"')
    d = DaemonProc(ws)
    try:
        sched = d.client.call("GET", "/schedules")["schedules"]
        assert [s["id"] for s in sched] == ["p:interval"]
        wait_for(lambda: [c for c in chains(ws) if c.trigger == "schedule"], seconds=30)
        d.client.call("POST", "/schedules/p:interval/pause")
        assert d.client.call("GET", "/schedules")["schedules"][0]["paused"]
        time.sleep(1)
        n = len([c for c in chains(ws) if c.trigger == "schedule"])
        time.sleep(7)
        assert len([c for c in chains(ws) if c.trigger == "schedule"]) == n
        out = d.client.call("POST", "/schedules/p:interval/trigger")
        wait_for(lambda: ws.jobs.get(out["job"]["id"]).status == "succeeded")
        d.client.call("POST", "/schedules/p:interval/resume")
        assert not d.client.call("GET", "/schedules")["schedules"][0]["paused"]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "mlops_console.cli.main",
                "-w",
                str(ws.root),
                "schedules",
                "list",
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert '"p:interval"' in proc.stdout
    finally:
        d.stop()
        ws.close()


def test_kill_9_mid_training_then_restart(tmp_path):
    ws = make_ws(tmp_path / "ws")
    slow = ws.root / "slowmodel.py"
    slow.write_text(
        "import time\nfrom sklearn.linear_model import LogisticRegression\n"
        "class Slow(LogisticRegression):\n"
        "    def fit(self, X, y, **kw):\n        time.sleep(6)\n        return super().fit(X, y, **kw)\n"
        "def build(**p):\n    return Slow(**p)\n"
    )
    path = ws.root / "pipelines" / "p.toml"
    path.write_text(
        path.read_text().replace('"sklearn.linear_model.LogisticRegression"', '"slowmodel:build"')
    )
    d = DaemonProc(ws)
    job = d.client.call("POST", "/jobs", json={"pipeline": "p"})
    wait_for(
        lambda: [
            s
            for s in ws.jobs.list(chain_id=job["id"])
            if s.kind == "train" and s.status == "running"
        ]
    )
    wait_for(lambda: [r for r in ws.runs.search() if r.status == "RUNNING"])  # mid-fit
    chain_pid = ws.jobs.get(job["id"]).pid
    os.killpg(d.proc.pid, signal.SIGKILL)  # the daemon dies ...
    os.killpg(chain_pid, signal.SIGKILL)  # ... and so does the chain it ran, as in a power cut
    d.proc.wait()
    assert ws.jobs.get(job["id"]).status == "running"  # nobody marked it
    path.write_text(
        path.read_text().replace('"slowmodel:build"', '"sklearn.linear_model.LogisticRegression"')
    )
    d2 = DaemonProc(ws)
    try:
        interrupted = ws.jobs.get(job["id"])
        assert interrupted.status == "failed" and "interrupted" in interrupted.detail
        assert all(s.status != "running" for s in ws.jobs.list(chain_id=job["id"]))
        retried = wait_for(lambda: [c for c in chains(ws, "succeeded") if c.trigger == "recovery"])
        assert retried[0].attempt == 2
        mv = ws.models.resolve("m@champion")
        assert ws.artifacts.exists(mv.artifact_hash)
        statuses = [r.status for r in ws.runs.search()]
        assert "RUNNING" not in statuses and "KILLED" in statuses
    finally:
        d2.stop()
        ws.close()


def test_cancel_and_the_event_stream(tmp_path):
    import threading

    import httpx

    ws = make_ws(tmp_path / "ws", schedule="")
    slow = ws.root / "slowmodel.py"
    slow.write_text(
        "import time\nfrom sklearn.linear_model import LogisticRegression\n"
        "class Slow(LogisticRegression):\n"
        "    def fit(self, X, y, **kw):\n        time.sleep(30)\n        return super().fit(X, y, **kw)\n"
        "def build(**p):\n    return Slow(**p)\n"
    )
    path = ws.root / "pipelines" / "p.toml"
    path.write_text(
        path.read_text().replace('"sklearn.linear_model.LogisticRegression"', '"slowmodel:build"')
    )
    d = DaemonProc(ws)
    events = []
    connected = threading.Event()

    def listen():
        transport = httpx.HTTPTransport(uds=str(ws.state / "daemon.sock"))
        with (
            httpx.Client(transport=transport, base_url="http://daemon", timeout=60) as c,
            c.stream("GET", "/events") as r,
        ):
            for line in r.iter_lines():
                connected.set()  # ": connected" comes first
                if line.startswith("event: "):
                    events.append(line[7:])
                if "ended" in events:
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert connected.wait(30)  # events after this point reach the stream
    try:
        job = d.client.call("POST", "/jobs", json={"pipeline": "p"})
        wait_for(lambda: ws.jobs.get(job["id"]).status == "running")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "mlops_console.cli.main",
                "-w",
                str(ws.root),
                "jobs",
                "cancel",
                str(job["id"]),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "cancel requested" in proc.stdout
        done = wait_for(
            lambda: (
                ws.jobs.get(job["id"]).status in ("cancelled", "failed") and ws.jobs.get(job["id"])
            )
        )
        assert done.status == "cancelled" and "cancelled" in done.detail
        assert all(s.status != "running" for s in ws.jobs.list(chain_id=job["id"]))
        t.join(timeout=20)
        assert "started" in events and "ended" in events  # live, over server-sent events
        queued = ws.jobs.submit("chain", "p")  # a queued job cancels at once
        assert ws.jobs.cancel(queued.id).status in ("cancelled", "running")
    finally:
        d.stop()
        ws.close()


def test_chain_deploys_then_canaries_and_rolls_back_without_traffic(tmp_path):
    import httpx

    ws = make_ws(
        tmp_path / "ws",
        schedule="",
        extra_spec='[deploy]\ntarget = "local"\nauto = true\ncanary_percent = 20\ncanary_minutes = 0.05\n',
    )
    d = DaemonProc(ws)
    try:
        first = d.client.call("POST", "/jobs", json={"pipeline": "p"})
        wait_for(lambda: ws.jobs.get(first["id"]).status in ("succeeded", "failed"))
        assert ws.jobs.get(first["id"]).status == "succeeded", ws.jobs.logs(first["id"])
        dep = ws.deployments.get("m")
        assert dep.status == "running" and dep.version == 1
        second = d.client.call("POST", "/jobs", json={"pipeline": "p"})
        wait_for(lambda: ws.jobs.get(second["id"]).status in ("succeeded", "failed"), seconds=120)
        out = ws.jobs.get(second["id"])
        assert out.result.get("deploy") == "rollback", ws.jobs.logs(second["id"])
        served = httpx.get(dep.endpoint + "/version").json()
        assert served["version"] == 1 and served["canary"] is None
        assert ws.models.resolve("m@champion").version == 1  # the canary was never promoted
        assert ws.models.resolve("m@challenger").version == 2
    finally:
        for dp in ws.deployments.list():
            ws.deployments.stop(dp.name)
        d.stop()
        ws.close()


def test_scoring_after_promotion_and_on_a_cadence(tmp_path):
    import pandas as pd

    out = tmp_path / "scored.parquet"
    ws = make_ws(
        tmp_path / "ws",
        schedule="",
        extra_spec=f'[score]\ninput = "d"\noutput = "{out}"\nafter_promotion = true\ninterval = "3s"\n',
    )
    d = DaemonProc(ws)
    try:
        job = d.client.call("POST", "/jobs", json={"pipeline": "p"})
        wait_for(lambda: ws.jobs.get(job["id"]).status in ("succeeded", "failed"))
        assert ws.jobs.get(job["id"]).status == "succeeded", ws.jobs.logs(job["id"])
        assert [s.kind for s in sorted(ws.jobs.list(chain_id=job["id"]), key=lambda s: s.id)][
            -1
        ] == "score"
        assert len(pd.read_parquet(out)) == 800
        wait_for(
            lambda: [
                j
                for j in ws.jobs.list(limit=50)
                if j.kind == "score" and j.status == "succeeded" and j.trigger == "schedule"
            ],
            seconds=30,
        )
        assert any(
            s["id"] == "p:score-interval" for s in d.client.call("GET", "/schedules")["schedules"]
        )
    finally:
        d.stop()
        ws.close()


def test_kill_9_mid_deploy_then_restart(tmp_path):
    import httpx

    ws = make_ws(
        tmp_path / "ws",
        schedule="",
        extra_spec='[deploy]\ntarget = "local"\nauto = true\ncanary_percent = 20\ncanary_minutes = 1\n',
    )
    d = DaemonProc(ws)
    d2 = None
    try:
        first = d.client.call("POST", "/jobs", json={"pipeline": "p"})
        wait_for(lambda: ws.jobs.get(first["id"]).status == "succeeded", seconds=240)
        endpoint = ws.deployments.get("m").endpoint
        second = d.client.call("POST", "/jobs", json={"pipeline": "p"})

        def judging():
            try:
                return httpx.get(endpoint + "/version", timeout=5).json()["canary"] is not None
            except httpx.HTTPError:
                return False

        wait_for(judging, seconds=240)  # judging the canary
        os.killpg(d.proc.pid, signal.SIGKILL)
        os.killpg(ws.jobs.get(second["id"]).pid, signal.SIGKILL)
        d.proc.wait()
        assert httpx.get(endpoint + "/ping").status_code == 200  # the server outlives the daemon
        d2 = DaemonProc(ws)
        assert ws.jobs.get(second["id"]).status == "failed"
        served = httpx.get(endpoint + "/version").json()
        assert served["version"] == 1 and served["canary"] is None
        rec = ws.deployments.get("m")
        assert rec.version == 1 and rec.canary_version is None
        assert ws.models.resolve("m@champion").version == 1
    finally:
        # the daemons first: a supervisor looking as a server is stopped could start it again
        if d.proc.poll() is None:  # a failure above must not leave a daemon behind
            os.killpg(d.proc.pid, signal.SIGKILL)
        if d2 is not None:
            d2.stop()
        for dp in ws.deployments.list():
            ws.deployments.stop(dp.name)
        ws.close()


def test_a_chain_that_runs_too_long_is_stopped_and_retried(tmp_path):
    ws = make_ws(tmp_path / "ws", schedule="")
    (ws.root / "slowmodel.py").write_text(
        "import time\nfrom sklearn.linear_model import LogisticRegression\n"
        "class Slow(LogisticRegression):\n"
        "    def fit(self, X, y, **kw):\n        time.sleep(60)\n        return super().fit(X, y, **kw)\n"
        "def build(**p):\n    return Slow(**p)\n"
    )
    path = ws.root / "pipelines" / "p.toml"
    path.write_text(
        path.read_text().replace('"sklearn.linear_model.LogisticRegression"', '"slowmodel:build"')
    )
    d = DaemonProc(ws, "--job-timeout", "4")
    try:
        job = d.client.call("POST", "/jobs", json={"pipeline": "p"})
        done = wait_for(
            lambda: ws.jobs.get(job["id"]).status == "failed" and ws.jobs.get(job["id"]),
            seconds=60,
        )
        assert "timed out after 4 s" in done.detail
        assert all(s.status != "running" for s in ws.jobs.list(chain_id=job["id"]))
        retry = wait_for(lambda: [c for c in chains(ws) if c.trigger == "retry"], seconds=30)
        assert retry[0].attempt == 2 and retry[0].created_at >= done.ended_at  # after a backoff
    finally:
        d.stop()
        ws.close()
