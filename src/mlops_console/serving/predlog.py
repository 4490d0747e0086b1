"""The prediction log: JSON-lines segment files written off the request path.

Requests append to an in-memory list; a background thread writes them out every
`flush_seconds` and rotates segments by size or age. The monitoring collector reads
closed segments (`*.jsonl`); the open one is `*.jsonl.open`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

_log = logging.getLogger(__name__)

PART_ROWS = 4096


class PredictionLog:
    def __init__(
        self,
        folder: Path | None,
        flush_seconds: float = 1.0,
        max_bytes: int = 16 << 20,
        max_age_seconds: float = 60.0,
    ):
        self.folder = Path(folder) if folder else None
        self.flush_seconds = flush_seconds
        self.max_bytes = max_bytes
        # a segment is closed (and so collected) at least this often (the server's
        # `predlog_rotate` setting, MLOPS_PREDLOG_ROTATE)
        self.max_age = max_age_seconds
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._segment: Path | None = None
        self._opened = 0.0
        self._seq = 0
        self.written = 0
        self.dropped = 0
        self.errors = 0
        if self.folder:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._thread = threading.Thread(target=self._loop, name="prediction-log", daemon=True)
            self._thread.start()

    def append(self, record: dict[str, Any]) -> None:
        if self.folder is None:
            return
        with self._lock:
            if len(self._pending) > 200_000:  # the disk cannot keep up: never block a response
                self.dropped += 1
                return
            self._pending.append(record)

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except OSError:  # a full disk must not stop serving; counted, logged, retried
                self.errors += 1
                _log.warning("could not write the prediction log", exc_info=True)
        self.flush()
        self._close_segment()

    def flush(self) -> None:
        if self.folder is None:  # nothing is ever appended
            return
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            if self._segment and time.time() - self._opened > self.max_age:
                self._close_segment()
            return
        if self._segment is None:
            self._seq += 1
            self._segment = (
                self.folder
                / f"predictions-{int(time.time() * 1000)}-{os.getpid()}-{self._seq}.jsonl.open"
            )
            self._opened = time.time()
        with open(self._segment, "ab") as fh:
            lines: list[bytes] = []
            size = 0
            for record in batch:
                for part in _parts(record):
                    try:
                        line = (
                            orjson.dumps(part, option=orjson.OPT_SERIALIZE_NUMPY, default=_plain)
                            + b"\n"
                        )
                    except TypeError:
                        self.dropped += 1
                        continue
                    lines.append(line)
                    size += len(line)
                    if size > 1 << 20:  # write as we go: a large request is never held twice
                        fh.write(b"".join(lines))
                        lines, size = [], 0
            fh.write(b"".join(lines))
        self.written += len(batch)
        if (
            self._segment.stat().st_size > self.max_bytes
            or time.time() - self._opened > self.max_age
        ):
            self._close_segment()

    def _close_segment(self) -> None:
        if self._segment and self._segment.exists():
            os.replace(self._segment, self._segment.with_suffix(""))  # drop ".open"
        self._segment = None

    def close(self) -> None:
        if self.folder:
            self._stop.set()
            self._thread.join(timeout=10)


def _parts(record: dict[str, Any]):
    """A large request's record as records of at most PART_ROWS rows (`row_offset` says
    where each starts), so no single line, nor its serialisation, is huge."""
    n = int(record.get("rows") or 0)
    if n <= PART_ROWS or "inputs" not in record:
        yield record
        return
    for start in range(0, n, PART_ROWS):
        stop = min(n, start + PART_ROWS)
        part = {k: v for k, v in record.items() if k not in ("inputs", "outputs", "keys")}
        part.update(rows=stop - start, row_offset=start, request_rows=n)
        for group in ("inputs", "outputs", "keys"):
            if group in record:
                part[group] = {k: v[start:stop] for k, v in record[group].items()}
        yield part


def _plain(obj):
    if hasattr(obj, "tolist"):  # numpy arrays of strings, numpy scalars
        return obj.tolist()
    raise TypeError(type(obj).__name__)
