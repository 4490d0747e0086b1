"""The model server's state and its scoring path: traffic, micro-batchers, parsing, the
prediction log, the watchdog and shutdown.

A request's body is parsed and validated to the signature (bodies over `bulk_bytes` off
the event loop), then predicted: small requests share micro-batches, large ones are
predicted on their own in a single bulk lane, so a 500k-row request never sits in front of
a 1-row one. A primary's answer is mirrored to the shadow, which never affects it.
"""

from __future__ import annotations

import asyncio
import ctypes
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from mlops_console.serving import feedback
from mlops_console.serving.batcher import MAX_BATCH_ROWS, Batcher, Unavailable, predict_checked, say
from mlops_console.serving.bulk import PROCESS_BYTES, JsonParsers, bulk_threads
from mlops_console.serving.http import BodyBudget, Call
from mlops_console.serving.inputs import (
    BadInput,
    Batch,
    loads,
    parse_csv,
    parse_json,
    parse_parquet,
    to_batch,
)
from mlops_console.serving.metrics import Metrics
from mlops_console.serving.model import ServedModel
from mlops_console.serving.predlog import PredictionLog
from mlops_console.serving.settings import ServerSettings
from mlops_console.serving.traffic import Traffic

STUCK_SECONDS = 30.0  # a predict running longer than this fails readiness
PARQUET = ("application/vnd.apache.parquet", "application/x-parquet", "application/parquet")


