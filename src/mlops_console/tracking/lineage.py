"""What a run was made from: code (git), config, data, environment and seed."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from functools import cache
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
    from importlib import metadata  # ~15 ms: only runs that record lineage need it

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


# A repository's own config can name programs git runs on `status` and `diff` (an
# fsmonitor hook, filters, diff drivers): a copied workspace must not run them for us.
_SAFE = {
    "core.fsmonitor": "false",
    "core.hooksPath": "/dev/null",
    "core.pager": "cat",
    "core.untrackedCache": "false",
    "diff.external": "",
}
_DRIVERS = ("clean", "smudge", "process", "textconv", "command", "driver")
_GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}


def _neutralised(root: Path) -> list[str]:
    """`-c` options that switch off every program the repository's config names."""
    options = dict(_SAFE)
    try:
        names = subprocess.run(
            ["git", "-C", str(root), "config", "--local", "--name-only", "--list"],
            capture_output=True,
            timeout=10,
            env=_GIT_ENV,
        ).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        names = ""
    for name in names.split():
        section, _, key = name.rpartition(".")
        if section.split(".")[0] in ("filter", "diff", "merge") and key in _DRIVERS:
            options[name] = ""
        if section.split(".")[0] == "filter" and key == "required":
            options[name] = "false"
    return [arg for k, v in options.items() for arg in ("-c", f"{k}={v}")]


def git_state(workspace: Path) -> dict[str, Any] | None:
    """Commit, branch, dirty flag and a hash of the uncommitted diff; None outside git."""
    root = find_git_root(workspace.resolve())
    if root is None:
        return None

    safe = _neutralised(root)

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(root), *safe, *args],
                capture_output=True,
                timeout=20,
                check=True,
                env=_GIT_ENV,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.decode("utf-8", "replace")

    commit = git("rev-parse", "--verify", "-q", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=normal")
    if status is None:
        return None
    diff = git("diff", "--no-ext-diff", "--no-textconv", "HEAD", "--binary") if commit else ""
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
