"""The ASGI app: scoring, v2 inference, health, metrics, feedback and token-guarded admin.

A request is routed to a role (primary, canary) first, then its body is read within the
size cap, parsed and validated to the signature (bodies over `bulk_bytes` off the event
loop), then predicted: small requests share micro-batches, large ones are predicted on
their own in a single bulk lane, so a 500k-row request never sits in front of a 1-row one.
New versions load beside the old one and are swapped in with one reference assignment;
requests in flight finish on the version they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mlops_console import __version__
from mlops_console.serving import admin, feedback, v2
from mlops_console.serving.batcher import MAX_BATCH_ROWS, Batcher, Unavailable, predict_checked, say
from mlops_console.serving.bulk import PROCESS_BYTES, JsonParsers, bulk_threads
from mlops_console.serving.http import (
    BodyBudget,
    Call,
    HttpError,
    content_type,
    endpoint,
    error_body,
    json_bytes,
    json_response,
    read_body,
)
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

STUCK_SECONDS = 30.0  # a predict running longer than this fails readiness
PARQUET = ("application/vnd.apache.parquet", "application/x-parquet", "application/parquet")


class Server:
    def __init__(
        self,
        model: ServedModel,
        log_dir: Path | None = None,
        admin_token: str | None = None,
        settings: ServerSettings | None = None,
        host: str = "127.0.0.1",
    ):
        self.primary = model
        self.canary: ServedModel | None = None
        self.canary_percent = 0.0
        self.shadow: ServedModel | None = None
        self.settings = settings or ServerSettings()
        self.host = host
        self.metrics = Metrics()
        self.log = PredictionLog(log_dir)
        self.admin_token = admin_token
        self.batchers: dict[int, Batcher] = {}
        self.started = time.time()
        self.swaps = 0
        self.inflight = 0
        self.watchdog: asyncio.Task | None = None
        self.watch_every = 0.5  # seconds between the watchdog's looks at the scoring loops
        # one large request is parsed and predicted at a time, beside the micro-batches
        self.bulk = bulk_threads(1, "bulk")
        self.parsing = bulk_threads(2, "parse")
        self.json_parsers = JsonParsers()
        self.feedback = feedback.FeedbackGuard(self)
        # started from a registry-vouched bundle: every later load must be vouched for too
        self.require_digest = model.bundle_digest is not None
        self.budget = BodyBudget(self.settings.max_body_memory)

    # --- roles and versions ---------------------------------------------------------------

    def pick(self) -> tuple[ServedModel, str]:
        canary = self.canary
        if canary is not None and random.random() * 100 < self.canary_percent:
            return canary, "canary"
        return self.primary, "primary"

    def served(self) -> list[ServedModel]:
        return [m for m in (self.primary, self.canary, self.shadow) if m is not None]

    def role_of_version(self, version: str) -> tuple[ServedModel, str] | None:
        for model, role in ((self.primary, "primary"), (self.canary, "canary")):
            if model is not None and str(model.version) == str(version):
                return model, role
        return None

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
        for model in self.served():
            b = self.batchers.get(id(model))
            if b is None:
                continue
            if not b.alive:
                return False, f"the scoring loop of {model.ref} ended"
            if b.stuck(STUCK_SECONDS):
                return False, f"a predict of {model.ref} has run for over {STUCK_SECONDS:g} s"
        return True, ""

    async def _watch(self) -> None:
        """Restart any scoring loop that died, within `watch_every` seconds."""
        while True:
            await asyncio.sleep(self.watch_every)
            for model in self.served():
                b = self.batchers.get(id(model))
                if b is not None and not b.alive:
                    self.batcher(model)

    async def parse(self, model: ServedModel, call: Call, box: list, ctype: str) -> Batch:
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

    async def score(self, model: ServedModel, role: str, call: Call, batch: Batch):
        out = await self.predict(model, batch)
        latency = time.perf_counter() - call.t0
        record = {
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
        if batch.keys:
            record["keys"] = batch.keys  # logged for label matching
        self.log.append(record)
        shadow = self.shadow
        if shadow is not None and role == "primary":
            asyncio.get_running_loop().create_task(self._shadow(shadow, call, batch))
        return out

    async def _shadow(self, model: ServedModel, call: Call, batch: Batch) -> None:
        t0 = time.perf_counter()
        status, out, error = 200, None, None
        try:
            if model.signature["inputs"] != self.primary.signature["inputs"]:
                batch = to_batch(
                    {**batch.arrays, **batch.keys},
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
        record = {
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
        if model is None or model in self.served():
            return
        b = self.batchers.pop(id(model), None)
        if b is not None:

            async def later():
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


OUTPUTS = ("predict", "predict_proba")


def build_app(server: Server) -> Starlette:
    @endpoint(server, "invocations")
    async def invocations(request: Request, call: Call) -> Response:
        wanted = request.query_params.get("output", "predict")
        if wanted not in OUTPUTS:
            raise BadInput(f"output={wanted!r} is not known; use predict or predict_proba.")
        model, role = server.pick()
        call.role, call.version = role, model.version
        if wanted == "predict_proba" and model.task != "classification":
            raise BadInput("predict_proba is only available for classifiers.")
        ctype = content_type(request)
        if ctype not in ("application/json", "text/csv", *PARQUET):
            raise HttpError(
                415,
                f"Content type {ctype!r} is not supported; send application/json, text/csv "
                "or application/vnd.apache.parquet.",
            )
        box = [await read_body(server, request, call)]
        batch = await server.parse(model, call, box, ctype)
        out = await server.score(model, role, call, batch)
        headers = {"x-model-version": str(model.version), "x-request-id": call.request_id}
        if batch.n <= MAX_BATCH_ROWS:
            return json_response({"predictions": out[wanted]}, headers=headers)
        # serialising half a million predictions holds the GIL: not on the event loop
        body = await asyncio.get_running_loop().run_in_executor(
            server.bulk, json_bytes, {"predictions": out[wanted]}
        )
        return Response(body, media_type="application/json", headers=headers)

    @endpoint(server, "ping")
    async def ping(request: Request, call: Call) -> Response:
        ok, why = server.ready()
        if not ok:
            return PlainTextResponse(why + "\n", status_code=503)
        return PlainTextResponse("\n")

    @endpoint(server, "health")
    async def health(request: Request, call: Call) -> Response:
        ok, why = server.ready()
        body = {"status": "ok" if ok else "unavailable", "model": server.primary.ref}
        if not ok:
            body["reason"] = why
        return json_response(body, 200 if ok else 503)

    @endpoint(server, "version")
    async def version(request: Request, call: Call) -> Response:
        c = server.canary
        return json_response(
            {
                "model": server.primary.name,
                "version": server.primary.version,
                "runtime": server.primary.runtime,
                "canary": {"version": c.version, "percent": server.canary_percent} if c else None,
                "shadow": server.shadow.version if server.shadow else None,
                "server": f"mlops-console {__version__}",
                "uptime_s": time.time() - server.started,
            }
        )

    @endpoint(server, "metrics")
    async def metrics(request: Request, call: Call) -> Response:
        return PlainTextResponse(
            server.metrics.render(
                server.primary.name,
                server.primary.version,
                str(server.canary.version) if server.canary else None,
            ),
            media_type="text/plain; version=0.0.4",
        )

    documents: dict[str, dict] = {}

    @endpoint(server, "openapi")
    async def openapi(request: Request, call: Call) -> Response:
        from mlops_console.serving.openapi import build_openapi

        model = server.primary
        if model.digest not in documents:  # described from the signature of the version served
            documents.clear()
            documents[model.digest] = build_openapi(model)
        return json_response(documents[model.digest])

    routes = [
        Route("/ping", ping, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
        Route("/invocations", invocations, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *feedback.routes(server),
        *v2.routes(server),
        *admin.routes(server),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            message = f"No route {request.url.path}; see /openapi.json for the routes."
        elif status == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        else:
            message = getattr(exc, "detail", None) or "The request failed."
        server.metrics.observe("unknown", status, 0.0, 0, "primary")
        return json_response(
            error_body(status, message, request.url.path.startswith("/v2")), status
        )

    async def crashed(request: Request, exc: Exception) -> Response:
        say(f"{request.url.path} failed outside its route: {type(exc).__name__}: {exc}")
        server.metrics.observe("unknown", 500, 0.0, 0, "primary")
        return json_response(
            error_body(
                500, "The server failed on this request.", request.url.path.startswith("/v2")
            ),
            500,
        )

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        server.watchdog = asyncio.get_running_loop().create_task(server._watch())
        yield
        await server.close()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: not_found, Exception: crashed},
    )
    app.state.server = server
    return app


def run(
    bundle_dir: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_dir: str | None = None,
    admin_token: str | None = None,
    runtime: str | None = None,
    digest: str | None = None,
) -> None:
    """Start the server (blocking). `digest` (or MLOPS_BUNDLE_DIGEST): the registry's hash
    of the bundle; bundle.json is checked against it before anything is read from it."""
    # before anything imports pyarrow: Arrow's own allocator keeps the memory a large
    # request used; the system's gives it back (malloc_trim after each large request)
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    os.umask(0o077)  # prediction logs hold request inputs and entity keys: owner only
    import uvicorn

    from mlops_console.serving.guard import GuardedProtocol
    from mlops_console.serving.settings import SettingError, secret

    try:
        settings = ServerSettings.from_env()
        admin_token = admin_token or secret(os.environ, "MLOPS_ADMIN_TOKEN")
    except SettingError as exc:
        sys.exit(f"mlops-console server: {exc}")
    digest = digest or os.environ.get("MLOPS_BUNDLE_DIGEST") or None
    try:
        model = ServedModel.from_folder(bundle_dir, runtime, digest)
    except Exception as exc:  # a clear line in the deployment's log, not a traceback
        sys.exit(f"mlops-console server: the bundle at {bundle_dir} cannot be served: {exc}")
    server = Server(
        model,
        Path(log_dir) if log_dir else None,
        admin_token,
        settings,
        host,
    )
    # large requests run in threads: hand the GIL back to the event loop often
    sys.setswitchinterval(0.001)
    say(
        f"serving {model.ref} ({model.runtime}) on {host}:{port}; admin "
        f"{'enabled' if server.admin_token else 'disabled'}; prediction log "
        f"{'in ' + str(log_dir) if log_dir else 'off'}; body cap {settings.max_body_bytes} bytes, "
        f"row cap {settings.max_rows}"
    )
    GuardedProtocol.header_timeout = settings.header_timeout
    config = uvicorn.Config(
        build_app(server),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        http=GuardedProtocol,
        timeout_graceful_shutdown=5,
        limit_concurrency=settings.max_inflight * 4,
        timeout_keep_alive=5,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Serve an exported mlops-console bundle.")
    ap.add_argument("bundle")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--log-dir")
    ap.add_argument("--runtime", choices=["onnx", "sklearn"])
    ap.add_argument(
        "--digest", help="the registry's sha256 of bundle.json (or MLOPS_BUNDLE_DIGEST)"
    )
    a = ap.parse_args()
    run(a.bundle, a.host, a.port, a.log_dir, runtime=a.runtime, digest=a.digest)
