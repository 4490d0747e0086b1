"""Input/output signatures inferred from a training frame."""

from __future__ import annotations

from typing import Any

MAX_CATEGORIES = 100


def infer_inputs(frame) -> list[dict[str, Any]]:
    import pandas as pd

    cols: list[dict[str, Any]] = []
    for name in frame.columns:
        s = frame[name]
        col: dict[str, Any] = {"name": str(name), "nullable": bool(s.isna().any())}
        if pd.api.types.is_bool_dtype(s):
            col["type"] = "boolean"
        elif pd.api.types.is_integer_dtype(s):
            col["type"] = "integer"
            col["range"] = [int(s.min()), int(s.max())] if s.notna().any() else None
        elif pd.api.types.is_float_dtype(s):
            col["type"] = "float"
            col["range"] = [float(s.min()), float(s.max())] if s.notna().any() else None
        elif pd.api.types.is_datetime64_any_dtype(s):
            col["type"] = "datetime"
        else:
            col["type"] = "string"
            values = sorted(str(v) for v in s.dropna().unique())
            if len(values) <= MAX_CATEGORIES:
                col["categories"] = values
        cols.append(col)
    return cols


def classification_outputs(classes) -> tuple[list[dict[str, Any]], list[Any]]:
    labels = [c.item() if hasattr(c, "item") else c for c in classes]
    outputs: list[dict[str, Any]] = [
        {
            "name": "predict",
            "type": "integer" if all(isinstance(x, int) for x in labels) else "string",
        },
        {"name": "predict_proba", "type": "float", "shape": [-1, len(labels)]},
    ]
    return outputs, labels
