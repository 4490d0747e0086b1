"""Dataset snapshots in the lake: verified before they are read, rebuilt from their files.

Every reader of a dataset version (training, testing, scoring, features, diffs) gets the
snapshot's path from `DatasetStore.path`, which checks the file against the sha256
recorded when it was written. A process hashes each snapshot once: the check is cached
by (path, size, mtime_ns), which any rewrite of the file moves.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.data.reading import DataError, SourceFile, _stat_hash
from mlops_console.names import inside

if TYPE_CHECKING:
    from mlops_console.data.datasets import DatasetStore, DatasetVersion

# (path, size, mtime_ns) -> the sha256 this process found the file to have
_VERIFIED: dict[tuple[str, int, int], str] = {}


class SnapshotError(DataError):
    """A version's Parquet snapshot is missing or damaged, or cannot be rebuilt."""


def lake_file(store: DatasetStore, dv: DatasetVersion) -> Path:
    return inside(store.ws.state / "lake", dv.lake_path)


def verified_path(store: DatasetStore, dv: DatasetVersion) -> Path:
    """The version's snapshot, its bytes checked against the recorded sha256."""
    state, path = _verify(store, dv)
    if state != "verified":
        raise snapshot_error(store, dv, state)
    return path


def check(store: DatasetStore, dv: DatasetVersion, full: bool = False) -> str:
    """'verified' or 'ok' (a cheap look: the file is there and framed as Parquet is),
    'missing', 'damaged' or 'unreadable'. `full` hashes the file (once per process)."""
    if full:
        return _verify(store, dv)[0]
    path = lake_file(store, dv)
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if _VERIFIED.get((str(path), st.st_size, st.st_mtime_ns)) == dv.snapshot_sha256:
                return "verified"
            if st.st_size < 12:
                return "damaged"
            head = fh.read(4)
            fh.seek(-8, os.SEEK_END)
            tail = fh.read(8)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"
    # Parquet: PAR1, the data, the footer, the footer's length (4 bytes), PAR1
    footer = int.from_bytes(tail[:4], "little")
    framed = head == b"PAR1" and tail[4:] == b"PAR1" and footer + 12 <= st.st_size
    return "ok" if framed else "damaged"


def _verify(store: DatasetStore, dv: DatasetVersion) -> tuple[str, Path]:
    path = lake_file(store, dv)
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            key = (str(path), st.st_size, st.st_mtime_ns)
            if _VERIFIED.get(key) == dv.snapshot_sha256:
                return "verified", path
            sha = hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        return "missing", path
    except OSError:
        return "unreadable", path
    if sha != dv.snapshot_sha256:
        return "damaged", path
    _VERIFIED[key] = sha
    return "verified", path


def snapshot_error(store: DatasetStore, dv: DatasetVersion, state: str) -> SnapshotError:
    """What is wrong with the snapshot and what to do: rebuild it, or restore it."""
    shown = _shown(store, lake_file(store, dv))
    why = {
        "damaged": "its bytes do not match the sha256 recorded when it was written",
        "unreadable": "it cannot be opened",
    }.get(state)
    head = f"{dv.dataset} v{dv.version}'s snapshot is {state} ({shown}" + (
        f": {why})" if why else ")"
    )
    rebuild = f"`mlops data rebuild {dv.dataset} {dv.version}`"
    _, changed = recorded_sources(store, dv)
    if not changed:
        return SnapshotError(f"{head}; {rebuild} rebuilds it from its source files.")
    return SnapshotError(
        f"{head}, and its source files changed since it was taken ({'; '.join(changed[:3])}), "
        f"so it cannot be rebuilt from them. Restore {shown} from a backup, or put those "
        f"files back as they were and run {rebuild}."
    )


def recorded_sources(store: DatasetStore, dv: DatasetVersion) -> tuple[list[SourceFile], list[str]]:
    """The version's source files as they are now, and how they differ from the record."""
    found, changed = [], []
    for s in dv.sources:
        path = Path(s["path"]) if os.path.isabs(s["path"]) else store.ws.root / s["path"]
        if not path.is_file():
            changed.append(f"{s['path']} is gone")
            continue
        if path.stat().st_size != s["size"]:
            changed.append(f"{s['path']} has another size")
            continue
        now = _stat_hash(path, store.ws.root)
        if now.sha256 != s["sha256"]:
            changed.append(f"{s['path']} has other bytes")
        else:
            found.append(now)
    return found, changed


