"""The `local` target: a supervised model server process on this machine."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from mlops_console.deploy.base import Capability, DeployError, PortTaken
from mlops_console.deploy.server import ServerTarget, http
from mlops_console.names import check_name, inside
from mlops_console.plugins import hookimpl


def process_start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # field 2 (the command name, in parentheses) may hold spaces: count after its ")"
    return int(stat.rsplit(")", 1)[1].split()[19])


class LocalTarget(ServerTarget):
    name = "local"
    capabilities = ServerTarget.capabilities | {Capability.SUPERVISED}

    def _running(self, name: str) -> bool:
        return self._pid(name) is not None

    def _pid(self, name: str) -> int | None:
        """The server's pid, only if the pid file names that very process: the file holds
        the pid and its start time, so a pid reused by another process (or a file someone
        wrote) is never signalled."""
        f = self._dir(name) / "pid"
        if not f.exists():
            return None
        try:
            fields = f.read_text().split()
            pid = int(fields[0])
            recorded = int(fields[1]) if len(fields) > 1 else None
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            return None
        if not Path("/proc/self/stat").exists():
            return pid  # no /proc to ask (not Linux): the pid is all there is
        started = process_start_time(pid)
        if recorded is None:
            # a file from before start times were kept: trust it only for a model server
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                return None
            return pid if b"mlops_console.serving.app" in cmdline else None
        return pid if started == recorded else None

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
            "-P",  # the workspace (cwd) is not on sys.path: its numpy.py is not imported
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
        (d / "pid").write_text(f"{proc.pid} {process_start_time(proc.pid) or 0}\n")
        deadline = time.time() + 90
        while time.time() < deadline:
            if proc.poll() is not None:
                break
            if self._healthy(config) and self._answers_as(name, config):
                return self.get(name, config)
            time.sleep(0.1)
        self._stop_pid(proc.pid)
        (d / "pid").unlink(missing_ok=True)
        said = self.logs(name, 15)
        last = [ln for ln in said.splitlines() if ln.strip()][-1:]
        if proc.poll() is not None and last and "address already in use" in last[0]:
            where = f"{config.get('host', '127.0.0.1')}:{config['port']}"
            raise PortTaken(
                f"The server for {name} could not listen on {where}: another process holds "
                "that port. Pass --port with a free one, or stop what listens there."
            )
        raise DeployError(f"The server for {name} did not start: {said}")

    def delete(self, name: str, config: dict[str, Any] | None = None) -> None:
        pid = self._pid(name)
        if pid is not None:
            self._stop_pid(pid)
        (self._dir(name) / "pid").unlink(missing_ok=True)

    def _stop_pid(self, pid: int) -> None:
        try:
            if os.getpgid(pid) != pid:  # the server leads its own group; anything else is not it
                return
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
        with contextlib.suppress(ProcessLookupError):
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
            v = http("GET", self._url(config) + "/version", timeout=2).json()
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
