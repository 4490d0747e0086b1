"""The starting workspace, kept once it is built and put back on reset.

A snapshot is `.mlops/lab/start/`: the workspace's files (mlops.toml, pipelines, data,
contracts, ...), the state that setup made (objects, lake, online store) and a copy of the
registry taken with SQLite's backup API. Servers and the daemon are stopped before a
restore; what deploys and traffic the scenario starts with is replayed by its `start`
timeline, so a snapshot never holds a running process's pid, port or token.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace

DB = "registry.db"
# state a restore leaves alone: the lab itself and the daemon's files; or that belongs to
# processes (deployments' folders, prediction logs, monitoring) and is removed instead
KEEP = {"lab", "config-checked"}
DROP = {"deployments", "monitoring", "daemon.lock", "daemon.pid", "daemon.sock", "daemon.log"}


def snapshot_dir(ws: Workspace) -> Path:
    return ws.state / "lab" / "start"


def _copy_db(src: Path, dest: Path) -> None:
    with sqlite3.connect(src) as a, sqlite3.connect(dest) as b:
        a.backup(b)
    a.close()
    b.close()


def take(ws: Workspace, variables: dict | None = None, dest: Path | None = None) -> Path:
    """Copy the workspace as it is now into a snapshot folder (replacing any), with the
    variables its setup steps remembered."""
    dest = dest or snapshot_dir(ws)
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "state").mkdir(parents=True, mode=0o700)
    for entry in ws.root.iterdir():
        if entry.name == ".mlops":
            continue
        _copy(entry, dest / "files" / entry.name)
    for entry in ws.state.iterdir():
        name = entry.name
        if name in KEEP or name in DROP or name.startswith(DB):
            continue
        _copy(entry, dest / "state" / name)
    _copy_db(ws.state / DB, dest / "state" / DB)
    (dest / "files").mkdir(exist_ok=True)
    (dest / "vars.json").write_text(json.dumps(variables or {}))
    return dest


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dest, symlinks=True)
    elif src.is_file():
        shutil.copy2(src, dest)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for sub in path.rglob("*"):  # bundle folders are read-only (0500)
            if sub.is_dir() and not sub.is_symlink():
                sub.chmod(0o700)
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def restore(ws: Workspace, src: Path | None = None) -> dict:
    """Put the workspace back as the snapshot holds it. The caller stops servers and the
    daemon first; the registry is restored in place (open connections see it at once)."""
    src = src or snapshot_dir(ws)
    for entry in ws.root.iterdir():
        if entry.name != ".mlops":
            _remove(entry)
    for entry in (src / "files").iterdir():
        _copy(entry, ws.root / entry.name)
    for entry in ws.state.iterdir():
        name = entry.name
        if name in KEEP or name.startswith(DB) or name in ("daemon.lock",):
            continue
        _remove(entry)
    for entry in (src / "state").iterdir():
        if entry.name != DB:
            _copy(entry, ws.state / entry.name)
    for sub in ("objects", "lake", "logs"):
        (ws.state / sub).mkdir(mode=0o700, exist_ok=True)
    _copy_db(src / "state" / DB, ws.state / DB)
    return json.loads((src / "vars.json").read_text())


def set_serving_port(root: Path, port: int) -> None:
    """Set `[serving] port` in the workspace's mlops.toml (where its servers' ports start)."""
    cfg = root / "mlops.toml"
    text = cfg.read_text()
    new, n = re.subn(r"(?m)^port\s*=\s*\d+", f"port = {port}", text, count=1)
    if n == 0:
        new = text + f"\n[serving]\nport = {port}\n"
    cfg.write_text(new)