class Server:
    """What every route reads: the versions served, the settings, metrics and the log."""

    def __init__(
        self,
        model: ServedModel,
        log_dir: Path | None = None,
        admin_token: str | None = None,
        settings: ServerSettings | None = None,
        host: str = "127.0.0.1",
    ):
        self.traffic = Traffic(model)
        self.settings = settings or ServerSettings()
        self.host = host
        self.metrics = Metrics()
        self.log = PredictionLog(log_dir, max_age_seconds=self.settings.predlog_rotate)
        self.admin_token = admin_token
        self.batchers: dict[int, Batcher] = {}
        self.started = time.time()
        self.inflight = 0
        self.watchdog: asyncio.Task[None] | None = None
        self.watch_every = 0.5  # seconds between the watchdog's looks at the scoring loops
        # one large request is parsed and predicted at a time, beside the micro-batches
        self.bulk = bulk_threads(1, "bulk")
        self.parsing = bulk_threads(2, "parse")
        self.json_parsers = JsonParsers()
        self.feedback = feedback.FeedbackGuard(self)
        # started from a registry-vouched bundle: every later load must be vouched for too
        self.require_digest = model.bundle_digest is not None
        self.budget = BodyBudget(self.settings.max_body_memory)

    # --- scoring --------------------------------------------------------------------------

    def batcher(self, model: ServedModel) -> Batcher:
        b = self.batchers.get(id(model))
        if b is None or not b.alive:
            if b is not None:
                self._restarted(model, b)
            b = self.batchers[id(model)] = Batcher(model, self.metrics)
        return b

    def _restarted(self, model: ServedModel, dead: Batcher) -> None:
        self.metrics.batcher_restarts += 1
        say(f"the scoring loop of {model.ref} ended ({dead.death()}); restarted")
        dead.fail_queued(Unavailable("Scoring restarted; retry the request."))

    def ready(self) -> tuple[bool, str]:
        """Whether every served version can score now (its loop alive and not stuck)."""
        for model in self.traffic.served():
            b = self.batchers.get(id(model))
            if b is None:
                continue
            if not b.alive:
                return False, f"the scoring loop of {model.ref} ended"
            if b.stuck(STUCK_SECONDS):
                return False, f"a predict of {model.ref} has run for over {STUCK_SECONDS:g} s"
        return True, ""

    def start(self) -> None:
        """Start the watchdog (on the server's event loop, once it runs)."""
        self.watchdog = asyncio.get_running_loop().create_task(self.watch())

    async def watch(self) -> None:
        """Restart any scoring loop that died, within `watch_every` seconds."""
        while True:
            await asyncio.sleep(self.watch_every)
            for model in self.traffic.served():
                b = self.batchers.get(id(model))
                if b is not None and not b.alive:
                    self.batcher(model)

    async def parse(
        self, model: ServedModel, call: Call, box: list[bytearray], ctype: str
    ) -> Batch:
        """The body (alone in `box`, so it is freed as soon as it is parsed) to a batch."""
        s = self.settings
        names = [c["name"] for c in model.signature["inputs"]]
        size = len(box[0])

        def work() -> Batch:
            if ctype == "text/csv":
                columns = parse_csv(box, model.signature, s.impute_missing)
            elif ctype in PARQUET:
                columns = parse_parquet(box, model.signature, s.impute_missing)
            else:
                columns = parse_json(loads(box.pop()), names)
            return to_batch(columns, model.signature, s.max_rows, s.impute_missing)

        loop = asyncio.get_running_loop()
        if size < s.bulk_bytes:
            batch = work()
        elif ctype not in ("text/csv", *PARQUET) and size >= PROCESS_BYTES:
            # a large JSON parse holds the GIL for seconds: in a child process
            future = self.json_parsers.submit(
                box.pop(), model.signature, s.max_rows, s.impute_missing
            )
            try:
                batch = await asyncio.wrap_future(future)
            except BrokenProcessPool:
                self.json_parsers.reset()
                raise RuntimeError("the JSON parser process died") from None
        else:  # parsing a large body would stall every other request on the loop
            batch = await loop.run_in_executor(self.parsing, work)
        call.rows = batch.n
        return batch

    async def predict(self, model: ServedModel, batch: Batch) -> dict[str, Any]:
        if batch.n <= MAX_BATCH_ROWS:
            return await self.batcher(model).predict(batch)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self.bulk, predict_checked, model, batch.arrays, batch.n
            )
        finally:
            loop.run_in_executor(self.bulk, _give_back_memory)

    async def score(
        self, model: ServedModel, role: str, call: Call, batch: Batch
    ) -> dict[str, Any]:
        """Predict, log the answer, and mirror a primary's request to the shadow."""
        out = await self.predict(model, batch)
        latency = time.perf_counter() - call.t0
        record: dict[str, Any] = {
            "ts": time.time(),
            "request_id": call.request_id,
            "model": model.name,
            "version": model.version,
            "role": role,
            "status": 200,
            "latency_ms": latency * 1000,
            "rows": batch.n,
            "inputs": batch.arrays,
            "outputs": out,
        }
        if call.probe:  # a health check's rows are not traffic: monitoring never sees them
            return out
        if batch.keys:
            record["keys"] = batch.keys  # logged for label matching
        self.log.append(record)
        shadow = self.traffic.shadow
        if shadow is not None and role == "primary":
            asyncio.get_running_loop().create_task(self._shadow(shadow, call, batch))
        return out

    async def _shadow(self, model: ServedModel, call: Call, batch: Batch) -> None:
        t0 = time.perf_counter()
        status, error = 200, ""
        out: dict[str, Any] | None = None
        try:
            if model.signature["inputs"] != self.traffic.primary.signature["inputs"]:
                columns: dict[str, Any] = {**batch.arrays, **batch.keys}
                batch = to_batch(
                    columns,
                    model.signature,
                    self.settings.max_rows,
                    self.settings.impute_missing,
                )
            out = await self.predict(model, batch)
        except BadInput as exc:
            status, error = 400, str(exc)
        except Exception as exc:  # a shadow never affects the answer
            status, error = 500, f"{type(exc).__name__}: {exc}"
        latency = time.perf_counter() - t0
        self.metrics.observe("shadow", status, latency, batch.n if out else 0, "shadow")
        record: dict[str, Any] = {
            "ts": time.time(),
            "request_id": call.request_id,
            "model": model.name,
            "version": model.version,
            "role": "shadow",
            "status": status,
            "latency_ms": latency * 1000,
            "rows": batch.n if out else 0,
        }
        if out is not None:
            record.update(inputs=batch.arrays, outputs=out)
        else:
            record["error"] = error[:300]
        self.log.append(record)

    # --- versions in and out --------------------------------------------------------------

    def retire(self, model: ServedModel | None) -> None:
        """Stop a replaced version's batcher once its queued requests are done."""
        if model is None or model in self.traffic.served():
            return
        b = self.batchers.pop(id(model), None)
        if b is not None:

            async def later() -> None:
                while not b.queue.empty():
                    await asyncio.sleep(0.01)
                await asyncio.sleep(1.0)
                b.close()

            asyncio.get_running_loop().create_task(later())

    async def close(self) -> None:
        if self.watchdog:
            self.watchdog.cancel()
        for b in list(self.batchers.values()):
            b.fail_queued(Unavailable("The server is stopping."))
            b.close()
        self.json_parsers.close()
        self.bulk.shutdown(wait=False, cancel_futures=True)
        self.parsing.shutdown(wait=False, cancel_futures=True)
        self.log.close()


def _give_back_memory() -> None:
    """Return the heap a large request used to the system (glibc and Arrow keep it)."""
    pa = sys.modules.get("pyarrow")
    if pa is not None:
        pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
