"""The daemon's file watchers: a pipeline whose spec says `on_data_change` has its
dataset's source folder watched (watchdog); a burst of changes becomes one chain once the
files have stopped changing for `settle` seconds, and none when they still hash to the
version taken last (a touch, a save of the same bytes).
"""

from __future__ import annotations

import fnmatch
import glob
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.errors import MlopsError

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

    from mlops_console.workspace import Workspace


class Watcher:
    def __init__(
        self,
        ws: Workspace,
        event: Callable[[dict[str, Any]], None],
        settle: float,
        max_attempts: int,
    ):
        self.ws = ws
        self.event = event
        self.settle = settle
        self.max_attempts = max_attempts
        # pipeline -> {"last": t, "files": {path: (size, mtime)}}
        self.pending: dict[str, dict[str, Any]] = {}
        self.pending_lock = threading.Lock()
        self.watchers: list[dict[str, str]] = []  # what start() watches
        self.watched_datasets: dict[str, str] = {}  # pipeline -> the dataset it watches
        self.observer: BaseObserver | None = None

    def close(self) -> None:
        if self.observer is not None:
            self.observer.stop()

    def start(self, pipelines: dict[str, Any]) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self
        targets: dict[str, list[tuple[str, str]]] = {}  # folder -> [(pipeline, absolute glob)]
        for name, spec in pipelines.items():
            if not (spec.schedule.on_data_change and spec.data.dataset):
                continue
            try:
                source = self.ws.data.get(spec.data.dataset).source
            except MlopsError:
                continue
            pattern = source if os.path.isabs(source) else str(self.ws.root / source)
            folder = Path(pattern)
            while glob.has_magic(str(folder)):
                folder = folder.parent
            if folder.is_file() or not folder.exists():
                folder = folder.parent
            targets.setdefault(str(folder), []).append((name, pattern))
            self.watched_datasets[name] = spec.data.dataset

        class Handler(FileSystemEventHandler):
            def __init__(self, watches):
                self.watches = watches

            def on_any_event(self, event):
                if event.is_directory or event.event_type not in (
                    "created",
                    "modified",
                    "moved",
                    "closed",
                ):
                    return
                path = getattr(event, "dest_path", None) or event.src_path
                for pipeline, pattern in self.watches:
                    if fnmatch.fnmatch(path, pattern):
                        try:
                            st = os.stat(path)
                            sig = (st.st_size, st.st_mtime)
                        except OSError:
                            sig = None
                        with watcher.pending_lock:
                            p = watcher.pending.setdefault(pipeline, {"files": {}})
                            p["last"] = time.time()
                            p["files"][path] = sig

        self.observer = Observer()
        self.watchers = [
            {"folder": folder, "pipeline": name, "pattern": pattern}
            for folder, watches in sorted(targets.items())
            for name, pattern in watches
        ]
        for where, watches in targets.items():
            self.observer.schedule(Handler(watches), where, recursive=False)
            self.event({"event": "watching", "folder": where, "pipelines": [w[0] for w in watches]})
        self.observer.start()

    def settle_pending(self) -> None:
        """Trigger once the files of a burst stopped changing (size and mtime stable)."""
        now = time.time()
        with self.pending_lock:
            items = list(self.pending.items())
        for pipeline, p in items:
            if now - p["last"] < self.settle:
                continue
            stable = True
            for path, seen in list(p["files"].items()):
                try:
                    st = os.stat(path)
                    sig = (st.st_size, st.st_mtime)
                except OSError:
                    sig = None
                if sig != seen:
                    p["files"][path] = sig
                    stable = False
            if not stable:
                with self.pending_lock:
                    p["last"] = now  # look again after another settle period
                continue
            with self.pending_lock:
                self.pending.pop(pipeline, None)
            same = self._unchanged_version(pipeline)
            if same is not None:  # touched or saved again with the same bytes: nothing new
                self.event(
                    {
                        "event": "watch_unchanged",
                        "pipeline": pipeline,
                        "dataset": same.dataset,
                        "version": same.version,
                        "files": sorted(p["files"]),
                    }
                )
                continue
            job = self.ws.jobs.submit(
                "chain", pipeline, trigger="watch", max_attempts=self.max_attempts
            )
            self.event(
                {
                    "event": "triggered",
                    "pipeline": pipeline,
                    "by": "watch",
                    "job": job.id,
                    "files": sorted(p["files"]),
                }
            )

    def _unchanged_version(self, pipeline: str):
        """The dataset version the watched files still hash to, or None if they changed."""
        dataset = self.watched_datasets.get(pipeline)
        if dataset is None:
            return None
        try:
            return self.ws.data.unchanged_since(dataset)
        except (MlopsError, OSError) as exc:  # gone or unreadable: the chain's ingest says why
            self.event({"event": "watch_hash_failed", "pipeline": pipeline, "detail": str(exc)})
            return None
