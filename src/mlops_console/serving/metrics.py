"""Prometheus text-format metrics, kept in plain counters (no client library needed).

Every answered request is counted once, by route, status and role (primary, canary,
shadow), failures included. Beside the cumulative counters each role keeps a window
(reset when a new canary is loaded) that the canary judge and the alerts read.
Probes (requests with the x-mlops-probe header: a deploy's health gate) are counted apart,
in mlops_probe_requests_total, so they never count as traffic.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ROLES = ("primary", "canary", "shadow")


class Window:
    """Counts and recent latencies of one role since it was (re)loaded."""

    def __init__(self):
        self.requests = 0
        self.server_errors = 0  # 5xx: the model or the server failed
        self.client_errors = 0  # 4xx: the request did not fit (this version's signature)
        self.recent: deque[float] = deque(maxlen=2000)

    def add(self, status: int, seconds: float) -> None:
        self.requests += 1
        if status >= 500:
            self.server_errors += 1
        elif status >= 400:
            self.client_errors += 1
        self.recent.append(seconds)

    def summary(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "requests": self.requests,
            "errors": self.server_errors,
            "client_errors": self.client_errors,
        }
        data = sorted(self.recent)
        if data:
            pick = lambda q: data[min(len(data) - 1, int(q * len(data)))]  # noqa: E731
            out.update(p50_ms=pick(0.5) * 1000, p95_ms=pick(0.95) * 1000, p99_ms=pick(0.99) * 1000)
        return out


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int, str], int] = {}
        self.probes: dict[tuple[str, int], int] = {}
        self.rows: dict[str, int] = {}
        self.latency_counts = {r: [0] * (len(BUCKETS) + 1) for r in ROLES}
        self.latency_sum = dict.fromkeys(ROLES, 0.0)
        self.latency_n = dict.fromkeys(ROLES, 0)
        self.windows = {r: Window() for r in ROLES}
        self.batches = 0
        self.batch_rows = 0
        self.batcher_restarts = 0
        self.rejected_busy = 0

    def observe(
        self,
        route: str,
        status: int,
        seconds: float,
        rows: int,
        role: str = "primary",
        probe: bool = False,
    ) -> None:
        role = role if role in ROLES else "primary"
        with self.lock:
            if probe:
                self.probes[(route, status)] = self.probes.get((route, status), 0) + 1
                return
            key = (route, status, role)
            self.requests[key] = self.requests.get(key, 0) + 1
            if status < 400:
                self.rows[role] = self.rows.get(role, 0) + rows
            self.latency_counts[role][bisect.bisect_left(BUCKETS, seconds)] += 1
            self.latency_sum[role] += seconds
            self.latency_n[role] += 1
            if route in ("invocations", "v2_infer"):
                self.windows[role].add(status, seconds)

    def batch(self, rows: int) -> None:
        with self.lock:
            self.batches += 1
            self.batch_rows += rows

    def window(self, role: str) -> dict[str, float | int]:
        with self.lock:
            return self.windows[role].summary()

    def carry_window(self, source: str, role: str) -> None:
        """`role` now serves what `source` served (a promoted canary): its window goes with
        it, and `source` starts an empty one."""
        with self.lock:
            self.windows[role], self.windows[source] = self.windows[source], Window()

    def reset_window(self, role: str) -> None:
        with self.lock:
            self.windows[role] = Window()

    def render(self, model: str, version: int, canary: str | None) -> str:
        out = [
            "# HELP mlops_requests_total Requests answered, by route, status and model role.",
            "# TYPE mlops_requests_total counter",
        ]
        with self.lock:
            for (route, status, role), n in sorted(self.requests.items()):
                out.append(
                    f'mlops_requests_total{{route="{route}",status="{status}",role="{role}"}} {n}'
                )
            out += [
                "# HELP mlops_probe_requests_total Probe requests (x-mlops-probe) answered, "
                "by route and status; not in the other metrics.",
                "# TYPE mlops_probe_requests_total counter",
            ]
            for (route, status), n in sorted(self.probes.items()):
                out.append(f'mlops_probe_requests_total{{route="{route}",status="{status}"}} {n}')
            out += [
                "# HELP mlops_rows_total Rows predicted, by model role.",
                "# TYPE mlops_rows_total counter",
            ]
            for role, n in sorted(self.rows.items()):
                out.append(f'mlops_rows_total{{role="{role}"}} {n}')
            out += [
                "# HELP mlops_request_seconds Request latency, by model role.",
                "# TYPE mlops_request_seconds histogram",
            ]
            for role in ROLES:
                if not self.latency_n[role]:
                    continue
                cum = 0
                for b, n in zip(BUCKETS, self.latency_counts[role], strict=False):
                    cum += n
                    out.append(f'mlops_request_seconds_bucket{{role="{role}",le="{b}"}} {cum}')
                cum += self.latency_counts[role][-1]
                out.append(f'mlops_request_seconds_bucket{{role="{role}",le="+Inf"}} {cum}')
                out.append(f'mlops_request_seconds_sum{{role="{role}"}} {self.latency_sum[role]}')
                out.append(f'mlops_request_seconds_count{{role="{role}"}} {self.latency_n[role]}')
            out += [
                "# TYPE mlops_batches_total counter",
                f"mlops_batches_total {self.batches}",
                "# TYPE mlops_batch_rows_total counter",
                f"mlops_batch_rows_total {self.batch_rows}",
                "# HELP mlops_batcher_restarts_total Scoring loops that died and were restarted.",
                "# TYPE mlops_batcher_restarts_total counter",
                f"mlops_batcher_restarts_total {self.batcher_restarts}",
            ]
        out += [
            "# HELP mlops_model_info The model version being served.",
            "# TYPE mlops_model_info gauge",
            f'mlops_model_info{{model="{model}",version="{version}",canary="{canary or ""}"}} 1',
        ]
        return "\n".join(out) + "\n"
