"""`mlops gc`: remove artifacts that nothing in the registry refers to."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_console.errors import GcRefused

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


@dataclass
class GcReport:
    dry_run: bool
    kept: int = 0
    removed: list[str] = field(default_factory=list)
    young: int = 0  # unreferenced but within the grace period
    bytes_freed: int = 0
    temp_files_removed: int = 0
    lake_files_removed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "kept": self.kept,
            "removed": len(self.removed),
            "removed_hashes": self.removed,
            "skipped_young": self.young,
            "bytes_freed": self.bytes_freed,
            "temp_files_removed": self.temp_files_removed,
            "lake_files_removed": self.lake_files_removed,
        }


def collect_garbage(
    ws: Workspace, dry_run: bool = False, grace_seconds: int = 3600, trust_registry: bool = False
) -> GcReport:
    """Remove what nothing refers to; refuse (GcRefused) to remove more than half of what
    is stored unless `trust_registry`: a registry that knows so little is more likely an
    old backup or a replaced file than the truth."""
    store = ws.artifacts
    report = GcReport(dry_run=dry_run)
    cutoff = time.time() - grace_seconds
    # Read the references after listing the objects: an object stored after the listing
    # is not considered at all, and one stored before it is young (grace period).
    objects = list(store.iter_objects())
    with ws.db.read() as conn:
        referenced = {r[0] for r in conn.exec_driver_sql("SELECT DISTINCT hash FROM object_ref")}
    doomed: list[tuple[str, int]] = []
    for digest, path in objects:
        if digest in referenced:
            report.kept += 1
            continue
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if st.st_mtime > cutoff:
            report.young += 1
            continue
        doomed.append((digest, st.st_size))
    lake, snapshots, lake_doomed = _lake_candidates(ws, cutoff)
    stored = len(objects) + snapshots
    if not trust_registry and 2 * (len(doomed) + len(lake_doomed)) > stored:
        raise GcRefused(
            f"gc would remove {len(doomed) + len(lake_doomed)} of the {stored} artifacts and "
            f"snapshots in {store.root} and {lake}, more than half: {ws.db.path} does not "
            "refer to them, as when it was restored from an old backup or replaced. Check "
            "it is the right registry (`mlops runs list`, `mlops models list`), then run "
            "`mlops gc --trust-registry` (with --dry-run to list them first); nothing was "
            "removed."
        )
    for digest, size in doomed:
        report.removed.append(digest)
        report.bytes_freed += size
        if not dry_run:
            store.remove(digest)
    for path, rel in lake_doomed:
        try:
            size = path.stat().st_size
            if not dry_run:
                path.unlink()
        except FileNotFoundError:  # another gc (or a rebuild's swap) got there first
            continue
        report.lake_files_removed.append(rel)
        report.bytes_freed += size
    for tmp in store.stale_temp_files(older_than=max(grace_seconds, 60)):
        report.temp_files_removed += 1
        if not dry_run:
            tmp.unlink(missing_ok=True)
    return report


def _lake_candidates(ws: Workspace, cutoff: float) -> tuple[Path, int, list[tuple[Path, str]]]:
    """The lake, how many snapshots it holds, and the old ones no dataset version refers
    to (an ingest that failed after writing its snapshot, or a deleted dataset)."""
    lake = ws.state / "lake"
    folder = lake / "datasets"
    if not folder.exists():
        return lake, 0, []
    with ws.db.read() as conn:
        used = {r[0] for r in conn.exec_driver_sql("SELECT lake_path FROM dataset_version")}
    paths = sorted(folder.rglob("*.parquet"))
    doomed = []
    for path in paths:
        rel = path.relative_to(lake).as_posix()
        try:
            old = path.stat().st_mtime <= cutoff
        except FileNotFoundError:
            continue
        if rel not in used and old:
            doomed.append((path, rel))
    return lake, len(paths), doomed
