"""The health gate a device passes after a switch, and the telemetry read from its server.

Three steps, through an SSH port forward to the server on the device's loopback:
1. readiness: `/health` answers 200 and `/version` names the version just switched to;
2. the golden request: recorded input rows whose expected outputs the controller computed
   with the same ONNX model and runtime, compared within the bundle's tolerance (and, when
   the engineer recorded labels for the model, a minimum agreement with them);
3. a window: `requests` more requests, none failing, p99 under the limit.
Every request carries `x-mlops-probe: gate`: the server answers it but neither logs it in
the prediction log nor counts it as traffic, so fleet monitoring never sees the gate.
A failure keeps what the device answered (status, body) for the engineer.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GOLDEN_ROWS = 64


@dataclass
class GateSettings:
    ready_timeout: float = 60.0
    tolerance: float = 1e-4
    min_agreement: float = 0.9  # with labels the engineer recorded (golden/<model>.json)
    requests: int = 20
    max_error_rate: float = 0.0
    max_p99_ms: float = 2000.0

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> GateSettings:
        d = dict(d or {})
        known = {k: d.pop(k) for k in list(d) if k in cls.__dataclass_fields__}
        if d:
            from mlops_console.errors import ConfigError

            raise ConfigError(
                f"gate settings {', '.join(sorted(d))} are not known; use "
                f"{', '.join(cls.__dataclass_fields__)}."
            )
        return cls(**{k: float(v) if k != "requests" else int(v) for k, v in known.items()})


@dataclass
class Golden:
    columns: list[str]
    rows: list[list[Any]]
    expected: list[Any]  # what the bundle predicts for each row
    proba: list[list[float]] | None = None
    labels: list[Any] | None = None  # recorded by the engineer, when given
    source: str = "bundle"

    def body(self) -> bytes:
        return json.dumps(
            {"dataframe_split": {"columns": self.columns, "data": self.rows}}
        ).encode()

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "rows": self.rows,
            "expected": self.expected,
            "proba": self.proba,
            "labels": self.labels,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Golden:
        return cls(**d)


def _plain(v: Any) -> Any:
    if hasattr(v, "isoformat"):  # a datetime input travels as ISO text in the JSON body
        return v.isoformat()
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def training_rows(ws, mv, rows: int = GOLDEN_ROWS):
    """Up to `rows` distinct rows of what `mv` was trained on, in the columns its server
    takes: from the version's training reference (the model's inputs after every
    feature-view join), spread evenly over it so they span the training and holdout time."""
    import numpy as np

    from mlops_console.errors import MlopsError, NotFound
    from mlops_console.monitoring.reference import load_reference

    try:
        reference = load_reference(ws, mv)
    except NotFound as e:
        raise MlopsError(
            f"{e} The gate needs real input rows: retrain it, or record them in "
            f'golden/{mv.name}.json ({{"columns", "data", "labels"}}).'
        ) from None
    inputs = [c["name"] for c in mv.signature["inputs"]]
    missing = [c for c in inputs if c not in reference.frame.columns]
    if missing:
        raise MlopsError(
            f"the training reference of {mv.ref} lacks the input column(s) "
            f"{', '.join(missing)}; retrain it, or record golden rows in golden/{mv.name}.json."
        )
    frame = reference.frame[inputs].drop_duplicates(ignore_index=True)
    if len(frame) > rows:
        frame = frame.iloc[np.unique(np.linspace(0, len(frame) - 1, rows).round().astype(int))]
    return frame.reset_index(drop=True)


def build_golden(ws, mv, user_file: Path | None = None, rows: int = GOLDEN_ROWS) -> Golden:
    """Golden rows for model version `mv`: the engineer's recorded rows when given
    (golden/<model>.json: {"columns", "data", "labels"}), else up to `rows` distinct rows
    of what the version was trained on (`training_rows`); expected outputs from the
    bundle's ONNX model."""
    import pandas as pd

    inputs = [c["name"] for c in mv.signature["inputs"]]
    labels = None
    source = "bundle"
    if user_file is not None and user_file.exists():
        doc = json.loads(user_file.read_text())
        frame = pd.DataFrame(doc["data"], columns=doc["columns"])[inputs]
        labels = doc.get("labels")
        source = str(user_file.name)
    else:
        frame = training_rows(ws, mv, rows)
    bundle = ws.models.bundle(mv.ref, runtime="onnx")
    expected = [_plain(v) for v in bundle.predict(frame)]
    proba = None
    if bundle.task == "classification":
        proba = [[float(x) for x in row] for row in bundle.predict_proba(frame)]
    body_rows = [[_plain(v) for v in r] for r in frame.itertuples(index=False, name=None)]
    return Golden(list(frame.columns), body_rows, expected, proba, labels, source)


@dataclass
class GateResult:
    passed: bool
    step: str  # ready | golden | window | passed
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "step": self.step, "reason": self.reason, **self.detail}


