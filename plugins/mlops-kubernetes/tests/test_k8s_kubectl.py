"""Which kubectl commands the target issues, and in what order, with a stand-in `kubectl`
on PATH that records its arguments and answers like kubectl would. This shows only the
commands: no cluster ran them (none can run on these machines; see the README)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

FAKE = r"""#!PYTHON
import json, os, shutil, sys
args = sys.argv[1:]
state = os.environ["FAKE_KUBECTL_DIR"]
for log in ("calls.jsonl", "all.jsonl"):
    with open(os.path.join(state, log), "a") as fh:
        fh.write(json.dumps(args) + "\n")
rest = list(args)
for flag in ("--context", "--namespace"):
    if flag in rest:
        i = rest.index(flag)
        del rest[i:i + 2]
pods = os.path.join(state, "pods")
if rest[:2] == ["config", "current-context"]:
    print("fake-ctx")
elif rest[0] == "apply":
    files = [rest[i + 1] for i, a in enumerate(rest) if a == "-f"]
    for f in files:
        mode = oct(os.stat(f).st_mode & 0o777)
        with open(os.path.join(state, "applied.jsonl"), "a") as fh:
            fh.write(json.dumps([os.path.basename(f), mode, open(f).read()]) + "\n")
        print(os.path.basename(f) + " configured")
elif rest[0] == "rollout":
    print("deployment successfully rolled out")
elif rest[0] == "get" and rest[1] == "pods":
    items = [{"metadata": {"name": p, "labels": {"mlops-console/role": "primary"}},
              "status": {"phase": "Running", "containerStatuses": [{"ready": True}]}}
             for p in sorted(os.listdir(pods))]
    print(json.dumps({"items": items}))
elif rest[0] == "get":
    print(json.dumps({"status": {"readyReplicas": 2, "replicas": 2}}))
elif rest[0] == "exec":
    pod, cmd = rest[1], rest[rest.index("--") + 1:]
    logs = os.path.join(pods, pod, "logs")
    if cmd[:2] == ["ls", "-1"]:
        print("\n".join(sorted(os.listdir(logs))))
    elif cmd[:2] == ["rm", "-f"]:
        os.unlink(os.path.join(logs, os.path.basename(cmd[2])))
elif rest[0] == "cp":
    src, dest = [a for a in rest[1:] if a != "-c" and a != "server"]
    pod, path = src.split("/", 1)[1].split(":", 1)
    shutil.copyfile(os.path.join(pods, pod, "logs", os.path.basename(path)), dest)
elif rest[0] == "port-forward":
    # stands in for the tunnel only: the server it names is a real one on loopback
    print("Forwarding from 127.0.0.1:%s -> 8080" % os.environ["FAKE_FORWARD_PORT"], flush=True)
    import time
    time.sleep(600)
elif rest[0] == "logs":
    print("[pod/churn-a/server] serving churn/1 (sklearn) on 0.0.0.0:8080")
