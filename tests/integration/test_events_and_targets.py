"""Life-cycle events through the real notifiers, and the local target's edges: a planted
numpy.py, a pid file naming someone else's process, a workspace under o'brien/, moving
and deleting deployments. Real servers, a real daemon, a real HTTP receiver."""

import json
import logging
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from tests.integration.serving_helpers import free_port, train_two_versions
from tests.integration.test_daemon import wait_for
from tests.unit.test_pipeline import make_data

from mlops_console.deploy.base import DeployError
from mlops_console.deploy.local import process_start_time
from mlops_console.errors import Conflict, MlopsError
from mlops_console.events import LIFECYCLE, Event, deliver

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DOCKER_BASE = "mlops-local/python:3.11"  # as tests/integration/test_docker.py builds it
ALERT_KINDS = ("opened", "resolved", "acknowledged", "action")


class Receiver:
    """A webhook endpoint on 127.0.0.1 that keeps every JSON body it is sent."""

    def __init__(self):
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of_kind(self, kind: str) -> list[dict]:
        return [b for b in self.bodies if b.get("kind") == kind]


def records(n=4):
    return json.loads(make_data(n, seed=5)[["x1", "x2", "plan"]].to_json(orient="records"))


@pytest.fixture(scope="module")
def hook():
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def ws(tmp_path_factory, hook):
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_PREDLOG_ROTATE", "0.5")  # segments close fast, so they are collected
    # a folder name with a quote: every path DuckDB reads must be bound, not pasted
    root = tmp_path_factory.mktemp("ev") / "o'brien" / "ws"
    ws, _ = train_two_versions(root)
    with open(ws.config_path, "a") as fh:
        fh.write(
            f"""
[notify]
events = {json.dumps(list(LIFECYCLE))}
notifiers = ["log", "webhook"]

[notifiers.webhook]
url = "{hook.url}"
format = "json"

[notifiers.log]
path = "{ws.state / "logs" / "lifecycle.log"}"
"""
        )
    ws.reload_config(force=True)
    yield ws
    for d in ws.deployments.list():
        if d.status == "running":
            ws.deployments.stop(d.name)
    ws.close()
    mp.undo()


def test_a_numpy_py_in_the_workspace_is_not_imported(ws):
    marker = ws.root / "planted-numpy-ran"
    planted = ws.root / "numpy.py"
    planted.write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nraise ImportError('a planted numpy')\n"
    )
    try:
        rec = ws.deployments.deploy("m/1", name="planted", port=free_port())
        assert rec.status == "running"
        assert len(ws.deployments.predict("planted", records())) == 4
        assert not marker.exists(), "the server imported the workspace's numpy.py"

        # workspace code is importable where a pipeline asks for module:function, and the
        # workspace leaves sys.path again afterwards
        from mlops_console.training.build import import_object

        (ws.root / "my_features.py").write_text("def make(**kw):\n    return 'made'\n")
        assert import_object("my_features:make", ws.root, "[preprocess].custom")() == "made"
        assert str(ws.root) not in sys.path
        assert not marker.exists()
    finally:
        planted.unlink()
        ws.deployments.stop("planted")


def test_a_pid_file_naming_another_process_is_not_signalled(ws):
    ws.deployments.deploy("m/1", name="pids", port=free_port())
    pid_file = ws.state / "deployments" / "pids" / "pid"
    pid, started = (int(x) for x in pid_file.read_text().split())
    assert started == process_start_time(pid)
    ws.deployments.stop("pids")  # the real server is stopped
    wait_for(lambda: process_start_time(pid) != started, seconds=20)

    # an unrelated process leading its own group, as the server would
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        for content in (
            f"{other.pid}",  # an old-style file: a bare pid
            f"{other.pid} {process_start_time(other.pid) + 1}",  # the pid, reused later
        ):
            pid_file.write_text(content)
            ws.deployments.stop("pids")
            assert ws.deployments.target("local").get("pids", {"port": 1})["status"] == "stopped"
            time.sleep(0.3)  # a SIGTERM would have landed by now
            assert other.poll() is None, f"stop signalled an unrelated process ({content!r})"
    finally:
        other.kill()
        other.wait()


def test_monitor_reads_a_workspace_under_o_brien(ws):
    rec = ws.deployments.deploy("m/1", name="mon", port=free_port())
    rows = make_data(60, seed=3)[["x1", "x2", "plan"]].to_dict("records")
    for i in range(0, 60, 20):
        r = httpx.post(rec.endpoint + "/invocations", json={"dataframe_records": rows[i : i + 20]})
        assert r.status_code == 200

    def measured():
        ws.monitor.collect("mon")
        m = ws.monitor.measure("mon", window="1h", collect_first=False)
        return m if m.rows >= 60 else None

    assert "'" in str(ws.root)
    m = wait_for(measured, seconds=30)
    assert m.rows >= 60
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlops_console.cli.main",
            "-w",
            str(ws.root),
            "monitor",
            "show",
            "mon",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rows"] >= 60
    ws.deployments.stop("mon")


