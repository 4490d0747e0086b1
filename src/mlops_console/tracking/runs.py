"""Runs: `with ws.runs.start(experiment="churn", params={...}) as run:`.

Metric values are buffered and written in one transaction per flush (by size, by a
timer, and at the end of the run), so logging one value at a time costs microseconds.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.errors import MlopsError, NotFound
from mlops_console.tracking import lineage as lineage_mod
from mlops_console.tracking.active import (
    FLUSHER,
    HEARTBEAT_SECONDS,
    ActiveRun,
    param_text,
)
from mlops_console.tracking.query import compile_filter, compile_order
from mlops_console.users import current_user

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace

# a run started elsewhere (another host, container or boot) is abandoned only when its
# heartbeat is this old: its pid means nothing here
STALE_SECONDS = 20 * HEARTBEAT_SECONDS

_log = logging.getLogger(__name__)


_USER = current_user()


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


@dataclass
class RunRow:
    """A run as a page of the run list shows it (`RunTracker.page`), with its primary metric."""

    id: str
    experiment: str
    name: str
    status: str
    start_time: float
    metric: str | None  # the primary metric's key as logged (holdout_roc_auc); None: unknown
    value: float | None  # its latest value; None: not logged (or NaN)


@dataclass
class RunPage:
    runs: list[RunRow]
    total: int  # the runs matching the text, on every page
    metrics: dict[str | None, int]  # primary metric key -> matching runs judged by it


# `RunTracker.page` sorts: a name -> its SQL over the CTE `m` (and `lm`, the metric)
RUN_SORTS = {
    "id": "m.id",
    "experiment": "m.experiment COLLATE NOCASE",
    "name": "m.name COLLATE NOCASE",
    "status": "m.status",
    "start_time": "m.start_time",
    "metric": "lm.value",
}


def like(text: str) -> str:
    """A case-insensitive substring pattern for `LIKE ? ESCAPE '\\'`."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _cases(column: str, mapping: dict[str, str]) -> tuple[str, list[str]]:
    if not mapping:
        return "NULL", []
    args = [x for pair in mapping.items() for x in pair]
    return f"CASE {column}" + " WHEN ? THEN ?" * len(mapping) + " END", args


# the pipeline files' (folder, names and mtimes) -> `RunTracker.primary_metrics()`
_PRIMARY: dict[tuple, tuple[dict[str, str], dict[str, str]]] = {}


_STARTED: dict[int, int | None] = {}  # pid -> its start time (a forked child is another)


def _this_process() -> tuple[int, int | None]:
    """This process's pid and start time."""
    from mlops_console.process import start_time

    pid = os.getpid()
    if pid not in _STARTED:
        _STARTED[pid] = start_time(pid)
    return pid, _STARTED[pid]