@dataclass
class Rebuilt:
    version: DatasetVersion
    was: str  # what the snapshot was: verified, ok, missing, damaged, unreadable
    rewritten: bool  # False: it was intact and is left as it is
    digest_changed: bool  # the new file has other bytes (same data); the record says so

    @property
    def message(self) -> str:
        dv = self.version
        if not self.rewritten:
            return f"{dv.dataset} v{dv.version}'s snapshot is intact; nothing to rebuild."
        note = (
            "; the Parquet writer encodes it differently now, so its recorded sha256 was "
            "updated (the same rows and values, checked against the version's profile)"
            if self.digest_changed
            else ""
        )
        return (
            f"{dv.dataset} v{dv.version}: the snapshot was {self.was}; rebuilt it from its "
            f"source files ({dv.rows} rows){note}."
        )


def rebuild(store: DatasetStore, dv: DatasetVersion) -> Rebuilt:
    """Write the snapshot again from the recorded source files (their sha256 checked)."""
    was = check(store, dv, full=True)
    if was == "verified":
        return Rebuilt(dv, was, False, False)
    hashed, changed = recorded_sources(store, dv)
    if changed:
        raise SnapshotError(
            f"{dv.dataset} v{dv.version} cannot be rebuilt: its source files changed since "
            f"it was taken ({'; '.join(changed[:3])}). Restore "
            f"{_shown(store, lake_file(store, dv))} from a backup, or put those files back as "
            "they were and rebuild again."
        )
    # read as ingest reads: with the dataset's stored reading options
    table = store.read_hashed(hashed, store.get(dv.dataset))
    final = lake_file(store, dv)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp, sha = stage_parquet(table, final.parent)
    try:
        # The same table gives the same bytes with the same pyarrow, so normally the
        # digest matches. Another pyarrow version may encode the same data differently
        # (its name is written in the footer): then the data must be the same as the
        # version recorded — rows, column types and profile — and only then does the
        # recorded digest change. The lost file itself cannot be compared with.
        if sha != dv.snapshot_sha256:
            _require_same_data(store, dv, table)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    digest_changed = sha != dv.snapshot_sha256
    if digest_changed:
        with store.ws.db.write() as conn:
            conn.exec_driver_sql(
                "UPDATE dataset_version SET snapshot_sha256 = ? WHERE dataset_name = ? "
                "AND version = ?",
                (sha, dv.dataset, dv.version),
            )
        dv = store.version(dv.dataset, dv.version)
    return Rebuilt(dv, was, True, digest_changed)


def stage_parquet(table, folder: Path) -> tuple[Path, str]:
    """Write `table` to a temporary file in `folder`, synced and read-only: (path, sha256)."""
    import pyarrow.parquet as pq

    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".write-", suffix=".parquet")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
            sha = hashlib.file_digest(fh, "sha256").hexdigest()
        os.chmod(tmp, 0o400)  # immutable, and the owner's alone
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return Path(tmp), sha


def _require_same_data(store: DatasetStore, dv: DatasetVersion, table) -> None:
    import duckdb

    from mlops_console.data.profile import profile_table
    from mlops_console.data.types import logical_type

    columns = [{"name": f.name, "type": logical_type(f.type)} for f in table.schema]
    differs = []
    if table.num_rows != dv.rows:
        differs.append(f"{table.num_rows} rows, not {dv.rows}")
    if columns != dv.columns:
        differs.append("other columns or types")
    if not differs and dv.profile_hash is not None:
        con = duckdb.connect()
        try:
            con.register("data", table)
            now = json.loads(json.dumps(profile_table(con, "data", table.schema)))
        finally:
            con.close()
        if not _close(now, store.profile(dv.dataset, dv.version)):
            differs.append("other values (the column profiles differ)")
    if differs:
        raise SnapshotError(
            f"{dv.dataset} v{dv.version}: its unchanged source files now read into other "
            f"data ({'; '.join(differs)}), so the snapshot was not rebuilt; the way the "
            "files are read changed (reading options or the pyarrow version). Restore "
            f"{_shown(store, lake_file(store, dv))} from a backup."
        )


def _close(a: Any, b: Any) -> bool:
    """Equal, floats within rounding (DuckDB sums in parallel, in no fixed order)."""
    if isinstance(a, float) and isinstance(b, (int, float)):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _shown(store: DatasetStore, path: Path) -> str:
    try:
        return path.relative_to(store.ws.root).as_posix()
    except ValueError:
        return str(path)
