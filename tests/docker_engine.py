"""A real Docker engine for the tests that need one (the docker target, the fleet's docker
runtime): started by packaging/docker/engine.sh when none runs, with the base image built
locally (packaging/docker/base-image.sh, no registry). Skips where no engine can start;
fails in CI, where a missing engine must not pass silently. An engine a module started is
stopped after it (`make test` stops it after the run too)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BASE = "mlops-local/python:3.11"
ENGINE = REPO / "packaging/docker/engine.sh"


def engine_running() -> bool:
    return bool(shutil.which("docker")) and (
        subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0
    )


def ensure_engine(base: str = BASE) -> None:
    started = subprocess.run(["bash", str(ENGINE), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs a Docker engine and none could be started: {started.stderr}")
        pytest.skip(f"no Docker engine can be started here: {started.stderr.strip()}")
    built = subprocess.run(
        ["bash", str(REPO / "packaging/docker/base-image.sh"), base], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr


def mounts_under(path: Path) -> list[str]:
    return [
        ln.split()[4]
        for ln in Path("/proc/self/mountinfo").read_text().splitlines()
        if ln.split()[4].startswith(str(path))
    ]


def stop_engine(timeout: float = 30) -> None:
    """Stop the engine engine.sh started and, once it has exited, remove the nsfs mount it
    leaves behind (/run/docker/netns/default)."""
    pidfile = Path(os.environ.get("MLOPS_DOCKER_STATE", "/tmp/mlops-ci")) / "dockerd.pid"
    pid = int(pidfile.read_text()) if pidfile.exists() else None
    subprocess.run(["bash", str(ENGINE), "stop"], capture_output=True)
    deadline = time.monotonic() + timeout
    while pid and Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    for point in mounts_under(Path("/run/docker/netns")):
        subprocess.run(["umount", point], capture_output=True)


@contextmanager
def module_engine(base: str = BASE) -> Iterator[None]:
    """An engine for the length of a test module, stopped after it if it was not running."""
    running = engine_running()
    ensure_engine(base)
    try:
        yield
    finally:
        if not running:
            stop_engine()
