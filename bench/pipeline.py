"""The sample pipeline's speed, and ONNX vs scikit-learn for a 1-row predict.

    make bench            # or: .venv/bin/python bench/pipeline.py

Trains the bundled churn pipeline (random search, 20 candidates, 3 time-ordered folds,
then the out-of-time holdout, the bundle with ONNX, eight model checks and the gates)
in a fresh workspace on this machine, printing each stage's time. Target: under 60 s.
Then times a 1-row predict through the ONNX file and through the scikit-learn pipeline,
both on already prepared input (the model alone) and through the bundle's input
preparation (what a server pays). Target: ONNX at least 20x faster.
Writes bench/results/pipeline.json.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def per_call_ms(fn, n: int) -> float:
    fn()
    samples = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t) * 1000 / n)
    return statistics.median(samples)


def main() -> None:
    import numpy as np

    from mlops_console.registry.signature import prepare_inputs
    from mlops_console.training.runner import train
    from mlops_console.workspace import Workspace

    root = Path(tempfile.mkdtemp(prefix="pipeline-bench-")) / "ws"
    ws = Workspace.init(root, sample=True)
    ws.data.add("churn", "data/churn.csv", timestamp="event_time", entities=["customer_id"])
    ws.data.ingest("churn")
    t = time.perf_counter()
    result = train(ws, "churn")
    total = time.perf_counter() - t
    print(
        f"sample pipeline: {len(result.search)} search candidates, gates "
        f"{'pass' if result.gates['passed'] else 'FAIL'}, registered {result.version.ref}"
    )
    for stage, seconds in result.stage_seconds.items():
        if stage != "total":
            print(f"  {stage:10} {seconds:7.2f} s")
    print(f"  {'total':10} {total:7.2f} s   (target < 60 s)")

    onnx = ws.models.bundle("churn@champion")
    sk = ws.models.bundle("churn@champion", runtime="sklearn")
    raw = ws.data.read("churn").tail(1)
    row = prepare_inputs(raw, onnx.signature)
    feed = {}
    for col in onnx.signature["inputs"]:
        v = row[col["name"]].to_numpy()
        feed[col["name"]] = (v.astype(np.float32) if v.dtype != object else v).reshape(-1, 1)
    session, model = onnx._session(), sk.sklearn_model
    onnx_model_ms = per_call_ms(lambda: session.run(None, feed), 2000)
    sk_model_ms = per_call_ms(lambda: model.predict_proba(row), 100)
    onnx_bundle_ms = per_call_ms(lambda: onnx.predict_proba(raw), 300)
    sk_bundle_ms = per_call_ms(lambda: sk.predict_proba(raw), 100)
    ratio_model, ratio_bundle = sk_model_ms / onnx_model_ms, sk_bundle_ms / onnx_bundle_ms
    print("\n1-row predict               ONNX (ms)   scikit-learn (ms)   sklearn/ONNX")
    print(
        f"  the model alone           {onnx_model_ms:9.4f}   {sk_model_ms:17.4f}   {ratio_model:10.1f}x  (target >= 20x)"
    )
    print(
        f"  with input preparation    {onnx_bundle_ms:9.4f}   {sk_bundle_ms:17.4f}   {ratio_bundle:10.1f}x"
    )
    out = {
        "pipeline_total_s": total,
        "stages_s": result.stage_seconds,
        "candidates": len(result.search),
        "gates_passed": result.gates["passed"],
        "onnx": result.onnx,
        "predict_1row_ms": {
            "onnx_model": onnx_model_ms,
            "sklearn_model": sk_model_ms,
            "onnx_bundle": onnx_bundle_ms,
            "sklearn_bundle": sk_bundle_ms,
        },
        "ratios": {"sklearn_vs_onnx_model": ratio_model, "sklearn_vs_onnx_bundle": ratio_bundle},
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "pipeline.json").write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
