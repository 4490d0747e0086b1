"""Model input signatures: check and prepare a frame exactly as the model was trained.

Light on purpose (numpy and pandas only): model servers import it.
"""

from __future__ import annotations

from typing import Any

from mlops_console.errors import MlopsError

NUMERIC = {"integer", "float", "long", "double"}
MISSING_CATEGORY = ""  # how a missing categorical value reaches the model


class InputError(MlopsError):
    """The input does not fit the model's signature; the message names the problem."""


def prepare_inputs(frame, signature: dict[str, Any]):
    """Return the declared columns, in order, with the training dtypes.

    Missing columns and values that cannot be read as the declared type raise InputError;
    extra columns are dropped; missing categorical values become "".
    """
    import numpy as np
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise InputError("The input must be a table (a pandas DataFrame or its records).")
    inputs = signature.get("inputs", [])
    names = [c["name"] for c in inputs]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise InputError(
            f"Missing input column(s): {', '.join(missing)}. The model needs: {', '.join(names)}."
        )
    out = {}
    for col in inputs:
        name, kind = col["name"], col["type"]
        s = frame[name]
        if kind in NUMERIC:
            if pd.api.types.is_bool_dtype(s):
                raise InputError(f"Column {name!r} must be numeric, not true/false.")
            if pd.api.types.is_numeric_dtype(s):  # the fast path: nothing to parse
                out[name] = s.to_numpy(dtype="float64", na_value=np.nan)
                continue
            if s.map(lambda v: isinstance(v, bool)).any():
                raise InputError(f"Column {name!r} must be numeric, not true/false.")
            values = pd.to_numeric(s, errors="coerce")
            bad = values.isna() & s.notna() & ~s.astype(str).str.lower().isin(["nan", "none", ""])
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise InputError(f"Column {name!r} must be numeric; row {row} has {s.iloc[row]!r}.")
            out[name] = values.astype("float64").to_numpy()
        elif kind == "boolean":
            out[name] = s.astype("float64").to_numpy()
        else:
            arr = s.to_numpy(dtype=object, na_value=None)
            if any(not isinstance(v, str) for v in arr):
                arr = np.array(
                    [
                        MISSING_CATEGORY
                        if v is None or v != v
                        else (v if isinstance(v, str) else str(v))
                        for v in arr
                    ],
                    dtype=object,
                )
            out[name] = arr
    return pd.DataFrame(out, index=range(len(frame)), copy=False)
