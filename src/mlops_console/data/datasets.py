"""`ws.data`: register datasets, ingest versions, read them, compare them.

A version is an immutable Parquet snapshot under `.mlops/lake/datasets/NAME/`, named by
the content hash of its source files; each process reads it with its own in-memory
DuckDB, so no process ever holds a lock another one needs.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.data import snapshots
from mlops_console.data.reading import CSV_SUFFIXES, DataError, _stat_hash, expand, read_file
from mlops_console.data.sniff_binary import describe_binary
from mlops_console.data.types import logical_type
from mlops_console.errors import Conflict, MlopsError, NotFound
from mlops_console.names import check_name, inside
from mlops_console.users import current_user

if TYPE_CHECKING:
    from mlops_console.data import contract as contracts
    from mlops_console.workspace import Workspace

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
    ) -> dict[str, Any]:
        """Register a dataset (its files are read by `ingest`).

        `read_options` (delimiter, decimal, thousands, na_values, encoding, date_formats)
        say how its CSV files are read; those not given are sniffed from the first file.
        The result is stored and used on every ingest."""
        from mlops_console.data.read_options import choose

        check_name("dataset", name)
        paths = expand(source, self.ws.root)  # fail now if the glob matches nothing
        self._refuse_binary(paths)  # before sniffing: a binary file is no CSV to sniff
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

    def get(self, name: str) -> dict[str, Any]:
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
        return {
            "name": row[0],
            "source": row[1],
            "timestamp": row[2],
            "entities": json.loads(row[3]),
            "description": row[4],
            "created_at": row[5],
            "current_version": row[6],
            "versions": sum(counts.values()),
            "quarantined": counts.get("quarantined", 0),
            "contract": str(self.contract_path(name).relative_to(self.ws.root)),
            "read_options": json.loads(row[7] or "{}"),
        }

    def list(self) -> list[dict[str, Any]]:
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
    ) -> tuple[dict[str, Any], builtins.list[str]]:
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
        if ds["current_version"] is not None:
            have = {c["name"] for c in self.version(name).columns}
            wanted = ([timestamp] if timestamp else []) + list(entities or [])
            missing = [c for c in wanted if c not in have]
            if missing:
                notes.append(
                    f"v{ds['current_version']} has no column(s) {', '.join(missing)}; the next "
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
            "source": ds["source"],
            "versions_removed": len(versions),
            "runs_that_read_it": runs,
            "lake": str(inside(self.lake, name).relative_to(self.ws.root)),
            "contract": (str(contract.relative_to(self.ws.root)) if contract.exists() else None),
        }

    # --- ingesting -------------------------------------------------------------------------

    def ingest(self, name: str, force: bool = False, stage=lambda s: None) -> IngestResult:
        """Take a new version from the dataset's source files.

        Unchanged files give no new version. A version that breaks the contract is kept in
        quarantine (not used) unless `force` accepts it deliberately.
        """
        import duckdb

        ds = self.get(name)
        stage(f"hash the files of {ds['source']}")
        paths, hashed, digest = self._hash_sources(ds)
        existing = self._by_digest(name, digest)
        if existing is not None:
            return self._reingest(existing, force, self._repair(existing, stage))

        stage(f"read {len(paths)} file(s)")
        from mlops_console.data import contract as contracts
        from mlops_console.data.contract_file import dumps

        table = self.read_hashed(hashed)
        self._require_columns(table, ds, hashed)
        con = duckdb.connect()
        try:
            con.register("data", table)
            stage(f"profile {table.num_rows} rows")
            from mlops_console.data.profile import profile_table

            profile = profile_table(con, "data", table.schema)
            contract = self.contract(name)
            contract_note = ""
            if contract is None:
                contract = contracts.infer(name, table, profile, ds["timestamp"], ds["entities"])
                contract_note = "inferred"
            stage("check the data contract")
            report = [r.to_dict() for r in contracts.check(con, "data", table.schema, contract)]
        finally:
            con.close()
        failed = [r for r in report if not r["passed"]]
        status = "accepted" if not failed else ("forced" if force else "quarantined")

        stage("write the Parquet snapshot")
        version_dir = inside(self.lake, check_name("dataset", name))
        version_dir.mkdir(parents=True, exist_ok=True)
        snapshot, snap_sha = _write_parquet(table, version_dir, digest)
        profile_hash = self.ws.artifacts.put_bytes(json.dumps(profile).encode())
        if contract_note:
            self.contract_dir.mkdir(exist_ok=True)
            # atomically: a concurrent ingest may be reading it this moment
            _write_text_atomic(
                self.contract_path(name), dumps(contract, "Inferred from version 1.")
            )
        contract_sha = (
            hashlib.sha256(self.contract_path(name).read_bytes()).hexdigest()
            if self.contract_path(name).exists()
            else None
        )
        columns = [{"name": f.name, "type": logical_type(f.type)} for f in table.schema]
        now = time.time()
        with self.ws.db.write() as conn:
            # Another ingest of the same files may have finished since this one looked:
            # one version per digest, and this one answers as if the files were unchanged.
            raced = conn.exec_driver_sql(
                f"SELECT {_COLS} FROM dataset_version WHERE dataset_name = ? AND digest = ? "
                "ORDER BY version DESC LIMIT 1",
                (name, digest),
            ).first()
            if raced is None:
                version = conn.exec_driver_sql(
                    "SELECT coalesce(max(version), 0) + 1 FROM dataset_version WHERE dataset_name = ?",
                    (name,),
                ).scalar()
                conn.exec_driver_sql(
                    f"INSERT INTO dataset_version ({_COLS}, contract_sha256) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        version,
                        digest,
                        status,
                        table.num_rows,
                        json.dumps(columns),
                        json.dumps([h.to_dict() for h in hashed]),
                        snapshot.relative_to(self.ws.state / "lake").as_posix(),
                        snap_sha,
                        profile_hash,
                        json.dumps(report),
                        now,
                        current_user(),
                        contract_sha,
                    ),
                )
                conn.exec_driver_sql(
                    "INSERT OR IGNORE INTO object_ref (hash, kind, owner) VALUES (?, 'dataset_version', ?)",
                    (profile_hash, f"{name}/{version}"),
                )
                if status in ACCEPTED:
                    conn.exec_driver_sql(
                        "UPDATE dataset SET current_version = ? WHERE name = ?", (version, name)
                    )
        if raced is not None:
            return self._reingest(_from_row(raced), force)
        dv = self.version(name, version)
        if status == "accepted":
            msg = f"{name} v{version}: {dv.rows} rows accepted" + (
                f"; contract inferred and written to {self.contract_path(name).relative_to(self.ws.root)}"
                if contract_note
                else ""
            )
        elif status == "forced":
            msg = (
                f"{name} v{version}: {dv.rows} rows ACCEPTED WITH --force although "
                f"{len(failed)} contract rule(s) fail; runs that use it will say so"
            )
        else:
            msg = (
                f"{name} v{version} is QUARANTINED: {len(failed)} contract rule(s) fail. It is "
                f"not used. `mlops data show {name}` has the report; `--force` accepts it."
            )
        return IngestResult(dv, True, msg)

    def read_hashed(self, hashed, ds: dict[str, Any] | None = None):
        """Read the files as hashed (with the dataset's reading options, which
        `_hash_sources` attaches, or those of `ds`); refuse any that changed since."""
        import pyarrow as pa

        from mlops_console.data.read_options import ReadOptions

        tables = []
        for h in hashed:
            options, time_column = h.options, h.time_column
            if options is None and ds is not None:
                options, time_column = ReadOptions.from_dict(ds["read_options"]), ds["timestamp"]
            table = read_file(h.path, h.rel, options, time_column)
            st = h.path.stat()
            if (st.st_size, st.st_mtime) != (h.size, h.mtime):
                raise DataError(
                    f"{h.rel} changed while it was being read (size or modification time moved). "
                    "Wait until the file is complete, then ingest again."
                )
            tables.append(table)
        if len(tables) == 1:
            return tables[0]
        base = tables[0].schema
        for h, t in zip(hashed[1:], tables[1:], strict=True):
            for f in t.schema:
                i = base.get_field_index(f.name)
                if (
                    i >= 0
                    and logical_type(base.field(i).type) != logical_type(f.type)
                    and not (
                        {logical_type(base.field(i).type), logical_type(f.type)}
                        <= {"integer", "float"}
                    )
                ):
                    raise DataError(
                        f"Column {f.name!r} is {logical_type(base.field(i).type)} in {hashed[0].rel} "
                        f"but {logical_type(f.type)} in {h.rel}; the files of one dataset must agree."
                    )
        try:
            return pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(f"The files of dataset cannot be combined: {exc}") from None

    def _require_columns(self, table, ds, hashed) -> None:
        names = set(table.schema.names)
        files = ", ".join(h.rel for h in hashed)
        ts = ds["timestamp"]
        if ts and ts not in names:
            raise DataError(
                f"{files}: the timestamp column {ts!r} is missing (columns: "
                f"{', '.join(table.schema.names)})."
            )
        if ts and logical_type(table.schema.field(ts).type) not in ("timestamp", "date"):
            raise DataError(
                f"{files}: column {ts!r} should hold timestamps but holds "
                f"{logical_type(table.schema.field(ts).type)} values; use ISO 8601 "
                "(2025-01-31T12:00:00)."
            )
        missing = [e for e in ds["entities"] if e not in names]
        if missing:
            raise DataError(f"{files}: entity column(s) {', '.join(missing)} missing.")

    def _refuse_binary(self, paths: builtins.list[Path]) -> None:
        for p in paths:
            if p.suffix.lower() in CSV_SUFFIXES and (why := describe_binary(p, _shown(self, p))):
                raise DataError(why)

    def _hash_sources(self, ds: dict[str, Any]):
        """(paths, [SourceFile], digest): the digest names a version by its files' bytes."""
        paths = expand(ds["source"], self.ws.root)
        self._refuse_binary(paths)  # before hashing: a 2 GB file of zeros is not worth reading
        from mlops_console.data.read_options import ReadOptions

        options = ReadOptions.from_dict(ds.get("read_options"))
        hashed = [
            dataclasses.replace(
                _stat_hash(p, self.ws.root), options=options, time_column=ds["timestamp"]
            )
            for p in paths
        ]
        digest = hashlib.sha256("\n".join(sorted(h.sha256 for h in hashed)).encode()).hexdigest()
        return paths, hashed, digest

    def unchanged_since(self, name: str) -> DatasetVersion | None:
        """The version the source files still hash to if ingesting them would change
        nothing (it is the current one, or the newest one taken), as after a touch or a
        re-save of the same bytes; else None (new files, or files put back to an earlier
        version, which an ingest makes current again)."""
        ds = self.get(name)
        match = self._by_digest(name, self._hash_sources(ds)[2])
        if match is None:
            return None
        newest = self.versions(name)[-1].version
        return match if match.version in (ds["current_version"], newest) else None

    def _repair(self, dv: DatasetVersion, stage=lambda s: None) -> str:
        """Rebuild the snapshot of the version unchanged files hash to, if it is missing or
        damaged (its files are those it was taken from); '' or what was done."""
        if snapshots.check(self, dv, full=True) == "verified":
            return ""
        stage(f"rebuild the snapshot of {dv.dataset} v{dv.version}")
        return snapshots.rebuild(self, dv).message + " "

    def _reingest(self, existing: DatasetVersion, force: bool, note: str = "") -> IngestResult:
        name, v = existing.dataset, existing.version
        if existing.status == "forced" and not force:
            current = self.get(name)["current_version"]
            if current != v:  # a --force was for that moment: it is not taken again silently
                return IngestResult(
                    existing,
                    False,
                    f"{note}{name}: the files match v{v} again, which broke its contract and "
                    f"was accepted with --force; v{current} stays current. `mlops data ingest "
                    f"{name} --force` makes v{v} current again.",
                )
        if existing.usable:
            was = self.get(name)["current_version"]
            if was != v:  # files put back as they were: their version is current again
                with self.ws.db.write() as conn:
                    was = conn.exec_driver_sql(
                        "SELECT current_version FROM dataset WHERE name = ?", (name,)
                    ).scalar()
                    conn.exec_driver_sql(
                        "UPDATE dataset SET current_version = ? WHERE name = ?", (v, name)
                    )
            if was is not None and was != v:
                return IngestResult(
                    existing,
                    False,
                    f"{note}{name}: the files match v{v} again; v{v} is current (was v{was}).",
                )
            return IngestResult(
                existing, False, f"{note}{name}: the files are unchanged; still v{v}."
            )
        if not force:
            rules = "; ".join(
                f"{r['rule']}{'(' + r['column'] + ')' if r['column'] else ''}: {r['detail']}"
                for r in existing.failed_rules[:3]
            )
            current = self.get(name)["current_version"]
            if v != self.versions(name)[-1].version:
                said = f"the files match v{v} again, which stays in quarantine ({rules})"
                said += f"; v{current} stays current" if current else ""
            else:
                said = f"the files are unchanged and v{v} is in quarantine ({rules})"
            return IngestResult(
                existing,
                False,
                f"{note}{name}: {said}. Fix the data or the contract, or pass --force to "
                "accept it.",
            )
        with self.ws.db.write() as conn:
            conn.exec_driver_sql(
                "UPDATE dataset_version SET status = 'forced' WHERE dataset_name = ? "
                "AND version = ?",
                (name, v),
            )
            conn.exec_driver_sql("UPDATE dataset SET current_version = ? WHERE name = ?", (v, name))
        return IngestResult(
            self.version(name, v),
            False,
            f"{note}{name} v{v} ACCEPTED WITH --force out of quarantine; runs that use it will "
            "say so.",
        )

    def _by_digest(self, name: str, digest: str) -> DatasetVersion | None:
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
            version = ds["current_version"]
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


def _write_parquet(table, folder: Path, digest: str) -> tuple[Path, str]:
    final = folder / f"{digest[:16]}.parquet"
    tmp, sha = snapshots.stage_parquet(table, folder)
    try:
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final, sha


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _shown(store: DatasetStore, path: Path) -> str:
    try:
        return path.resolve().relative_to(store.ws.root.resolve()).as_posix()
    except ValueError:
        return str(path)


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
