"""Collect prediction-log segments into Parquet, one folder per deployment.

Servers write JSON-lines segments into `.mlops/logs/predictions/DEPLOYMENT/` (local
processes directly, Docker containers through a mounted folder). A closed segment
(`*.jsonl`) becomes three Parquet files under `.mlops/monitoring/DEPLOYMENT/`:

- `rows/SEGMENT.parquet`: one row per scored row (time, request id, row number, version,
  role, the request's latency and size, every input column as `in.NAME`, columns sent
  but not used by the model as `key.NAME` (entity keys, for labels), the prediction);
- `requests/SEGMENT.parquet`: one row per request, failed ones included (status);
- `feedback/SEGMENT.parquet`: labels sent to `POST /feedback`.

The Parquet files are written (temp file, rename) before the segment is deleted, and a
segment's output names are fixed, so a crash at any point repeats work and loses nothing.
A segment still `.open` whose writer stopped (no change for `stale_seconds`: the server
died or was stopped) is collected too. `live_rows` reads the open segments without
consuming them, so a report also sees the last minute.

A deployment served by many devices (a fleet) publishes each device's segments as
`STEM--DEVICE.jsonl`; the collected files keep that name, and `segment_device` reads the
device back from it, so monitoring can measure one device (or a group of them).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson

from mlops_console.names import check_name, inside

STALE_SECONDS = 600.0
KINDS = ("rows", "requests", "feedback")
DEVICE_SEP = "--"  # STEM--DEVICE: a segment one device of a fleet wrote


def segment_device(name: str) -> str:
    """The device a segment (or its collected Parquet file) came from; "" for one server."""
    stem = name.split(".jsonl")[0].removesuffix(".parquet")
    return stem.rpartition(DEVICE_SEP)[2] if DEVICE_SEP in stem else ""


def log_dir(ws, deployment: str) -> Path:
    return inside(ws.state / "logs" / "predictions", check_name("deployment", deployment))


def monitor_dir(ws, deployment: str) -> Path:
    return inside(ws.state / "monitoring", check_name("deployment", deployment))


def parse_segment(path: Path) -> dict[str, list[dict]]:
    """Records of a segment by kind; a torn last line (a crash mid-write) is skipped."""
    out: dict[str, list[dict]] = {k: [] for k in KINDS}
    bad = 0
    with open(path, "rb") as fh:
        for line in fh:
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                bad += 1
                continue
            if rec.get("kind") == "feedback":
                out["feedback"].append(rec)
            elif rec.get("role") == "error" or int(rec.get("status") or 200) >= 400:
                out["requests"].append(rec)  # a failed request (older servers: role "error")
            elif rec.get("role") in ("primary", "canary", "shadow") and "outputs" in rec:
                out["rows"].append(rec)
                if not rec.get("row_offset"):  # a large request is logged in parts
                    out["requests"].append(rec)
    out["unreadable"] = bad  # type: ignore[assignment]
    return out


def _prediction(outputs: dict[str, Any]) -> tuple[list, list | None]:
    pred = outputs.get("predict") or []
    proba = outputs.get("predict_proba")
    return pred, proba


def rows_table(records: list[dict]):
    """One Arrow table row per scored row."""
    import pyarrow as pa

    cols: dict[str, list] = {
        "ts": [],
        "request_id": [],
        "row": [],
        "version": [],
        "role": [],
        "latency_ms": [],
        "request_rows": [],
        "predict": [],
        "proba": [],
    }
    inputs: dict[str, list] = {}
    total = 0
    for rec in records:
        n = int(rec.get("rows") or 0)
        pred, proba = _prediction(rec.get("outputs") or {})
        if n == 0 or len(pred) != n:
            continue
        cols["ts"].extend([rec["ts"]] * n)
        cols["request_id"].extend([str(rec.get("request_id", ""))] * n)
        offset = int(rec.get("row_offset") or 0)
        cols["row"].extend(range(offset, offset + n))
        cols["version"].extend([int(rec.get("version") or 0)] * n)
        cols["role"].extend([rec.get("role", "primary")] * n)
        cols["latency_ms"].extend([float(rec.get("latency_ms") or 0.0)] * n)
        cols["request_rows"].extend([int(rec.get("request_rows") or n)] * n)
        cols["predict"].extend(str(p) for p in pred)
        if proba is not None and len(proba) == n and proba and isinstance(proba[0], list):
            # the positive class of a binary classifier; the top class's otherwise
            cols["proba"].extend(p[1] if len(p) == 2 else max(p) for p in proba)
        else:
            cols["proba"].extend([None] * n)
        for prefix, group in (("in.", rec.get("inputs")), ("key.", rec.get("keys"))):
            for name, values in (group or {}).items():
                col = inputs.get(prefix + name)
                if col is None:
                    col = inputs[prefix + name] = [None] * total
                col.extend(values if len(values) == n else [None] * n)
        total += n
        for col in inputs.values():
            if len(col) < total:
                col.extend([None] * (total - len(col)))
    arrays = {k: v for k, v in cols.items()}
    arrays["ts"] = pa.array(cols["ts"], pa.float64())
    arrays["proba"] = pa.array(cols["proba"], pa.float64())
    for name, col in inputs.items():
        if name.startswith("key."):  # entity keys are matched as text
            arrays[name] = pa.array([None if v is None else str(v) for v in col], pa.string())
        else:
            arrays[name] = _input_array(col)
    return pa.table(arrays)


def _input_array(values: list):
    import pyarrow as pa

    kinds = {type(v) for v in values if v is not None}
    if kinds <= {int, float, bool}:
        return pa.array(
            [None if v is None else float(v) for v in values], pa.float64()
        )  # NaN and inf survive (they are stability findings)
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def requests_table(records: list[dict]):
    import pyarrow as pa

    return pa.table(
        {
            "ts": pa.array([r["ts"] for r in records], pa.float64()),
            "request_id": [str(r.get("request_id", "")) for r in records],
            "version": [int(r.get("version") or 0) for r in records],
            "role": [r.get("role", "primary") for r in records],
            "status": [int(r.get("status", 200)) for r in records],
            "latency_ms": pa.array(
                [float(r.get("latency_ms") or 0) for r in records], pa.float64()
            ),
            "rows": [int(r.get("request_rows") or r.get("rows") or 0) for r in records],
        }
    )


def feedback_table(records: list[dict]):
    import pyarrow as pa

    return pa.table(
        {
            "ts": pa.array([float(r["ts"]) for r in records], pa.float64()),
            "request_id": [str(r["request_id"]) for r in records],
            "row": [int(r.get("row") or 0) for r in records],
            "label": [orjson.dumps(r["label"]).decode() for r in records],
            "source": [str(r.get("source", "feedback")) for r in records],
        }
    )


def write_parquet(table, dest: Path) -> None:
    import pyarrow.parquet as pq

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dest)


def collect(ws, deployment: str, stale_seconds: float = STALE_SECONDS) -> dict[str, int]:
    """Turn every closed (or abandoned) segment of a deployment into Parquet."""
    src = log_dir(ws, deployment)
    dest = monitor_dir(ws, deployment)
    done = {"segments": 0, "rows": 0, "requests": 0, "feedback": 0, "unreadable": 0}
    if not src.is_dir():
        return done
    now = time.time()
    for path in sorted(src.iterdir()):
        name = path.name
        if name.endswith(".jsonl.open"):
            try:
                if now - path.stat().st_mtime < stale_seconds:
                    continue  # a server is still writing it
            except FileNotFoundError:
                continue  # it was just closed
        elif not name.endswith(".jsonl"):
            continue
        stem = name.split(".jsonl")[0]
        try:
            parsed = parse_segment(path)
        except FileNotFoundError:
            continue
        for kind, build in (
            ("rows", rows_table),
            ("requests", requests_table),
            ("feedback", feedback_table),
        ):
            records = parsed[kind]
            if records:
                table = build(records)
                write_parquet(table, dest / kind / f"{stem}.parquet")
                done[kind] += table.num_rows
        done["unreadable"] += parsed["unreadable"]  # type: ignore[operator]
        path.unlink(missing_ok=True)
        done["segments"] += 1
    return done


def live_segments(ws, deployment: str) -> list[tuple[str, dict[str, list[dict]]]]:
    """(device, records by kind) of each segment not collected yet (read, not consumed)."""
    out: list[tuple[str, dict[str, list[dict]]]] = []
    src = log_dir(ws, deployment)
    if not src.is_dir():
        return out
    for path in sorted(src.glob("*.jsonl*")):
        try:
            parsed = parse_segment(path)
        except FileNotFoundError:
            continue
        out.append((segment_device(path.name), parsed))
    return out


def live_records(ws, deployment: str) -> dict[str, list[dict]]:
    """Records of the segments still open (read, not consumed)."""
    out: dict[str, list[dict]] = {k: [] for k in KINDS}
    for _device, parsed in live_segments(ws, deployment):
        for k in KINDS:
            out[k].extend(parsed[k])
    return out
