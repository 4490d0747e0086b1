"""Request bodies to typed column arrays, checked cell by cell against the signature.

Accepted, as MLflow's scoring server does: `dataframe_split`, `dataframe_records`,
`instances`, `inputs`, text/csv and Parquet; and Open Inference Protocol v2 tensors.
Every request is validated to its declared shape here, before it joins a batch, so a bad
request gets its own 400 and can never break the batch it would have joined.
No pandas on this path: it is the hot one.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

NUMERIC = {"integer", "float", "long", "double", "boolean"}
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_KEYS = 8  # columns a request sends that the model does not use, logged for label matching


class BadInput(ValueError):
    """The request does not fit; the message names the problem (answered with a 4xx)."""

    status = 400


class TooManyRows(BadInput):
    status = 413


@dataclass
class Batch:
    """A validated request: typed arrays in signature order, its row count, extra columns."""

    arrays: dict[str, np.ndarray]
    n: int
    keys: dict[str, list] = field(default_factory=dict)


def _what(v: Any) -> str:
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    if v is None:
        return "null"
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


# --- JSON ---------------------------------------------------------------------------------


def loads(body: bytes | bytearray) -> Any:
    """JSON as MLflow reads it: NaN and Infinity literals (Python's json.dumps writes them)
    are accepted; a body nested too deeply is refused."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        first = exc
    if b"NaN" in body or b"Infinity" in body:
        try:
            return json.loads(body)
        except RecursionError:
            raise BadInput("The JSON body is nested too deeply.") from None
        except (ValueError, UnicodeDecodeError):
            pass
    raise BadInput(f"The body is not valid JSON: {first}") from None


def _records(rows: list, names: list[str], where: str) -> dict[str, list]:
    if not rows:
        return {n: [] for n in names}
    if isinstance(rows[0], dict):
        keys: dict[str, None] = {}
        for i, r in enumerate(rows):
            if not isinstance(r, dict):
                raise BadInput(f"{where} row {i} is {_what(r)}; every row must be an object.")
            for k in r:
                keys[k] = None
        return {k: [r.get(k) for r in rows] for k in keys}
    if isinstance(rows[0], list | tuple):
        return _positional(rows, names, where)
    raise BadInput(f"{where} rows must be objects (column: value) or lists of values.")


def _positional(rows: list, columns: list[str], where: str) -> dict[str, list]:
    width = len(columns)
    for i, r in enumerate(rows):
        if not isinstance(r, list | tuple) or len(r) != width:
            raise BadInput(
                f"{where} row {i} is {_what(r) if not isinstance(r, list) else 'a list of ' + str(len(r))}; "
                f"each row must be a list of {width} values, in the order {', '.join(columns)}."
            )
    return {c: [r[i] for r in rows] for i, c in enumerate(columns)}


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
            f"(got {', '.join(map(str, body)) or 'none'})."
        )
    key, data = keys[0], body[keys[0]]
    if key == "dataframe_split":
        if not isinstance(data, dict) or "data" not in data:
            raise BadInput('dataframe_split needs {"columns": [...], "data": [[...], ...]}.')
        cols = data.get("columns")
        if cols is None:
            cols = names
        if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
            raise BadInput("dataframe_split.columns must be a list of column names (strings).")
        if len(set(cols)) != len(cols):
            raise BadInput("dataframe_split.columns names a column twice.")
        rows = data["data"]
        if not isinstance(rows, list):
            raise BadInput("dataframe_split.data must be a list of rows.")
        return _positional(rows, cols, "dataframe_split.data")
    if key in ("dataframe_records", "instances") or (key == "inputs" and isinstance(data, list)):
        if not isinstance(data, list):
            raise BadInput(f"{key} must be a list of records.")
        return _records(data, names, key)
    if isinstance(data, dict):  # inputs as {column: [values]}
        return {k: v if isinstance(v, list) else [v] for k, v in data.items()}
    raise BadInput("inputs must be a list of records or an object of columns.")


# --- typed arrays -------------------------------------------------------------------------


def _null(name: str, i: int, allowed: bool) -> None:
    if not allowed:
        raise BadInput(
            f"Column {name!r} may not be null (row {i} has no value); the model was trained "
            "without missing values there. Send a value (or start the server with "
            "MLOPS_IMPUTE_MISSING=1 to let the model impute it)."
        )


