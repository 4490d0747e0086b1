"""A run being recorded: `ActiveRun` buffers params and metrics and writes them in
batches, and one thread per process flushes the buffers and renews the heartbeats.

`ws.runs.start(...)` (tracking/runs.py) hands one out; read runs back through `ws.runs`.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.errors import Conflict, MlopsError, NotFound

if TYPE_CHECKING:
    from mlops_console.tracking.runs import RunTracker

STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")
HEARTBEAT_SECONDS = 30.0  # how often a running run says it is alive

_log = logging.getLogger(__name__)


class ActiveRun:
    """A run being recorded. Use as a context manager, or call `end()` yourself."""

    def __init__(
        self,
        tracker: RunTracker,
        run_id: str,
        name: str,
        seed: int,
        params: dict[str, str] | None = None,
    ):
        self._tracker = tracker
        self._db = tracker.ws.db
        self.id = run_id
        self.name = name
        self.seed = seed
        self._lock = threading.Lock()
        self._buffer: list[tuple[str, str, float, int, float]] = []
        self._param_buffer: list[tuple[str, str, str]] = []
        self._params: dict[str, str] = dict(params or {})
        self._deferred_error: Exception | None = None
        self._steps: dict[str, int] = {}
        self._pending_since: float | None = None  # monotonic time of the oldest unwritten row
        self._ended = False
        cfg = tracker.ws.config.tracking
        self._flush_seconds = cfg.metric_flush_seconds
        self._flush_rows = cfg.metric_flush_rows

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end("FINISHED")
            return
        try:
            if issubclass(exc_type, KeyboardInterrupt):
                self.end("KILLED")
            else:
                self.end("FAILED", error=f"{exc_type.__name__}: {exc}")
        except Exception as again:
            # the error that stopped the run (often the same full disk) is the one to
            # report; this one in a line (--debug shows both tracebacks)
            cause = getattr(again, "orig", None) or again
            _log.warning(
                "run %s could not record its end (%s); the next command that opens the "
                "workspace marks it",
                self.id[:8],
                f"{type(cause).__name__}: {cause}",
            )
            _log.debug("recording the end of run %s failed", self.id[:8], exc_info=True)

    def __repr__(self) -> str:
        return f"<ActiveRun {self.id[:8]} {self.name!r}>"

    # --- params and tags -----------------------------------------------------------

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: dict[str, Any]) -> None:
        """Params are immutable: logging a key again with a different value is an error.

        Like metrics they are buffered and written with the next flush; a clash with a
        value this run logged before is reported at once.
        """
        if not params:
            return
        rows = [(str(k), param_text(v)) for k, v in params.items()]
        with self._lock:
            self._raise_deferred()
            if self._ended:
                raise MlopsError(f"Run {self.id[:8]} has ended; start a new run to log more.")
            clashes = [k for k, v in rows if self._params.get(k, v) != v]
            if clashes:
                raise Conflict(
                    f"Param(s) {', '.join(clashes)} of run {self.id[:8]} already have another "
                    "value; params cannot change. Log the new value under another name or as a "
                    "metric."
                )
            for k, v in rows:
                if k not in self._params:
                    self._params[k] = v
                    self._param_buffer.append((self.id, k, v))
            self._after_append()

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
            self._after_append()

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        with self._lock:
            for key, value in metrics.items():
                self._append(key, float(value), step)
            self._after_append()

    def _append(self, key: str, value: float, step: int | None) -> None:
        self._raise_deferred()
        if self._ended:
            raise MlopsError(f"Run {self.id[:8]} has ended; start a new run to log more.")
        if step is None:
            step = self._steps.get(key, -1) + 1
        self._steps[key] = max(step, self._steps.get(key, -1))
        self._buffer.append((self.id, str(key), value, int(step), time.time()))

    def _after_append(self) -> None:
        if len(self._buffer) + len(self._param_buffer) >= self._flush_rows:
            self._flush_locked()
        elif self._pending_since is None:
            self._pending_since = time.monotonic()
            if self._flush_seconds > 0:
                FLUSHER.watch(self)

    def _raise_deferred(self) -> None:
        if self._deferred_error is not None:
            exc, self._deferred_error = self._deferred_error, None
            raise exc

    def flush(self) -> None:
        """Write buffered params and metric values now."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self, conn=None) -> list[str]:
        self._pending_since = None
        if not self._buffer and not self._param_buffer:
            return []
        rows, self._buffer = self._buffer, []
        params, self._param_buffer = self._param_buffer, []
        if conn is not None:
            return self._write(conn, rows, params)
        with self._db.write() as conn:
            clashes = self._write(conn, rows, params)
        self._report_clashes(clashes)
        return []

    def _report_clashes(self, clashes: list[str]) -> None:
        if clashes:
            raise Conflict(
                f"Param(s) {', '.join(clashes)} of run {self.id[:8]} were already logged "
                "with another value by another process; the stored value was kept."
            )

    def _write(self, conn, rows, params) -> list[str]:
        """Insert buffered rows; returns the params another process set differently."""
        clashes: list[str] = []
        if params:
            conn.exec_driver_sql(
                "INSERT INTO param (run_id, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT(run_id, key) DO NOTHING",
                params,
            )
            # Another process may have logged the same key into this run meanwhile.
            marks = ",".join("?" * len(params))
            stored = dict(
                conn.exec_driver_sql(
                    f"SELECT key, value FROM param WHERE run_id = ? AND key IN ({marks})",
                    (self.id, *(k for _, k, _ in params)),
                ).all()
            )
            clashes = [k for _, k, v in params if stored.get(k) != v]
            for k in clashes:
                self._params[k] = stored[k]
        if rows:
            # SQLite cannot store NaN: it is written as NULL and read back as NaN.
            rows = [(r, k, None if math.isnan(v) else v, s, t) for r, k, v, s, t in rows]
            conn.exec_driver_sql(
                "INSERT INTO metric (run_id, key, value, step, timestamp) VALUES (?,?,?,?,?)",
                rows,
            )
            conn.exec_driver_sql(
                "INSERT INTO latest_metric (run_id, key, value, step, timestamp) "
                "VALUES (?,?,?,?,?) ON CONFLICT(run_id, key) DO UPDATE SET "
                "value = excluded.value, step = excluded.step, timestamp = excluded.timestamp "
                "WHERE excluded.step >= latest_metric.step",
                _latest_per_key(rows),
            )
        return clashes

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
        forced: bool = False,
    ) -> None:
        """Record a dataset version this run read (its data lineage).

        `forced`: the version broke its data contract and was accepted deliberately; the
        run is tagged `data_forced` so that it says so wherever it is shown.
        """
        version = version or digest[:12]
        with self._db.write() as conn:
            conn.exec_driver_sql(
                "INSERT INTO run_input (run_id, name, version, digest, rows, source, forced) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT(run_id, name) DO UPDATE SET "
                "version = excluded.version, digest = excluded.digest, rows = excluded.rows, "
                "source = excluded.source, forced = excluded.forced",
                (self.id, name, version, digest, rows, source, forced),
            )
            if forced:
                conn.exec_driver_sql(
                    "INSERT INTO tag (run_id, key, value) VALUES (?, 'data_forced', ?) "
                    "ON CONFLICT(run_id, key) DO UPDATE SET value = tag.value || ', ' || excluded.value",
                    (self.id, f"{name}@{version}"),
                )

    def add_lineage(self, key: str, value: Any) -> None:
        """Add `key` to the run's lineage: what is known only once the run is under way
        (e.g. where its search ran). Written at once, in its own transaction."""
        with self._db.write() as conn:
            conn.exec_driver_sql(
                "UPDATE run SET lineage = json_set(COALESCE(lineage, '{}'), ?, json(?)) "
                "WHERE id = ?",
                (f"$.{key}", json.dumps(value, default=str), self.id),
            )

    # --- end -------------------------------------------------------------------------------

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        """Write what is buffered and close the run, in one transaction."""
        if status not in STATUSES[1:]:
            raise MlopsError(f"A run ends FINISHED, FAILED or KILLED, not {status!r}.")
        with self._lock:
            if self._ended:
                return
            self._ended = True
            FLUSHER.forget(self)
            try:
                with self._db.write() as conn:
                    clashes = self._flush_locked(conn)
                    self._close(conn, status, error)
            except Exception as exc:
                # e.g. the disk filled: the buffered values are lost, but the run must not
                # stay RUNNING, so its end alone (a few bytes) is tried once more
                try:
                    with self._db.write() as conn:
                        self._close(conn, "FAILED", error or f"{type(exc).__name__}: {exc}")
                except Exception:
                    pass  # marked when the workspace is next opened (its process is gone)
                raise
        self._report_clashes(clashes)

    def _close(self, conn, status: str, error: str | None) -> None:
        conn.exec_driver_sql(
            "UPDATE run SET status = ?, end_time = ? WHERE id = ?", (status, time.time(), self.id)
        )
        if error:
            conn.exec_driver_sql(
                "INSERT INTO tag (run_id, key, value) VALUES (?, 'error', ?) "
                "ON CONFLICT(run_id, key) DO UPDATE SET value = excluded.value",
                (self.id, error[:2000]),
            )


