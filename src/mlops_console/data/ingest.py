"""Ingesting a dataset version: hash the source files, read them, profile and check them
against the contract, write the Parquet snapshot and record the version; or, when the
files hash to a version taken before, make that one current again (or say why not).

`ws.data.ingest` (data/datasets.py) runs this; `read_hashed` is also how a snapshot is
rebuilt from its files (data/snapshots.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_console.data import snapshots
from mlops_console.data.reading import CSV_SUFFIXES, DataError, _stat_hash, expand, read_file
from mlops_console.data.records import (
    _COLS,
    ACCEPTED,
    Dataset,
    DatasetVersion,
    IngestResult,
    _from_row,
)
from mlops_console.data.sniff_binary import describe_binary
from mlops_console.data.types import logical_type
from mlops_console.names import check_name, inside
from mlops_console.users import current_user

if TYPE_CHECKING:
    from mlops_console.data.datasets import DatasetStore


def ingest(
    store: DatasetStore, name: str, force: bool = False, stage=lambda s: None
) -> IngestResult:
    """Take a new version from the dataset's source files.

    Unchanged files give no new version. A version that breaks the contract is kept in
    quarantine (not used) unless `force` accepts it deliberately.
    """
    import duckdb

    ds = store.get(name)
    stage(f"hash the files of {ds.source}")
    paths, hashed, digest = hash_sources(store, ds)
    existing = store.by_digest(name, digest)
    if existing is not None:
        return reingest(store, existing, force, repair(store, existing, stage))

    stage(f"read {len(paths)} file(s)")
    from mlops_console.data import contract as contracts
    from mlops_console.data.contract_file import dumps

    table = read_hashed(store, hashed)
    _require_columns(store, table, ds, hashed)
    con = duckdb.connect()
    try:
        con.register("data", table)
        stage(f"profile {table.num_rows} rows")
        from mlops_console.data.profile import profile_table

        profile = profile_table(con, "data", table.schema)
        contract = store.contract(name)
        contract_note = ""
        if contract is None:
            contract = contracts.infer(name, table, profile, ds.timestamp, ds.entities)
            contract_note = "inferred"
        stage("check the data contract")
        report = [r.to_dict() for r in contracts.check(con, "data", table.schema, contract)]
    finally:
        con.close()
    failed = [r for r in report if not r["passed"]]
    status = "accepted" if not failed else ("forced" if force else "quarantined")

    stage("write the Parquet snapshot")
    version_dir = inside(store.lake, check_name("dataset", name))
    version_dir.mkdir(parents=True, exist_ok=True)
    snapshot, snap_sha = write_parquet(table, version_dir, digest)
    profile_hash = store.ws.artifacts.put_bytes(json.dumps(profile).encode())
    if contract_note:
        store.contract_dir.mkdir(exist_ok=True)
        # atomically: a concurrent ingest may be reading it this moment
        write_text_atomic(store.contract_path(name), dumps(contract, "Inferred from version 1."))
    contract_sha = (
        hashlib.sha256(store.contract_path(name).read_bytes()).hexdigest()
        if store.contract_path(name).exists()
        else None
    )
    columns = [{"name": f.name, "type": logical_type(f.type)} for f in table.schema]
    now = time.time()
    with store.ws.db.write() as conn:
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
                    snapshot.relative_to(store.ws.state / "lake").as_posix(),
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
        return reingest(store, _from_row(raced), force)
    dv = store.version(name, version)
    if status == "accepted":
        msg = f"{name} v{version}: {dv.rows} rows accepted" + (
            f"; contract inferred and written to {store.contract_path(name).relative_to(store.ws.root)}"
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


def read_hashed(store: DatasetStore, hashed, ds: Dataset | None = None):
    """Read the files as hashed (with the dataset's reading options, which
    `_hash_sources` attaches, or those of `ds`); refuse any that changed since."""
    import pyarrow as pa

    from mlops_console.data.read_options import ReadOptions

    tables = []
    for h in hashed:
        options, time_column = h.options, h.time_column
        if options is None and ds is not None:
            options, time_column = ReadOptions.from_dict(ds.read_options), ds.timestamp
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
                    {logical_type(base.field(i).type), logical_type(f.type)} <= {"integer", "float"}
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


def _require_columns(store: DatasetStore, table, ds, hashed) -> None:
    names = set(table.schema.names)
    files = ", ".join(h.rel for h in hashed)
    ts = ds.timestamp
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
    missing = [e for e in ds.entities if e not in names]
    if missing:
        raise DataError(f"{files}: entity column(s) {', '.join(missing)} missing.")


def refuse_binary(store: DatasetStore, paths: list[Path]) -> None:
    for p in paths:
        if p.suffix.lower() in CSV_SUFFIXES and (why := describe_binary(p, _shown(store, p))):
            raise DataError(why)


def hash_sources(store: DatasetStore, ds: Dataset):
    """(paths, [SourceFile], digest): the digest names a version by its files' bytes."""
    paths = expand(ds.source, store.ws.root)
    refuse_binary(store, paths)  # before hashing: a 2 GB file of zeros is not worth reading
    from mlops_console.data.read_options import ReadOptions

    options = ReadOptions.from_dict(ds.read_options)
    hashed = [
        dataclasses.replace(_stat_hash(p, store.ws.root), options=options, time_column=ds.timestamp)
        for p in paths
    ]
    digest = hashlib.sha256("\n".join(sorted(h.sha256 for h in hashed)).encode()).hexdigest()
    return paths, hashed, digest


