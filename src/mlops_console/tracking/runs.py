"""Runs: `with ws.runs.start(experiment="churn", params={...}) as run:`.

Metric values are buffered and written in one transaction per flush (by size, by a
timer, and at the end of the run), so logging one value at a time costs microseconds.
"""

from __future__ import annotations

import getpass
import json
import math
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.errors import Conflict, MlopsError, NotFound
from mlops_console.tracking import lineage as lineage_mod
from mlops_console.tracking.query import compile_filter, compile_order

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace

STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return ""


@dataclass
class RunRecord:
    """A run as stored: what `search`, `get` and the CLI return."""

    id: str
    experiment: str
    name: str
    status: str
    start_time: float
    end_time: float | None
    seed: int | None
    user: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def duration(self) -> float | None:
        return None if self.end_time is None else self.end_time - self.start_time

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "experiment": self.experiment,
            "name": self.name,
            "status": self.status,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "duration": self.duration,
            "seed": self.seed,
            "user": self.user,
            "params": self.params,
            "metrics": self.metrics,
            "tags": self.tags,
            "inputs": self.inputs,
            "artifacts": self.artifacts,
            "lineage": self.lineage,
        }


class ActiveRun:
    """A run being recorded. Use as a context manager, or call `end()` yourself."""

    def __init__(self, tracker: RunTracker, run_id: str, name: str, seed: int):
        self._tracker = tracker
        self._db = tracker.ws.db
        self.id = run_id
        self.name = name
        self.seed = seed
        self._lock = threading.Lock()
        self._buffer: list[tuple[str, str, float, int, float]] = []
        self._steps: dict[str, int] = {}
        self._timer: threading.Timer | None = None
        self._ended = False
        cfg = tracker.ws.config.tracking
        self._flush_seconds = cfg.metric_flush_seconds
        self._flush_rows = cfg.metric_flush_rows

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end("KILLED")
        else:
            self.end("FAILED", error=f"{exc_type.__name__}: {exc}")

    def __repr__(self) -> str:
        return f"<ActiveRun {self.id[:8]} {self.name!r}>"

    # --- params and tags -----------------------------------------------------------

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: dict[str, Any]) -> None:
        """Params are immutable: logging a key again with a different value is an error."""
        if not params:
            return
        rows = [(self.id, str(k), _param_text(v)) for k, v in params.items()]
        with self._db.write() as conn:
            conn.exec_driver_sql(
                "INSERT INTO param (run_id, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT(run_id, key) DO NOTHING",
                rows,
            )
            keys = [r[1] for r in rows]
            marks = ",".join("?" * len(keys))
            stored = dict(
                conn.exec_driver_sql(
                    f"SELECT key, value FROM param WHERE run_id = ? AND key IN ({marks})",
                    (self.id, *keys),
                ).all()
            )
        clashes = [k for _, k, v in rows if stored.get(k) != v]
        if clashes:
            raise Conflict(
                f"Param(s) {', '.join(clashes)} of run {self.id[:8]} already have another "
                "value; params cannot change. Log the new value under another name or as a "
                "metric."
            )

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: dict[str, Any]) -> None:
        rows = [(self.id, str(k), str(v)) for k, v in tags.items()]
        with self._db.write() as conn:
            conn.exec_driver_sql(
                "INSERT INTO tag (run_id, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT(run_id, key) DO UPDATE SET value = excluded.value",
                rows,
            )

    # --- metrics (batched) -----------------------------------------------------------

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Log one value. Without `step`, each key counts its own steps from 0."""
        value = float(value)
        with self._lock:
            self._append(key, value, step)
            if len(self._buffer) >= self._flush_rows:
                self._flush_locked()
            elif self._timer is None and self._flush_seconds > 0:
                self._arm_timer()

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        with self._lock:
            for key, value in metrics.items():
                self._append(key, float(value), step)
            if len(self._buffer) >= self._flush_rows:
                self._flush_locked()
            elif self._timer is None and self._flush_seconds > 0:
                self._arm_timer()

    def _append(self, key: str, value: float, step: int | None) -> None:
        if self._ended:
            raise MlopsError(f"Run {self.id[:8]} has ended; start a new run to log more.")
        if step is None:
            step = self._steps.get(key, -1) + 1
        self._steps[key] = max(step, self._steps.get(key, -1))
        self._buffer.append((self.id, str(key), value, int(step), time.time()))

    def _arm_timer(self) -> None:
        self._timer = threading.Timer(self._flush_seconds, self.flush)
        self._timer.daemon = True
        self._timer.start()

    def flush(self) -> None:
        """Write buffered metric values now."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        # SQLite cannot store NaN: it is written as NULL and read back as NaN.
        rows = [(r, k, None if math.isnan(v) else v, s, t) for r, k, v, s, t in rows]
        with self._db.write() as conn:
            conn.exec_driver_sql(
                "INSERT INTO metric (run_id, key, value, step, timestamp) VALUES (?,?,?,?,?)",
                rows,
            )
            conn.exec_driver_sql(
                "INSERT INTO latest_metric (run_id, key, value, step, timestamp) "
                "VALUES (?,?,?,?,?) ON CONFLICT(run_id, key) DO UPDATE SET "
                "value = excluded.value, step = excluded.step, timestamp = excluded.timestamp "
                "WHERE excluded.step >= latest_metric.step",
                rows,
            )

    # --- artifacts and inputs ----------------------------------------------------------

    def log_artifact(self, source: bytes | str | Path, name: str | None = None) -> str:
        """Store a file, a folder (each file under `name/`) or bytes; returns the sha256."""
        store = self._tracker.ws.artifacts
        if isinstance(source, bytes | bytearray):
            if not name:
                raise MlopsError("log_artifact(bytes) needs a name for the artifact.")
            entries = [(name, store.put_bytes(bytes(source)), len(source))]
        else:
            path = Path(source)
            if not path.exists():
                raise NotFound(f"Cannot log artifact: {path} does not exist.")
            if path.is_dir():
                base = name or path.name
                entries = [
                    (
                        f"{base}/{p.relative_to(path).as_posix()}",
                        store.put_file(p),
                        p.stat().st_size,
                    )
                    for p in sorted(path.rglob("*"))
                    if p.is_file()
                ]
            else:
                entries = [(name or path.name, store.put_file(path), path.stat().st_size)]
        with self._db.write() as conn:
            conn.exec_driver_sql(
                "INSERT INTO run_artifact (run_id, name, hash, size) VALUES (?,?,?,?) "
                "ON CONFLICT(run_id, name) DO UPDATE SET hash = excluded.hash, "
                "size = excluded.size",
                [(self.id, n, h, s) for n, h, s in entries],
            )
            conn.exec_driver_sql(
                "INSERT OR IGNORE INTO object_ref (hash, kind, owner) VALUES (?, 'run', ?)",
                [(h, self.id) for _, h, _ in entries],
            )
        return entries[0][1] if len(entries) == 1 else ""

    def log_dataset(
        self,
        name: str,
        digest: str,
        version: str | None = None,
        rows: int | None = None,
        source: str = "",
    ) -> None:
        """Record a dataset version this run read (its data lineage)."""
        with self._db.write() as conn:
            conn.exec_driver_sql(
                "INSERT INTO run_input (run_id, name, version, digest, rows, source) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT(run_id, name) DO UPDATE SET "
                "version = excluded.version, digest = excluded.digest, rows = excluded.rows, "
                "source = excluded.source",
                (self.id, name, version or digest[:12], digest, rows, source),
            )

    # --- end -------------------------------------------------------------------------------

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        if status not in STATUSES[1:]:
            raise MlopsError(f"A run ends FINISHED, FAILED or KILLED, not {status!r}.")
        with self._lock:
            if self._ended:
                return
            self._flush_locked()
            self._ended = True
        with self._db.write() as conn:
            conn.exec_driver_sql(
                "UPDATE run SET status = ?, end_time = ? WHERE id = ?",
                (status, time.time(), self.id),
            )
            if error:
                conn.exec_driver_sql(
                    "INSERT INTO tag (run_id, key, value) VALUES (?, 'error', ?) "
                    "ON CONFLICT(run_id, key) DO UPDATE SET value = excluded.value",
                    (self.id, error[:2000]),
                )


