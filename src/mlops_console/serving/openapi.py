"""The model server's OpenAPI 3.0.3 document: every route, its bodies and its answers.

`OPENAPI` is the generic document (any model); `build_openapi(model)` specialises it to
one model: the columns of its input signature (their types and nulls) in the scoring
bodies, its name on the v2 routes, its outputs and labels in the answers, and examples
that score. So a schema-driven client or fuzzer builds requests that score, and every
answer the server gives can be checked against the document. Pure data: nothing heavy
is imported here.
"""

from __future__ import annotations

import copy
import csv
import io
from typing import Any

from mlops_console import __version__

NUMERIC = ("integer", "float", "long", "double", "boolean")
V2_DATATYPES = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip
WHY = {
    400: "The request does not fit (the message names the problem).",
    401: "A valid token is required (Authorization: Bearer TOKEN).",
    403: "Admin operations are disabled (the server has no admin token).",
    404: "No such model or version here.",
    408: "The body did not arrive in time (MLOPS_BODY_TIMEOUT).",
    409: "There is no canary (or shadow) to act on.",
    413: "The body, or its number of rows or labels, is over the server's limit.",
    415: "The content type is not supported.",
    421: "The Host header names none of this server's names (MLOPS_ALLOWED_HOSTS).",
    422: "The bundle cannot be loaded; the versions served are unchanged.",
    429: "Too many feedback requests from this client (MLOPS_FEEDBACK_RATE).",
    500: "The server failed on this request.",
    503: "Scoring is not available now (at its limit, restarting or stopping); retry.",
}
STR, INT, NUM, BOOL = ({"type": t} for t in ("string", "integer", "number", "boolean"))
ADMIN_ERRORS = (400, 401, 403, 409, 413, 415, 421, 422)
ANY_ARRAY = {"type": "array", "items": {}}
PARAMS = {"type": "object", "description": "Accepted; not used."}
TEXT = {"text/plain": {"schema": STR}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], *optional: str, **extra: Any) -> dict[str, Any]:
    """An object schema; every property is required but the `optional` ones."""
    out = {"type": "object", "properties": props, **extra}
    if required := [k for k in props if k not in optional]:
        out["required"] = required
    return out


def _array(items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **extra}


def _json(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}} | extra


def _params(**props: Any) -> dict[str, Any]:
    """v2 parameters: free-form, with the binary tensor extension's keys."""
    return {"type": "object", "properties": props, "description": "The binary extension's keys."}


def _errors(*codes: int, v2: bool = False) -> dict[str, Any]:
    return {str(c): _json(WHY[c], _ref("V2Error" if v2 else "MlflowError")) for c in codes}


# --- the parts that depend on the model -----------------------------------------------------


def _cell(col: dict[str, Any]) -> dict[str, Any]:
    """One value of a column: a number for a numeric column (or true/false for a boolean
    one), a string for text; null only where the column may be null."""
    nullable = {"nullable": True} if col.get("nullable", True) else {}
    if col["type"] == "boolean":
        return {"anyOf": [{**NUM, **nullable}, {**BOOL, **nullable}]}
    if col["type"] in NUMERIC:
        lo_hi = col.get("range") or None
        note = {"description": f"Trained on {lo_hi[0]} to {lo_hi[1]}."} if lo_hi else {}
        return {**NUM, **nullable, **note}
    seen = col.get("categories")
    note = {"description": "Seen in training: " + ", ".join(map(str, seen[:20]))} if seen else {}
    return {**STR, **nullable, **note}


