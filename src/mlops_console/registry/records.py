"""The registry's records: a model, a model version, an alias move, and references.

References: `churn` (the latest version), `churn/3` (version 3), `churn@champion` (the
version an alias points to now).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from mlops_console.errors import MlopsError


@dataclass
class RegisteredModel:
    """A model as `ws.models.list()` gives it: its versions counted, its aliases."""

    name: str
    description: str
    versions: int
    latest_version: int | None
    aliases: dict[str, int]
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_REF = re.compile(r"(?P<name>[^@/]+)(?:@(?P<alias>[^@/]+)|/(?P<version>\d+))?")


@dataclass
class ModelVersion:
    name: str
    version: int
    run_id: str | None
    artifact_hash: str
    status: str
    signature: dict[str, Any]
    metrics: dict[str, float]
    lineage: dict[str, Any]
    checks: list[dict[str, Any]]
    description: str
    intended_use: str
    created_at: float
    created_by: str
    aliases: list[str] = field(default_factory=list)
    gates: dict[str, Any] = field(default_factory=dict)
    gates_passed: bool | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "aliases": self.aliases,
            "status": self.status,
            "run_id": self.run_id,
            "artifact_hash": self.artifact_hash,
            "signature": self.signature,
            "metrics": self.metrics,
            "checks": self.checks,
            "description": self.description,
            "intended_use": self.intended_use,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "gates": self.gates,
            "gates_passed": self.gates_passed,
            "lineage": self.lineage,
        }


@dataclass
class AliasMove:
    model: str
    alias: str
    kind: str  # set, rollback, remove; "unchanged" is returned, never recorded
    from_version: int | None
    to_version: int | None
    at: float
    actor: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_VERSION_COLS = (
    "model_name, version, run_id, artifact_hash, status, signature, metrics, lineage, "
    "checks, description, intended_use, created_at, created_by, gates, gates_passed"
)


def _version_from_row(row, aliases: list[str]) -> ModelVersion:
    return ModelVersion(
        name=row[0],
        version=row[1],
        run_id=row[2],
        artifact_hash=row[3],
        status=row[4],
        signature=json.loads(row[5]),
        metrics=json.loads(row[6]),
        lineage=json.loads(row[7]),
        checks=json.loads(row[8]),
        description=row[9],
        intended_use=row[10],
        created_at=row[11],
        created_by=row[12],
        aliases=aliases,
        gates=json.loads(row[13]),
        gates_passed=None if row[14] is None else bool(row[14]),
    )


def parse_ref(ref: str) -> tuple[str, str | None, int | None]:
    m = _REF.fullmatch(ref.strip())
    if not m:
        raise MlopsError(
            f"{ref!r} is not a model reference; use NAME, NAME/VERSION or NAME@ALIAS "
            "(e.g. churn/3, churn@champion)."
        )
    version = m.group("version")
    return m.group("name"), m.group("alias"), int(version) if version else None
