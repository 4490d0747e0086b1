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

    def to_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "kept": self.kept,
            "removed": len(self.removed),
            "removed_hashes": self.removed,
            "skipped_young": self.young,
            "bytes_freed": self.bytes_freed,
            "temp_files_removed": self.temp_files_removed,
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
    for tmp in store.stale_temp_files(older_than=max(grace_seconds, 60)):
        report.temp_files_removed += 1
        if not dry_run:
            tmp.unlink(missing_ok=True)
    return report
