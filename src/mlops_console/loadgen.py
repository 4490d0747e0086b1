"""A bounded load generator: replays rows of a dataset version (or a CSV/Parquet file)
against a deployment's endpoint, so monitoring, canaries and alerts have traffic to see.

    report = send_traffic(ws, "churn", dataset="churn", version=2, requests=500, rate=50)
    report.ok, report.failed, report.latency_p99_ms

It always stops by itself: after `requests` requests, after `seconds` seconds, whichever
comes first (200 requests when neither is given), or when `stop` is set; requests go out
one at a time at `rate` per second at most. Rows are sent in the dataset's order, `batch`
rows a request, cycling when the rows run out, with the model's input columns only. It
speaks MLflow's `/invocations` (`dataframe_records`) or the Open Inference Protocol v2
(`/v2/models/NAME/infer`; rows with a missing number are left out there, as its JSON
tensors cannot carry one). An endpoint off this machine is refused unless `allow_remote`:
a load test is aimed at a server of one's own.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mlops_console.errors import MlopsError

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace

PROTOCOLS = ("mlflow", "v2")
DEFAULT_REQUESTS = 200
MAX_REQUESTS = 1_000_000
MAX_SECONDS = 24 * 3600.0
MAX_RATE = 10_000.0
MAX_BATCH = 10_000
TIMEOUT = 10.0  # seconds one request may take before it counts as failed ("timeout")
V2_DATATYPES = {"string": "BYTES", "integer": "FP64", "float": "FP64", "boolean": "BOOL"}


@dataclass
class TrafficReport:
    """What one bounded replay sent and got back."""

    endpoint: str
    protocol: str
    sent: int = 0  # requests sent
    ok: int = 0  # answered 200
    failed: dict[str, int] = field(
        default_factory=dict
    )  # by HTTP status, or "timeout"/"connection"
    rows: int = 0  # rows sent in all requests
    seconds: float = 0.0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    versions: dict[str, int] = field(default_factory=dict)  # answers per model version served
    stopped_by: str = ""  # "requests", "seconds" or "stop"
    rows_left_out: int = 0  # v2: rows with a missing number (JSON tensors have no NaN)

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    @property
    def rps(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line: what was sent, what came back, how fast."""
        failed = (
            ", ".join(f"{n} x {why}" for why, n in sorted(self.failed.items()))
            if self.failed
            else "none"
        )
        p50, p99 = _ms(self.latency_p50_ms), _ms(self.latency_p99_ms)
        served = ", ".join(f"v{v}: {n}" for v, n in sorted(self.versions.items()))
        return (
            f"{self.sent} requests ({self.rows} rows) in {self.seconds:.1f} s "
            f"({self.rps:.1f}/s): {self.ok} ok, failed {failed}; latency p50 {p50}, p99 {p99}"
            + (f"; answered by {served}" if served else "")
            + (
                f"; {self.rows_left_out} rows with a missing number left out (v2)"
                if self.rows_left_out
                else ""
            )
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "protocol": self.protocol,
            "sent": self.sent,
            "ok": self.ok,
            "failed": dict(self.failed),
            "failed_total": self.failed_total,
            "rows": self.rows,
            "seconds": self.seconds,
            "rps": self.rps,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "versions": dict(self.versions),
            "stopped_by": self.stopped_by,
            "rows_left_out": self.rows_left_out,
        }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


@dataclass(frozen=True)
class Rows:
    """The rows to replay: the model's input columns (and entity keys), as JSON-ready records."""

    columns: list[str]
    types: dict[str, str]  # column -> signature type (string, integer, float, boolean)
    records: list[dict[str, Any]]
    source: str  # in words: "dataset churn v2", "file data/jan.csv"
    # the dataset's entity columns, sent beside the inputs (MLflow protocol): the server
    # logs them as keys, so late labels can be matched to what was served
    keys: list[str] = field(default_factory=list)


def parse_dataset_ref(text: str) -> tuple[str, int | None]:
    """`churn`, `churn@2` or `churn@v2` -> (name, version or None for the current one)."""
    name, sep, version = text.partition("@")
    if not sep:
        return name, None
    digits = version[1:] if version[:1] in ("v", "V") else version
    if not name or not digits.isdigit() or int(digits) < 1:
        raise MlopsError(
            f"{text!r} is not a dataset version; write NAME or NAME@VERSION (e.g. churn@2)."
        )
    return name, int(digits)