class _Flusher:
    """One daemon thread per process writes runs' buffers once they are
    `metric_flush_seconds` old, so values show up live without a thread per run."""

    def __init__(self) -> None:
        self._runs: set[ActiveRun] = set()
        self._beating: set[ActiveRun] = set()  # every run of this process not ended yet
        self._last_beat = time.monotonic()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, run: ActiveRun) -> None:
        with self._lock:
            self._runs.add(run)
            self._start()

    def beat(self, run: ActiveRun) -> None:
        """Renew `run`'s heartbeat every HEARTBEAT_SECONDS until it ends."""
        with self._lock:
            self._beating.add(run)
            self._start()

    def forget(self, run: ActiveRun) -> None:
        with self._lock:
            self._beating.discard(run)

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._loop, name="mlops-metric-flusher", daemon=True
            )
            self._thread.start()

    def _heartbeat(self) -> None:
        """One small write per workspace for all of this process's running runs."""
        if time.monotonic() - self._last_beat < HEARTBEAT_SECONDS:
            return
        self._last_beat = time.monotonic()
        with self._lock:
            by_db: dict[int, list[ActiveRun]] = {}
            for run in self._beating:
                by_db.setdefault(id(run._db), []).append(run)
        for runs in by_db.values():
            try:
                with runs[0]._db.write() as conn:
                    conn.exec_driver_sql(
                        "UPDATE run SET heartbeat_at = ? WHERE id = ? AND status = 'RUNNING'",
                        [(time.time(), r.id) for r in runs],
                    )
            except Exception:  # a missed beat only makes the run look older
                _log.warning("could not renew the heartbeat of running runs", exc_info=True)

    def _loop(self) -> None:
        while True:
            self._heartbeat()
            with self._lock:
                runs = list(self._runs)
            if not runs:
                time.sleep(1.0)
                continue
            now, next_due = time.monotonic(), 0.5
            for run in runs:
                # Under the run's lock, so an append cannot slip between check and discard.
                with run._lock:
                    since = run._pending_since
                    if since is not None and not run._ended:
                        due = since + run._flush_seconds - now
                        if due > 0:
                            next_due = min(next_due, due)
                            continue
                        try:
                            run._flush_locked()
                        except Exception as exc:  # reported by the next call on that run
                            run._deferred_error = exc
                    with self._lock:
                        self._runs.discard(run)
            time.sleep(max(next_due, 0.01))


FLUSHER = _Flusher()


def param_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value)
    return json.dumps(value, sort_keys=True, default=str)


def _latest_per_key(rows: list[tuple]) -> list[tuple]:
    """Of a batch of (run, key, value, step, time) rows, the one per (run, key) that the
    latest_metric upsert would keep: the highest step, the later row on a tie. Writing only
    those gives the same table with one upsert per key instead of one per value."""
    last: dict[tuple, tuple] = {}
    for row in rows:
        kept = last.get((row[0], row[1]))
        if kept is None or row[3] >= kept[3]:
            last[(row[0], row[1])] = row
    return list(last.values())
