"""The `local` target: a supervised model server process on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from mlops_console.deploy.base import DeployError
from mlops_console.deploy.server import ServerTarget
from mlops_console.names import check_name, inside
from mlops_console.plugins import hookimpl


class LocalTarget(ServerTarget):
    name = "local"

    def _running(self, name: str) -> bool:
        return self._pid(name) is not None

    def _pid(self, name: str) -> int | None:
        f = self._dir(name) / "pid"
        if not f.exists():
            return None
        try:
            pid = int(f.read_text())
            os.kill(pid, 0)
            return pid
        except (ValueError, ProcessLookupError, PermissionError):
            return None

    def create(
        self, name: str, bundle: Path, config: dict[str, Any], digest: str | None = None
    ) -> dict[str, Any]:
        """Start the server (idempotent: a running server is left as it is)."""
        if self._pid(name) is not None and self._healthy(config):
            return self.get(name, config)
        d = self._dir(name)
        log = open(d / "server.log", "ab")  # noqa: SIM115 (handed to the child process)
        cmd = [
            sys.executable,
            "-m",
            "mlops_console.serving.app",
            str(bundle),
            "--host",
            config.get("host", "127.0.0.1"),
            "--port",
            str(config["port"]),
            "--log-dir",
            str(inside(self.ws.state / "logs" / "predictions", check_name("deployment", name))),
        ]
        if config.get("runtime"):
            cmd += ["--runtime", config["runtime"]]
        if digest:
            cmd += ["--digest", digest]
        env = {**os.environ, **self._server_env(name)}
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=self.ws.root,
        )
        log.close()
        (d / "pid").write_text(str(proc.pid))
        deadline = time.time() + 90
        while time.time() < deadline:
            if proc.poll() is not None:
                break
            if self._healthy(config):
                return self.get(name, config)
            time.sleep(0.1)
        self._stop_pid(proc.pid)
        (d / "pid").unlink(missing_ok=True)
        raise DeployError(f"The server for {name} did not start: {self.logs(name, 15)}")

    def delete(self, name: str, config: dict[str, Any] | None = None) -> None:
        pid = self._pid(name)
        if pid is not None:
            self._stop_pid(pid)
        (self._dir(name) / "pid").unlink(missing_ok=True)

    def _stop_pid(self, pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.killpg(pid, signal.SIGKILL)

    def get(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        pid = self._pid(name)
        info: dict[str, Any] = {
            "name": name,
            "target": self.name,
            "pid": pid,
            "endpoint": self._url(config),
        }
        if pid is None:
            return {**info, "status": "stopped"}
        try:
            v = httpx.get(self._url(config) + "/version", timeout=2).json()
            return {**info, "status": "running", "serving": v}
        except httpx.HTTPError:
            return {**info, "status": "unhealthy"}

    def list(self) -> list[str]:
        root = self.ws.state / "deployments"
        if not root.exists():
            return []
        return sorted(d.name for d in root.iterdir() if (d / "pid").exists() and self._pid(d.name))

    def logs(self, name: str, tail: int = 100) -> str:
        f = self._dir(name) / "server.log"
        if not f.exists():
            return ""
        return "\n".join(f.read_text(errors="replace").splitlines()[-tail:])


@hookimpl
def mlops_deploy_targets():
    return {"local": LocalTarget}
