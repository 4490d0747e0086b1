"""`ws.features`: feature views, point-in-time correct training frames, an online store.

Point-in-time semantics (Feast's, documented): for each entity row, a feature row of the
same entity matches when its event timestamp is at or before the entity row's timestamp
and, when the view's TTL is not 0, at or after the entity timestamp minus the TTL (both
bounds inclusive). The latest matching row wins; ties are broken by the created
timestamp. Entity rows with no match are kept, with nulls. Row order is preserved.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any

from mlops_console.data.reading import DataError
from mlops_console.data.types import quote_ident as q
from mlops_console.errors import MlopsError, NotFound
from mlops_console.features.spec import FeatureViewSpec, load_views

if TYPE_CHECKING:
    from mlops_console.features.online import OnlineStore
    from mlops_console.workspace import Workspace

ROW = "__row"
ETS = "__ets"

_duck: tuple[int, Any] | None = None  # (pid, connection): one in-memory DuckDB per process
_duck_lock = threading.Lock()


def _duckdb():
    """A DuckDB connection of its own for the caller to close: a cursor on this process's
    in-memory database. Opening a database costs 15-40 ms, a cursor nothing; what a
    cursor registers or creates as TEMP is its own and goes when it closes."""
    global _duck
    with _duck_lock:
        if _duck is None or _duck[0] != os.getpid():  # a forked child opens its own
            import duckdb

            _duck = (os.getpid(), duckdb.connect())
        return _duck[1].cursor()


class FeatureStore:
    def __init__(self, ws: Workspace):
        self.ws = ws
        self.folder = ws.root / "features"

    def close(self) -> None:
        online = self.__dict__.get("online_store")
        if online is not None:
            online.close()

    # --- views -------------------------------------------------------------------------

    def views(self) -> dict[str, FeatureViewSpec]:
        return load_views(self.folder)

    def view(self, name: str) -> FeatureViewSpec:
        views = self.views()
        if name not in views:
            known = ", ".join(sorted(views)) or "none"
            raise NotFound(f"No feature view {name!r} in {self.folder} (known: {known}).")
        return views[name]

    def describe(self, name: str) -> dict[str, Any]:
        view = self.view(name)
        con = _duckdb()
        try:
            sql, used = self._source_sql(con, view)
            feats = self._feature_columns(con, view, sql)
        finally:
            con.close()
        return {
            "name": view.name,
            "entities": view.entities,
            "timestamp": view.timestamp,
            "created_timestamp": view.created_timestamp,
            "ttl_seconds": view.ttl_seconds,
            "source": view.source,
            "sql": view.sql,
            "features": feats,
            "datasets": [
                {"name": d.dataset, "version": d.version, "digest": d.digest} for d in used
            ],
            "description": view.description,
        }

    def _source_sql(self, con, view: FeatureViewSpec):
        """SQL giving the view's rows as: entity keys, __ts, __created, features; and the
        dataset versions it reads."""
        keys = ", ".join(q(k) for k in view.entities)
        created = (
            f"{q(view.created_timestamp)}::TIMESTAMP AS __created"
            if view.created_timestamp
            else "NULL::TIMESTAMP AS __created"
        )
        if view.source is not None:
            dv = self.ws.data.version(view.source)
            path = self.ws.data.path(view.source, dv.version)
            cols = ", ".join(q(f) for f in view.features)
            names = {c["name"] for c in dv.columns}
            missing = [
                c
                for c in [
                    *view.entities,
                    view.timestamp,
                    *view.features,
                    *([view.created_timestamp] if view.created_timestamp else []),
                ]
                if c not in names
            ]
            if missing:
                raise MlopsError(
                    f"Feature view {view.name!r}: dataset {view.source} v{dv.version} has "
                    f"no column(s) {', '.join(missing)}."
                )
            _check_timestamp(con, view, f"read_parquet('{_lit(path)}')")
            sql = (
                f"SELECT {keys}, {q(view.timestamp)}::TIMESTAMP AS __ts, {created}, {cols} "
                f"FROM read_parquet('{_lit(path)}')"
            )
            return sql, [dv]
        assert view.sql is not None  # a view reads a dataset or runs SQL (spec.py checks it)
        used = []
        for ds in self.ws.data.list():
            if ds.current_version is None or not re.search(rf"\b{re.escape(ds.name)}\b", view.sql):
                continue
            dv = self.ws.data.version(ds.name)
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW {q(ds.name)} AS SELECT * FROM "
                f"read_parquet('{_lit(self.ws.data.path(ds.name, dv.version))}')"
            )
            used.append(dv)
        inner = f"({view.sql.strip().rstrip(';')})"
        _check_timestamp(con, view, inner)
        sql = (
            f"SELECT * EXCLUDE ({q(view.timestamp)}{', ' + q(view.created_timestamp) if view.created_timestamp else ''}), "
            f"{q(view.timestamp)}::TIMESTAMP AS __ts, {created} FROM {inner} AS src"
        )
        try:
            con.execute(f"DESCRIBE {sql}")
        except Exception as exc:
            raise MlopsError(f"Feature view {view.name!r}: its SQL does not run: {exc}") from None
        return sql, used

    def _feature_columns(self, con, view: FeatureViewSpec, sql: str) -> list[str]:
        if view.source is not None:
            return list(view.features)
        cols = [r[0] for r in con.execute(f"DESCRIBE {sql}").fetchall()]
        skip = {*view.entities, "__ts", "__created"}
        return [c for c in cols if c not in skip]

    def _dedupe(self, view: FeatureViewSpec, sql: str, feats: list[str], used) -> str:
        """Make (entity, timestamp) unique: the latest created wins, then a fixed order, so
        the same input always gives the same output. Skipped when the dataset's contract
        already proved the key unique."""
        if view.created_timestamp is None and view.source is not None:
            want = {*view.entities, view.timestamp}
            for r in used[0].report:
                if (
                    r["rule"] == "unique_keys"
                    and r["passed"]
                    and r["examples"] == []
                    and want == set(_keys_of(self.ws, view.source))
                ):
                    return sql
        part = ", ".join(q(k) for k in view.entities)
        order = ", ".join(["__created DESC NULLS LAST", *(f"{q(f)} NULLS LAST" for f in feats)])
        return (
            f"SELECT * FROM ({sql}) QUALIFY row_number() OVER "
            f"(PARTITION BY {part}, __ts ORDER BY {order}) = 1"
        )

    # --- offline: point-in-time training frames ------------------------------------------

    def training_frame(
        self,
        entity_df,
        features: list[str],
        timestamp_column: str | None = None,
        full_feature_names: bool = False,
        run=None,
    ):
        """Join features onto `entity_df` as of each row's timestamp (see module doc)."""
        import numpy as np
        import pandas as pd

        requested = _parse_refs(features)
        known = self.views()  # read the specs once, not once per view named
        views = {name: known.get(name) or self.view(name) for name in requested}
        ts_col = self._entity_timestamp(entity_df, timestamp_column, views)
        needed = sorted({k for v in views.values() for k in v.entities})
        missing = [k for k in needed if k not in entity_df.columns]
        if missing:
            raise DataError(
                f"The entity frame lacks the key column(s) {', '.join(missing)} that the "
                f"views {', '.join(views)} join on."
            )
        raw = entity_df[ts_col]
        if pd.api.types.is_datetime64_any_dtype(raw):
            ets = raw
        else:
            ets = pd.to_datetime(raw, errors="coerce", format="ISO8601")
        if getattr(ets.dt, "tz", None) is not None:
            ets = ets.dt.tz_convert("UTC").dt.tz_localize(None)
        bad = int(ets.isna().sum() - entity_df[ts_col].isna().sum())
        if bad or entity_df[ts_col].isna().any():
            raise DataError(
                f"Entity column {ts_col!r}: {int(ets.isna().sum())} value(s) are missing or "
                "not timestamps; every entity row needs a time to join as of."
            )
        ent = pd.DataFrame({k: entity_df[k].to_numpy() for k in needed})
        ent[ETS] = ets.to_numpy().astype("datetime64[us]")
        ent[ROW] = np.arange(len(ent), dtype=np.int64)

        con = _duckdb()
        try:
            con.register("entity_rows", ent)
            selects, joins, used_all, out_names = [], [], [], []
            for i, (name, wanted) in enumerate(requested.items()):
                view = views[name]
                sql, used = self._source_sql(con, view)
                used_all += used
                avail = self._feature_columns(con, view, sql)
                feats = avail if wanted == ["*"] else wanted
                unknown = [f for f in feats if f not in avail]
                if unknown:
                    raise NotFound(
                        f"Feature view {name!r} has no feature(s) {', '.join(unknown)} "
                        f"(it has: {', '.join(avail)})."
                    )
                self._check_key_types(con, view, sql)
                sql = self._dedupe(view, sql, avail, used)
                alias = f"v{i}"
                cond = " AND ".join(f"e.{q(k)} = {alias}.{q(k)}" for k in view.entities)
                joins.append(
                    f"ASOF LEFT JOIN ({sql}) AS {alias} ON {cond} AND e.{ETS} >= {alias}.__ts"
                )
                ttl = view.ttl_seconds
                for f in feats:
                    out = f"{name}__{f}" if full_feature_names else f
                    if out in out_names or out in entity_df.columns:
                        raise MlopsError(
                            f"Feature name {out!r} appears twice (in several views or in "
                            "the entity frame); pass full_feature_names=True."
                        )
                    out_names.append(out)
                    value = f"{alias}.{q(f)}"
                    if ttl > 0:
                        value = (
                            f"CASE WHEN {alias}.__ts >= e.{ETS} - to_microseconds({int(ttl * 1e6)}) "
                            f"THEN {value} END"
                        )
                    selects.append(f"{value} AS {q(out)}")
            query = (
                f"SELECT {', '.join(selects)} FROM entity_rows AS e {' '.join(joins)} "
                f"ORDER BY e.{ROW}"
            )
            result = con.execute(query).df()
        finally:
            con.close()
        frame = entity_df.reset_index(drop=True)  # a new frame: the caller's is left as it was
        for col in out_names:
            frame[col] = result[col].to_numpy()
        if run is not None:
            self.record_lineage(run, views, used_all)
        return frame

    def _entity_timestamp(self, entity_df, given: str | None, views) -> str:
        if given:
            if given not in entity_df.columns:
                raise DataError(f"The entity frame has no timestamp column {given!r}.")
            return given
        if "event_timestamp" in entity_df.columns:
            return "event_timestamp"
        for v in views.values():
            if v.timestamp in entity_df.columns:
                return v.timestamp
        raise DataError(
            "The entity frame needs a timestamp column: name it event_timestamp or "
            "pass timestamp_column=... (--timestamp on the command line)."
        )

    def _check_key_types(self, con, view, sql) -> None:
        ftypes = dict(
            con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {sql})").fetchall()
        )
        etypes = dict(
            con.execute("SELECT column_name, column_type FROM (DESCRIBE entity_rows)").fetchall()
        )
        for k in view.entities:
            a, b = etypes.get(k, ""), ftypes.get(k, "")
            if _family(a) != _family(b):
                raise DataError(
                    f"Key {k!r} is {a} in the entity frame but {b} in feature view "
                    f"{view.name!r}; convert one of them so they can be compared."
                )

    def record_lineage(self, run, views, used) -> None:
        """Record on `run` the dataset versions used and the feature views read."""
        seen = set()
        for dv in used:
            if (dv.dataset, dv.version) not in seen:
                seen.add((dv.dataset, dv.version))
                self.ws.data.record_use(run, dv)
        for name, view in views.items():
            digest = hashlib.sha256(view.model_dump_json().encode()).hexdigest()
            run.log_dataset(
                f"features:{name}", digest, version=digest[:12], source=f"features/{name}"
            )

    # --- online store ----------------------------------------------------------------------

    @cached_property
    def online_store(self) -> OnlineStore:
        from mlops_console.features.online import OnlineStore

        return OnlineStore(self)

    def materialize(
        self, names: list[str] | None = None, end: dt.datetime | None = None, stage=lambda s: None
    ) -> list[dict[str, Any]]:
        """Load the latest value per entity into the online store (features/online.py)."""
        return self.online_store.materialize(names, end, stage)

    def online(self, view: str, keys) -> Any:
        """Latest feature values for entities: `keys` is a dict (one entity), a list of
        dicts, or a list of key values for a single-key view. Unknown entities give None."""
        return self.online_store.lookup(view, keys)

    def online_status(self) -> list[dict[str, Any]]:
        return self.online_store.status()


