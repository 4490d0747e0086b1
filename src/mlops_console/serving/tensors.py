"""Open Inference Protocol v2 tensors: JSON and the binary tensor extension, both ways.

A request is one tensor per column (shape [rows] or [rows, 1]); `shape`, `datatype` and
the data are checked against each other and against the signature. With the binary
extension (tritonclient's default), the body is the JSON header of
`Inference-Header-Content-Length` bytes followed by the raw tensors in input order:
fixed-size types little-endian, BYTES as 4-byte little-endian lengths, each followed by
that many bytes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlops_console.serving.inputs import NUMERIC, BadInput, _what

NUMPY = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
V2_TYPES = {*NUMPY, "BYTES"}


@dataclass
class V2Request:
    columns: dict[str, Any]
    wanted: list[str] | None = None  # outputs asked for (None: all)
    binary: set[str] = field(default_factory=set)  # outputs to send as binary tensors
    binary_all: bool = False  # parameters.binary_data_output: every output binary


def _flatten(data: list, name: str) -> list:
    flat: list = []
    stack = [(data, 0)]
    while stack:
        items, depth = stack.pop()
        if depth > 8:
            raise BadInput(f"Input {name!r}: data is nested too deeply.")
        for i in range(len(items) - 1, -1, -1):
            v = items[i]
            if isinstance(v, list):
                stack.append((v, depth + 1))
            elif isinstance(v, dict):
                raise BadInput(f"Input {name!r}: data holds an object; send numbers or strings.")
            else:
                flat.append(v)
    flat.reverse()
    return flat


def _strings(blob: bytes, name: str, count: int) -> list[str]:
    out, pos = [], 0
    while pos < len(blob):
        if pos + 4 > len(blob):
            raise BadInput(f"Input {name!r}: the binary BYTES tensor is cut short.")
        (size,) = struct.unpack_from("<I", blob, pos)
        pos += 4
        if pos + size > len(blob):
            raise BadInput(f"Input {name!r}: the binary BYTES tensor is cut short.")
        try:
            out.append(blob[pos : pos + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise BadInput(f"Input {name!r}: element {len(out)} is not UTF-8 text.") from None
        pos += size
    if len(out) != count:
        raise BadInput(
            f"Input {name!r}: the shape holds {count} values; the binary data has {len(out)}."
        )
    return out


def _binary(t: dict, blobs: memoryview | None, pos: int, size: Any) -> tuple[Any, int]:
    name, dtype, count = t["name"], t["datatype"], math.prod(t["shape"])
    if blobs is None:
        raise BadInput(
            f"Input {name!r} says binary_data_size but the request has no binary part "
            "(send the Inference-Header-Content-Length header)."
        )
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadInput(f"Input {name!r}: binary_data_size must be a byte count.")
    if pos + size > len(blobs):
        raise BadInput(
            f"Input {name!r}: binary_data_size is {size}; only {len(blobs) - pos} bytes remain."
        )
    blob = bytes(blobs[pos : pos + size])
    if dtype == "BYTES":
        return _strings(blob, name, count), pos + size
    itemsize = np.dtype(NUMPY[dtype]).itemsize
    if size != count * itemsize:
        raise BadInput(
            f"Input {name!r}: {count} {dtype} values are {count * itemsize} bytes; "
            f"binary_data_size says {size}."
        )
    return np.frombuffer(blob, dtype=NUMPY[dtype]).astype(np.float64), pos + size


def parse_v2(body: Any, signature: dict[str, Any], blobs: bytes | None = None) -> V2Request:
    """A v2 inference request, checked; the columns are ready for `to_batch`."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise BadInput('A v2 inference request needs "inputs": [{name, shape, datatype, data}].')
    if "id" in body and not isinstance(body["id"], str):
        raise BadInput('"id" must be a string.')
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadInput('"parameters" must be an object.')
    kinds = {c["name"]: c["type"] for c in signature["inputs"]}
    view = memoryview(blobs) if blobs is not None else None
    pos = 0
    out: dict[str, Any] = {}
    for t in body["inputs"]:
        if not isinstance(t, dict) or not all(k in t for k in ("name", "shape", "datatype")):
            raise BadInput("Each v2 input needs name, shape, datatype and data.")
        name, shape, dtype = t["name"], t["shape"], t["datatype"]
        if not isinstance(name, str) or not name:
            raise BadInput("An input's name must be a non-empty string.")
        if name in out:
            raise BadInput(f"Input {name!r} is given twice.")
        tparams = t.get("parameters") or {}
        if not isinstance(tparams, dict):
            raise BadInput(f"Input {name!r}: parameters must be an object.")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise BadInput(f"Input {name!r}: shape must be a list of non-negative integers.")
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise BadInput(
                f"Input {name!r}: shape {shape} is not one column; send shape [rows] or [rows, 1]."
            )
        if dtype not in V2_TYPES:
            raise BadInput(
                f"Input {name!r}: datatype {dtype!r} is not a v2 datatype "
                f"({', '.join(sorted(V2_TYPES))})."
            )
        kind = kinds.get(name)
        if kind is not None and (dtype == "BYTES") == (kind in NUMERIC):
            raise BadInput(
                f"Input {name!r} is numeric; send a numeric datatype, not BYTES."
                if dtype == "BYTES"
                else f"Input {name!r} holds text; send datatype BYTES."
            )
        if "binary_data_size" in tparams:
            out[name], pos = _binary(t, view, pos, tparams["binary_data_size"])
            continue
        if "data" not in t:
            raise BadInput(f"Input {name!r} has no data.")
        data = t["data"]
        if not isinstance(data, list):
            raise BadInput(f"Input {name!r}: data must be a list, not {_what(data)}.")
        flat = _flatten(data, name)
        if len(flat) != math.prod(shape):
            raise BadInput(
                f"Input {name!r}: shape {shape} holds {math.prod(shape)} values; data has {len(flat)}."
            )
        if dtype == "BYTES":
            bad = next((v for v in flat if not isinstance(v, str)), None)
            if bad is not None:
                raise BadInput(
                    f"Input {name!r} is BYTES; every value must be a string, not {_what(bad)}."
                )
        else:
            ok = (bool,) if dtype == "BOOL" else (int, float)
            for v in flat:
                if not isinstance(v, ok) or (dtype != "BOOL" and isinstance(v, bool)):
                    raise BadInput(f"Input {name!r} is {dtype}; it holds {_what(v)}.")
            if dtype == "BOOL":
                flat = [float(v) for v in flat]
        out[name] = flat
    if view is not None and pos != len(view):
        raise BadInput(f"The binary part has {len(view) - pos} bytes no input claims.")
    request = V2Request(out, binary_all=bool(params.get("binary_data_output")))
    outputs = body.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict)
            and isinstance(o.get("name"), str)
            and isinstance(o.get("parameters") or {}, dict)
            for o in outputs
        ):
            raise BadInput('"outputs" must be a list of {"name": ..., "parameters": {...}}.')
        request.wanted = [o["name"] for o in outputs]
        request.binary = {
            o["name"] for o in outputs if (o.get("parameters") or {}).get("binary_data")
        }
    return request


def _datatype(arr: np.ndarray) -> str:
    if arr.dtype == object or arr.dtype.kind in "US":
        return "BYTES"
    if arr.dtype.kind == "f":
        return "FP64"
    if arr.dtype.kind == "b":
        return "BOOL"
    return "INT64"


def encode_outputs(
    out: dict[str, Any], names: list[str], binary: set[str]
) -> tuple[list[dict[str, Any]], bytes]:
    """The response's output tensors, and the binary part for those asked as binary."""
    tensors, parts = [], []
    for name in names:
        arr = np.asarray(out[name])
        dtype = _datatype(arr)
        tensor: dict[str, Any] = {"name": name, "shape": list(arr.shape), "datatype": dtype}
        if name in binary:
            if dtype == "BYTES":
                raw = b"".join(
                    struct.pack("<I", len(b)) + b
                    for b in (str(v).encode("utf-8") for v in arr.reshape(-1))
                )
            else:
                raw = arr.astype(NUMPY[dtype]).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            parts.append(raw)
        else:
            tensor["data"] = arr.reshape(-1).tolist()
        tensors.append(tensor)
    return tensors, b"".join(parts)
