"""Where large requests are parsed, so they never stall the small ones.

CSV and Parquet bodies are parsed by Arrow, which releases the GIL: a thread will do. A
large JSON body is another matter: `orjson.loads` builds millions of Python objects in
one call that holds the GIL for seconds, and with it the event loop. So JSON bodies over
`PROCESS_BYTES` are parsed and checked in a child process (forkserver, one request per
child so its memory goes back to the system when it ends), which hands back the typed
arrays. The threads of the bulk lane run at a lower CPU priority than the event loop.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from mlops_console.serving.inputs import Batch, loads, parse_json, to_batch

PROCESS_BYTES = 1 << 20  # JSON bodies from this size are parsed in a child process


def _lower_priority() -> None:
    """Linux gives each thread its own nice value: the bulk lane yields the CPU first."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (OSError, AttributeError):
        pass


def bulk_threads(n: int, name: str) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(n, thread_name_prefix=name, initializer=_lower_priority)


def parse_json_batch(
    body: bytes | bytearray, signature: dict[str, Any], max_rows: int, impute: bool
) -> Batch:
    """Body to checked, typed arrays (run in the child; its BadInput reaches the caller)."""
    names = [c["name"] for c in signature["inputs"]]
    columns = parse_json(loads(body), names)
    del body
    return to_batch(columns, signature, max_rows, impute)


class JsonParsers:
    """A pool of one child process at a time, made on first use and remade if it breaks."""

    def __init__(self):
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                ctx = multiprocessing.get_context("forkserver")
                ctx.set_forkserver_preload(["mlops_console.serving.bulk"])
                self._pool = ProcessPoolExecutor(
                    1, mp_context=ctx, max_tasks_per_child=1, initializer=_lower_priority
                )
            return self._pool

    def submit(self, *args):
        try:
            return self.pool().submit(parse_json_batch, *args)
        except BrokenProcessPool:
            self.reset()
            return self.pool().submit(parse_json_batch, *args)

    def reset(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        """At shutdown: wait for the child, so nothing is left for the resource tracker."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
