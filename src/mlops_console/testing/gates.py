"""Promotion gates: metric thresholds and required checks from the pipeline spec."""

from __future__ import annotations

from typing import Any


def evaluate_gates(spec, metrics: dict[str, float], checks: list[dict[str, Any]]) -> dict[str, Any]:
    results = []
    for name, threshold in spec.gates.min.items():
        v = metrics.get(f"holdout_{name}")
        ok = v is not None and v >= threshold
        results.append(
            {
                "name": f"min {name}",
                "passed": ok,
                "value": v,
                "threshold": threshold,
                "detail": f"holdout {name} {v if v is None else round(v, 4)} must be >= {threshold}",
            }
        )
    for name, threshold in spec.gates.max.items():
        v = metrics.get(f"holdout_{name}")
        ok = v is not None and v <= threshold
        results.append(
            {
                "name": f"max {name}",
                "passed": ok,
                "value": v,
                "threshold": threshold,
                "detail": f"holdout {name} {v if v is None else round(v, 4)} must be <= {threshold}",
            }
        )
    by_name = {c["name"]: c for c in checks}
    for name in spec.gates.checks:
        c = by_name.get(name)
        ok = bool(c and c["passed"])
        results.append(
            {
                "name": f"check {name}",
                "passed": ok,
                "value": None,
                "threshold": "pass",
                "detail": c["reason"] if c else "the check did not run",
            }
        )
    return {"passed": all(r["passed"] for r in results), "results": results}
