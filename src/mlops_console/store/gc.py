"""`mlops gc`: remove artifacts that nothing in the registry refers to."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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


def collect_garbage(ws: Workspace, dry_run: bool = False, grace_seconds: int = 3600) -> GcReport:
    store = ws.artifacts
    report = GcReport(dry_run=dry_run)
    cutoff = time.time() - grace_seconds
    # Read the references after listing the objects: an object stored after the listing
    # is not considered at all, and one stored before it is young (grace period).
    objects = list(store.iter_objects())
    with ws.db.read() as conn:
        referenced = {r[0] for r in conn.exec_driver_sql("SELECT DISTINCT hash FROM object_ref")}
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
        report.removed.append(digest)
        report.bytes_freed += st.st_size
        if not dry_run:
            store.remove(digest)
    _sweep_lake(ws, report, cutoff, dry_run)
    for tmp in store.stale_temp_files(older_than=max(grace_seconds, 60)):
        report.temp_files_removed += 1
        if not dry_run:
            tmp.unlink(missing_ok=True)
    return report


def _sweep_lake(ws: Workspace, report: GcReport, cutoff: float, dry_run: bool) -> None:
    """Parquet snapshots no dataset version refers to (an ingest that failed after
    writing its snapshot, or a deleted dataset)."""
    lake = ws.state / "lake"
    folder = lake / "datasets"
    if not folder.exists():
        return
    with ws.db.read() as conn:
        used = {r[0] for r in conn.exec_driver_sql("SELECT lake_path FROM dataset_version")}
    for path in sorted(folder.rglob("*.parquet")):
        rel = path.relative_to(lake).as_posix()
        if rel in used or path.stat().st_mtime > cutoff:
            continue
        report.lake_files_removed.append(rel)
        report.bytes_freed += path.stat().st_size
        if not dry_run:
            path.unlink()
