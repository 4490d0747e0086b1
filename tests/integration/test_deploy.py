"""The local deploy target with real server processes; plugins that fail to load."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from tests.integration.serving_helpers import free_port, train_two_versions
from tests.unit.test_pipeline import make_data

from mlops_console.errors import Conflict, MlopsError


@pytest.fixture(scope="module")
def dws(tmp_path_factory):
    ws, _ = train_two_versions(tmp_path_factory.mktemp("deploy") / "ws")
    yield ws
    for d in ws.deployments.list():
        ws.deployments.stop(d.name)
    ws.close()


def records(n=4):
    return json.loads(make_data(n, seed=5)[["x1", "x2", "plan"]].to_json(orient="records"))


def test_deploy_canary_judge_rollback_and_failed_deploy(dws):
    port = free_port()
    rec = dws.deployments.deploy("m/1", name="svc", port=port)
    assert rec.status == "running" and rec.endpoint == f"http://127.0.0.1:{port}"
    assert len(dws.deployments.predict("svc", records())) == 4
    assert "svc" in dws.deployments.target("local").list()
    # idempotent: deploying the same version again changes nothing
    assert dws.deployments.deploy("m/1", name="svc").version == 1
    with pytest.raises(Conflict, match="not deployed yet"):
        dws.deployments.deploy("m/2", name="other", strategy="canary")

    dws.deployments.deploy("m/2", name="svc", strategy="canary", canary_percent=50)
    assert dws.deployments.judge_canary("svc", min_requests=20).decision == "wait"
    for _ in range(80):
        httpx.post(rec.endpoint + "/invocations", json={"instances": records(2)})
    verdict = dws.deployments.judge_canary("svc", min_requests=20)
    assert verdict.decision == "promote" and verdict.requests >= 20
    assert dws.deployments.get("svc").version == 2
    assert httpx.get(rec.endpoint + "/version").json()["version"] == 2

    # a bundle the store cannot vouch for: the deploy fails, the previous version keeps serving
    mv = dws.models.resolve("m/1")
    folder = dws.state / "deployments" / "svc" / "bundles" / f"v1-{mv.artifact_hash[:12]}"
    if folder.exists():
        import shutil

        folder.chmod(0o700)
        shutil.rmtree(folder)
    manifest = json.loads(dws.artifacts.get_bytes(mv.artifact_hash))
    obj = dws.artifacts.path_of(manifest["files"]["model.joblib"]["sha256"])
    good = obj.read_bytes()
    obj.chmod(0o600)
    obj.write_bytes(b"corrupt")
    try:
        with pytest.raises(MlopsError, match="previous version keeps serving"):
            dws.deployments.deploy("m/1", name="svc")
    finally:
        obj.write_bytes(good)
    assert httpx.get(rec.endpoint + "/version").json()["version"] == 2
    assert dws.deployments.history("svc")[-1].action == "failed"

    assert dws.deployments.rollback("svc", reason="back").version == 1
    assert httpx.get(rec.endpoint + "/version").json()["version"] == 1
    actions = [e.action for e in dws.deployments.history("svc")]
    assert actions[:3] == ["create", "canary", "promote"] and actions[-1] == "rollback"
    log = dws.deployments.logs("svc")
    assert "serving m/1" in log and "loaded m/1" in log, log
    failed = next(e for e in dws.deployments.history("svc") if e.action == "failed")
    assert "does not match" in failed.detail or "hash" in failed.detail, failed
    dws.deployments.stop("svc")
    assert dws.deployments.status("svc").live["status"] == "stopped"
    with pytest.raises(httpx.HTTPError):
        httpx.get(rec.endpoint + "/ping", timeout=1)


def test_an_unhealthy_canary_is_rolled_back(dws):
    dws.deployments.deploy("m/1", name="svc2", port=free_port())
    dws.deployments.deploy("m/2", name="svc2", strategy="canary", canary_percent=100)
    endpoint = dws.deployments.get("svc2").endpoint
    for _ in range(30):
        httpx.post(endpoint + "/invocations", json={"instances": records(1)})
    verdict = dws.deployments.judge_canary("svc2", max_p99_ms=0.000001, min_requests=10)
    assert verdict.decision == "rollback"
    assert httpx.get(endpoint + "/version").json()["canary"] is None
    dws.deployments.stop("svc2")


def test_zero_failed_requests_while_deploying(dws):
    dws.deployments.deploy("m/1", name="svc3", port=free_port())
    endpoint = dws.deployments.get("svc3").endpoint
    stop, failed, ok = threading.Event(), [], [0]

    def client():
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                try:
                    r = c.post(endpoint + "/invocations", json={"instances": records(2)})
                    if r.status_code == 200:
                        ok[0] += 1
                    else:
                        failed.append(r.status_code)
                except httpx.HTTPError as exc:
                    failed.append(repr(exc))

    def answered_since(before: int, n: int = 5) -> None:
        """Requests keep being answered (a count, not a time: deploys are quick here)."""
        deadline = time.monotonic() + 60
        while ok[0] < before + n and not failed:
            assert time.monotonic() < deadline, f"no requests answered ({ok[0]}, {failed})"
            time.sleep(0.01)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        answered_since(0)
        for i in range(6):
            before = ok[0]
            dws.deployments.deploy(f"m/{2 - i % 2}", name="svc3")
            answered_since(before)  # served through the swap and after it
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failed == [] and ok[0] > 30
    dws.deployments.stop("svc3")


def installed_plugin(tmp_path, name: str, source: str) -> dict:
    """An environment in which a plugin `name` (module `name`_plugin) is installed."""
    site = tmp_path / "site"
    dist = site / f"{name}_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[mlops_console]\n{name} = {name}_plugin\n")
    (site / f"{name}_plugin.py").write_text(source)
    return {**os.environ, "PYTHONPATH": str(site)}


def test_a_broken_plugin_is_reported_and_the_cli_keeps_working(tmp_path):
    env = installed_plugin(
        tmp_path, "broken", "raise ImportError('this plugin needs a library that is missing')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_console.cli.main", "plugins", "list", "--check", "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr  # --check says a plugin failed
    plugins = {p["name"]: p for p in json.loads(proc.stdout)["plugins"]}
    assert (
        plugins["broken"]["loaded"] is False
        and "library that is missing" in plugins["broken"]["error"]
    )
    assert plugins["local"]["loaded"] is True
    assert (
        subprocess.run(
            [sys.executable, "-m", "mlops_console.cli.main", "--help"], env=env, capture_output=True
        ).returncode
        == 0
    )


def test_a_plugin_whose_hook_raises_is_reported_and_left_out(dws, tmp_path):
    env = installed_plugin(
        tmp_path,
        "raising",
        "import pluggy\nhookimpl = pluggy.HookimplMarker('mlops_console')\n"
        "@hookimpl\ndef mlops_deploy_targets():\n    raise RuntimeError('no cluster configured')\n",
    )

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "mlops_console.cli.main", "-w", str(dws.root), *args],
            capture_output=True,
            text=True,
            env=env,
        )

    listed = cli("plugins", "list", "--check", "--json")
    plugins = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}
    assert plugins["raising"]["loaded"] is False
    assert "no cluster configured" in plugins["raising"]["error"]
    proc = cli("deployments", "list")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


def test_an_edited_bundle_folder_is_exported_again_and_verified_by_the_server(dws, tmp_path):
    from tests.integration.test_serving_hardening import tamper

    port = free_port()
    dws.deployments.deploy("m/1", name="svc4", port=port)
    mv = dws.models.resolve("m/1")
    folder = dws.state / "deployments" / "svc4" / "bundles" / f"v1-{mv.artifact_hash[:12]}"
    assert folder.stat().st_mode & 0o777 == 0o500  # read-only
    assert all(f.stat().st_mode & 0o777 == 0o400 for f in folder.iterdir())
    dws.deployments.stop("svc4")
    # edited while stopped: a new pickle and a bundle.json rewritten to match it
    edited = tamper(folder, tmp_path / "edited")
    folder.chmod(0o700)
    for f in folder.iterdir():
        f.unlink()
    for f in edited.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    dws.deployments.deploy("m/1", name="svc4")
    st = dws.deployments.status("svc4").stats
    assert st["primary"]["bundle_digest"] == mv.artifact_hash  # checked by the server
    assert st["primary"]["runtime"] == "onnx"  # the registered bundle, not the edited one
    from mlops_console.registry.bundle import bundle_dir_matches

    assert bundle_dir_matches(folder, mv.artifact_hash)
    pid = dws.deployments.target("local")._pid("svc4")
    cmdline = Path(f"/proc/{pid}/cmdline").read_text()
    assert mv.artifact_hash in cmdline
    dws.deployments.stop("svc4")


class _Impostor:
    """Another process's HTTP server on a loopback port: it answers /ping (200) and
    refuses everything else, as any server that took the port first would."""

    def __init__(self):
        import http.server

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if self.path == "/ping" else 401)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_port_another_process_took_is_never_taken_for_the_server(dws, monkeypatch):
    """A port checked free and taken before the server listens: /ping answers, but not
    from our server. A given port is refused clearly; a port the service picked itself is
    picked again."""
    from mlops_console.deploy import service

    impostor = _Impostor()
    try:
        with pytest.raises(MlopsError, match=f"could not listen on 127.0.0.1:{impostor.port}"):
            dws.deployments.deploy("m/1", name="taken", port=impostor.port)
        assert dws.deployments.find("taken") is None or not dws.deployments.get("taken").running
        picks = iter([impostor.port])
        real = service._free_port
        monkeypatch.setattr(service, "_free_port", lambda start: next(picks, None) or real(start))
        rec = dws.deployments.deploy("m/1", name="raced")
        assert rec.status == "running" and rec.endpoint != f"http://127.0.0.1:{impostor.port}"
        assert httpx.get(rec.endpoint + "/version", timeout=5).json()["version"] == 1
    finally:
        impostor.close()
        for name in ("taken", "raced"):
            if dws.deployments.find(name) is not None:
                dws.deployments.stop(name)
