"""The `local` target: a supervised model server process on this machine."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from mlops_console.deploy.base import DeployError, DeployTarget
from mlops_console.plugins import hookimpl


class LocalTarget(DeployTarget):
    name = "local"

    def _dir(self, name: str) -> Path:
        d = self.ws.state / "deployments" / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _token(self, name: str) -> str:
        f = self._dir(name) / "admin-token"
        if not f.exists():
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32))
        return f.read_text().strip()

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

    def _url(self, config: dict[str, Any]) -> str:
        return f"http://{config.get('host', '127.0.0.1')}:{config['port']}"

    def _admin(
        self, name: str, config: dict[str, Any], method: str, path: str, **kw
    ) -> httpx.Response:
        return httpx.request(
            method,
            self._url(config) + path,
            timeout=120,
            headers={"Authorization": f"Bearer {self._token(name)}"},
            **kw,
        )

    def create(self, name: str, bundle: Path, config: dict[str, Any]) -> dict[str, Any]:
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
            str(self.ws.state / "logs" / "predictions" / name),
        ]
        if config.get("runtime"):
            cmd += ["--runtime", config["runtime"]]
        env = {**os.environ, "MLOPS_ADMIN_TOKEN": self._token(name)}
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

    def _healthy(self, config: dict[str, Any]) -> bool:
        try:
            return httpx.get(self._url(config) + "/ping", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def update(
        self,
        name: str,
        bundle: Path,
        config: dict[str, Any],
        role: str = "primary",
        percent: float = 0.0,
    ) -> dict[str, Any]:
        """Hot-swap (primary), or load a canary or shadow beside the running version."""
        if self._pid(name) is None or not self._healthy(config):
            if role != "primary":
                raise DeployError(f"{name} is not running; deploy a primary version first.")
            return self.create(name, bundle, config)
        r = self._admin(
            name,
            config,
            "POST",
            "/admin/load",
            json={
                "path": str(bundle),
                "role": role,
                "percent": percent,
                "runtime": config.get("runtime"),
            },
        )
        if r.status_code != 200:
            raise DeployError(
                f"{name}: the new version was not loaded ({r.json().get('message')}); "
                "the previous version keeps serving."
            )
        return self.get(name, config)

    def promote(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        r = self._admin(name, config, "POST", "/admin/promote")
        if r.status_code != 200:
            raise DeployError(f"{name}: {r.json().get('message')}")
        return self.get(name, config)

    def rollback(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        r = self._admin(name, config, "POST", "/admin/rollback")
        if r.status_code != 200:
            raise DeployError(f"{name}: {r.json().get('message')}")
        return self.get(name, config)

    def status(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        r = self._admin(name, config, "GET", "/admin/status")
        return r.json() if r.status_code == 200 else {}

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

    def predict(
        self,
        name: str,
        config: dict[str, Any],
        records: list[dict[str, Any]],
        output: str = "predict",
    ) -> list:
        r = httpx.post(
            self._url(config) + f"/invocations?output={output}",
            json={"dataframe_records": records},
            timeout=60,
        )
        if r.status_code != 200:
            raise DeployError(f"{name}: {r.json().get('message', r.text)}")
        return r.json()["predictions"]

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
