"""Train two small model versions once and run real servers on loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

TOKEN = "test-admin-token-not-a-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_two_versions(root: Path):
    from tests.unit.test_pipeline import SPEC, make_data

    from mlops_console.registry.bundle import export_bundle
    from mlops_console.training.runner import train
    from mlops_console.workspace import Workspace

    ws = Workspace.init(root)
    make_data().to_parquet(ws.root / "data" / "d.parquet")
    ws.data.add("d", "data/d.parquet", timestamp="ts", entities=["id"])
    ws.data.ingest("d")
    (ws.root / "pipelines" / "p.toml").write_text(SPEC.format(auto="true", extra=""))
    train(ws, "p", overrides={"search.method": "none"})
    train(
        ws, "p", overrides={"search.method": "none", "model.params": {"C": 0.05, "max_iter": 500}}
    )
    folders = []
    for v in (1, 2):
        mv = ws.models.resolve(f"m/{v}")
        folders.append(export_bundle(ws.artifacts, mv.artifact_hash, root / "bundles" / f"v{v}"))
    return ws, folders


class ServerProcess:
    def __init__(
        self,
        bundle: Path,
        log_dir: Path | None = None,
        env: dict | None = None,
        cwd: Path | None = None,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "mlops_console.serving.app",
            str(bundle),
            "--port",
            str(self.port),
        ]
        if log_dir:
            cmd += ["--log-dir", str(log_dir)]
        # a file, not a pipe: a server that logs a lot must never block on a full pipe
        self.log = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd,
            env={**os.environ, "MLOPS_ADMIN_TOKEN": TOKEN, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            cwd=cwd,
        )
        deadline = time.time() + 180  # a busy machine imports slowly
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/ping", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
            if self.proc.poll() is not None:
                raise RuntimeError(self.output())
        raise RuntimeError("the server did not start")

    def output(self) -> str:
        """What the server wrote to stderr so far."""
        return Path(self.log.name).read_text(errors="replace")

    def admin(self, method: str, path: str, **kw):
        headers = {"Authorization": f"Bearer {TOKEN}", **kw.pop("headers", {})}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
