"""`ws.data`: register datasets, ingest versions, read them, compare them.

A version is an immutable Parquet snapshot under `.mlops/lake/datasets/NAME/`, named by
the content hash of its source files; each process reads it with its own in-memory
DuckDB, so no process ever holds a lock another one needs.
"""

from __future__ import annotations

import builtins
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.data import snapshots
from mlops_console.data.ingest import hash_sources, read_hashed, refuse_binary
from mlops_console.data.reading import expand
from mlops_console.data.records import (
    _COLS,
    Dataset,
    DatasetVersion,
    IngestResult,
    _from_row,
)
from mlops_console.errors import Conflict, MlopsError, NotFound
from mlops_console.names import check_name, inside

if TYPE_CHECKING:
    from mlops_console.data import contract as contracts
    from mlops_console.workspace import Workspace


class DatasetStore:
    def __init__(self, ws: Workspace):
        self.ws = ws
        self.lake = ws.state / "lake" / "datasets"
        self.contract_dir = ws.root / "contracts"

    # --- registering ---------------------------------------------------------------------

    def add(
        self,
        name: str,
        source: str,
        timestamp: str | None = None,
        entities: list[str] | None = None,
        description: str = "",
        read_options: dict[str, Any] | None = None,
    ) -> Dataset:
        """Register a dataset (its files are read by `ingest`).

        `read_options` (delimiter, decimal, thousands, na_values, encoding, date_formats)
        say how its CSV files are read; those not given are sniffed from the first file.
        The result is stored and used on every ingest."""
        from mlops_console.data.read_options import choose

        check_name("dataset", name)
        paths = expand(source, self.ws.root)  # fail now if the glob matches nothing
        refuse_binary(self, paths)  # before sniffing: a binary file is no CSV to sniff
        options = choose(paths[0], read_options)
        with self.ws.db.write() as conn:
            if conn.exec_driver_sql("SELECT 1 FROM dataset WHERE name = ?", (name,)).first():
                raise Conflict(
                    f"Dataset {name!r} exists already; `mlops data ingest {name}` takes a new version."
                )
            conn.exec_driver_sql(
                "INSERT INTO dataset (name, source, timestamp_column, entity_columns, description, "
                "created_at, read_options) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    source,
                    timestamp,
                    json.dumps(list(entities or [])),
                    description,
                    time.time(),
                    json.dumps(options, ensure_ascii=False),
                ),
            )
        return self.get(name)

    def get(self, name: str) -> Dataset:
        with self.ws.db.read() as conn:
            row = conn.exec_driver_sql(
                "SELECT name, source, timestamp_column, entity_columns, description, created_at, "
                "current_version, read_options FROM dataset WHERE name = ?",
                (name,),
            ).first()
            if row is None:
                raise NotFound(
                    f"No dataset named {name!r}. `mlops data list` shows them; "
                    "`mlops data add` registers one."
                )
            counts = dict(
                conn.exec_driver_sql(
                    "SELECT status, count(*) FROM dataset_version WHERE dataset_name = ? GROUP BY status",
                    (name,),
                ).all()
            )
        return Dataset(
            name=row[0],
            source=row[1],
            timestamp=row[2],
            entities=json.loads(row[3]),
            description=row[4],
            created_at=row[5],
            current_version=row[6],
            versions=sum(counts.values()),
            quarantined=counts.get("quarantined", 0),
            contract=str(self.contract_path(name).relative_to(self.ws.root)),
            read_options=json.loads(row[7] or "{}"),
        )

    def list(self) -> list[Dataset]:
        with self.ws.db.read() as conn:
            names = [r[0] for r in conn.exec_driver_sql("SELECT name FROM dataset ORDER BY name")]
        return [self.get(n) for n in names]

    def contract_path(self, name: str) -> Path:
        return inside(self.contract_dir, f"{check_name('dataset', name)}.toml")

    def contract(self, name: str) -> contracts.Contract | None:
        # data.contract builds pydantic models on import: only commands that check or
        # write a contract pay for it, never a listing
        from mlops_console.data.contract_file import load

        path = self.contract_path(name)
        return load(path) if path.exists() else None

    def edit(
        self,
        name: str,
        source: str | None = None,
        timestamp: str | None = None,
        entities: builtins.list[str] | None = None,
        description: str | None = None,
    ) -> tuple[Dataset, builtins.list[str]]:
        """Change a dataset's fields (None: keep; '' or []: clear the timestamp, entities).

        Returns the dataset and notes: columns the current version does not have, which
        the next ingest will require. Versions taken already stay as they are.
        """
        ds = self.get(name)
        changes: dict[str, Any] = {}
        if source is not None:
            expand(source, self.ws.root)  # fail now if it matches nothing
            changes["source"] = source
        if timestamp is not None:
            changes["timestamp_column"] = timestamp or None
        if entities is not None:
            changes["entity_columns"] = json.dumps(list(entities))
        if description is not None:
            changes["description"] = description
        if not changes:
            raise MlopsError(
                f"Nothing to change for {name}: give --source, --timestamp, --entities or "
                "--description."
            )
        with self.ws.db.write() as conn:
            conn.exec_driver_sql(
                f"UPDATE dataset SET {', '.join(f'{k} = ?' for k in changes)} WHERE name = ?",
                (*changes.values(), name),
            )
        notes = []
        if ds.current_version is not None:
            have = {c["name"] for c in self.version(name).columns}
            wanted = ([timestamp] if timestamp else []) + list(entities or [])
            missing = [c for c in wanted if c not in have]
            if missing:
                notes.append(
                    f"v{ds.current_version} has no column(s) {', '.join(missing)}; the next "
                    f"`mlops data ingest {name}` requires them."
                )
        return self.get(name), notes

    def models_using(self, name: str) -> builtins.list[str]:
        """Model versions trained on a version of the dataset ('churn/2 (churn v1)'), by
        their lineage or their run's recorded inputs."""
        with self.ws.db.read() as conn:
            return _models_using(conn, name)

    def remove(self, name: str) -> dict[str, Any]:
        """Unregister a dataset and its versions, unless a registered model was trained on
        one of them. Its snapshots stay in the lake until `mlops gc` sweeps them."""
        ds = self.get(name)
        with self.ws.db.write() as conn:
            used = _models_using(conn, name)
            if used:
                more = f" and {len(used) - 5} more" if len(used) > 5 else ""
                raise Conflict(
                    f"Dataset {name!r} cannot be removed: registered model version(s) were "
                    f"trained on it: {', '.join(used[:5])}{more}. Their lineage must stay "
                    "reproducible; `mlops models delete` those versions first if they are "
                    "no longer needed."
                )
            versions = [
                r[0]
                for r in conn.exec_driver_sql(
                    "SELECT version FROM dataset_version WHERE dataset_name = ?", (name,)
                )
            ]
            runs = conn.exec_driver_sql(
                "SELECT count(DISTINCT run_id) FROM run_input WHERE name = ?", (name,)
            ).scalar()
            for v in versions:
                conn.exec_driver_sql(
                    "DELETE FROM object_ref WHERE kind = 'dataset_version' AND owner = ?",
                    (f"{name}/{v}",),
                )
            conn.exec_driver_sql("DELETE FROM dataset_version WHERE dataset_name = ?", (name,))
            conn.exec_driver_sql("DELETE FROM dataset WHERE name = ?", (name,))
        contract = self.contract_path(name)
        return {
            "name": name,
            "source": ds.source,
            "versions_removed": len(versions),
            "runs_that_read_it": runs,
            "lake": str(inside(self.lake, name).relative_to(self.ws.root)),
            "contract": (str(contract.relative_to(self.ws.root)) if contract.exists() else None),
        }

    # --- ingesting -------------------------------------------------------------------------

    def ingest(self, name: str, force: bool = False, stage=lambda s: None) -> IngestResult:
        """Take a new version from the dataset's source files (see data/ingest.py).

        Unchanged files give no new version. A version that breaks the contract is kept in
        quarantine (not used) unless `force` accepts it deliberately.
        """
        from mlops_console.data.ingest import ingest

        return ingest(self, name, force, stage)

    def read_hashed(self, hashed, ds: Dataset | None = None):
        """Read the files as hashed (with their reading options); refuse any that changed
        since they were hashed."""
        return read_hashed(self, hashed, ds)

    def unchanged_since(self, name: str) -> DatasetVersion | None:
        """The version the source files still hash to if ingesting them would change
        nothing (it is the current one, or the newest one taken), as after a touch or a
        re-save of the same bytes; else None (new files, or files put back to an earlier
        version, which an ingest makes current again)."""
        ds = self.get(name)
        match = self.by_digest(name, hash_sources(self, ds)[2])
        if match is None:
            return None
        newest = self.versions(name)[-1].version
        return match if match.version in (ds.current_version, newest) else None

    def by_digest(self, name: str, digest: str) -> DatasetVersion | None:
        with self.ws.db.read() as conn:
            row = conn.exec_driver_sql(
                f"SELECT {_COLS} FROM dataset_version WHERE dataset_name = ? AND digest = ? "
                "ORDER BY version DESC LIMIT 1",
                (name, digest),
            ).first()
        return None if row is None else _from_row(row)

    # --- reading -----------------------------------------------------------------------------

    def versions(self, name: str) -> builtins.list[DatasetVersion]:
        self.get(name)
        with self.ws.db.read() as conn:
            return [
                _from_row(r)
                for r in conn.exec_driver_sql(
                    f"SELECT {_COLS} FROM dataset_version WHERE dataset_name = ? ORDER BY version",
                    (name,),
                )
            ]

    def version(self, name: str, version: int | None = None) -> DatasetVersion:
        """A version (default: the current one, the latest accepted)."""
        ds = self.get(name)
        if version is None:
            version = ds.current_version
            if version is None:
                raise NotFound(
                    f"Dataset {name!r} has no accepted version yet. `mlops data ingest "
                    f"{name}` takes one; `mlops data show {name}` explains any quarantine."
                )
        with self.ws.db.read() as conn:
            row = conn.exec_driver_sql(
                f"SELECT {_COLS} FROM dataset_version WHERE dataset_name = ? AND version = ?",
                (name, version),
            ).first()
        if row is None:
            raise NotFound(f"Dataset {name!r} has no version {version}.")
        return _from_row(row)

    def path(self, name: str, version: int | None = None, allow_quarantined: bool = False) -> Path:
        dv = self.version(name, version)
        if not dv.usable and not allow_quarantined:
            raise Conflict(
                f"{name} v{dv.version} is quarantined and is not used; accept it with "
                f"`mlops data ingest {name} --force` if you must."
            )
        return snapshots.verified_path(self, dv)

    def snapshot_state(self, dv: DatasetVersion, full: bool = False) -> str:
        """'ok' (present and framed as Parquet; `full`: 'verified', hashed), 'missing',
        'damaged' or 'unreadable'."""
        return snapshots.check(self, dv, full=full)

    def rebuild(self, name: str, version: int | None = None) -> snapshots.Rebuilt:
        """Write a version's snapshot again from its source files (default: the current)."""
        return snapshots.rebuild(self, self.version(name, version))

    def read(
        self,
        name: str,
        version: int | None = None,
        run=None,
        columns: builtins.list[str] | None = None,
    ):
        """The version as a pandas DataFrame; with `run`, the run records what it read."""
        import pyarrow.parquet as pq

        dv = self.version(name, version)
        path = self.path(name, dv.version)
        frame = pq.read_table(path, columns=columns).to_pandas()
        if run is not None:
            self.record_use(run, dv)
        return frame

    def record_use(self, run, dv: DatasetVersion) -> None:
        run.log_dataset(
            dv.dataset,
            dv.digest,
            version=f"v{dv.version}",
            rows=dv.rows,
            source=dv.lake_path,
            forced=dv.status == "forced",
        )

    def profile(self, name: str, version: int | None = None) -> dict[str, Any]:
        dv = self.version(name, version)
        if dv.profile_hash is None:
            return {}
        return json.loads(self.ws.artifacts.get_bytes(dv.profile_hash))

    def diff(self, name: str, v1: int | None = None, v2: int | None = None) -> dict[str, Any]:
        from mlops_console.data.diff import diff_versions

        versions = self.versions(name)
        if v2 is None:
            v2 = versions[-1].version if versions else None
        if v1 is None:
            earlier = [v.version for v in versions if v.version < (v2 or 0) and v.usable]
            v1 = earlier[-1] if earlier else None
        if v1 is None or v2 is None:
            raise MlopsError(f"Dataset {name!r} needs two versions to diff; give V1 V2.")
        return diff_versions(self, name, v1, v2)


def _models_using(conn, name: str) -> list[str]:
    rows = conn.exec_driver_sql(
        "SELECT mv.model_name, mv.version, ri.version FROM model_version mv "
        "JOIN run_input ri ON ri.run_id = mv.run_id WHERE ri.name = ? "
        "UNION SELECT mv.model_name, mv.version, json_extract(d.value, '$.version') "
        "FROM model_version mv, json_each(mv.lineage, '$.datasets') d "
        "WHERE json_valid(mv.lineage) AND json_extract(d.value, '$.name') = ? "
        "ORDER BY 1, 2",
        (name, name),
    ).all()
    found: dict[str, set[str]] = {}
    for model, version, dv in rows:
        found.setdefault(f"{model}/{version}", set()).add(str(dv))
    return [f"{ref} ({name} {', '.join(sorted(vs))})" for ref, vs in found.items()]