def _param_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value)
    return json.dumps(value, sort_keys=True, default=str)


class RunTracker:
    """`ws.runs`: start, get, search and compare runs."""

    def __init__(self, ws: Workspace):
        self.ws = ws

    def _experiment_id(self, conn, name: str) -> int:
        row = conn.exec_driver_sql("SELECT id FROM experiment WHERE name = ?", (name,)).first()
        if row:
            return row[0]
        conn.exec_driver_sql(
            "INSERT INTO experiment (name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
            (name, time.time()),
        )
        return conn.exec_driver_sql("SELECT id FROM experiment WHERE name = ?", (name,)).scalar()

    def start(
        self,
        experiment: str | None = None,
        params: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        name: str | None = None,
        seed: int | None = None,
        spec: str | Path | None = None,
    ) -> ActiveRun:
        """Start a run and record its lineage (git, config, spec, environment, seed)."""
        experiment = experiment or self.ws.config.tracking.default_experiment
        run_id = uuid.uuid4().hex
        seed = seed if seed is not None else secrets.randbelow(2**31)
        lineage: dict[str, Any] = {
            "git": lineage_mod.git_state(self.ws.root),
            "config_sha256": self.ws.config_sha256,
            "environment": lineage_mod.environment(),
            "seed": seed,
        }
        if spec is not None:
            spec_path = Path(spec)
            if not spec_path.is_absolute():
                spec_path = self.ws.root / spec_path
            lineage["spec"] = {
                "path": _relative(spec_path, self.ws.root),
                "sha256": lineage_mod.file_sha256(spec_path),
            }
        name = name or f"{experiment}-{run_id[:6]}"
        now = time.time()
        with self.ws.db.write() as conn:
            exp_id = self._experiment_id(conn, experiment)
            conn.exec_driver_sql(
                "INSERT INTO run (id, experiment_id, name, status, start_time, seed, user, lineage) "
                "VALUES (?, ?, ?, 'RUNNING', ?, ?, ?, ?)",
                (run_id, exp_id, name, now, seed, current_user(), json.dumps(lineage)),
            )
            if params:
                conn.exec_driver_sql(
                    "INSERT INTO param (run_id, key, value) VALUES (?, ?, ?)",
                    [(run_id, str(k), _param_text(v)) for k, v in params.items()],
                )
            if tags:
                conn.exec_driver_sql(
                    "INSERT INTO tag (run_id, key, value) VALUES (?, ?, ?)",
                    [(run_id, str(k), str(v)) for k, v in tags.items()],
                )
        return ActiveRun(self, run_id, name, seed)

    # --- reading ---------------------------------------------------------------------------

    def resolve_id(self, ref: str) -> str:
        """A full run id from an id or a unique prefix (at least 4 characters)."""
        ref = ref.strip().lower()
        with self.ws.db.read() as conn:
            if len(ref) == 32:
                if conn.exec_driver_sql("SELECT 1 FROM run WHERE id = ?", (ref,)).first():
                    return ref
            elif len(ref) >= 4:
                ids = [
                    r[0]
                    for r in conn.exec_driver_sql(
                        "SELECT id FROM run WHERE id LIKE ? LIMIT 2", (ref + "%",)
                    )
                ]
                if len(ids) == 1:
                    return ids[0]
                if len(ids) > 1:
                    raise MlopsError(f"Run id prefix {ref!r} is ambiguous; give more characters.")
        raise NotFound(f"No run {ref!r} in this workspace. `mlops runs list` shows the runs.")

    def get(self, ref: str) -> RunRecord:
        run_id = self.resolve_id(ref)
        with self.ws.db.read() as conn:
            return self._load(conn, "r.id = ?", [run_id], "r.id", [], 1, full=True)[0]

    def search(
        self,
        experiment: str | list[str] | None = None,
        filter: str | None = None,
        order_by: list[str] | str | None = None,
        limit: int | None = 100,
        full: bool = False,
    ) -> list[RunRecord]:
        """Find runs: `filter` is e.g. "metrics.auc > 0.8 and params.model = 'rf'"."""
        where, params = compile_filter(filter)
        if experiment:
            names = [experiment] if isinstance(experiment, str) else list(experiment)
            where += f" AND e.name IN ({','.join('?' * len(names))})"
            params += names
        order, order_params = compile_order(order_by)
        with self.ws.db.read() as conn:
            return self._load(conn, where, params, order, order_params, limit, full=full)

    def _load(self, conn, where, params, order, order_params, limit, full) -> list[RunRecord]:
        sql = (
            "SELECT r.id, e.name, r.name, r.status, r.start_time, r.end_time, r.seed, r.user, "
            f"{'r.lineage' if full else 'NULL'} FROM run r JOIN experiment e "
            f"ON e.id = r.experiment_id WHERE {where} ORDER BY {order}"
        )
        args = [*params, *order_params]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        runs = {}
        for row in conn.exec_driver_sql(sql, tuple(args)):
            runs[row[0]] = RunRecord(
                id=row[0],
                experiment=row[1],
                name=row[2],
                status=row[3],
                start_time=row[4],
                end_time=row[5],
                seed=row[6],
                user=row[7],
                lineage=json.loads(row[8]) if row[8] else {},
            )
        ids = list(runs)
        for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
            marks = ",".join("?" * len(chunk))
            for rid, k, v in conn.exec_driver_sql(
                f"SELECT run_id, key, value FROM param WHERE run_id IN ({marks})", tuple(chunk)
            ):
                runs[rid].params[k] = v
            for rid, k, v in conn.exec_driver_sql(
                f"SELECT run_id, key, value FROM latest_metric WHERE run_id IN ({marks})",
                tuple(chunk),
            ):
                runs[rid].metrics[k] = math.nan if v is None else v
            for rid, k, v in conn.exec_driver_sql(
                f"SELECT run_id, key, value FROM tag WHERE run_id IN ({marks})", tuple(chunk)
            ):
                runs[rid].tags[k] = v
            if full:
                for rid, n, ver, dig, rows, src in conn.exec_driver_sql(
                    "SELECT run_id, name, version, digest, rows, source FROM run_input "
                    f"WHERE run_id IN ({marks}) ORDER BY name",
                    tuple(chunk),
                ):
                    runs[rid].inputs.append(
                        {"name": n, "version": ver, "digest": dig, "rows": rows, "source": src}
                    )
                for rid, n, h, s in conn.exec_driver_sql(
                    "SELECT run_id, name, hash, size FROM run_artifact "
                    f"WHERE run_id IN ({marks}) ORDER BY name",
                    tuple(chunk),
                ):
                    runs[rid].artifacts.append({"name": n, "hash": h, "size": s})
        return list(runs.values())

    def metric_history(self, ref: str, key: str) -> list[tuple[int, float, float]]:
        """(step, value, timestamp) of every value logged for one metric."""
        run_id = self.resolve_id(ref)
        with self.ws.db.read() as conn:
            return [
                (s, math.nan if v is None else v, t)
                for s, v, t in conn.exec_driver_sql(
                    "SELECT step, value, timestamp FROM metric WHERE run_id = ? AND key = ? "
                    "ORDER BY step, timestamp",
                    (run_id, key),
                )
            ]

    def experiments(self) -> list[dict[str, Any]]:
        with self.ws.db.read() as conn:
            return [
                {"name": n, "runs": c, "created_at": t}
                for n, c, t in conn.exec_driver_sql(
                    "SELECT e.name, count(r.id), e.created_at FROM experiment e "
                    "LEFT JOIN run r ON r.experiment_id = e.id GROUP BY e.id ORDER BY e.name"
                )
            ]

    def compare(self, refs: list[str]) -> dict[str, Any]:
        """Params and metrics of several runs side by side, differences flagged."""
        runs = [self.get(r) for r in refs]
        param_keys = sorted({k for r in runs for k in r.params})
        metric_keys = sorted({k for r in runs for k in r.metrics})
        return {
            "runs": [{"id": r.id, "name": r.name, "experiment": r.experiment} for r in runs],
            "params": {
                k: {
                    "values": [r.params.get(k) for r in runs],
                    "differs": len({r.params.get(k) for r in runs}) > 1,
                }
                for k in param_keys
            },
            "metrics": {
                k: {
                    "values": [r.metrics.get(k) for r in runs],
                    "differs": len({r.metrics.get(k) for r in runs}) > 1,
                }
                for k in metric_keys
            },
        }


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)
