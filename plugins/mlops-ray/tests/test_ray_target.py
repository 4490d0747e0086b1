"""The ray target against a real Ray head on loopback: deploy, predict through Ray's
proxy, another application surviving our PUTs, canary split, promote, rollback, logs,
prediction logs into monitoring, delete; and the plain error for an unreachable cluster."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.conftest import run_cli
from tests.integration.serving_helpers import train_two_versions
from tests.unit.test_pipeline import make_data

from mlops_console.errors import MlopsError

pytestmark = pytest.mark.slow

FEATURES = ["x1", "x2", "plan"]


@dataclass
class Listener:
    address: str
    process: str

    @property
    def loopback(self) -> bool:
        host = self.address.rsplit(":", 1)[0].strip("[]")
        return host in ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def listeners() -> list[Listener]:
    """Every TCP socket listening on this machine (`ss -ltnp`), with its process."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 6:
            found.append(Listener(fields[3], " ".join(fields[5:])))
    return found


@pytest.fixture(scope="module")
def ws(ray_launch, tmp_path_factory):
    """Two trained versions of `m`, trained while the Ray head starts."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_PREDLOG_ROTATE", "0.5")  # segments close fast, so they are shipped
    workspace, _ = train_two_versions(tmp_path_factory.mktemp("ray") / "ws")
    yield workspace
    workspace.close()
    mp.undo()


def records(n: int = 4, seed: int = 5) -> list[dict]:
    return json.loads(make_data(n, seed=seed)[FEATURES].to_json(orient="records"))


def put_other_app(ray_head) -> None:
    """Another team's application, deployed by a config before ours."""
    r = httpx.put(
        ray_head.dashboard + "/api/serve/applications/",
        json={
            "http_options": {"host": "127.0.0.1", "port": ray_head.http_port},
            "proxy_location": "HeadOnly",
            "applications": [
                {"name": "other", "route_prefix": "/other", "import_path": "other_app:app"}
            ],
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if (
                httpx.get(f"http://127.0.0.1:{ray_head.http_port}/other", timeout=5).status_code
                == 200
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError("the other application did not start")


def other_answers(ray_head) -> str:
    return httpx.get(f"http://127.0.0.1:{ray_head.http_port}/other", timeout=10).text


def versions_answering(endpoint: str, n: int, prefix: str) -> Counter:
    seen: Counter = Counter()
    for i in range(n):
        r = httpx.post(
            endpoint + "/invocations",
            json={"dataframe_records": records(3, seed=i)},
            headers={"x-request-id": f"{prefix}-{i}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert len(r.json()["predictions"]) == 3
        seen[r.headers["x-model-version"]] += 1
    return seen


def orphan_segment() -> None:
    """A segment a replica of `churn` left unshipped when it died (its pid is gone)."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    folder = Path(tempfile.gettempdir()) / f"mlops-predlog-churn-{gone.pid}-test"
    folder.mkdir(mode=0o700)
    record = {
        "ts": time.time(),
        "request_id": "orphan-0",
        "model": "m",
        "version": 1,
        "role": "primary",
        "status": 200,
        "latency_ms": 1.0,
        "rows": 1,
        "inputs": {"x1": [0.1], "x2": [1.0], "plan": ["basic"]},
        "outputs": {"predict": [0]},
    }
    (folder / "predictions-1-1-1.jsonl.open").write_text(json.dumps(record) + "\n")


def test_ray_serve_life_cycle(ws, ray_head):
    put_other_app(ray_head)
    orphan_segment()
    options = {
        "address": ray_head.dashboard,
        "http_port": ray_head.http_port,
        "num_cpus": 0.1,
        "replicas": 2,
    }
    rec = ws.deployments.deploy("m/1", target="ray", name="churn", options=options)
    assert rec.status == "running"
    assert rec.endpoint == f"http://127.0.0.1:{ray_head.http_port}/churn"

    # our own app through Ray's proxy: MLflow and Open Inference v2 routes, /metrics
    assert ws.deployments.predict("churn", records()) == ws.deployments.predict("churn", records())
    assert httpx.get(rec.endpoint + "/version").json()["version"] == 1
    v2 = httpx.post(
        rec.endpoint + "/v2/models/m/infer",
        json={
            "inputs": [
                {"name": "x1", "shape": [2], "datatype": "FP64", "data": [0.1, 2.0]},
                {"name": "x2", "shape": [2], "datatype": "FP64", "data": [1.0, -1.0]},
                {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["basic", "pro"]},
            ]
        },
    )
    assert v2.status_code == 200, v2.text
    assert httpx.get(rec.endpoint + "/v2/health/ready").status_code == 200
    assert "mlops_requests_total" in httpx.get(rec.endpoint + "/metrics").text
    # a bad request is our app's clear 400, not a 500 from Ray
    bad = httpx.post(rec.endpoint + "/invocations", content=b"not json")
    assert bad.status_code == 400 and "message" in bad.json()
    # the status and prediction-log routes want the deployment's token
    assert httpx.get(rec.endpoint + "/-/mlops/status").status_code == 401
    # the application deployed beforehand survived our declarative PUT
    assert other_answers(ray_head) == "hello from another app"

    # listening sockets of Ray: loopback, except each replica's inter-deployment gRPC port,
    # which Ray binds to every address (see the README)
    wide = [e for e in listeners() if not e.loopback and ("ray" in e.process or "gcs" in e.process)]
    assert all("ServeRepli" in e.process for e in wide), wide

    # canary: both versions in each replica, the split drawn inside our app
    ws.deployments.deploy("m/2", name="churn", strategy="canary", canary_percent=50)
    seen = versions_answering(rec.endpoint, 60, "split")
    assert seen["1"] >= 10 and seen["2"] >= 10, seen
    st = ws.deployments.status("churn")
    assert st.canary_version == 2 and st.stats["canary_percent"] == 50
    assert st.stats["primary"]["version"] == 1 and st.stats["canary"]["version"] == 2
    assert other_answers(ray_head) == "hello from another app"

    shown = run_cli("-w", str(ws.root), "deployments", "status", "churn", check=True).stdout
    assert "ray" in shown and "v2" in shown, shown
    replicas = st.live["replicas"]
    assert len(replicas) == 2 and {r["state"] for r in replicas} == {"RUNNING"}, replicas

    # promote: v2 only, swapped in place (the same replica processes)
    assert ws.deployments.promote("churn").version == 2
    assert set(versions_answering(rec.endpoint, 10, "promoted")) == {"2"}
    after = ws.deployments.status("churn").live["replicas"]
    assert sorted(r["pid"] for r in after) == sorted(r["pid"] for r in replicas)

    # a canary rolled back: the primary alone again
    ws.deployments.deploy("m/1", name="churn", strategy="canary", canary_percent=50)
    assert ws.deployments.rollback("churn", reason="test").canary_version is None
    assert set(versions_answering(rec.endpoint, 10, "rolled-back")) == {"2"}

    # a version the replicas refuse (a digest that is not the bundle's) is undone: the
    # previous config is put back and v2 alone keeps answering
    bundle = ws.deployments.bundle_dir("churn", ws.models.resolve("m/1"))
    target = ws.deployments.target("ray")
    config = ws.deployments.get("churn").config
    with pytest.raises(MlopsError, match="previous version keeps serving"):
        target.update("churn", bundle, config, role="canary", percent=50, digest="0" * 64)
    assert set(versions_answering(rec.endpoint, 10, "refused")) == {"2"}
    assert target.status("churn", config)["canary"] is None

    # logs: each replica's lines from Ray's log API
    log = ws.deployments.logs("churn")
    assert "MlopsModel replica" in log, log
    assert "serving m/1; canary m/2 at 50%" in log and "serving m/2; no canary" in log, log

    # prediction logs come back through the target and feed monitoring
    deadline = time.time() + 30
    fetched = 0
    while time.time() < deadline:
        fetched += ws.monitor.collect("churn")["churn"].get("fetched", 0)
        rows, _, _ = ws.monitor.frames("churn", 0, time.time() + 1)
        if rows is not None and rows["request_id"].str.startswith("split-").sum() >= 60 * 3:
            break
        time.sleep(0.5)
    assert fetched > 0
    rows, _, _ = ws.monitor.frames("churn", 0, time.time() + 1)
    assert rows["request_id"].str.startswith("split-").sum() == 60 * 3
    assert set(rows["version"].astype(int)) >= {1, 2}
    assert (rows["request_id"] == "orphan-0").sum() == 1  # taken over by a new replica
    report = ws.monitor.measure("churn", window="10m")
    assert report.model == "m" and report.rows > 0 and report.performance["requests"] > 0
    # and `mlops monitor` from the command line
    data = json.loads(run_cli("-w", str(ws.root), "monitor", "churn", "--json", check=True).stdout)
    assert data["deployment"] == "churn" and data["rows"] > 0

    # delete: our application is gone, the other one still answers
    ws.deployments.delete("churn")
    apps = httpx.get(ray_head.dashboard + "/api/serve/applications/").json()["applications"]
    assert set(apps) == {"other"}
    assert other_answers(ray_head) == "hello from another app"


def test_unreachable_cluster_is_a_plain_error(ws, tmp_path):
    from tests.integration.serving_helpers import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MlopsError, match="cannot be reached"):
        ws.deployments.deploy("m/1", target="ray", name="nowhere", options={"address": closed})
    out = run_cli("-w", str(ws.root), "deploy", "m/1", "--target", "ray", "--address", closed)
    assert out.returncode == 1, out
    assert "cannot be reached" in out.stderr and "--address" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 2, out.stderr
    bad = run_cli("-w", str(ws.root), "deploy", "m/1", "--target", "ray", "--address", "nope:1")
    assert bad.returncode == 1 and "http(s) URL" in bad.stderr and "Traceback" not in bad.stderr