_PLAIN = frozenset((float, int))


def _numeric(name: str, values: list, nulls: bool, bools: bool = False, kinds=None) -> np.ndarray:
    kinds = set(map(type, values)) if kinds is None else kinds
    # the fast path: JSON numbers (NaN and Infinity are floats), none beyond float32
    if kinds <= _PLAIN and not any(v > FLOAT32_MAX or v < -FLOAT32_MAX for v in values):
        return np.array(values, dtype=np.float64)
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        t = type(v)
        if t is float or t is int:
            try:
                out[i] = v
                continue
            except OverflowError:
                raise BadInput(f"Column {name!r} row {i}: {_what(v)} is too large.") from None
        if v is None:
            _null(name, i, nulls)
            out[i] = np.nan
            continue
        if t is bool and bools:
            out[i] = float(v)
            continue
        if t is str:
            s = v.strip()
            if s == "":
                _null(name, i, nulls)
                out[i] = np.nan
                continue
            try:
                out[i] = float(s)
                continue
            except ValueError:
                pass
        raise BadInput(f"Column {name!r} must be numeric; row {i} has {_what(v)}.")
    _check_range({name: out})
    return out


def _text(name: str, values: list, nulls: bool) -> np.ndarray:
    kinds = set(map(type, values))
    if kinds <= {str}:
        return np.array(values, dtype=object)
    out = []
    for i, v in enumerate(values):
        t = type(v)
        if t is str:
            out.append(v)
        elif v is None:
            _null(name, i, nulls)
            out.append("")  # how a missing category reaches the model (as in training)
        elif t is int or (t is float and math.isfinite(v)):
            out.append(str(v))
        else:
            raise BadInput(f"Column {name!r} must be text; row {i} has {_what(v)}.")
    return np.array(out, dtype=object)


def _check_range(arrays: dict[str, np.ndarray]) -> None:
    """ONNX computes in float32 and scikit-learn refuses infinity: a value beyond float32's
    range would come back as a NaN prediction or a failure. (NaN is a missing value.)"""
    for name, arr in arrays.items():
        if arr.dtype.kind != "f":
            continue
        over = np.abs(arr) > FLOAT32_MAX
        if over.any():
            i = int(np.flatnonzero(over)[0])
            raise BadInput(
                f"Column {name!r} row {i} holds {arr[i]!r}; values must be finite "
                f"and within ±{FLOAT32_MAX:.3g}."
            )


def to_batch(
    columns: dict[str, list],
    signature: dict[str, Any],
    max_rows: int,
    impute: bool = False,
) -> Batch:
    """Check every cell against the signature; typed 1-D arrays, one per model input."""
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
    if n == 0:
        raise BadInput("The request has no rows; send at least one.")
    if n > max_rows:
        raise TooManyRows(
            f"The request has {n} rows; this server takes at most {max_rows} per request "
            "(MLOPS_MAX_ROWS). Split it into smaller requests."
        )
    arrays = {}
    for col in inputs:
        name = col["name"]
        nulls = impute or col.get("nullable", True)
        values = columns[name]
        if isinstance(values, np.ndarray):  # already typed and checked (CSV, Parquet)
            arrays[name] = values
        elif col["type"] in NUMERIC:
            kinds = set(map(type, values))
            if bool in kinds and col["type"] != "boolean":
                i = next(i for i, v in enumerate(values) if isinstance(v, bool))
                raise BadInput(f"Column {name!r} must be numeric; row {i} has true/false.")
            arrays[name] = _numeric(name, values, nulls, col["type"] == "boolean", kinds)
        else:
            arrays[name] = _text(name, values, nulls)
    _check_range({k: v for k, v in arrays.items() if isinstance(columns[k], np.ndarray)})
    keys = {}
    if len(columns) > len(arrays):  # columns the model does not use (an entity key, say)
        for k, v in columns.items():
            if k in arrays or len(v) != n:
                continue
            keys[k] = v.tolist() if isinstance(v, np.ndarray) else v
            if len(keys) == MAX_KEYS:
                break
    return Batch(arrays, n, keys)


# --- CSV and Parquet (through Arrow: typed columns without a Python object per cell) ------


