from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_console.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ws(tmp_path: Path):
    workspace = Workspace.init(tmp_path / "ws")
    yield workspace
    workspace.close()


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch, tmp_path):
    # A developer's own MLOPS_WORKSPACE must never leak into a test.
    monkeypatch.delenv("MLOPS_WORKSPACE", raising=False)


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict | None = None,
    check: bool = False,
    timeout: float = 180,
) -> subprocess.CompletedProcess:
    """Run the real `mlops` command in a subprocess."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLOPS_WORKSPACE"}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_console.cli.main", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"mlops {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc
