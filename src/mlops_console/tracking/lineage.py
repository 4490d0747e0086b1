"""What a run was made from: code (git), config, data, environment and seed."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

KEY_PACKAGES = (
    "mlops-console",
    "numpy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "joblib",
    "duckdb",
    "onnxruntime",
    "skl2onnx",
    "sqlmodel",
)


@cache
def environment() -> dict[str, Any]:
    """Python, platform and key package versions (cached: fixed for a process)."""
    packages: dict[str, str] = {}
    for name in KEY_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "executable": sys.executable,
        "packages": packages,
    }


def find_git_root(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return None


def git_state(workspace: Path) -> dict[str, Any] | None:
    """Commit, branch, dirty flag and a hash of the uncommitted diff; None outside git."""
    root = find_git_root(workspace.resolve())
    if root is None:
        return None

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(root), *args],
                capture_output=True,
                timeout=20,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.decode("utf-8", "replace")

    commit = git("rev-parse", "--verify", "-q", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=normal")
    if status is None:
        return None
    diff = git("diff", "HEAD", "--binary") if commit else ""
    dirty = bool(status.strip())
    return {
        "root": str(root),
        "commit": commit.strip() if commit else None,
        "branch": (git("rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None,
        "dirty": dirty,
        # Untracked files count towards the dirty flag; their names go into the hash.
        "diff_sha256": hashlib.sha256(((diff or "") + status).encode()).hexdigest()
        if dirty
        else None,
    }


def file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