def repair(store: DatasetStore, dv: DatasetVersion, stage=lambda s: None) -> str:
    """Rebuild the snapshot of the version unchanged files hash to, if it is missing or
    damaged (its files are those it was taken from); '' or what was done."""
    if snapshots.check(store, dv, full=True) == "verified":
        return ""
    stage(f"rebuild the snapshot of {dv.dataset} v{dv.version}")
    return snapshots.rebuild(store, dv).message + " "


def reingest(
    store: DatasetStore, existing: DatasetVersion, force: bool, note: str = ""
) -> IngestResult:
    name, v = existing.dataset, existing.version
    if existing.status == "forced" and not force:
        current = store.get(name).current_version
        if current != v:  # a --force was for that moment: it is not taken again silently
            return IngestResult(
                existing,
                False,
                f"{note}{name}: the files match v{v} again, which broke its contract and "
                f"was accepted with --force; v{current} stays current. `mlops data ingest "
                f"{name} --force` makes v{v} current again.",
            )
    if existing.usable:
        was = store.get(name).current_version
        if was != v:  # files put back as they were: their version is current again
            with store.ws.db.write() as conn:
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
        return IngestResult(existing, False, f"{note}{name}: the files are unchanged; still v{v}.")
    if not force:
        rules = "; ".join(
            f"{r['rule']}{'(' + r['column'] + ')' if r['column'] else ''}: {r['detail']}"
            for r in existing.failed_rules[:3]
        )
        current = store.get(name).current_version
        if v != store.versions(name)[-1].version:
            said = f"the files match v{v} again, which stays in quarantine ({rules})"
            said += f"; v{current} stays current" if current else ""
        else:
            said = f"the files are unchanged and v{v} is in quarantine ({rules})"
        return IngestResult(
            existing,
            False,
            f"{note}{name}: {said}. Fix the data or the contract, or pass --force to accept it.",
        )
    with store.ws.db.write() as conn:
        conn.exec_driver_sql(
            "UPDATE dataset_version SET status = 'forced' WHERE dataset_name = ? AND version = ?",
            (name, v),
        )
        conn.exec_driver_sql("UPDATE dataset SET current_version = ? WHERE name = ?", (v, name))
    return IngestResult(
        store.version(name, v),
        False,
        f"{note}{name} v{v} ACCEPTED WITH --force out of quarantine; runs that use it will say so.",
    )


def write_parquet(table, folder: Path, digest: str) -> tuple[Path, str]:
    final = folder / f"{digest[:16]}.parquet"
    tmp, sha = snapshots.stage_parquet(table, folder)
    try:
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final, sha


def write_text_atomic(path: Path, text: str) -> None:
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
