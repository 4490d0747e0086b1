"""A consistency checker for a workspace that does not use the project's code.

It reads `.mlops/registry.db` with the plain `sqlite3` module (read-only) and the files
under `.mlops/` with `hashlib`, so a bug in the store cannot hide itself from the check.
Each drill (kill -9, a full disk, a damaged registry or snapshot) ends by calling
`problems(root)` and asserting it is empty.

What it checks:
- SQLite's own `integrity_check` and `foreign_key_check`;
- every object the registry refers to exists and re-hashes to its name, and so does every
  file listed by a model bundle's manifest;
- every dataset version's Parquet snapshot exists and matches its recorded digest, there
  is one version per digest, and a dataset's current version is a usable one;
- each alias equals the last event of its history, and each event moves from where the
  previous one left it;
- no run is RUNNING without a live process behind it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

USABLE = ("accepted", "forced")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _object(state: Path, digest: str) -> Path:
    return state / "objects" / digest[:2] / digest[2:]


def _process_alive(pid: int | None, start: int | None) -> bool:
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie is not alive: it only waits to be reaped
        return False
    return start is None or int(fields[19]) == int(start)


def problems(root: Path | str) -> list[str]:
    """Everything inconsistent in the workspace at `root`; an empty list when sound."""
    root = Path(root)
    state = root / ".mlops"
    db = state / "registry.db"
    if not db.exists() or db.stat().st_size == 0:
        return [f"{db} is missing or empty"]
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)
    try:
        return _problems(con, state)
    finally:
        con.close()


def _problems(con: sqlite3.Connection, state: Path) -> list[str]:
    found: list[str] = []
    ok = con.execute("PRAGMA integrity_check").fetchall()
    if ok != [("ok",)]:
        found.append(f"integrity_check: {ok[:5]}")
    fk = con.execute("PRAGMA foreign_key_check").fetchall()
    if fk:
        found.append(f"foreign_key_check: {fk[:5]}")
    found += _objects(con, state)
    found += _snapshots(con, state)
    found += _aliases(con)
    cols = {r[1] for r in con.execute("PRAGMA table_info(run)")}
    pid_cols = "pid, pid_start" if {"pid", "pid_start"} <= cols else "NULL, NULL"
    for run_id, pid, start in con.execute(
        f"SELECT id, {pid_cols} FROM run WHERE status = 'RUNNING'"
    ):
        if not _process_alive(pid, start):
            found.append(f"run {run_id} is RUNNING but no process runs it (pid {pid})")
    return found


def _objects(con: sqlite3.Connection, state: Path) -> list[str]:
    found = []
    checked: set[str] = set()

    def check(digest: str, what: str) -> bytes | None:
        path = _object(state, digest)
        if not path.is_file():
            found.append(f"{what}: object {digest[:12]} is missing")
            return None
        if digest in checked:
            return None
        checked.add(digest)
        if sha256_file(path) != digest:
            found.append(f"{what}: object {digest[:12]} does not re-hash to its name")
            return None
        return path.read_bytes() if path.stat().st_size < (8 << 20) else None

    for digest, kind, owner in con.execute("SELECT hash, kind, owner FROM object_ref"):
        check(digest, f"{kind} {owner}")
    for run_id, name, digest in con.execute("SELECT run_id, name, hash FROM run_artifact"):
        check(digest, f"run {run_id} artifact {name}")
    for name, version, digest in con.execute(
        "SELECT model_name, version, artifact_hash FROM model_version"
    ):
        what = f"model {name}/{version}"
        if digest in checked:
            checked.discard(digest)  # read it again: its manifest lists the bundle files
        data = check(digest, what)
        if data is None or not data.startswith(b"{"):
            continue
        try:
            manifest = json.loads(data)
        except ValueError:
            continue
        if manifest.get("format", "").startswith("mlops-bundle/"):
            for fname, entry in manifest.get("files", {}).items():
                check(entry["sha256"], f"{what} bundle file {fname}")
    return found


def _snapshots(con: sqlite3.Connection, state: Path) -> list[str]:
    found = []
    rows = con.execute(
        "SELECT dataset_name, version, digest, status, lake_path, snapshot_sha256 "
        "FROM dataset_version ORDER BY dataset_name, version"
    ).fetchall()
    seen: dict[tuple[str, str], int] = {}
    for name, version, digest, _status, lake_path, snap_sha in rows:
        if (name, digest) in seen:
            found.append(
                f"dataset {name}: v{version} and v{seen[name, digest]} have the same digest"
            )
        seen.setdefault((name, digest), version)
        path = state / "lake" / lake_path
        if not path.is_file():
            found.append(f"dataset {name} v{version}: snapshot {lake_path} is missing")
        elif sha256_file(path) != snap_sha:
            found.append(f"dataset {name} v{version}: snapshot {lake_path} does not match")
    status = {(n, v): s for n, v, _d, s, _p, _h in rows}
    for name, current in con.execute("SELECT name, current_version FROM dataset"):
        if current is not None and status.get((name, current)) not in USABLE:
            found.append(f"dataset {name}: current v{current} is not a usable version")
    return found


def _aliases(con: sqlite3.Connection) -> list[str]:
    found = []
    events: dict[tuple[str, str], list[tuple]] = {}
    for row in con.execute(
        "SELECT model_name, alias, kind, from_version, to_version FROM alias_event ORDER BY id"
    ):
        events.setdefault((row[0], row[1]), []).append(row[2:])
    current = {
        (m, a): v for m, a, v in con.execute("SELECT model_name, alias, version FROM model_alias")
    }
    for key in set(events) | set(current):
        history = events.get(key, [])
        at = None
        for kind, frm, to in history:
            if frm != at:
                found.append(f"{key[0]}@{key[1]}: an event moves from v{frm}, but it was at v{at}")
            if kind != "remove" and frm == to:
                found.append(f"{key[0]}@{key[1]}: a no-op move v{frm} -> v{to} is in the history")
            at = None if kind == "remove" else to
        if current.get(key) != at:
            found.append(f"{key[0]}@{key[1]} is v{current.get(key)} but its history ends at v{at}")
    return found


def live_pid(pid: int) -> bool:
    """For tests that kill a process: is it still there (and not a zombie)?"""
    return _process_alive(pid, None) and os.path.exists(f"/proc/{pid}")
