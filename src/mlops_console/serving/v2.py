"""Open Inference Protocol v2 routes (KServe, Triton clients): health, metadata, infer.

Errors use the protocol's shape, `{"error": "..."}`. A version-specific route answers for
a version this server holds (the primary or the canary) and scores with that very
version; any other version is a 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlops_console import __version__
from mlops_console.serving.http import (
    Call,
    HttpError,
    content_type,
    endpoint,
    json_response,
    read_body,
)
from mlops_console.serving.inputs import BadInput, loads, to_batch
from mlops_console.serving.tensors import encode_outputs, parse_v2

if TYPE_CHECKING:
    from mlops_console.serving.server import Server

DATATYPES = {"string": "BYTES", "integer": "FP64", "float": "FP64", "boolean": "BOOL"}


def _outputs_of(model) -> list[str]:
    return ["predict", "predict_proba"] if model.task == "classification" else ["predict"]


def routes(server: Server) -> list[Route]:
    def model_for(request: Request) -> tuple:
        """The version a v2 route addresses, and its role; 404 for anything not served."""
        name = request.path_params["name"]
        if name != server.traffic.primary.name:
            raise HttpError(
                404, f"No model {name!r} here; this server serves {server.traffic.primary.name!r}."
            )
        version = request.path_params.get("version")
        if version is None:
            return None, None
        found = server.traffic.role_of_version(version)
        if found is None:
            held = [
                str(m.version)
                for m in (server.traffic.primary, server.traffic.canary)
                if m is not None
            ]
            raise HttpError(
                404,
                f"Version {version} of {name!r} is not served here (served: {', '.join(held)}).",
            )
        return found

    @endpoint(server, "v2_server", v2=True)
    async def metadata_server(request: Request, call: Call) -> Response:
        return json_response({"name": "mlops-console", "version": __version__, "extensions": []})

    @endpoint(server, "v2_live", v2=True)
    async def live(request: Request, call: Call) -> Response:
        return json_response({"live": True})

    @endpoint(server, "v2_ready", v2=True)
    async def ready(request: Request, call: Call) -> Response:
        ok, _ = server.ready()
        return json_response({"ready": ok}, 200 if ok else 503)

    @endpoint(server, "v2_metadata", v2=True)
    async def metadata(request: Request, call: Call) -> Response:
        model, _ = model_for(request)
        m = model or server.traffic.primary
        versions = (
            [str(m.version)]
            if model
            else [
                str(x.version)
                for x in (server.traffic.primary, server.traffic.canary)
                if x is not None
            ]
        )
        outputs = [
            {
                "name": "predict",
                "datatype": "INT64"
                if m.task == "classification" and _int_labels(m)
                else ("BYTES" if m.task == "classification" else "FP64"),
                "shape": [-1],
            }
        ]
        if m.task == "classification":
            outputs.append(
                {"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(m.labels or [])]}
            )
        return json_response(
            {
                "name": m.name,
                "versions": versions,
                "platform": f"mlops-console-{m.runtime}",
                "inputs": [
                    {"name": c["name"], "datatype": DATATYPES.get(c["type"], "FP64"), "shape": [-1]}
                    for c in m.signature["inputs"]
                ],
                "outputs": outputs,
            }
        )

    @endpoint(server, "v2_model_ready", v2=True)
    async def model_ready(request: Request, call: Call) -> Response:
        model_for(request)
        ok, _ = server.ready()
        return json_response({"name": request.path_params["name"], "ready": ok})

    @endpoint(server, "v2_infer", v2=True)
    async def infer(request: Request, call: Call) -> Response:
        model, role = model_for(request)
        if model is None:
            model, role = server.traffic.pick()
        call.role, call.version = role, model.version
        ctype = content_type(request)
        header_length = request.headers.get("inference-header-content-length")
        if ctype not in ("application/json", "application/octet-stream") or (
            ctype == "application/octet-stream" and header_length is None
        ):
            raise HttpError(
                415,
                f"Content type {ctype!r} is not supported; send application/json (or the binary "
                "tensor extension with Inference-Header-Content-Length).",
            )
        body = await read_body(server, request, call)
        blobs = None
        if header_length is not None:
            try:
                cut = int(header_length)
            except ValueError:
                raise BadInput("Inference-Header-Content-Length is not a number.") from None
            if not 0 <= cut <= len(body):
                raise BadInput(
                    f"Inference-Header-Content-Length is {cut}; the body has {len(body)} bytes."
                )
            body, blobs = body[:cut], bytes(body[cut:])
        parsed = loads(body)
        del body
        v2req = parse_v2(parsed, model.signature, blobs)
        if parsed.get("id"):
            call.request_id = parsed["id"]
        names = v2req.wanted or _outputs_of(model)
        unknown = [w for w in names if w not in _outputs_of(model)]
        if unknown:
            raise BadInput(f"Unknown output(s) {unknown}; this model has {_outputs_of(model)}.")
        batch = to_batch(
            v2req.columns, model.signature, server.settings.max_rows, server.settings.impute_missing
        )
        call.rows = batch.n
        out = await server.score(model, role, call, batch)
        binary = set(names) if v2req.binary_all else v2req.binary
        tensors, raw = encode_outputs(out, names, binary)
        answer = {
            "model_name": model.name,
            "model_version": str(model.version),
            "id": call.request_id,
            "outputs": tensors,
        }
        if not raw:
            return json_response(answer)
        head = orjson.dumps(answer)
        return Response(
            head + raw,
            media_type="application/octet-stream",
            headers={"inference-header-content-length": str(len(head))},
        )

    return [
        Route("/v2", metadata_server, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models/{name}", metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}", metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
    ]


def _int_labels(model) -> bool:
    return all(isinstance(x, int) and not isinstance(x, bool) for x in (model.labels or []))