def _arrow_columns(holder: list, signature: dict[str, Any], impute: bool, what: str) -> dict:
    """Typed arrays of the table in `holder` (taken out of it, so that each column's Arrow
    buffers are freed as soon as it is converted: the peak is one column, not two tables)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = holder.pop()
    out: dict[str, Any] = {}
    for col in signature["inputs"]:
        name = col["name"]
        if name not in table.column_names:
            continue  # reported as missing by to_batch
        arr = table.column(name)
        if arr.null_count and not (impute or col.get("nullable", True)):
            first = int(pc.index(pc.is_null(arr), True).as_py())
            _null(name, first, False)
        try:
            if col["type"] in NUMERIC:
                if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
                    raise BadInput(f"Column {name!r} must be numeric in the {what}.")
                out[name] = pc.cast(arr, pa.float64()).to_numpy()
            else:
                text = arr if pa.types.is_string(arr.type) else pc.cast(arr, pa.string())
                out[name] = np.array(
                    pc.fill_null(text, "").to_numpy(zero_copy_only=False), dtype=object
                )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise BadInput(f"Column {name!r} in the {what}: {exc}") from None
        del arr
        table = table.drop_columns([name])
    for name in table.column_names[:MAX_KEYS]:  # kept only as keys for label matching
        out[name] = table.column(name).to_pylist()
    return out


def _take(box) -> bytes | bytearray:
    """The body, out of its one-item list when given one (so the caller holds no copy)."""
    return box.pop() if isinstance(box, list) else box


def _check_utf8(data) -> None:
    """Without decoding the whole body at once (that would be a second copy of it)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    step = 1 << 20
    for start in range(0, len(view), step):
        try:
            decoder.decode(view[start : start + step], final=start + step >= len(view))
        except UnicodeDecodeError as exc:
            raise BadInput(
                f"The CSV body is not UTF-8 text (byte {start + exc.start}); send UTF-8."
            ) from None


def parse_csv(box, signature: dict[str, Any], impute: bool = False) -> dict:
    """A CSV body (header line first; a UTF-8 BOM is fine) to typed columns."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    data = _take(box)
    if len(data) < 4096 and not data.strip():
        raise BadInput("The CSV body is empty; send a header line and rows.")
    _check_utf8(data)
    types = {
        c["name"]: (
            pa.bool_()
            if c["type"] == "boolean"
            else pa.float64()
            if c["type"] in NUMERIC
            else pa.string()
        )
        for c in signature["inputs"]
    }
    bad_rows: list = []

    def bad_row(row) -> str:
        bad_rows.append(row)
        return "error"

    try:
        table = pa_csv.read_csv(
            pa.BufferReader(data),
            read_options=pa_csv.ReadOptions(use_threads=False, block_size=1 << 20),
            parse_options=pa_csv.ParseOptions(
                newlines_in_values=False, invalid_row_handler=bad_row
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=types,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        if bad_rows:
            row = bad_rows[0]
            where = f"CSV line {row.number}" if row.number is not None else "A CSV line"
            raise BadInput(
                f"{where} has {row.actual_columns} fields; the header has "
                f"{row.expected_columns}. (A bare carriage return ends a line: quote the field.)"
            ) from None
        m = re.search(r"column #(\d+): Row #(\d+): CSV conversion error to (\w+): (.*)", str(exc))
        if m:
            header = next(csv.reader([data[: data.find(b"\n")].decode("utf-8-sig")]), [])
            i = int(m.group(1))
            name = header[i] if i < len(header) else f"#{i}"
            kind = "numeric" if m.group(3) in ("double", "float") else m.group(3)
            raise BadInput(
                f"Column {name!r} must be {kind}; CSV line {m.group(2)} has {m.group(4)}."
            ) from None
        raise BadInput(f"The CSV body cannot be read: {_arrow_message(exc)}") from None
    holder = [table]
    del table, data
    return _arrow_columns(holder, signature, impute, "CSV body")


def parse_parquet(box, signature: dict[str, Any], impute: bool = False) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = _take(box)

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInput(f"The body is not a readable Parquet file: {_arrow_message(exc)}") from None
    holder = [table]
    del table, data
    return _arrow_columns(holder, signature, impute, "Parquet body")


def _arrow_message(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