def test_move_to_another_target_and_delete(ws, hook, monkeypatch, tmp_path):
    ws.deployments.deploy("m/1", name="mover", port=free_port())
    with pytest.raises(Conflict, match="stop it first"):
        ws.deployments.deploy("m/1", name="mover", target="docker")
    ws.deployments.stop("mover")

    # stopped, it may move: to docker where an engine and the local base image are here
    # (tests/integration/test_docker.py starts them); elsewhere the docker part fails with
    # its own reason (a DeployError is an MlopsError, reported once) and nothing moves
    base = docker_base()
    if base:
        monkeypatch.setenv("MLOPS_DOCKER_BASE_IMAGE", base)
        moved = ws.deployments.deploy("m/1", name="mover", target="docker")
        assert moved.target == "docker" and moved.status == "running"
        assert len(ws.deployments.predict("mover", records())) == 4
        assert ws.deployments.get("mover").config["base_image"] == base
        # export builds from the base the deployment was built from, not today's setting
        monkeypatch.setenv("MLOPS_DOCKER_BASE_IMAGE", "mlops-local/no-such-base:0")
        tar = ws.deployments.export("mover", tmp_path / "mover.tar")
        assert tar.stat().st_size > 50_000_000
        ws.deployments.stop("mover")
    else:
        with pytest.raises(DeployError) as err:
            ws.deployments.deploy("m/1", name="mover", target="docker")
        assert isinstance(err.value, MlopsError) and "stop it first" not in str(err.value)
        assert ws.deployments.get("mover").target == "local"
        assert wait_for(lambda: hook.of_kind("deploy_failed"))[-1]["deployment"] == "mover"
        # the docker half is skipped (no engine or base image here): the record says the
        # stopped deployment was on docker, and it moves to local from there
        with ws.db.write() as conn:
            conn.exec_driver_sql("UPDATE deployment SET target = 'docker' WHERE name = 'mover'")
    port = free_port()
    back = ws.deployments.deploy("m/2", name="mover", target="local", port=port)
    assert back.target == "local" and back.status == "running"
    assert back.endpoint == f"http://127.0.0.1:{port}" and back.version == 2
    assert "moved from docker to local" in ws.deployments.history("mover")[-1].detail
    assert len(ws.deployments.predict("mover", records())) == 4
    wait_for(lambda: list((ws.state / "logs" / "predictions" / "mover").glob("*.jsonl")))

    cli = [sys.executable, "-m", "mlops_console.cli.main", "-w", str(ws.root)]
    no = subprocess.run(
        [*cli, "deployments", "delete", "mover"], input="n\n", capture_output=True, text=True
    )
    assert no.returncode == 1 and ws.deployments.get("mover").status == "running"
    pid = int((ws.state / "deployments" / "mover" / "pid").read_text().split()[0])
    yes = subprocess.run(
        [*cli, "deployments", "delete", "mover", "--yes"], capture_output=True, text=True
    )
    assert yes.returncode == 0, yes.stderr
    assert "deleted" in yes.stdout
    assert not (ws.state / "deployments" / "mover").exists()
    assert not (ws.state / "logs" / "predictions" / "mover").exists()
    assert "mover" not in [d.name for d in ws.deployments.list()]
    assert [e.action for e in ws.deployments.history("mover")][-1] == "delete"
    assert not serving(back.endpoint), "the deleted deployment's server still answers"
    assert pid > 0
    assert wait_for(lambda: hook.of_kind("deleted"))[-1]["deployment"] == "mover"
    with pytest.raises(MlopsError, match="No deployment"):
        ws.deployments.get("mover")


