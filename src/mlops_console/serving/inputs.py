"""Request bodies to per-column arrays, checked against the bundle's signature.

Accepted, as MLflow's scoring server does: `dataframe_split`, `dataframe_records`,
`instances`, `inputs` and text/csv; and Open Inference Protocol v2 `inputs` tensors.
No pandas on this path: it is the hot one.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np

NUMERIC = {"integer", "float", "long", "double", "boolean"}


class BadInput(ValueError):
    """The request does not fit; the message names the problem (answered with a 4xx)."""


def _rows_to_columns(rows: list, names: list[str]) -> dict[str, list]:
    if not rows:
        return {n: [] for n in names}
    if isinstance(rows[0], dict):
        return {n: [r.get(n) for r in rows] for n in {k for r in rows for k in r}}
    if isinstance(rows[0], list | tuple):
        if any(len(r) != len(names) for r in rows):
            raise BadInput(
                f"Each row must have {len(names)} values, in the order {', '.join(names)}."
            )
        return {n: [r[i] for r in rows] for i, n in enumerate(names)}
    raise BadInput("Rows must be objects (column: value) or lists of values.")


def parse_json(body: Any, names: list[str]) -> dict[str, list]:
    """An MLflow /invocations JSON body to {column: values}."""
    if not isinstance(body, dict):
        raise BadInput(
            "The body must be a JSON object with one of: dataframe_split, "
            "dataframe_records, instances, inputs."
        )
    keys = [k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if k in body]
    if len(keys) != 1:
        raise BadInput(
            "Give exactly one of dataframe_split, dataframe_records, instances, inputs "
            f"(got {', '.join(body) or 'none'})."
        )
    key, data = keys[0], body[keys[0]]
    if key == "dataframe_split":
        if not isinstance(data, dict) or "data" not in data:
            raise BadInput('dataframe_split needs {"columns": [...], "data": [[...], ...]}.')
        cols = data.get("columns") or names
        rows = data["data"]
        if not isinstance(rows, list):
            raise BadInput("dataframe_split.data must be a list of rows.")
        return _rows_to_columns(rows, list(cols))
    if key in ("dataframe_records", "instances") or (key == "inputs" and isinstance(data, list)):
        if not isinstance(data, list):
            raise BadInput(f"{key} must be a list of records.")
        return _rows_to_columns(data, names)
    if isinstance(data, dict):  # inputs as {column: [values]}
        out = {}
        for k, v in data.items():
            out[k] = v if isinstance(v, list) else [v]
        return out
    raise BadInput("inputs must be a list of records or an object of columns.")


def parse_csv(text: str) -> dict[str, list]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise BadInput("The CSV body is empty; send a header line and rows.") from None
    rows = [r for r in reader if r]
    for i, r in enumerate(rows, 2):
        if len(r) != len(header):
            raise BadInput(f"CSV line {i} has {len(r)} fields; the header has {len(header)}.")
    return {h: [(None if r[i] == "" else r[i]) for r in rows] for i, h in enumerate(header)}


def parse_v2(body: Any) -> tuple[dict[str, list], list[str] | None]:
    """Open Inference Protocol v2 request: one tensor per column (shape [n] or [n, 1])."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise BadInput('A v2 inference request needs "inputs": [{name, shape, datatype, data}].')
    out = {}
    for t in body["inputs"]:
        if not isinstance(t, dict) or "name" not in t or "data" not in t:
            raise BadInput("Each v2 input needs name, shape, datatype and data.")
        data = t["data"]
        if data and isinstance(data[0], list):
            data = [x[0] if isinstance(x, list) and len(x) == 1 else x for x in data]
        out[t["name"]] = data
    wanted = None
    if isinstance(body.get("outputs"), list):
        wanted = [o.get("name") for o in body["outputs"] if isinstance(o, dict)]
    return out, wanted


def to_arrays(
    columns: dict[str, list], signature: dict[str, Any]
) -> tuple[dict[str, np.ndarray], int]:
    """Check the columns against the signature; return typed arrays (extra columns dropped)."""
    inputs = signature["inputs"]
    missing = [c["name"] for c in inputs if c["name"] not in columns]
    if missing:
        raise BadInput(
            f"Missing input column(s): {', '.join(missing)}. The model needs: "
            f"{', '.join(c['name'] for c in inputs)}."
        )
    lengths = {len(columns[c["name"]]) for c in inputs}
    if len(lengths) != 1:
        raise BadInput("All input columns must have the same number of values.")
    n = lengths.pop()
    out = {}
    for col in inputs:
        name, values = col["name"], columns[col["name"]]
        if col["type"] in NUMERIC:
            try:
                arr = np.array(
                    [np.nan if v is None or v == "" else v for v in values], dtype=np.float64
                )
            except (TypeError, ValueError):
                bad = next(v for v in values if not _is_number(v))
                raise BadInput(f"Column {name!r} must be numeric; got {bad!r}.") from None
            if any(isinstance(v, bool) for v in values):
                raise BadInput(f"Column {name!r} must be numeric, not true/false.")
            out[name] = arr
        else:
            out[name] = np.array(
                ["" if v is None else (v if isinstance(v, str) else str(v)) for v in values],
                dtype=object,
            )
    return out, n


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
