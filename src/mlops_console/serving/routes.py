"""The MLflow-compatible routes: scoring (/invocations), readiness, version, metrics and
the OpenAPI document, and the app's answer for a request no route took.

Each handler is a method that reads the server's state; `routes()` wraps them with
`endpoint`, so every failure takes the one failure path and is counted.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mlops_console import __version__
from mlops_console.serving.batcher import MAX_BATCH_ROWS, say
from mlops_console.serving.http import (
    Call,
    HttpError,
    content_type,
    endpoint,
    error_body,
    json_bytes,
    json_response,
    read_body,
)
from mlops_console.serving.inputs import BadInput
from mlops_console.serving.server import PARQUET, Server

OUTPUTS = ("predict", "predict_proba")


class Routes:
    def __init__(self, server: Server):
        self.server = server
        self._documents: dict[str, dict[str, Any]] = {}  # the OpenAPI document, by model digest

    def routes(self) -> list[Route]:
        def route(path: str, name: str, fn: Any, method: str) -> Route:
            return Route(path, endpoint(self.server, name)(fn), methods=[method])

        return [
            route("/ping", "ping", self.ping, "GET"),
            route("/health", "health", self.health, "GET"),
            route("/version", "version", self.version, "GET"),
            route("/invocations", "invocations", self.invocations, "POST"),
            route("/metrics", "metrics", self.metrics, "GET"),
            route("/openapi.json", "openapi", self.openapi, "GET"),
        ]

    async def invocations(self, request: Request, call: Call) -> Response:
        server = self.server
        wanted = request.query_params.get("output", "predict")
        if wanted not in OUTPUTS:
            raise BadInput(f"output={wanted!r} is not known; use predict or predict_proba.")
        model, role = server.traffic.pick()
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

    async def ping(self, request: Request, call: Call) -> Response:
        ok, why = self.server.ready()
        if not ok:
            return PlainTextResponse(why + "\n", status_code=503)
        return PlainTextResponse("\n")

    async def health(self, request: Request, call: Call) -> Response:
        ok, why = self.server.ready()
        body = {"status": "ok" if ok else "unavailable", "model": self.server.traffic.primary.ref}
        if not ok:
            body["reason"] = why
        return json_response(body, 200 if ok else 503)

    async def version(self, request: Request, call: Call) -> Response:
        traffic = self.server.traffic
        c = traffic.canary
        return json_response(
            {
                "model": traffic.primary.name,
                "version": traffic.primary.version,
                "runtime": traffic.primary.runtime,
                "canary": {"version": c.version, "percent": traffic.canary_percent} if c else None,
                "shadow": traffic.shadow.version if traffic.shadow else None,
                "server": f"mlops-console {__version__}",
                "uptime_s": time.time() - self.server.started,
            }
        )

    async def metrics(self, request: Request, call: Call) -> Response:
        traffic = self.server.traffic
        return PlainTextResponse(
            self.server.metrics.render(
                traffic.primary.name,
                traffic.primary.version,
                str(traffic.canary.version) if traffic.canary else None,
            ),
            media_type="text/plain; version=0.0.4",
        )

    async def openapi(self, request: Request, call: Call) -> Response:
        from mlops_console.serving.openapi import build_openapi

        model = self.server.traffic.primary
        documents = self._documents
        if model.digest not in documents:  # described from the signature of the version served
            documents.clear()
            documents[model.digest] = build_openapi(model)
        return json_response(documents[model.digest])

    # --- requests no route took -------------------------------------------------------------

    async def not_found(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            message = f"No route {request.url.path}; see /openapi.json for the routes."
        elif status == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        else:
            message = getattr(exc, "detail", None) or "The request failed."
        self.server.metrics.observe("unknown", status, 0.0, 0, "primary")
        return json_response(
            error_body(status, message, request.url.path.startswith("/v2")), status
        )

    async def crashed(self, request: Request, exc: Exception) -> Response:
        say(f"{request.url.path} failed outside its route: {type(exc).__name__}: {exc}")
        self.server.metrics.observe("unknown", 500, 0.0, 0, "primary")
        return json_response(
            error_body(
                500, "The server failed on this request.", request.url.path.startswith("/v2")
            ),
            500,
        )
