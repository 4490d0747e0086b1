"""The data catalogue's records: a dataset, one of its versions, an ingest's outcome."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

ACCEPTED = ("accepted", "forced")


@dataclass
class DatasetVersion:
    dataset: str
    version: int
    digest: str
    status: str
    rows: int
    columns: list[dict[str, str]]
    sources: list[dict[str, Any]]
    lake_path: str
    snapshot_sha256: str
    profile_hash: str | None
    report: list[dict[str, Any]]
    created_at: float
    created_by: str

    @property
    def usable(self) -> bool:
        return self.status in ACCEPTED

    @property
    def failed_rules(self) -> list[dict[str, Any]]:
        return [r for r in self.report if not r["passed"]]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class IngestResult:
    version: DatasetVersion
    created: bool  # False: the data was unchanged and the existing version is returned
    message: str


_COLS = (
    "dataset_name, version, digest, status, rows, columns, sources, lake_path, "
    "snapshot_sha256, profile_hash, report, created_at, created_by"
)


def _from_row(row) -> DatasetVersion:
    return DatasetVersion(
        dataset=row[0],
        version=row[1],
        digest=row[2],
        status=row[3],
        rows=row[4],
        columns=json.loads(row[5]),
        sources=json.loads(row[6]),
        lake_path=row[7],
        snapshot_sha256=row[8],
        profile_hash=row[9],
        report=json.loads(row[10]),
        created_at=row[11],
        created_by=row[12],
    )


@dataclass
class Dataset:
    """A registered dataset, as `ws.data.get` and `ws.data.list` give it."""

    name: str
    source: str
    timestamp: str | None
    entities: list[str]
    description: str
    created_at: float
    current_version: int | None
    versions: int
    quarantined: int
    contract: str  # the contract file, relative to the workspace
    read_options: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