def end_abandoned_runs(db) -> list[str]:
    """Mark KILLED the RUNNING runs whose process has ended (pid gone, or reused by
    another program: its start time differs). Returns their ids.

    Runs without a pid (recorded before pids were) are left alone: nothing tells whether
    they still run. A pid is only meaningful where it was taken (this boot of this host, in
    this pid namespace): a run recorded elsewhere, or where /proc cannot tell, is judged by
    its heartbeat only, abandoned once it is STALE_SECONDS old.
    """
    from mlops_console.process import is_alive, machine

    here = machine()
    with db.read() as conn:
        rows = conn.exec_driver_sql(
            "SELECT id, pid, pid_start, json_extract(lineage, '$.process.machine'), "
            "coalesce(heartbeat_at, start_time) FROM run "
            "WHERE status = 'RUNNING' AND pid IS NOT NULL"
        ).all()
    stale = time.time() - STALE_SECONDS
    gone = [
        (rid, pid)
        for rid, pid, started, where, beat in rows
        if (not is_alive(pid, started) if here is not None and where == here else beat < stale)
    ]
    if not gone:
        return []
    try:
        with db.write() as conn:
            for rid, pid in gone:
                # last seen alive: its last heartbeat or metric value (not now, which may
                # be days later)
                ended = conn.exec_driver_sql(
                    "UPDATE run SET status = 'KILLED', end_time = max(coalesce(heartbeat_at, "
                    "start_time), coalesce((SELECT max(timestamp) FROM latest_metric "
                    "WHERE run_id = run.id), 0)) WHERE id = ? AND status = 'RUNNING'",
                    (rid,),
                ).rowcount
                if ended:
                    conn.exec_driver_sql(
                        "INSERT INTO tag (run_id, key, value) VALUES (?, 'error', ?) "
                        "ON CONFLICT(run_id, key) DO NOTHING",
                        (rid, f"its process (pid {pid}) ended without finishing the run"),
                    )
    except Exception:  # a read-only or full workspace can still be read
        _log.warning("could not mark runs whose process ended", exc_info=True)
        return []
    return [rid for rid, _ in gone]


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
        from mlops_console.process import machine

        # where the run's pid means something (see end_abandoned_runs)
        lineage["process"] = {"machine": machine()}
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
        texts = {str(k): param_text(v) for k, v in (params or {}).items()}
        with self.ws.db.write() as conn:
            exp_id = self._experiment_id(conn, experiment)
            conn.exec_driver_sql(
                "INSERT INTO run (id, experiment_id, name, status, start_time, seed, user, "
                "lineage, pid, pid_start, heartbeat_at) "
                "VALUES (?, ?, ?, 'RUNNING', ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    exp_id,
                    name,
                    now,
                    seed,
                    _USER,
                    json.dumps(lineage),
                    *_this_process(),
                    now,
                ),
            )
            if texts:
                conn.exec_driver_sql(
                    "INSERT INTO param (run_id, key, value) VALUES (?, ?, ?)",
                    [(run_id, k, v) for k, v in texts.items()],
                )
            if tags:
                conn.exec_driver_sql(
                    "INSERT INTO tag (run_id, key, value) VALUES (?, ?, ?)",
                    [(run_id, str(k), str(v)) for k, v in tags.items()],
                )
        run = ActiveRun(self, run_id, name, seed, texts)
        FLUSHER.beat(run)
        return run

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
                for rid, n, ver, dig, rows, src, forced in conn.exec_driver_sql(
                    "SELECT run_id, name, version, digest, rows, source, forced FROM run_input "
                    f"WHERE run_id IN ({marks}) ORDER BY name",
                    tuple(chunk),
                ):
                    runs[rid].inputs.append(
                        {
                            "name": n,
                            "version": ver,
                            "digest": dig,
                            "rows": rows,
                            "source": src,
                            "forced": bool(forced),
                        }
                    )
                for rid, n, h, s in conn.exec_driver_sql(
                    "SELECT run_id, name, hash, size FROM run_artifact "
                    f"WHERE run_id IN ({marks}) ORDER BY name",
                    tuple(chunk),
                ):
                    runs[rid].artifacts.append({"name": n, "hash": h, "size": s})
        return list(runs.values())

    def primary_metrics(self) -> tuple[dict[str, str], dict[str, str]]:
        """The metric each pipeline is judged by, as its runs log it (`holdout_roc_auc` for
        `primary_metric = "roc_auc"`): (by pipeline name, by the experiment it writes to)."""
        folder = self.ws.pipelines.folder
        stamp = (folder, *sorted((p.name, p.stat().st_mtime_ns) for p in folder.glob("*.toml")))
        if stamp not in _PRIMARY:  # parse the specs again only when one changed
            by_pipeline: dict[str, str] = {}
            by_experiment: dict[str, str] = {}
            for p in self.ws.pipelines.list():
                key = f"holdout_{p.spec.validation.primary_metric}"
                by_pipeline[p.name] = by_pipeline[p.spec.name] = key
                by_experiment.setdefault(p.spec.experiment or p.spec.name, key)
            _PRIMARY.clear()
            _PRIMARY[stamp] = by_pipeline, by_experiment
            return by_pipeline, by_experiment  # not read back: another thread may clear it
        return _PRIMARY.get(stamp) or self.primary_metrics()

    def page(
        self,
        text: str = "",
        sort: str | None = None,
        descending: bool = False,
        offset: int = 0,
        limit: int = 100,
    ) -> RunPage:
        """One page of runs whose id, experiment, name or status contains `text` (any
        case), sorted by a `RUN_SORTS` name (None: the newest first; a metric without a
        value last either way), with each run's primary metric and the count of matches.

        A run's primary metric is its pipeline's (its `pipeline` tag), else that of the
        pipeline writing to its experiment, else (no pipeline made it) the first holdout
        metric of the experiment's newest run that logged one, else its first metric."""
        declared, declared_experiments = self.primary_metrics()
        by_pipeline, by_pipeline_args = _cases("t.value", declared)
        with self.ws.db.read() as conn:
            guessed = {
                name: key
                for name, key in conn.exec_driver_sql(
                    "SELECT e.name, coalesce((SELECT lm.key FROM run r JOIN latest_metric lm "
                    "ON lm.run_id = r.id WHERE r.experiment_id = e.id AND lm.key LIKE "
                    "'holdout\\_%' ESCAPE '\\' ORDER BY r.start_time DESC, lm.key LIMIT 1), "
                    "(SELECT lm.key FROM run r JOIN latest_metric lm ON lm.run_id = r.id WHERE "
                    "r.experiment_id = e.id ORDER BY r.start_time DESC, lm.key LIMIT 1)) "
                    "FROM experiment e"
                )
                if key is not None
            }
            by_experiment, by_experiment_args = _cases(
                "e.name",
                guessed | declared_experiments,
            )
            where, args = "1=1", []
            if text.strip():
                where = " OR ".join(
                    f"{c} LIKE ? ESCAPE '\\'" for c in ("r.id", "e.name", "r.name", "r.status")
                )
                args = [like(text.strip())] * 4
            cte = (
                "WITH m AS (SELECT r.id, e.name AS experiment, r.name, r.status, r.start_time, "
                f"coalesce({by_pipeline}, {by_experiment}) AS mkey FROM run r JOIN experiment e "
                "ON e.id = r.experiment_id LEFT JOIN tag t ON t.run_id = r.id AND t.key = "
                f"'pipeline' WHERE {where}) "
            )
            cte_args = [*by_pipeline_args, *by_experiment_args, *args]
            metrics = {
                key: n
                for key, n in conn.exec_driver_sql(
                    cte + "SELECT mkey, count(*) FROM m GROUP BY mkey", tuple(cte_args)
                )
            }
            way = "DESC" if descending or sort is None else "ASC"
            column = RUN_SORTS.get(sort or "start_time", "m.start_time")
            order = f"{column} {way}, m.start_time DESC, m.id"
            if sort == "metric":  # runs without the value last, whichever the direction
                order = f"lm.value IS NULL, {order}"
            join = "LEFT JOIN latest_metric lm ON lm.run_id = m.id AND lm.key = m.mkey"
            if sort == "metric":
                sql = f"{cte}SELECT m.*, lm.value FROM m {join} ORDER BY {order} LIMIT ? OFFSET ?"
            else:  # page first, then read the metric of the page's runs only
                sql = (
                    f"{cte}, p AS (SELECT * FROM m ORDER BY {order} LIMIT ? OFFSET ?) "
                    f"SELECT m.*, lm.value FROM p AS m {join} ORDER BY {order}"
                )
            rows = conn.exec_driver_sql(sql, (*cte_args, int(limit), int(offset))).mappings()
            runs = [
                RunRow(
                    r["id"],
                    r["experiment"],
                    r["name"],
                    r["status"],
                    r["start_time"],
                    r["mkey"],
                    r["value"],
                )
                for r in rows
            ]
        return RunPage(runs, sum(metrics.values()), metrics)

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