def _parse_refs(features: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ref in features:
        view, sep, feat = ref.partition(":")
        if not sep or not view or not feat:
            raise MlopsError(f"{ref!r} is not a feature reference; use VIEW:FEATURE (or VIEW:*).")
        out.setdefault(view, [])
        if feat == "*":
            out[view] = ["*"]
        elif out[view] != ["*"] and feat not in out[view]:
            out[view].append(feat)
    if not out:
        raise MlopsError("Name at least one feature, as VIEW:FEATURE.")
    return out


def _check_timestamp(con, view: FeatureViewSpec, inner: str) -> None:
    """A view's timestamp must be a time (or ISO text): refuse anything else by name."""
    try:
        types = dict(
            con.execute(
                f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {inner} AS src)"
            ).fetchall()
        )
    except Exception:
        return  # the SQL itself does not run: the DESCRIBE after this says so
    kind = types.get(view.timestamp)
    if kind is None:
        return
    col = q(view.timestamp)
    example = None
    if _family(kind) == "string":
        bad = con.execute(
            f"SELECT {col} FROM {inner} AS src WHERE {col} IS NOT NULL "
            f"AND TRY_CAST({col} AS TIMESTAMP) IS NULL LIMIT 1"
        ).fetchone()
        example = bad[0] if bad else None
    problem = view.timestamp_problem(kind, example)
    if problem:
        raise DataError(problem)


def _keys_of(ws, dataset: str) -> list[str]:
    c = ws.data.contract(dataset)
    return c.keys.unique if c else []


def _family(duck_type: str) -> str:
    t = duck_type.upper()
    if any(x in t for x in ("INT", "DECIMAL", "DOUBLE", "FLOAT", "REAL", "NUMERIC")):
        return "number"
    if "CHAR" in t or "STRING" in t or "TEXT" in t:
        return "string"
    return t


def _lit(path) -> str:
    return str(path).replace("'", "''")
