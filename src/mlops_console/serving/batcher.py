"""Micro-batching: the requests queued for one model version share one predict.

Nothing a request holds can end the loop: requests are validated before they are queued,
a batch that fails is answered request by request (so only the request at fault fails),
and every exception is caught, logged and handed to the requests it concerns. If the loop
dies anyway, the server's watchdog sees it, fails readiness until it is restarted, and
restarts it.
"""

from __future__ import annotations

import asyncio
import sys
import time
import traceback
from typing import Any

import numpy as np

from mlops_console.serving.inputs import Batch

MAX_BATCH_ROWS = 1024  # a request with more rows is predicted on its own, off the event loop
INLINE_ROWS = 256  # ONNX predicts this small run on the event loop (faster than a thread hop)
CHUNK_ROWS = 65536  # large requests are predicted in chunks of this many rows


class Unavailable(Exception):
    """Scoring cannot take the request now (answered with a 503)."""


def say(message: str) -> None:
    """One line on stderr for the deployment's log (no request data, no secrets)."""
    sys.stderr.write(time.strftime("%Y-%m-%dT%H:%M:%S ") + message + "\n")
    sys.stderr.flush()


def predict_checked(model, arrays: dict[str, np.ndarray], n: int) -> dict[str, Any]:
    """Predict, in chunks for large inputs; refuse outputs of the wrong length."""
    if n <= CHUNK_ROWS:
        out = model.predict(arrays, n)
    else:
        parts = []
        for start in range(0, n, CHUNK_ROWS):
            stop = min(n, start + CHUNK_ROWS)
            parts.append(model.predict({k: v[start:stop] for k, v in arrays.items()}, stop - start))
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    for k, v in out.items():
        if len(v) != n:
            raise RuntimeError(f"the model returned {len(v)} {k} values for {n} rows")
    return out


class Batcher:
    def __init__(self, model, metrics):
        self.model = model
        self.metrics = metrics
        self.queue: asyncio.Queue = asyncio.Queue()
        self.busy_since: float | None = None  # when the predict in progress started
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher {model.ref}")

    @property
    def alive(self) -> bool:
        return not self.task.done()

    def stuck(self, seconds: float) -> bool:
        return self.busy_since is not None and time.monotonic() - self.busy_since > seconds

    async def predict(self, batch: Batch) -> dict[str, Any]:
        if not self.alive:
            raise Unavailable("Scoring is restarting; retry in a second.")
        fut = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((batch, fut))
        return await fut

    async def _gather(self) -> list[tuple[Batch, asyncio.Future]]:
        first = await self.queue.get()
        await asyncio.sleep(0)  # one tick: let requests that arrived together join
        items, rows = [first], first[0].n
        while not self.queue.empty() and rows < MAX_BATCH_ROWS:
            item = self.queue.get_nowait()
            items.append(item)
            rows += item[0].n
        return items

    async def _run(self) -> None:
        while True:
            items: list = []
            try:
                items = await self._gather()
                await self._serve(items)
            except asyncio.CancelledError:
                self._fail(items, Unavailable("The server is stopping."))
                self.fail_queued(Unavailable("The server is stopping."))
                raise
            except Exception as exc:  # never ends the loop
                say(f"batcher {self.model.ref}: {type(exc).__name__}: {exc}")
                self._fail(items, exc)
            except BaseException:  # the loop dies: answer its requests; the watchdog restarts it
                self._fail(items, Unavailable("Scoring failed and is restarting; retry."))
                raise
            finally:
                self.busy_since = None

    async def _predict(self, arrays: dict[str, np.ndarray], rows: int) -> dict[str, Any]:
        self.busy_since = time.monotonic()
        if self.model.runtime == "onnx" and rows <= INLINE_ROWS:
            return predict_checked(self.model, arrays, rows)
        # longer predicts go to a thread so the loop keeps accepting requests
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, predict_checked, self.model, arrays, rows)

    async def _serve(self, items: list[tuple[Batch, asyncio.Future]]) -> None:
        live = [(b, f) for b, f in items if not f.done()]  # a client that left is skipped
        if not live:
            return
        rows = sum(b.n for b, _ in live)
        if len(live) == 1:
            batch, fut = live[0]
            try:
                out = await self._predict(batch.arrays, batch.n)
            except Exception as exc:
                self._fail(live, exc)
                return
            self.metrics.batch(rows)
            if not fut.done():
                fut.set_result(out)
            return
        try:
            names = list(live[0][0].arrays)
            arrays = {k: np.concatenate([b.arrays[k] for b, _ in live]) for k in names}
            out = await self._predict(arrays, rows)
        except Exception as exc:
            # one request broke the batch: answer each on its own, so only it fails
            say(f"batcher {self.model.ref}: a batch of {len(live)} failed ({exc}); one by one")
            for batch, fut in live:
                try:
                    single = await self._predict(batch.arrays, batch.n)
                except Exception as one:
                    if not fut.done():
                        fut.set_exception(one)
                    continue
                if not fut.done():
                    fut.set_result(single)
            return
        self.metrics.batch(rows)
        start = 0
        for batch, fut in live:
            if not fut.done():
                fut.set_result({k: v[start : start + batch.n] for k, v in out.items()})
            start += batch.n

    @staticmethod
    def _fail(items, exc: BaseException) -> None:
        for _, fut in items:
            if not fut.done():
                fut.set_exception(exc)

    def fail_queued(self, exc: BaseException) -> None:
        """Answer every request still queued (a dead or stopped loop answers nothing)."""
        while not self.queue.empty():
            _, fut = self.queue.get_nowait()
            if not fut.done():
                fut.set_exception(exc)

    def death(self) -> str:
        """Why the loop ended, for the log."""
        if self.task.cancelled():
            return "cancelled"
        exc = self.task.exception()
        if exc is None:
            return "returned"
        return "".join(traceback.format_exception_only(type(exc), exc)).strip()

    def close(self) -> None:
        self.task.cancel()
