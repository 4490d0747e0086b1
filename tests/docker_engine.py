"""A real Docker engine for the tests that need one (the docker target, the fleet's docker
runtime): started by packaging/docker/engine.sh when none runs (`make test` stops it after),
with the base image built locally (packaging/docker/base-image.sh, no registry). Skips where
no engine can start; fails in CI, where a missing engine must not pass silently."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BASE = "mlops-local/python:3.11"


def ensure_engine(base: str = BASE) -> None:
    started = subprocess.run(
        ["bash", str(REPO / "packaging/docker/engine.sh"), "start"], capture_output=True, text=True
    )
    if started.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs a Docker engine and none could be started: {started.stderr}")
        pytest.skip(f"no Docker engine can be started here: {started.stderr.strip()}")
    built = subprocess.run(
        ["bash", str(REPO / "packaging/docker/base-image.sh"), base], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr
