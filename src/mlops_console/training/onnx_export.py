"""Converting a fitted pipeline to ONNX, kept only when it predicts like scikit-learn."""

from __future__ import annotations

import contextlib
from typing import Any

TOLERANCE = 1e-4


@contextlib.contextmanager
def _bool_attributes_as_ints():
    # skl2onnx hands lists of numpy booleans to onnx.helper.make_attribute for tree
    # ensembles (missing-value tracks); recent protobuf refuses bools in int fields.
    import numpy as np
    import onnx.helper as helper

    original = helper.make_attribute

    def make_attribute(key, value, *args, **kwargs):
        if isinstance(value, list | tuple) and any(isinstance(v, bool | np.bool_) for v in value):
            value = [int(v) if isinstance(v, bool | np.bool_) else v for v in value]
        return original(key, value, *args, **kwargs)

    helper.make_attribute = make_attribute
    try:
        yield
    finally:
        helper.make_attribute = original


def _restore_input_names(onx, names: list[str]) -> None:
    """Give the graph's inputs the columns' own names again.

    skl2onnx makes input names identifiers (`Alter (Jahre)` becomes `Alter__Jahre_`); the
    servers feed inputs by column name, so the graph is renamed back rather than the
    bundle carrying a mapping every runtime would have to apply."""
    renamed = {inp.name: want for inp, want in zip(onx.graph.input, names, strict=True)}
    renamed = {old: new for old, new in renamed.items() if old != new}
    if not renamed:
        return

    def rename(graph) -> None:
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name in renamed:
                    node.input[i] = renamed[name]
            for attr in node.attribute:  # subgraphs (If, Loop) may read the inputs too
                if attr.HasField("g"):
                    rename(attr.g)
                for g in attr.graphs:
                    rename(g)

    rename(onx.graph)
    for inp in onx.graph.input:
        inp.name = renamed.get(inp.name, inp.name)


def _not_used(reason: str) -> tuple[None, dict[str, Any]]:
    return None, {"converted": False, "kept": False, "reason": reason}


def export(
    model, signature: dict[str, Any], task: str, X_check
) -> tuple[bytes | None, dict[str, Any]]:
    """Return (onnx bytes or None, a report of the conversion and its agreement check).

    ONNX is an optimisation: whenever it cannot be used faithfully the bundle ships the
    scikit-learn model alone, and the report's `reason` says why."""
    import numpy as np

    try:
        import onnxruntime as ort
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    except ImportError as exc:
        return _not_used(f"skl2onnx/onnxruntime missing: {exc}")
    names = [col["name"] for col in signature["inputs"]]
    types = []
    for col in signature["inputs"]:
        numeric = col["type"] in ("integer", "float", "boolean")
        types.append(
            (col["name"], FloatTensorType([None, 1]) if numeric else StringTensorType([None, 1]))
        )
    options = {"zipmap": False} if task == "classification" else None
    try:
        with _bool_attributes_as_ints():
            onx = to_onnx(model, initial_types=types, options=options)
        _restore_input_names(onx, names)
        data = onx.SerializeToString()
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:  # any converter gap: ship scikit-learn only
        return _not_used(f"conversion failed: {type(exc).__name__}: {str(exc)[:200]}")
    got_names = [i.name for i in sess.get_inputs()]
    if sorted(got_names) != sorted(names):
        return _not_used(f"the ONNX inputs {got_names} are not the signature's columns {names}")
    try:
        feed = {}
        for name in names:
            v = X_check[name].to_numpy()
            feed[name] = (v.astype(np.float32) if v.dtype != object else v).reshape(-1, 1)
        outs = sess.run(None, feed)
        if task == "classification":
            ref = model.predict_proba(X_check)
            got = np.asarray(outs[1], dtype=np.float64)
            diff = float(np.abs(got - ref).max())
        else:
            ref = model.predict(X_check).astype(np.float64)
            got = np.asarray(outs[0], dtype=np.float64).reshape(-1)
            scale = float(np.abs(ref).max() or 1.0)
            diff = float(np.abs(got - ref).max()) / scale
    except Exception as exc:  # the check itself failed: nothing vouches for the ONNX model
        return _not_used(
            f"the agreement check could not run: {type(exc).__name__}: {str(exc)[:200]}"
        )
    ok = diff <= TOLERANCE
    report: dict[str, Any] = {
        "converted": True,
        "max_abs_diff": diff,
        "tolerance": TOLERANCE,
        "rows_checked": len(X_check),
        "kept": ok,
        "size": len(data),
    }
    if not ok:
        report["reason"] = (
            f"ONNX predictions differ from scikit-learn's by {diff:.2g} > {TOLERANCE}"
        )
    return (data if ok else None), report