def rows_for(
    ws: Workspace,
    deployment: str,
    dataset: str | None = None,
    version: int | None = None,
    path: str | Path | None = None,
) -> Rows:
    """The rows to send to `deployment`: from a dataset version, a file, or (neither
    given) the dataset version its model was trained on; the model's inputs and the
    dataset's entity keys only."""
    dep = ws.deployments.get(deployment)
    mv = ws.models.get_version(dep.model, dep.version)
    inputs = mv.signature.get("inputs") or []
    if not inputs:
        raise MlopsError(f"{mv.ref} has no input signature; it cannot be sent rows.")
    columns = [c["name"] for c in inputs]
    types = {c["name"]: c.get("type", "float") for c in inputs}
    used = (mv.lineage or {}).get("datasets") or []
    trained_on = used[0]["name"] if used else None
    if path is not None:
        frame, source = _read_file(ws, Path(path)), f"file {path}"
    else:
        if dataset is None:
            if trained_on is None:
                raise MlopsError(
                    f"{mv.ref} records no training dataset; name the rows to send with "
                    "--dataset NAME[@VERSION] or --file PATH."
                )
            dataset, version = parse_dataset_ref(f"{trained_on}@{used[0]['version']}")
        dv = ws.data.version(dataset, version)
        frame = ws.data.read(dataset, dv.version)
        source = f"dataset {dataset} v{dv.version}"
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MlopsError(
            f"The {source} has no column {', '.join(missing)}, which {mv.ref} takes as input; "
            "send rows with the model's inputs."
        )
    if not len(frame):
        raise MlopsError(f"The {source} has no rows to send.")
    keys = _entity_keys(ws, dataset or trained_on, frame, columns)
    import orjson

    # pandas' own JSON writer turns NaN into null and timestamps into ISO text
    records = orjson.loads(frame[columns + keys].to_json(orient="records", date_format="iso"))
    return Rows(columns, types, records, source, keys)


def _entity_keys(ws: Workspace, dataset: str | None, frame, columns: list[str]) -> list[str]:
    """The dataset's entity columns that the rows have and the model does not take."""
    if dataset is None:
        return []
    try:
        entities = ws.data.get(dataset).entities
    except MlopsError:
        return []
    return [c for c in entities if c in frame.columns and c not in columns]


def _read_file(ws: Workspace, path: Path):
    import pandas as pd

    found = path if path.is_absolute() or path.exists() else ws.root / path
    if not found.is_file():
        raise MlopsError(
            f"No file {path} (looked here and in the workspace); give a CSV or Parquet file."
        )
    try:
        if found.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(found)
        return pd.read_csv(found)
    except Exception as exc:  # a file pandas cannot read is the user's to fix
        raise MlopsError(
            f"{path} could not be read as {'Parquet' if found.suffix.lower() in ('.parquet', '.pq') else 'CSV'} "
            f"({type(exc).__name__}: {str(exc)[:120]}); give a CSV or Parquet file."
        ) from None


def check_bounds(
    requests: int | None, seconds: float | None, rate: float, batch: int
) -> tuple[int | None, float | None]:
    """The bounds as replay uses them (200 requests if neither is given); an error for any
    out of range."""
    if requests is None and seconds is None:
        requests = DEFAULT_REQUESTS
    if requests is not None and not 1 <= requests <= MAX_REQUESTS:
        raise MlopsError(f"requests must be between 1 and {MAX_REQUESTS:,}, got {requests}.")
    if seconds is not None and not (0 < seconds <= MAX_SECONDS and math.isfinite(seconds)):
        raise MlopsError(f"seconds must be above 0 and at most {MAX_SECONDS:g}, got {seconds:g}.")
    if not (0 < rate <= MAX_RATE and math.isfinite(rate)):
        raise MlopsError(f"rate must be above 0 and at most {MAX_RATE:g} requests/s, got {rate:g}.")
    if not 1 <= batch <= MAX_BATCH:
        raise MlopsError(f"batch must be between 1 and {MAX_BATCH:,} rows, got {batch}.")
    return requests, seconds