def _close(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= tol * max(1.0, abs(float(b)))
    return str(a) == str(b)


def compare(golden: Golden, answer: Any, tol: float, min_agreement: float) -> str | None:
    """None when `answer` (the device's predictions) matches, else why not."""
    if not isinstance(answer, dict) or "predictions" not in answer:
        return "the answer has no predictions"
    got = answer["predictions"]
    if not isinstance(got, list) or len(got) != len(golden.rows):
        return (
            f"{len(got) if isinstance(got, list) else 'no'} predictions for {len(golden.rows)} rows"
        )
    if golden.labels is not None:
        agree = sum(str(g) == str(lab) for g, lab in zip(got, golden.labels, strict=True)) / len(
            got
        )
        if agree < min_agreement:
            return (
                f"agrees with the recorded labels on {agree:.0%} of {len(got)} rows "
                f"(at least {min_agreement:.0%} needed)"
            )
        return None
    bad = [
        i
        for i, (g, e) in enumerate(zip(got, golden.expected, strict=True))
        if not _close(g, e, tol)
    ]
    if bad:
        i = bad[0]
        return (
            f"{len(bad)} of {len(got)} golden rows differ from the bundle's outputs (row {i}: "
            f"{got[i]!r} instead of {golden.expected[i]!r}, tolerance {tol:g})"
        )
    return None


async def run_gate(base_url: str, golden: Golden, version: int, s: GateSettings) -> GateResult:
    """Gate the server at `base_url` (a forwarded port) that should serve `version`."""
    import asyncio

    import httpx

    from mlops_console.serving.http import PROBE_HEADER

    detail: dict[str, Any] = {}
    # marked as a probe: the server answers it as any request but keeps it out of the
    # prediction log and the traffic metrics, so monitoring never sees the golden rows
    async with httpx.AsyncClient(
        base_url=base_url, timeout=30, headers={PROBE_HEADER: "gate"}
    ) as client:
        deadline = time.monotonic() + s.ready_timeout
        last = "no answer"
        while True:
            try:
                r = await client.get("/health")
                if r.status_code == 200:
                    v = (await client.get("/version")).json()
                    if int(v.get("version", -1)) == int(version):
                        break
                    last = f"it serves version {v.get('version')}, not {version}"
                else:
                    last = f"/health answered {r.status_code}: {r.text[:300]}"
            except (httpx.HTTPError, ValueError) as e:
                last = f"{type(e).__name__}: {e}"
            if time.monotonic() > deadline:
                return GateResult(False, "ready", f"not ready after {s.ready_timeout:g}s: {last}")
            await asyncio.sleep(0.2)
        headers = {"content-type": "application/json"}
        body = golden.body()
        t0 = time.perf_counter()
        try:
            r = await client.post("/invocations", content=body, headers=headers)
        except httpx.HTTPError as e:
            return GateResult(False, "golden", f"the golden request failed: {e}")
        detail["golden_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        if r.status_code != 200:
            return GateResult(
                False,
                "golden",
                f"the golden request answered {r.status_code}",
                {"status": r.status_code, "response": r.text[:4000]},
            )
        try:
            answer = r.json()
        except ValueError:
            answer = None
        why = compare(golden, answer, s.tolerance, s.min_agreement)
        if why:
            return GateResult(
                False, "golden", why, {"status": r.status_code, "response": r.text[:4000]}
            )
        lat: list[float] = []
        errors = 0
        first_error: dict[str, Any] | None = None
        for _ in range(s.requests):
            t0 = time.perf_counter()
            try:
                r = await client.post("/invocations", content=body, headers=headers)
                ok = r.status_code == 200
                if not ok and first_error is None:
                    first_error = {"status": r.status_code, "response": r.text[:4000]}
            except httpx.HTTPError as e:
                ok = False
                first_error = first_error or {"status": None, "response": str(e)}
            lat.append((time.perf_counter() - t0) * 1000)
            errors += not ok
        lat.sort()
        p99 = lat[min(len(lat) - 1, math.ceil(0.99 * len(lat)) - 1)] if lat else 0.0
        rate = errors / max(1, len(lat))
        detail.update({"requests": len(lat), "errors": errors, "p99_ms": round(p99, 1)})
        if rate > s.max_error_rate:
            return GateResult(
                False,
                "window",
                f"{errors} of {len(lat)} requests failed",
                {**detail, **(first_error or {})},
            )
        if p99 > s.max_p99_ms:
            return GateResult(
                False, "window", f"p99 {p99:.0f} ms is over {s.max_p99_ms:g} ms", detail
            )
    return GateResult(True, "passed", "ready, golden rows match, window clean", detail)


_METRIC = re.compile(r"^(\w+)(?:\{([^}]*)\})?\s+([0-9.eE+-]+|NaN|\+Inf)$")


def parse_metrics(text: str) -> dict[str, Any]:
    """Requests, 5xx errors, p99 (from the histogram) and the version, from /metrics."""
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    version = None
    for line in text.splitlines():
        m = _METRIC.match(line.strip())
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if name == "mlops_requests_total" and lab.get("route") in ("invocations", "v2_infer"):
            requests += value
            if lab.get("status", "").startswith("5"):
                errors += value
        elif name == "mlops_request_seconds_bucket":
            le = math.inf if lab.get("le") == "+Inf" else float(lab.get("le", "inf"))
            buckets[le] = buckets.get(le, 0.0) + value
        elif name == "mlops_model_info":
            version = lab.get("version")
    p99 = None
    if buckets:
        total = max(buckets.values())
        for le in sorted(buckets):
            if total and buckets[le] >= 0.99 * total:
                p99 = None if math.isinf(le) else le * 1000
                break
    return {"requests": requests, "errors": errors, "p99_ms": p99, "version": version}
