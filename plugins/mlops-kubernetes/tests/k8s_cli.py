"""The real `mlops` command for the kubernetes tests (a module of its own: every test
folder has a conftest.py, and `from conftest import ...` could find another one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def mlops(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real `mlops` command, in a subprocess, with PATH as `env` gives it."""
    full = {k: v for k, v in os.environ.items() if k != "MLOPS_WORKSPACE"}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mlops_console.cli.main", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )
