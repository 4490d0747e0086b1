"""The ASGI app: scoring, v2 inference, health, metrics, and token-guarded admin.

Concurrent requests are micro-batched: the first request of a batch waits one event-loop
tick, so requests that arrive together share one predict. New versions load beside the
old one and are swapped in with one reference assignment; requests in flight finish on
the version they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mlops_console import __version__
from mlops_console.serving.inputs import BadInput, parse_csv, parse_json, parse_v2, to_arrays
from mlops_console.serving.metrics import Metrics
from mlops_console.serving.model import ServedModel
from mlops_console.serving.predlog import PredictionLog

MAX_BODY = int(os.environ.get("MLOPS_MAX_BODY_BYTES", 32 << 20))
MAX_BATCH_ROWS = 1024


def say(message: str) -> None:
    """One line on stderr for the deployment's log (no request data, no secrets)."""
    sys.stderr.write(time.strftime("%Y-%m-%dT%H:%M:%S ") + message + "\n")
    sys.stderr.flush()


def _json(data: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _error(status: int, message: str, code: str = "BAD_REQUEST") -> Response:
    return _json({"error_code": code, "message": message}, status)


class Batcher:
    """Collects the requests queued for one model version into a single predict."""

    def __init__(self, model: ServedModel, metrics: Metrics):
        self.model = model
        self.metrics = metrics
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def predict(self, arrays: dict[str, np.ndarray], n: int) -> dict[str, Any]:
        fut = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((arrays, n, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            await asyncio.sleep(0)  # one tick: let requests that arrived together join
            items, rows = [first], first[1]
            while not self.queue.empty() and rows < MAX_BATCH_ROWS:
                item = self.queue.get_nowait()
                items.append(item)
                rows += item[1]
            if len(items) == 1:
                arrays = first[0]
            else:
                arrays = {k: np.concatenate([it[0][k] for it in items]) for k in first[0]}
            try:
                if self.model.runtime == "onnx" and rows <= 256:
                    out = self.model.predict(arrays, rows)
                else:  # long predicts go to a thread so the loop keeps accepting requests
                    out = await loop.run_in_executor(None, self.model.predict, arrays, rows)
            except Exception as exc:
                for _, _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.metrics.batch(rows)
            start = 0
            for _a, n, fut in items:
                if not fut.done():
                    fut.set_result({k: v[start : start + n] for k, v in out.items()})
                start += n

    def close(self) -> None:
        self.task.cancel()


class Server:
    def __init__(
        self, model: ServedModel, log_dir: Path | None = None, admin_token: str | None = None
    ):
        self.primary = model
        self.canary: ServedModel | None = None
        self.canary_percent = 0.0
        self.shadow: ServedModel | None = None
        self.metrics = Metrics()
        self.canary_metrics = Metrics()
        self.log = PredictionLog(log_dir)
        self.admin_token = admin_token
        self.batchers: dict[int, Batcher] = {}
        self.started = time.time()
        self.swaps = 0

    def failed(self, route: str, status: int, t0: float, request_id: str = "") -> None:
        """Count a failed request and log it, so monitoring sees the error rate."""
        latency = time.perf_counter() - t0
        self.metrics.observe(route, status, latency, 0)
        self.log.append(
            {
                "ts": time.time(),
                "request_id": request_id,
                "role": "error",
                "status": status,
                "route": route,
                "version": self.primary.version,
                "latency_ms": latency * 1000,
                "rows": 0,
            }
        )

    def batcher(self, model: ServedModel) -> Batcher:
        b = self.batchers.get(id(model))
        if b is None:
            b = self.batchers[id(model)] = Batcher(model, self.metrics)
        return b

    def pick(self) -> tuple[ServedModel, str]:
        canary = self.canary
        if canary is not None and random.random() * 100 < self.canary_percent:
            return canary, "canary"
        return self.primary, "primary"

    def retire(self, model: ServedModel | None) -> None:
        """Stop a replaced version's batcher once its queued requests are done."""
        if model is None or model in (self.primary, self.canary, self.shadow):
            return
        b = self.batchers.pop(id(model), None)
        if b is not None:

            async def later():
                while not b.queue.empty():
                    await asyncio.sleep(0.01)
                await asyncio.sleep(1.0)
                b.close()

            asyncio.get_running_loop().create_task(later())

    async def score(self, columns: dict[str, list], route: str, t0: float, request_id: str):
        model, role = self.pick()
        arrays, n = to_arrays(columns, model.signature)
        out = await self.batcher(model).predict(arrays, n)
        latency = time.perf_counter() - t0
        (self.canary_metrics if role == "canary" else self.metrics).observe(
            route, 200, latency, n, role
        )
        if len(columns) > len(arrays):  # columns the model does not use (an entity key, say)
            extra = {
                k: v
                for k, v in list(columns.items())[:64]
                if k not in arrays and isinstance(v, list) and len(v) == n
            }
        else:
            extra = None
        record = {
            "ts": time.time(),
            "request_id": request_id,
            "model": model.name,
            "version": model.version,
            "role": role,
            "latency_ms": latency * 1000,
            "rows": n,
            "inputs": {k: v for k, v in arrays.items()},
            "outputs": out,
        }
        if extra:
            record["keys"] = dict(list(extra.items())[:8])  # logged for label matching
        self.log.append(record)
        shadow = self.shadow
        if shadow is not None:
            asyncio.get_running_loop().create_task(self._shadow(shadow, columns, request_id))
        return model, out

    async def _shadow(self, model: ServedModel, columns, request_id: str) -> None:
        t0 = time.perf_counter()
        try:
            arrays, n = to_arrays(columns, model.signature)
            out = await self.batcher(model).predict(arrays, n)
            self.log.append(
                {
                    "ts": time.time(),
                    "request_id": request_id,
                    "model": model.name,
                    "version": model.version,
                    "role": "shadow",
                    "latency_ms": (time.perf_counter() - t0) * 1000,
                    "rows": n,
                    "inputs": arrays,
                    "outputs": out,
                }
            )
        except Exception as exc:  # a shadow never affects the answer
            self.log.append(
                {
                    "ts": time.time(),
                    "request_id": request_id,
                    "role": "shadow",
                    "version": model.version,
                    "error": str(exc),
                }
            )


def _outputs(model: ServedModel, out: dict[str, Any], wanted: str | None) -> Any:
    if wanted == "predict_proba":
        if "predict_proba" not in out:
            raise BadInput("predict_proba is only available for classifiers.")
        return out["predict_proba"]
    return out["predict"]


def build_app(server: Server) -> Starlette:
    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length and int(length) > MAX_BODY:
            raise _TooLarge()
        body = await request.body()
        if len(body) > MAX_BODY:
            raise _TooLarge()
        return body

    async def invocations(request: Request) -> Response:
        t0 = time.perf_counter()
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        try:
            body = await read_body(request)
            ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
            names = [c["name"] for c in server.primary.signature["inputs"]]
            if ctype == "text/csv":
                columns = parse_csv(body.decode("utf-8"))
            elif ctype in ("application/json", ""):
                try:
                    parsed = orjson.loads(body)
                except orjson.JSONDecodeError as exc:
                    raise BadInput(f"The body is not valid JSON: {exc}") from None
                columns = parse_json(parsed, names)
            else:
                return _error(
                    415,
                    f"Content type {ctype!r} is not supported; send application/json or text/csv.",
                    "UNSUPPORTED_MEDIA_TYPE",
                )
            model, out = await server.score(columns, "invocations", t0, rid)
            result = _outputs(model, out, request.query_params.get("output"))
            return _json(
                {"predictions": result},
                headers={"x-model-version": str(model.version), "x-request-id": rid},
            )
        except BadInput as exc:
            server.failed("invocations", 400, t0, rid)
            return _error(400, str(exc))
        except _TooLarge:
            server.failed("invocations", 413, t0, rid)
            return _error(
                413,
                f"The body is larger than {MAX_BODY} bytes; send fewer rows per request.",
                "PAYLOAD_TOO_LARGE",
            )

    async def v2_infer(request: Request) -> Response:
        t0 = time.perf_counter()
        name = request.path_params["name"]
        version = request.path_params.get("version")
        model = server.primary
        if name != model.name:
            return _error(
                404, f"No model {name!r} here; this server serves {model.name!r}.", "NOT_FOUND"
            )
        if version is not None and str(version) not in {
            str(model.version),
            str(getattr(server.canary, "version", "")),
        }:
            return _error(404, f"Version {version} of {name!r} is not loaded.", "NOT_FOUND")
        try:
            body = await read_body(request)
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise BadInput(f"The body is not valid JSON: {exc}") from None
            columns, wanted = parse_v2(parsed)
            rid = parsed.get("id") or uuid.uuid4().hex
            served, out = await server.score(columns, "v2_infer", t0, rid)
            names = wanted or list(out)
            unknown = [w for w in names if w not in out]
            if unknown:
                raise BadInput(f"Unknown output(s) {unknown}; this model has {list(out)}.")
            outputs = []
            for w in names:
                arr = np.asarray(out[w])
                dtype = (
                    "BYTES"
                    if arr.dtype == object
                    else ("FP64" if arr.dtype.kind == "f" else "INT64")
                )
                outputs.append(
                    {
                        "name": w,
                        "shape": list(arr.shape),
                        "datatype": dtype,
                        "data": arr.reshape(-1).tolist(),
                    }
                )
            return _json(
                {
                    "model_name": served.name,
                    "model_version": str(served.version),
                    "id": rid,
                    "outputs": outputs,
                }
            )
        except BadInput as exc:
            server.failed("v2_infer", 400, t0)
            return _json({"error": str(exc)}, 400)
        except _TooLarge:
            return _json({"error": f"The body is larger than {MAX_BODY} bytes."}, 413)

    def v2_metadata(request: Request) -> Response:
        m = server.primary
        if request.path_params["name"] != m.name:
            return _json({"error": f"No model {request.path_params['name']!r}."}, 404)
        dt = {"string": "BYTES", "integer": "FP64", "float": "FP64", "boolean": "FP64"}
        return _json(
            {
                "name": m.name,
                "versions": [str(m.version)],
                "platform": f"mlops-console-{m.runtime}",
                "inputs": [
                    {"name": c["name"], "datatype": dt.get(c["type"], "FP64"), "shape": [-1]}
                    for c in m.signature["inputs"]
                ],
                "outputs": [
                    {
                        "name": "predict",
                        "datatype": "INT64" if m.task == "classification" else "FP64",
                        "shape": [-1],
                    }
                ]
                + (
                    [
                        {
                            "name": "predict_proba",
                            "datatype": "FP64",
                            "shape": [-1, len(m.labels or [])],
                        }
                    ]
                    if m.task == "classification"
                    else []
                ),
            }
        )

    def v2_ready(request: Request) -> Response:
        ok = request.path_params["name"] == server.primary.name
        return _json({"name": request.path_params["name"], "ready": ok}, 200 if ok else 404)

    def version(_: Request) -> Response:
        c = server.canary
        return _json(
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

    def metrics(_: Request) -> Response:
        return PlainTextResponse(
            server.metrics.render(
                server.primary.name,
                server.primary.version,
                str(server.canary.version) if server.canary else None,
            ),
            media_type="text/plain; version=0.0.4",
        )

    # --- admin (token required) ---------------------------------------------------------

    def authorized(request: Request) -> Response | None:
        if not server.admin_token:
            return _error(
                403,
                "Admin operations are disabled: start the server with an admin token.",
                "FORBIDDEN",
            )
        got = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(got.encode(), server.admin_token.encode()):
            return _error(
                401,
                "A valid admin token is required (Authorization: Bearer TOKEN).",
                "UNAUTHORIZED",
            )
        return None

    async def admin_status(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        bad, total = server.metrics.errors()
        cbad, ctotal = server.canary_metrics.errors()
        return _json(
            {
                "primary": server.primary.describe(),
                "canary": server.canary.describe() if server.canary else None,
                "canary_percent": server.canary_percent,
                "shadow": server.shadow.describe() if server.shadow else None,
                "primary_stats": {"requests": total, "errors": bad, **server.metrics.quantiles()},
                "canary_stats": {
                    "requests": ctotal,
                    "errors": cbad,
                    **server.canary_metrics.quantiles(),
                },
                "swaps": server.swaps,
                "rss_mb": _rss_mb(),
                "log_written": server.log.written,
                "log_dropped": server.log.dropped,
            }
        )

    async def admin_load(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        try:
            body = orjson.loads(await request.body())
            folder, role = body["path"], body.get("role", "primary")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _error(
                400,
                'Send {"path": BUNDLE_FOLDER, "role": "primary"|"canary"|"shadow", "percent": N}.',
            )
        if role not in ("primary", "canary", "shadow"):
            return _error(400, f"role must be primary, canary or shadow, not {role!r}.")
        try:
            new = await asyncio.get_running_loop().run_in_executor(
                None, lambda: ServedModel.from_folder(folder, body.get("runtime"))
            )
        except Exception as exc:  # the old version keeps serving
            say(f"load of {folder} failed: {exc}")
            return _error(422, f"The bundle at {folder} cannot be loaded: {exc}", "LOAD_FAILED")
        if role == "primary":
            old, server.primary = server.primary, new
        elif role == "canary":
            old, server.canary = server.canary, new
            server.canary_percent = float(body.get("percent", 10))
            server.canary_metrics = Metrics()
        else:
            old, server.shadow = server.shadow, new
        server.swaps += 1
        server.retire(old)
        say(
            f"loaded {new.ref} ({new.runtime}) as {role}"
            + (f" at {server.canary_percent}%" if role == "canary" else "")
        )
        return _json({"loaded": new.describe(), "role": role})

    async def admin_promote(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        if server.canary is None:
            return _error(409, "There is no canary to promote.", "CONFLICT")
        old, server.primary = server.primary, server.canary
        server.canary, server.canary_percent = None, 0.0
        server.retire(old)
        say(f"promoted canary {server.primary.ref} to primary")
        return _json({"primary": server.primary.describe()})

    async def admin_rollback(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        if server.canary is None and server.shadow is None:
            return _error(409, "There is no canary or shadow to roll back.", "CONFLICT")
        old_c, old_s = server.canary, server.shadow
        server.canary, server.canary_percent, server.shadow = None, 0.0, None
        server.retire(old_c)
        server.retire(old_s)
        say(f"rolled back to {server.primary.ref} only")
        return _json({"primary": server.primary.describe()})

    async def feedback(request: Request) -> Response:
        """Ground truth for earlier predictions: {"request_id", "label", "row"?} or a list."""
        try:
            body = orjson.loads(await read_body(request))
        except (orjson.JSONDecodeError, _TooLarge):
            return _error(400, 'Send JSON: {"request_id": ID, "label": VALUE, "row": 0} or a list.')
        items = body.get("feedback", body) if isinstance(body, dict) else body
        items = [items] if isinstance(items, dict) else items
        if not isinstance(items, list) or not items:
            return _error(400, 'Send {"request_id": ID, "label": VALUE} or a list of them.')
        now = time.time()
        records = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not item.get("request_id") or "label" not in item:
                return _error(
                    400, f"Item {i} needs a request_id and a label (nothing was recorded)."
                )
            row = item.get("row", 0)
            if not isinstance(row, int) or row < 0:
                return _error(400, f"Item {i}: row must be a row number (0, 1, ...), not {row!r}.")
            records.append(
                {
                    "kind": "feedback",
                    "ts": now,
                    "request_id": str(item["request_id"]),
                    "row": row,
                    "label": item["label"],
                }
            )
        for r in records:
            server.log.append(r)
        return _json({"accepted": len(records)}, 202)

    def openapi(_: Request) -> Response:
        return _json(OPENAPI)

    routes = [
        Route("/ping", lambda r: PlainTextResponse("\n"), methods=["GET"]),
        Route(
            "/health",
            lambda r: _json({"status": "ok", "model": server.primary.ref}),
            methods=["GET"],
        ),
        Route("/version", version, methods=["GET"]),
        Route("/invocations", invocations, methods=["POST"]),
        Route("/feedback", feedback, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route(
            "/v2",
            lambda r: _json({"name": "mlops-console", "version": __version__, "extensions": []}),
            methods=["GET"],
        ),
        Route("/v2/health/live", lambda r: _json({"live": True}), methods=["GET"]),
        Route("/v2/health/ready", lambda r: _json({"ready": True}), methods=["GET"]),
        Route("/v2/models/{name}", v2_metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", v2_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", v2_infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}", v2_metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", v2_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/infer", v2_infer, methods=["POST"]),
        Route("/admin/status", admin_status, methods=["GET"]),
        Route("/admin/load", admin_load, methods=["POST"]),
        Route("/admin/promote", admin_promote, methods=["POST"]),
        Route("/admin/rollback", admin_rollback, methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        server.log.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.server = server
    return app


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class _TooLarge(Exception):
    pass


OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "mlops-console model server", "version": __version__},
    "paths": {
        "/invocations": {
            "post": {
                "summary": "Score rows (MLflow formats: dataframe_split, dataframe_records, instances, inputs; or CSV)",
                "parameters": [
                    {
                        "name": "output",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["predict", "predict_proba"]},
                    }
                ],
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/csv": {"schema": {"type": "string"}},
                    }
                },
                "responses": {
                    "200": {"description": '{"predictions": [...]}'},
                    "400": {"description": "bad input"},
                    "413": {"description": "body too large"},
                    "415": {"description": "unsupported content type"},
                },
            }
        },
        "/feedback": {
            "post": {
                "summary": 'Labels for earlier predictions: {"request_id", "label", "row"} or a list',
                "responses": {
                    "202": {"description": "recorded"},
                    "400": {"description": "bad input"},
                },
            }
        },
        "/ping": {"get": {"responses": {"200": {"description": "alive"}}}},
        "/health": {"get": {"responses": {"200": {"description": "alive, with the model served"}}}},
        "/version": {
            "get": {"responses": {"200": {"description": "model, version, canary, shadow"}}}
        },
        "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text format"}}}},
        "/v2/models/{name}/infer": {
            "post": {
                "summary": "Open Inference Protocol v2",
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {"description": "outputs"},
                    "400": {"description": "bad input"},
                },
            }
        },
    },
}


def run(
    bundle_dir: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_dir: str | None = None,
    admin_token: str | None = None,
    runtime: str | None = None,
) -> None:
    """Start the server (blocking)."""
    import uvicorn

    model = ServedModel.from_folder(bundle_dir, runtime)
    server = Server(
        model,
        Path(log_dir) if log_dir else None,
        admin_token or os.environ.get("MLOPS_ADMIN_TOKEN"),
    )
    say(
        f"serving {model.ref} ({model.runtime}) on {host}:{port}; admin "
        f"{'enabled' if server.admin_token else 'disabled'}; prediction log {'in ' + str(log_dir) if log_dir else 'off'}"
    )
    uvicorn.run(build_app(server), host=host, port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Serve an exported mlops-console bundle.")
    ap.add_argument("bundle")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--log-dir")
    ap.add_argument("--runtime", choices=["onnx", "sklearn"])
    a = ap.parse_args()
    run(a.bundle, a.host, a.port, a.log_dir, runtime=a.runtime)