"""


@pytest.fixture
def kube(workspace: Path, tmp_path: Path, monkeypatch):
    """A workspace whose PATH has the stand-in kubectl; yields (ws, calls(), state dir)."""
    from mlops_console.workspace import Workspace

    bin_dir, state = tmp_path / "bin", tmp_path / "kubectl"
    bin_dir.mkdir()
    (state / "pods").mkdir(parents=True)
    script = bin_dir / "kubectl"
    script.write_text(FAKE.replace("PYTHON", sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.path.dirname(sys.executable)}")
    monkeypatch.setenv("FAKE_KUBECTL_DIR", str(state))

    def calls() -> list[list[str]]:
        f = state / "calls.jsonl"
        out = [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []
        f.unlink(missing_ok=True)
        return out

    ws = Workspace.open(workspace)
    yield ws, calls, state
    ws.close()


def _verbs(calls: list[list[str]]) -> list[list[str]]:
    """The commands without the context and namespace every call carries."""
    out = []
    for c in calls:
        if c[:2] == ["config", "current-context"]:
            continue
        assert c[:4] == ["--context", "fake-ctx", "--namespace", "default"], c
        # files here by name (their folder is the test's own); /logs is the pod's
        out.append([Path(a).name if os.path.exists(a) else a for a in c[4:]])
    return out


def test_the_kubectl_commands_of_a_deployments_life(kube, tmp_path: Path):
    ws, calls, state = kube
    out = tmp_path / "m"
    rec = ws.deployments.deploy(
        "churn/1", target="kubernetes", runtime="sklearn", options={"render": str(out), "wait": 60}
    )
    assert rec.status == "running"
    apply = ["apply", "-f", "secret.yaml", "-f", "deployment.yaml", "-f", "service.yaml",
             "-f", "hpa.yaml", "-f", "pdb.yaml"]  # fmt: skip
    assert _verbs(calls()) == [
        apply,
        ["delete", "deployment", "churn-canary", "--ignore-not-found"],
        ["rollout", "status", "deployment/churn", "--timeout=60s"],
    ]
    applied = [json.loads(line) for line in (state / "applied.jsonl").read_text().splitlines()]
    assert applied[0][:2] == ["secret.yaml", "0o600"]  # the Secret travels in a 0600 file

    ws.deployments.deploy("churn/2", target="kubernetes", strategy="canary", canary_percent=50)
    canary = [*apply[:5], "-f", "deployment-canary.yaml", *apply[5:]]
    assert _verbs(calls()) == [
        canary,
        ["rollout", "status", "deployment/churn", "--timeout=60s"],
        ["rollout", "status", "deployment/churn-canary", "--timeout=60s"],
    ]
    ws.deployments.promote("churn")
    assert _verbs(calls())[:2] == [
        apply,
        ["delete", "deployment", "churn-canary", "--ignore-not-found"],
    ]

    st = ws.deployments.status("churn")
    assert st.live["status"] == "running" and st.live["ready"] == 2
    assert ["get", "deployment", "churn", "-o", "json"] in _verbs(calls())

    assert "serving churn/1" in ws.deployments.logs("churn", 50)
    assert _verbs(calls()) == [
        ["logs", "-l", "mlops-console/deployment=churn", "--tail=50", "--prefix",
         "--all-containers", "--max-log-requests=20"],
    ]  # fmt: skip

    ws.deployments.stop("churn")
    assert _verbs(calls()) == [
        ["delete", "deployment,service,hpa,pdb,secret", "-l", "mlops-console/deployment=churn",
         "--ignore-not-found", "--wait=false"],
    ]  # fmt: skip
    token = (ws.state / "deployments" / "churn" / "admin-token").read_text().strip()
    assert token not in (state / "all.jsonl").read_text()  # never an argument


def test_prediction_logs_come_back_with_kubectl_cp(kube, tmp_path: Path):
    ws, calls, state = kube
    ws.deployments.deploy(
        "churn/1", target="kubernetes", runtime="sklearn", options={"render": str(tmp_path / "m")}
    )
    for pod in ("churn-7d9f-a", "churn-7d9f-b"):
        logs = state / "pods" / pod / "logs"
        logs.mkdir(parents=True)
        (logs / "predictions-1700000000000-1-0.jsonl").write_text('{"x": 1}\n')
        (logs / "predictions-1700000001000-1-1.jsonl.open").write_text('{"x": 2}\n')
    calls()
    dest = tmp_path / "collected"
    dest.mkdir()
    rec = ws.deployments.get("churn")
    tgt = ws.deployments.target("kubernetes")
    assert tgt.fetch_prediction_logs("churn", rec.config, dest) == 2
    got = sorted(p.name for p in dest.iterdir())
    assert got == [
        "predictions-1700000000000-1-0-churn-7d9f-a.jsonl",
        "predictions-1700000000000-1-0-churn-7d9f-b.jsonl",
    ]
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in dest.iterdir())
    for pod in ("churn-7d9f-a", "churn-7d9f-b"):  # copied ones removed, the open one kept
        assert sorted(os.listdir(state / "pods" / pod / "logs")) == [
            "predictions-1700000001000-1-1.jsonl.open"
        ]
    verbs = _verbs(calls())
    assert verbs[0] == ["get", "pods", "-l", "mlops-console/deployment=churn", "-o", "json"]
    assert verbs[1] == ["exec", "churn-7d9f-a", "-c", "server", "--", "ls", "-1", "/logs"]
    assert verbs[2][:4] == [
        "cp",
        "-c",
        "server",
        "default/churn-7d9f-a:/logs/predictions-1700000000000-1-0.jsonl",
    ]
    assert verbs[3] == ["exec", "churn-7d9f-a", "-c", "server", "--", "rm", "-f",
                        "/logs/predictions-1700000000000-1-0.jsonl"]  # fmt: skip


def test_predict_goes_through_a_port_forward(kube, tmp_path: Path, monkeypatch):
    """The stand-in's port-forward names a real model server on loopback, serving the
    deployment's own bundle: the records reach it and its predictions come back."""
    import socket
    import subprocess
    import time

    import httpx

    ws, calls, _ = kube
    ws.deployments.deploy(
        "churn/1", target="kubernetes", runtime="sklearn", options={"render": str(tmp_path / "m")}
    )
    bundle = next((ws.state / "deployments" / "churn" / "bundles").iterdir())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlops_console.serving.app", str(bundle), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            time.sleep(0.1)
        monkeypatch.setenv("FAKE_FORWARD_PORT", str(port))
        calls()
        got = ws.deployments.predict(
            "churn", [{"x1": 2.0, "plan": "pro"}, {"x1": -2.0, "plan": "basic"}]
        )
        assert got == [1, 0]
        assert _verbs(calls()) == [["port-forward", "--address", "127.0.0.1", "svc/churn", ":8080"]]
    finally:
        server.terminate()
        server.wait(timeout=10)
