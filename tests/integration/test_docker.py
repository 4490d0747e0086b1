"""The docker target against a real engine, started by the test command.

Skipped (with the reason) only where no engine can be started; never skipped in CI.
"""

import os
import subprocess
from pathlib import Path

import httpx
import pytest
from tests.docker_engine import BASE, module_engine
from tests.integration.serving_helpers import free_port, train_two_versions

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def engine():
    with module_engine(BASE):
        os.environ["MLOPS_DOCKER_BASE_IMAGE"] = BASE
        yield
        os.environ.pop("MLOPS_DOCKER_BASE_IMAGE", None)


def test_docker_build_run_predict_swap_export_stop(engine, tmp_path_factory):
    ws, _ = train_two_versions(tmp_path_factory.mktemp("docker") / "ws")
    try:
        rec = ws.deployments.deploy("m/1", target="docker", name="dk", port=free_port())
        assert rec.status == "running" and rec.target == "docker"
        assert "dk" in ws.deployments.target("docker").list()
        st = ws.deployments.status("dk")
        assert st.live["status"] == "running" and st.live["image"].startswith("mlops-serve-dk:")
        rows = [{"x1": 0.5, "x2": -1.0, "plan": "pro"}, {"x1": -2.0, "x2": 0.1, "plan": "basic"}]
        here = ws.models.bundle("m/1", runtime="sklearn").predict_proba(
            __import__("pandas").DataFrame(rows)
        )
        there = ws.deployments.predict("dk", rows, output="predict_proba")
        assert abs(here - there).max() < 1e-4
        # hardened: no capabilities, no new privileges, read-only root, tokens not in the env
        attrs = ws.deployments.target("docker")._container("dk").attrs
        host = attrs["HostConfig"]
        assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
        assert host["ReadonlyRootfs"] is True and host["PidsLimit"] == 256
        env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
        assert "MLOPS_ADMIN_TOKEN" not in env and env["MLOPS_ADMIN_TOKEN_FILE"]
        assert env["MLOPS_BUNDLE_DIGEST"] == ws.models.resolve("m/1").artifact_hash
        # hot swap inside the running container, then a canary and its rollback
        ws.deployments.deploy("m/2", name="dk")
        assert httpx.get(rec.endpoint + "/version").json()["version"] == 2
        ws.deployments.deploy("m/1", name="dk", strategy="canary", canary_percent=50)
        assert ws.deployments.rollback("dk").canary_version is None
        # the health check, the logs and the prediction log through the mounted folder
        log = ws.deployments.logs("dk")
        assert "serving m/1" in log and "loaded m/2" in log and "rolled back" in log, log
        tar = ws.deployments.export("dk", tmp_path_factory.mktemp("export") / "dk.tar")
        assert tar.stat().st_size > 50_000_000
        ws.deployments.stop("dk")
        assert ws.deployments.status("dk").live["status"] == "stopped"
        import time

        time.sleep(1.5)
        logged = list((ws.state / "logs" / "predictions" / "dk").glob("predictions-*"))
        assert logged, "the container wrote no prediction log into the mounted folder"
    finally:
        for d in ws.deployments.list():
            if d.status == "running":
                ws.deployments.stop(d.name)
        ws.close()
        subprocess.run(
            "docker images -q --filter label=mlops-console=dk | xargs -r docker rmi -f",
            shell=True,
            capture_output=True,
        )
