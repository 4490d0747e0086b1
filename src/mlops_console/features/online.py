"""The online store: the latest feature values per entity, in `.mlops/online.db`.

`materialize` loads them from the views' point-in-time source incrementally (rows newer
than the last watermark; a changed view spec rebuilds its table), `lookup` reads them
for serving. `ws.features` (features/store.py) hands this out and keeps the views.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

from mlops_console.data.types import quote_ident as q
from mlops_console.errors import MlopsError, NotFound
from mlops_console.features.store import _duckdb

if TYPE_CHECKING:
    from mlops_console.features.store import FeatureStore


class OnlineStore:
    def __init__(self, store: FeatureStore):
        self.store = store
        self.path = store.ws.state / "online.db"
        self._con: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._columns_cache: dict[str, tuple[list[str], list[str]]] = {}

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def _db(self) -> sqlite3.Connection:
        with self._lock:
            if self._con is None:
                con = sqlite3.connect(
                    self.path,
                    timeout=60,
                    isolation_level=None,
                    check_same_thread=False,
                )
                con.execute("PRAGMA journal_mode = WAL")
                con.execute("PRAGMA synchronous = NORMAL")
                con.execute(
                    "CREATE TABLE IF NOT EXISTS _materialization (view TEXT PRIMARY KEY, "
                    "spec_sha256 TEXT, watermark TEXT, sources TEXT, rows INTEGER, updated_at REAL)"
                )
                self._con = con
            return self._con

    def materialize(
        self, names: list[str] | None = None, end: dt.datetime | None = None, stage=lambda s: None
    ) -> list[dict[str, Any]]:
        """Load the latest value per entity into the online store, incrementally (only rows
        newer than the last materialization; a changed view spec rebuilds its table)."""
        views = self.store.views()
        names = names or sorted(views)
        db = self._db()
        results = []
        for name in names:
            view = views.get(name) or self.store.view(name)
            stage(f"materialize {name}")
            con = _duckdb()
            try:
                sql, used = self.store._source_sql(con, view)
                feats = self.store._feature_columns(con, view, sql)
                spec_sha = hashlib.sha256(
                    (view.model_dump_json() + json.dumps(feats)).encode()
                ).hexdigest()
                table = f"fv_{name}"
                meta = db.execute(
                    "SELECT spec_sha256, watermark FROM _materialization WHERE view = ?", (name,)
                ).fetchone()
                rebuild = meta is None or meta[0] != spec_sha
                watermark = None if rebuild else meta[1]
                where = ["1=1"]
                if watermark:
                    where.append(f"__ts > '{watermark}'::TIMESTAMP")
                if end is not None:
                    where.append(f"__ts <= '{end.isoformat()}'::TIMESTAMP")
                part = ", ".join(q(k) for k in view.entities)
                cols = [*view.entities, "__ts", *feats]
                rows = con.execute(
                    f"SELECT {', '.join(q(c) for c in cols)} FROM ({sql}) WHERE {' AND '.join(where)} "
                    f"QUALIFY row_number() OVER (PARTITION BY {part} ORDER BY __ts DESC, "
                    f"__created DESC NULLS LAST) = 1"
                ).fetchall()
            finally:
                con.close()
            rows = [tuple(_plain(v) for v in r) for r in rows]
            new_mark = max((r[len(view.entities)] for r in rows), default=watermark)
            qcols = ", ".join(q(c) for c in cols)
            db.execute("BEGIN IMMEDIATE")
            try:
                if rebuild:
                    db.execute(f"DROP TABLE IF EXISTS {q(table)}")
                    db.execute(f"CREATE TABLE {q(table)} ({qcols}, PRIMARY KEY ({part}))")
                updates = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in cols[len(view.entities) :])
                db.executemany(
                    f"INSERT INTO {q(table)} ({qcols}) VALUES ({', '.join('?' * len(cols))}) "
                    f"ON CONFLICT ({part}) DO UPDATE SET {updates} WHERE excluded.__ts >= {q(table)}.__ts",
                    rows,
                )
                total = db.execute(f"SELECT count(*) FROM {q(table)}").fetchone()[0]
                db.execute(
                    "INSERT INTO _materialization VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(view) DO UPDATE "
                    "SET spec_sha256 = excluded.spec_sha256, watermark = excluded.watermark, "
                    "sources = excluded.sources, rows = excluded.rows, updated_at = excluded.updated_at",
                    (
                        name,
                        spec_sha,
                        new_mark,
                        json.dumps([f"{d.dataset}/v{d.version}" for d in used]),
                        total,
                        time.time(),
                    ),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._columns_cache.pop(name, None)
            results.append(
                {
                    "view": name,
                    "rebuilt": rebuild,
                    "rows_written": len(rows),
                    "entities": total,
                    "watermark": new_mark,
                    "sources": [f"{d.dataset}/v{d.version}" for d in used],
                }
            )
        return results

    def lookup(self, view: str, keys) -> Any:
        """Latest feature values for entities: `keys` is a dict (one entity), a list of
        dicts, or a list of key values for a single-key view. Unknown entities give None."""
        spec_keys, cols = self._online_columns(view)
        single = isinstance(keys, dict)
        items = [keys] if single else list(keys)
        if items and not isinstance(items[0], dict):
            if len(spec_keys) != 1:
                raise MlopsError(
                    f"View {view!r} has keys {spec_keys}; pass dicts with each of them."
                )
            items = [{spec_keys[0]: k} for k in items]
        for it in items:
            missing = [k for k in spec_keys if k not in it]
            if missing:
                raise MlopsError(f"Online lookup in {view!r} needs key(s) {', '.join(missing)}.")
        db = self._db()
        table = q(f"fv_{view}")
        found: dict[tuple, dict] = {}
        if items:
            if len(spec_keys) == 1:
                k = spec_keys[0]
                sql = f"SELECT * FROM {table} WHERE {q(k)} IN ({', '.join('?' * len(items))})"
                params = [it[k] for it in items]
            else:
                tuples = ", ".join("(" + ", ".join("?" * len(spec_keys)) + ")" for _ in items)
                sql = (
                    f"SELECT * FROM {table} WHERE ({', '.join(q(k) for k in spec_keys)}) "
                    f"IN (VALUES {tuples})"
                )
                params = [it[k] for it in items for k in spec_keys]
            for row in db.execute(sql, params):
                rec = dict(zip(cols, row, strict=True))
                found[tuple(rec[k] for k in spec_keys)] = rec
        out: list[dict[str, Any] | None] = []
        for it in items:
            hit = found.get(tuple(it[k] for k in spec_keys))
            out.append(
                None
                if hit is None
                else {("event_timestamp" if c == "__ts" else c): v for c, v in hit.items()}
            )
        return out[0] if single else out

    def _online_columns(self, view: str) -> tuple[list[str], list[str]]:
        cached = self._columns_cache.get(view)
        if cached is None:
            db = self._db()
            info = db.execute(f"PRAGMA table_info({q('fv_' + view)})").fetchall()
            if not info:
                self.store.view(view)  # unknown view: NotFound
                raise NotFound(
                    f"Feature view {view!r} has not been materialized; run "
                    f"`mlops features materialize {view}`."
                )
            keys = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
            cached = (keys, [r[1] for r in info])
            self._columns_cache[view] = cached
        return cached

    def status(self) -> list[dict[str, Any]]:
        db = self._db()
        return [
            {"view": v, "watermark": w, "sources": json.loads(s), "entities": n, "updated_at": t}
            for v, w, s, n, t in db.execute(
                "SELECT view, watermark, sources, rows, updated_at FROM _materialization ORDER BY view"
            )
        ]


def _plain(v: Any) -> Any:
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    if hasattr(v, "is_integer") and not isinstance(v, float):  # Decimal
        return float(v)
    return v
