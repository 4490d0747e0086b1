"""`mlops demo` as a user runs it: the whole loop in a fresh folder, then its real end
state (a second version is champion and serving, the drift alert resolved), then the
one-line stop it prints."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from mlops_console.automation import lifecycle
from mlops_console.workspace import Workspace

pytestmark = pytest.mark.slow


def mlops(*args: str, cwd, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlops_console.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "120"},
    )


def test_the_demo_tells_the_whole_loop_and_leaves_it_running(tmp_path):
    root = tmp_path / "demo"
    try:
        out = mlops("demo", "demo", cwd=tmp_path, timeout=280)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        for step in (
            "[1/12]",
            "the drift alert opens",
            "canary",
            "[12/12] the drift alert resolves",
        ):
            assert step in out.stderr, out.stderr
        assert "mlops -w demo console" in out.stdout
        assert "mlops -w demo down && mlops -w demo deployments stop churn" in out.stdout
        with Workspace.open(root) as ws:
            assert ws.models.resolve("churn@champion").version == 2
            dep = ws.deployments.get("churn")
            served = httpx.get(dep.endpoint + "/version", timeout=10).json()
            assert served["version"] == 2 and served["canary"] is None
            actions = [e.action for e in ws.deployments.history("churn")]
            assert "canary" in actions and actions[-1] == "promote", actions
            (alert,) = ws.alerts.list(deployment="churn")
            assert alert.rule == "input drift" and alert.state == "resolved"
            assert "queued retrain chain" in alert.action_result
            assert ws.data.get("churn").current_version == 2  # January's feed
            assert lifecycle.status(ws).running
        # the stop it prints, as printed
        assert mlops("-w", "demo", "down", cwd=tmp_path).returncode == 0
        assert mlops("-w", "demo", "deployments", "stop", "churn", cwd=tmp_path).returncode == 0
        assert not lifecycle.status(root).running
        with pytest.raises(httpx.HTTPError):
            httpx.get(dep.endpoint + "/ping", timeout=2)
    finally:  # never leave a daemon or a server behind, whatever failed
        if (root / ".mlops").is_dir():
            lifecycle.stop(root)
            with Workspace.open(root) as ws:
                for d in ws.deployments.list():
                    if d.running:
                        ws.deployments.stop(d.name)