def check_endpoint(endpoint: str, allow_remote: bool = False) -> str:
    """The endpoint without a trailing slash; an error if it is off this machine and
    `allow_remote` is not set."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MlopsError(f"{endpoint!r} is not an http(s) endpoint.")
    if not allow_remote and not _loopback(parts.hostname):
        raise MlopsError(
            f"{endpoint} is not on this machine; a load test goes to a server of your own. "
            "Pass --remote (allow_remote=True) if it is one."
        )
    return endpoint.rstrip("/")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


Progress = Callable[[TrafficReport], None]


def replay(
    endpoint: str,
    rows: Rows,
    *,
    model: str = "",
    requests: int | None = None,
    seconds: float | None = None,
    rate: float = 20.0,
    batch: int = 1,
    protocol: str = "mlflow",
    progress: Progress | None = None,
    progress_every: float = 0.5,
    stop: threading.Event | None = None,
    allow_remote: bool = False,
) -> TrafficReport:
    """Send `rows` to `endpoint` until a bound is reached; `progress` sees the report so
    far every `progress_every` seconds. `model` is the model's name (v2 routes name it)."""
    import httpx
    import orjson

    if protocol not in PROTOCOLS:
        raise MlopsError(f"protocol {protocol!r} is not known; use {' or '.join(PROTOCOLS)}.")
    if protocol == "v2" and not model:
        raise MlopsError("The v2 protocol names the model in its route; give the model's name.")
    requests, seconds = check_bounds(requests, seconds, rate, batch)
    endpoint = check_endpoint(endpoint, allow_remote)
    records, left_out = rows.records, 0
    if protocol == "v2":
        records = _v2_sendable(rows)
        left_out = len(rows.records) - len(records)
        if not records:
            raise MlopsError(
                f"Every row of the {rows.source} has a missing number, which v2's JSON "
                "tensors cannot carry; use --protocol mlflow."
            )
    url = endpoint + ("/invocations" if protocol == "mlflow" else f"/v2/models/{model}/infer")
    report = TrafficReport(endpoint=endpoint, protocol=protocol, rows_left_out=left_out)
    stop = stop or threading.Event()
    latencies: list[float] = []
    n_rows = len(records)
    t0 = time.perf_counter()
    deadline = t0 + seconds if seconds is not None else math.inf
    next_at, last_progress = t0, t0
    with httpx.Client(timeout=TIMEOUT) as client:
        while True:
            now = time.perf_counter()
            if requests is not None and report.sent >= requests:
                report.stopped_by = "requests"
                break
            if now >= deadline:
                report.stopped_by = "seconds"
                break
            if stop.is_set():
                report.stopped_by = "stop"
                break
            if next_at > now:  # keep to the rate; a set stop or the deadline cuts the wait
                stop.wait(min(next_at, deadline) - now)
                continue
            # behind by more than a second (a slow answer): resume the pace, no burst
            next_at = max(next_at, time.perf_counter() - 1.0) + 1.0 / rate
            start = (report.sent * batch) % n_rows
            chunk = [records[(start + k) % n_rows] for k in range(min(batch, n_rows))]
            body = orjson.dumps(
                {"dataframe_records": chunk} if protocol == "mlflow" else _v2_body(rows, chunk)
            )
            sent_at = time.perf_counter()
            try:
                r = client.post(url, content=body, headers={"content-type": "application/json"})
            except httpx.TimeoutException:
                outcome, served = "timeout", None
            except httpx.HTTPError:
                outcome, served = "connection", None
            else:
                outcome = "ok" if r.status_code == 200 else str(r.status_code)
                served = _served_version(r, protocol) if r.status_code == 200 else None
            latencies.append((time.perf_counter() - sent_at) * 1000)
            report.sent += 1
            report.rows += len(chunk)
            if outcome == "ok":
                report.ok += 1
            else:
                report.failed[outcome] = report.failed.get(outcome, 0) + 1
            if served is not None:
                report.versions[served] = report.versions.get(served, 0) + 1
            now = time.perf_counter()
            if progress is not None and now - last_progress >= progress_every:
                last_progress = now
                _finish(report, latencies, now - t0)
                progress(report)
    _finish(report, latencies, time.perf_counter() - t0)
    if progress is not None:
        progress(report)
    return report


def _v2_sendable(rows: Rows) -> list[dict[str, Any]]:
    """The rows a v2 JSON request can carry: a numeric tensor holds no null."""
    numeric = [c for c in rows.columns if V2_DATATYPES.get(rows.types[c]) != "BYTES"]
    return [r for r in rows.records if all(r[c] is not None for c in numeric)]


def _v2_body(rows: Rows, chunk: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": c,
                "shape": [len(chunk)],
                "datatype": V2_DATATYPES.get(rows.types[c], "BYTES"),
                "data": [r[c] for r in chunk],
            }
            for c in rows.columns  # the protocol's tensors are the model's inputs only
        ]
    }


def _served_version(response, protocol: str) -> str | None:
    if protocol == "mlflow":
        return response.headers.get("x-model-version")
    try:
        version = response.json().get("model_version")
    except ValueError:
        return None
    return None if version is None else str(version)


def _finish(report: TrafficReport, latencies: list[float], elapsed: float) -> None:
    report.seconds = elapsed
    if latencies:
        ordered = sorted(latencies)
        report.latency_p50_ms = _quantile(ordered, 0.50)
        report.latency_p99_ms = _quantile(ordered, 0.99)


def _quantile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted values, interpolated between the two nearest."""
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def send_traffic(
    ws: Workspace,
    deployment: str,
    *,
    dataset: str | None = None,
    version: int | None = None,
    path: str | Path | None = None,
    requests: int | None = None,
    seconds: float | None = None,
    rate: float = 20.0,
    batch: int = 1,
    protocol: str = "mlflow",
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    allow_remote: bool = False,
) -> TrafficReport:
    """Replay rows (see `rows_for`) against a running deployment's endpoint."""
    check_bounds(requests, seconds, rate, batch)  # before reading any rows
    dep = ws.deployments.get(deployment)
    if not dep.running:
        raise MlopsError(
            f"Deployment {deployment!r} is {dep.status}, not running; deploy it again "
            f"(`mlops deploy {dep.model}@champion --name {deployment}`) and send traffic then."
        )
    rows = rows_for(ws, deployment, dataset, version, path)
    return replay(
        dep.endpoint,
        rows,
        model=dep.model,
        requests=requests,
        seconds=seconds,
        rate=rate,
        batch=batch,
        protocol=protocol,
        progress=progress,
        stop=stop,
        allow_remote=allow_remote,
    )
