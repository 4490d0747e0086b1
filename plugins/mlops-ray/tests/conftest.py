"""One real Ray head on loopback for the whole test run (Ray takes ~10-20 s to start)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RayHead:
    dashboard: str  # http://127.0.0.1:PORT, what --address takes
    http_port: int  # where Serve's HTTP proxy is started (loopback)
    temp_dir: Path
    gcs_port: int


def _head_pids(head: RayHead) -> list[int]:
    """The processes of this head only: those naming its temp folder or GCS port, and
    their descendants (never another Ray on the machine)."""
    marks = (str(head.temp_dir).encode(), f"127.0.0.1:{head.gcs_port}".encode())
    parents: dict[int, int] = {}
    roots = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        if any(m in cmd for m in marks):
            roots.add(pid)
    found = set(roots)
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    found.discard(os.getpid())
    return sorted(found)


def _stop(head: RayHead) -> None:
    pids = _head_pids(head)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + (3 if sig == signal.SIGTERM else 10)
        while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            for p in pids:
                try:
                    os.waitpid(p, os.WNOHANG)
                except ChildProcessError:
                    pass
            time.sleep(0.1)


@pytest.fixture(scope="session")
def ray_launch():
    """`ray start --head` bound to 127.0.0.1 with free ports and its own temp folder, begun
    in the background (a fixture that trains models can ask for it first, so both run at
    once); its processes are stopped by pid after the run (`ray stop` would stop every
    Ray on the machine)."""
    ray = Path(sys.executable).parent / "ray"
    temp_dir = Path(tempfile.mkdtemp(prefix="mray-", dir="/tmp"))  # socket paths must be short
    ports = {k: free_port() for k in ("gcs", "dash", "http", "client", "agent", "metrics")}
    head = RayHead(f"http://127.0.0.1:{ports['dash']}", ports["http"], temp_dir, ports["gcs"])
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        # the other application's module (tests/other_app.py) for the workers
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
        ).strip(os.pathsep),
    }
    cmd = [
        str(ray), "start", "--head", "--disable-usage-stats",
        "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
        "--port", str(ports["gcs"]), "--dashboard-port", str(ports["dash"]),
        "--ray-client-server-port", str(ports["client"]),
        "--dashboard-agent-listen-port", str(ports["agent"]),
        "--metrics-export-port", str(ports["metrics"]),
        "--num-cpus", "2", "--temp-dir", str(temp_dir),
    ]  # fmt: skip
    log = open(temp_dir / "ray-start.log", "w+")  # noqa: SIM115 (the child's output)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield head, proc, log
    finally:
        proc.kill()
        proc.wait()
        _stop(head)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_head(ray_launch):
    """The head, once `ray start` returned and the dashboard's Serve API answers."""
    head, proc, log = ray_launch
    if proc.wait(timeout=180) != 0:
        log.seek(0)
        raise RuntimeError(f"ray start failed:\n{log.read()[-3000:]}")
    deadline = time.time() + 90
    while True:  # the dashboard's Serve API answers a little after `ray start` returns
        try:
            r = httpx.get(head.dashboard + "/api/serve/applications/", timeout=5)
            if r.status_code == 200:
                return head
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            raise RuntimeError("Ray's dashboard did not answer within 90 s")
        time.sleep(0.25)