def docker_base() -> str | None:
    """The local base image, where a Docker engine answers and has it (or can build it)."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception:
        return None
    try:
        client.images.get(DOCKER_BASE)
    except Exception:
        built = subprocess.run(
            ["bash", str(REPO / "packaging/docker/base-image.sh"), DOCKER_BASE],
            capture_output=True,
        )
        if built.returncode != 0:
            return None
    return DOCKER_BASE


def serving(endpoint: str) -> bool:
    try:
        return httpx.get(endpoint + "/ping", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_canary_promoted_and_rolled_back_reach_the_notifiers(ws, hook):
    rec = ws.deployments.deploy("m/1", name="life", port=free_port())
    ws.deployments.deploy("m/2", name="life", strategy="canary", canary_percent=50)
    ws.deployments.rollback("life", reason="by hand")
    rolled = wait_for(lambda: [b for b in hook.of_kind("rolled_back") if b["deployment"] == "life"])
    assert rolled[-1]["severity"] == "warning" and "by hand" in rolled[-1]["text"]
    ws.deployments.deploy("m/2", name="life", strategy="canary", canary_percent=50)
    ws.deployments.promote("life", reason="looks fine")
    promoted = wait_for(lambda: [b for b in hook.of_kind("promoted") if b["deployment"] == "life"])
    assert promoted[-1]["version"] == 2 and promoted[-1]["model"] == "m"
    log_text = (ws.state / "logs" / "lifecycle.log").read_text()
    assert "life: canary v2 of m promoted" in log_text and "rolled back" in log_text
    assert httpx.get(rec.endpoint + "/version").json()["version"] == 2
    ws.deployments.stop("life")


@pytest.mark.parametrize("kind", [*LIFECYCLE, *ALERT_KINDS])
def test_each_builtin_notifier_takes_each_event_kind(ws, hook, kind, caplog, monkeypatch):
    alert = {"id": 7, "severity": "critical"} if kind in ALERT_KINDS else None
    event = Event(
        kind,
        f"something {kind}",
        severity="critical" if alert else "warning",
        deployment="d",
        pipeline="p",
        job=3,
        alert=alert,
    )
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    before = len(hook.bodies)
    with caplog.at_level(logging.WARNING, logger="mlops_console.events"):
        outcome = deliver(ws, event, ["log", "webhook", "desktop"])
    assert outcome["log"] == "ok" and outcome["webhook"] == "ok", outcome
    assert f"something {kind}" in (ws.state / "logs" / "lifecycle.log").read_text()
    body = hook.bodies[before]
    assert body["kind"] == kind and body["text"] == f"something {kind}"
    assert body["job"] == 3 and body["pipeline"] == "p" and body["alert"] == alert
    assert "settings" not in body and "state" not in body
    # no desktop session here: the desktop notifier says so, and the reason is logged
    assert "no desktop here" in outcome["desktop"]
    assert any("desktop" in r.message and "no desktop here" in r.message for r in caplog.records)


def test_slack_format_and_an_unreachable_webhook_is_logged_with_its_reason(ws, caplog):
    port = free_port()  # nothing listens there
    ws.config.notifiers["webhook"].url = f"http://127.0.0.1:{port}/hook"
    try:
        with caplog.at_level(logging.WARNING, logger="mlops_console.events"):
            outcome = deliver(ws, Event("promoted", "x promoted"), ["webhook", "nosuch"])
        assert "webhook not reached" in outcome["webhook"]
        assert "no such notifier" in outcome["nosuch"]
        assert str(port) not in outcome["webhook"]  # the URL may hold a secret
        assert sum("did not take the promoted event" in r.message for r in caplog.records) == 2
    finally:
        ws.reload_config(force=True)


def test_a_chain_stopped_by_quarantined_data_notifies(ws, hook):
    from tests.integration.test_daemon import DaemonProc

    bad = make_data(900, seed=7)
    bad["plan"] = "enterprise"  # a category the contract does not allow
    bad.to_parquet(ws.root / "data" / "d.parquet")
    d = DaemonProc(ws)
    try:
        job_id = d.client.call("POST", "/jobs", json={"pipeline": "p"})["id"]
        body = wait_for(
            lambda: [b for b in hook.of_kind("quarantined") if b["job"] == job_id], seconds=120
        )[-1]
        assert body["pipeline"] == "p" and body["severity"] == "warning"
        assert "broke its data contract" in body["text"]
        assert "quarantined" in (ws.state / "logs" / "lifecycle.log").read_text()
        # one notice per chain: the most specific kind listed, not chain_failed as well
        time.sleep(1)
        assert not [b for b in hook.of_kind("chain_failed") if b["job"] == job_id]
    finally:
        d.stop()


def test_mlops_up_does_not_import_the_workspaces_click_py(ws):
    marker = ws.root / "planted-click-ran"
    planted = ws.root / "click.py"
    planted.write_text(f"open({str(marker)!r}, 'w').write('ran')\nraise ImportError('planted')\n")
    mlops = str(Path(sys.executable).with_name("mlops"))  # as a user runs it, from the workspace
    try:
        up = subprocess.run(
            [mlops, "-w", str(ws.root), "up", "--settle", "1"],
            cwd=ws.root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        assert "Daemon started" in up.stdout
        assert not marker.exists(), "the daemon imported the workspace's click.py"
    finally:
        planted.unlink()
        subprocess.run([mlops, "-w", str(ws.root), "down"], capture_output=True, timeout=60)


def test_score_output_folders_are_created_and_score_jobs_are_listed(ws):
    from mlops_console.scoring import batch_score

    out = ws.root / "scores" / "not" / "there" / "yet.parquet"
    done = batch_score(ws, "m/1", "d", str(out))
    assert out.exists() and done["rows"] > 0
    job = ws.jobs.submit("score", "p", trigger="schedule")
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlops_console.cli.main",
            "-w",
            str(ws.root),
            "jobs",
            "list",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert job.id in [j["id"] for j in json.loads(listed.stdout)["jobs"]]
    ws.jobs.cancel(job.id)  # nothing runs it: no daemon