def _example(col: dict[str, Any]) -> Any:
    if col["type"] == "boolean":
        return True
    if col["type"] in NUMERIC:
        lo, hi = (col.get("range") or [0, 0])[:2]
        return (
            int((lo + hi) // 2) if col["type"] in ("integer", "long") else round((lo + hi) / 2, 6)
        )
    return (col.get("categories") or ["a"])[0]


def _generic_parts() -> dict[str, Any]:
    return {
        "Cell": {"anyOf": [{**NUM, "nullable": True}, {**STR, "nullable": True}, BOOL]},
        "Record": {"type": "object", "additionalProperties": _ref("Cell")},
        "Columns": {"type": "object", "additionalProperties": _array(_ref("Cell"), minItems=1)},
        "Row": _array(_ref("Cell"), minItems=1),
        "columns": _array(STR),
        "Prediction": {"description": "A label, a value or a row of class probabilities."},
        "name": STR,
        "version": STR,
        "outputs": ["predict", "predict_proba"],
        "examples": {},
        "title": "any model",
    }


def _model_parts(model) -> dict[str, Any]:
    """The schemas and examples that tie the document to one model (a ServedModel)."""
    inputs = model.signature["inputs"]
    names = [c["name"] for c in inputs]
    cells = {c["name"]: _cell(c) for c in inputs}
    union = [c for i, c in enumerate(cells.values()) if c not in list(cells.values())[:i]]
    labels = list(model.labels or [])
    prediction: dict[str, Any]
    if model.task == "classification":
        sized = {"minItems": len(labels), "maxItems": len(labels)} if labels else {}
        prediction = {"anyOf": [{"enum": labels} if labels else {}, _array(NUM, **sized)]}
    else:
        prediction = NUM
    row = {c["name"]: _example(c) for c in inputs}
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([names, list(row.values())])
    kind = {c["name"]: "BOOL" if c["type"] == "boolean" else "FP64" for c in inputs}
    kind.update({c["name"]: "BYTES" for c in inputs if c["type"] not in NUMERIC})
    tensors = [{"name": n, "shape": [1], "datatype": kind[n], "data": [v]} for n, v in row.items()]
    return {
        "Cell": {"anyOf": union} if len(union) > 1 else (union or [{}])[0],
        "Record": _obj(cells),
        "Columns": _obj({n: _array(s, minItems=1) for n, s in cells.items()}),
        "Row": _array(_ref("Cell"), minItems=len(names), maxItems=len(names)),
        "columns": {**_array(STR), "enum": [names], "description": "The signature's columns."},
        "Prediction": prediction,
        "name": {**STR, "enum": [model.name]},
        "version": {**STR, "example": str(model.version)},
        "outputs": ["predict", "predict_proba"] if model.task == "classification" else ["predict"],
        "examples": {
            "json": {
                "dataframe_split": {
                    "dataframe_split": {"columns": names, "data": [list(row.values())]}
                },
                "dataframe_records": {"dataframe_records": [row]},
                "instances": {"instances": [row]},
                "inputs": {"inputs": {n: [v] for n, v in row.items()}},
            },
            "csv": text.getvalue(),
            "v2": {"tensors": {"id": "example", "inputs": tensors}},
            "feedback": {
                "label": {"request_id": "example", "label": (labels or [0.0])[0], "row": 0}
            },
        },
        "title": f"{model.name}/{model.version}",
    }


# --- the document ---------------------------------------------------------------------------


def _schemas(p: dict[str, Any]) -> dict[str, Any]:
    def one_key(key: str, schema: dict[str, Any]) -> dict[str, Any]:
        return _obj({key: schema, "params": PARAMS}, "params", additionalProperties=False)

    records = _array(_ref("Record"), minItems=1)
    items = _array(_ref("FeedbackItem"), minItems=1)
    tensor_meta = _obj({"name": STR, "datatype": STR, "shape": _array(INT)})
    counted = {**INT, "minimum": 0}
    request_id = {**STR, "minLength": 1, "description": "The scoring request's x-request-id."}
    wrapped = _obj({"feedback": items}, additionalProperties=False)
    label = {"description": "The true label or value: any JSON value."}
    row = {**counted, "default": 0, "description": "The row in that request."}
    return {
        "MlflowError": _obj({"error_code": STR, "message": STR}),
        "V2Error": _obj({"error": STR}),
        "Cell": p["Cell"],
        "Record": p["Record"],
        "DataframeSplit": _obj(
            {"columns": p["columns"], "data": _array(p["Row"], minItems=1), "index": ANY_ARRAY},
            *("columns", "index"),
        ),
        "InvocationRequest": {
            "oneOf": [
                one_key("dataframe_split", _ref("DataframeSplit")),
                one_key("dataframe_records", records),
                one_key("instances", records),
                one_key("inputs", {"oneOf": [records, p["Columns"]]}),
            ]
        },
        "Prediction": p["Prediction"],
        "Predictions": _obj({"predictions": _array(_ref("Prediction"))}),
        "Health": _obj({"status": {**STR, "enum": ["ok"]}, "model": STR}),
        "Unavailable": _obj(
            {"status": {**STR, "enum": ["unavailable"]}, "model": STR, "reason": STR}
        ),
        "Version": _obj(
            {
                "model": STR,
                "version": INT,
                "runtime": {**STR, "enum": ["onnx", "sklearn"]},
                "canary": _obj({"version": INT, "percent": NUM}, nullable=True),
                "shadow": {**INT, "nullable": True},
                "server": STR,
                "uptime_s": NUM,
            }
        ),
        "FeedbackItem": _obj({"request_id": request_id, "label": label, "row": row}, "row"),
        "FeedbackRequest": {"oneOf": [_ref("FeedbackItem"), items, wrapped]},
        "FeedbackAccepted": _obj({"accepted": counted, "duplicates": counted}),
        "V2Server": _obj({"name": STR, "version": STR, "extensions": _array(STR)}),
        "V2Live": _obj({"live": BOOL}),
        "V2TensorMetadata": tensor_meta,
        "V2ModelMetadata": _obj(
            {
                "name": STR,
                "versions": _array(STR),
                "platform": STR,
                "inputs": _array(_ref("V2TensorMetadata")),
                "outputs": _array(_ref("V2TensorMetadata")),
            }
        ),
        "V2ModelReady": _obj({"name": STR, "ready": BOOL}),
        "V2RequestTensor": _obj(
            {
                "name": {**STR, "minLength": 1},
                "shape": _array({**INT, "minimum": 0}),
                "datatype": {**STR, "enum": V2_DATATYPES},
                "data": ANY_ARRAY,
                "parameters": _params(binary_data_size={**INT, "minimum": 0}),
            },
            "parameters",
        ),
        "V2RequestedOutput": _obj(
            {"name": {**STR, "enum": p["outputs"]}, "parameters": _params(binary_data=BOOL)},
            "parameters",
        ),
        "V2InferRequest": _obj(
            {
                "id": STR,
                "parameters": _params(binary_data_output=BOOL),
                "inputs": _array(_ref("V2RequestTensor"), minItems=1),
                "outputs": _array(_ref("V2RequestedOutput")),
            },
            *("id", "parameters", "outputs"),
        ),
        "V2ResponseTensor": _obj(
            {
                "name": STR,
                "shape": _array(INT),
                "datatype": {**STR, "enum": V2_DATATYPES},
                "data": ANY_ARRAY,
                "parameters": {"type": "object"},
            },
            "parameters",
        ),
        "V2InferResponse": _obj(
            {
                "model_name": STR,
                "model_version": STR,
                "id": STR,
                "outputs": _array(_ref("V2ResponseTensor")),
            }
        ),
        "AdminLoad": _obj(
            {
                "path": {**STR, "minLength": 1, "description": "The bundle's folder."},
                "role": {**STR, "enum": ["primary", "canary", "shadow"], "default": "primary"},
                "percent": {**NUM, "minimum": 0, "maximum": 100, "description": "A canary's."},
                "runtime": {**STR, "enum": ["onnx", "sklearn"], "nullable": True},
                "digest": STR,
            },
            *("role", "percent", "runtime", "digest"),
        ),
        "AdminResult": {"type": "object", "additionalProperties": True},
        "OpenAPI": _obj({"openapi": STR, "info": {"type": "object"}, "paths": {"type": "object"}}),
    }


def _body(schema: dict[str, Any], examples: dict[str, Any] | None = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if examples:
        media["examples"] = {k: {"value": v} for k, v in examples.items()}
    return {"required": True, "content": {"application/json": media}}


def _param(name: str, where: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": schema,
            "description": description}  # fmt: skip


def _paths(p: dict[str, Any]) -> dict[str, Any]:
    ex = p["examples"]
    name = [_param("name", "path", p["name"], "The model's name; any other name is a 404.")]
    version = [*name, _param("version", "path", p["version"], "A version served here, or 404.")]
    output = _param("output", "query", {**STR, "enum": p["outputs"]}, "predict (the default).")
    scoring = _body(_ref("InvocationRequest"), ex.get("json"))
    scoring["content"]["text/csv"] = {"schema": {**STR, **({"example": ex["csv"]} if ex else {})}}
    scoring["content"]["application/vnd.apache.parquet"] = {"schema": {**STR, "format": "binary"}}
    headers = {h: {"schema": STR} for h in ("x-model-version", "x-request-id")}
    scored = {"200": _json("One prediction per row.", _ref("Predictions"), headers=headers)}
    meta = {"200": _json("The model's metadata.", _ref("V2ModelMetadata")), **_errors(404, v2=True)}
    ready = {"200": _json("Whether it scores now.", _ref("V2ModelReady")), **_errors(404, v2=True)}
    binary = {"schema": {**STR, "format": "binary"}}  # the JSON header, then the raw tensors
    length = {**INT, "minimum": 0}
    said = {"inference-header-content-length": {"schema": length}}
    inferred = {"200": _json("The outputs.", _ref("V2InferResponse"), headers=said)}
    inferred["200"]["content"]["application/octet-stream"] = binary  # outputs asked as binary
    inferred.update(_errors(400, 404, 408, 413, 415, 500, 503, v2=True))
    infer = {"requestBody": _body(_ref("V2InferRequest"), ex.get("v2"))}
    infer["requestBody"]["content"]["application/octet-stream"] = binary
    infer["requestBody"]["description"] = (
        "JSON tensors; or the binary tensor extension: application/octet-stream, the JSON "
        "request (Inference-Header-Content-Length bytes long) followed by the raw tensors."
    )
    admin = {"security": [{"adminToken": []}], "tags": ["admin"]}
    done = {"200": _json("Done.", _ref("AdminResult")), **_errors(*ADMIN_ERRORS)}
    recorded = {"202": _json("Recorded (a duplicate is counted only).", _ref("FeedbackAccepted"))}
    feedback: dict[str, Any] = {"security": [{}, {"feedbackToken": []}]}
    feedback["requestBody"] = _body(_ref("FeedbackRequest"), ex.get("feedback"))
    ping = {"200": {"description": "Ready.", "content": TEXT}}
    ping["503"] = {"description": "A scoring loop ended or is stuck (why).", "content": TEXT}
    text = {"200": {"description": "The Prometheus text format.", "content": TEXT}}
    ready_v2 = {"200": _json("Ready.", _obj({"ready": {**BOOL, "enum": [True]}}))}
    ready_v2["503"] = _json("Not ready.", _obj({"ready": {**BOOL, "enum": [False]}}))
    health = {"200": _json("Ready.", _ref("Health"))}
    health["503"] = _json("Not ready, and why.", _ref("Unavailable"))

    def ok(schema: str) -> dict[str, Any]:
        return {"200": _json("OK.", _ref(schema))}

    # method and path, operationId, summary, responses, the rest of the operation
    routes: list[tuple[str, str, str, dict[str, Any], dict[str, Any]]] = [
        ("get /ping", "ping", "Whether scoring is ready (MLflow).", ping, {}),
        ("get /health", "health", "Readiness and the model served.", health, {}),
        ("get /version", "version", "The versions served.", ok("Version"), {}),
        ("post /invocations", "invocations", "Score rows: MLflow's JSON formats, CSV or Parquet.",
         {**scored, **_errors(400, 408, 413, 415, 500, 503)},
         {"parameters": [output], "requestBody": scoring}),
        ("post /feedback", "feedback", "Labels for earlier predictions; a row's first label wins.",
         {**recorded, **_errors(400, 401, 403, 413, 415, 421, 429)}, feedback),
        ("get /metrics", "metrics", "Prometheus metrics (text format).", text, {}),
        ("get /openapi.json", "openapi", "This document.", ok("OpenAPI"), {}),
        ("get /v2", "v2_server", "Server metadata (v2).", ok("V2Server"), {}),
        ("get /v2/health/live", "v2_live", "Liveness (v2).", ok("V2Live"), {}),
        ("get /v2/health/ready", "v2_ready", "Readiness (v2).", ready_v2, {}),
        ("get /v2/models/{name}", "v2_metadata", "Model metadata.", meta, {"parameters": name}),
        ("get /v2/models/{name}/ready", "v2_model_ready", "Ready?", ready, {"parameters": name}),
        ("post /v2/models/{name}/infer", "v2_infer", "Score tensors, one per input column.",
         inferred, {"parameters": name, **infer}),
        ("get /v2/models/{name}/versions/{version}", "v2_version_metadata", "Version metadata.",
         meta, {"parameters": version}),
        ("get /v2/models/{name}/versions/{version}/ready", "v2_version_ready", "Readiness.",
         ready, {"parameters": version}),
        ("post /v2/models/{name}/versions/{version}/infer", "v2_version_infer",
         "Score tensors with this version.", inferred, {"parameters": version, **infer}),
        ("get /admin/status", "admin_status", "Versions served, traffic, limits.", done, admin),
        ("post /admin/load", "admin_load", "Load a bundle as primary, canary or shadow.", done,
         {**admin, "requestBody": _body(_ref("AdminLoad"))}),
        ("post /admin/promote", "admin_promote", "Make the canary the primary.", done, admin),
        ("post /admin/rollback", "admin_rollback", "Drop the canary and the shadow.", done, admin),
    ]  # fmt: skip
    paths: dict[str, Any] = {}
    for route, op_id, summary, responses, rest in routes:
        method, path = route.split(" ")
        op = {"operationId": op_id, "summary": summary, **rest, "responses": responses}
        paths.setdefault(path, {})[method] = op
    return paths


def _document(parts: dict[str, Any]) -> dict[str, Any]:
    bearer = {"type": "http", "scheme": "bearer"}
    doc = {
        "openapi": "3.0.3",
        "info": {"title": f"mlops-console model server ({parts['title']})", "version": __version__},
        "paths": _paths(parts),
        "components": {
            "schemas": _schemas(parts),
            "securitySchemes": {
                "adminToken": {**bearer, "description": "The server's MLOPS_ADMIN_TOKEN."},
                "feedbackToken": {**bearer, "description": "MLOPS_FEEDBACK_TOKEN, when it is set."},
            },
        },
    }
    return copy.deepcopy(doc)  # no dict shared between documents or within one


def build_openapi(model) -> dict[str, Any]:
    """The document specialised to `model`, a ServedModel (a new dict on every call)."""
    return _document(_model_parts(model))


OPENAPI: dict[str, Any] = _document(_generic_parts())
