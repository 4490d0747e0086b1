"""Prometheus text-format metrics, kept in plain counters (no client library needed)."""

from __future__ import annotations

import bisect
import threading

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.rows: dict[str, int] = {}
        self.latency_counts = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_n = 0
        self.batches = 0
        self.batch_rows = 0
        self.recent: list[float] = []  # latencies of the last requests, for p50/p95/p99

    def observe(
        self, route: str, status: int, seconds: float, rows: int, role: str = "primary"
    ) -> None:
        with self.lock:
            self.requests[(route, status)] = self.requests.get((route, status), 0) + 1
            if status < 400:
                self.rows[role] = self.rows.get(role, 0) + rows
            self.latency_counts[bisect.bisect_left(BUCKETS, seconds)] += 1
            self.latency_sum += seconds
            self.latency_n += 1
            self.recent.append(seconds)
            if len(self.recent) > 5000:
                del self.recent[:1000]

    def batch(self, rows: int) -> None:
        with self.lock:
            self.batches += 1
            self.batch_rows += rows

    def quantiles(self) -> dict[str, float]:
        with self.lock:
            data = sorted(self.recent[-2000:])
        if not data:
            return {}
        pick = lambda q: data[min(len(data) - 1, int(q * len(data)))]  # noqa: E731
        return {
            "p50_ms": pick(0.5) * 1000,
            "p95_ms": pick(0.95) * 1000,
            "p99_ms": pick(0.99) * 1000,
        }

    def errors(self) -> tuple[int, int]:
        with self.lock:
            total = sum(self.requests.values())
            bad = sum(n for (_, s), n in self.requests.items() if s >= 500)
        return bad, total

    def render(self, model: str, version: int, canary: str | None) -> str:
        out = [
            "# HELP mlops_requests_total Scoring requests by route and status.",
            "# TYPE mlops_requests_total counter",
        ]
        with self.lock:
            for (route, status), n in sorted(self.requests.items()):
                out.append(f'mlops_requests_total{{route="{route}",status="{status}"}} {n}')
            out += [
                "# HELP mlops_rows_total Rows predicted, by model role.",
                "# TYPE mlops_rows_total counter",
            ]
            for role, n in sorted(self.rows.items()):
                out.append(f'mlops_rows_total{{role="{role}"}} {n}')
            out += [
                "# HELP mlops_request_seconds Request latency.",
                "# TYPE mlops_request_seconds histogram",
            ]
            cum = 0
            for b, n in zip(BUCKETS, self.latency_counts, strict=False):
                cum += n
                out.append(f'mlops_request_seconds_bucket{{le="{b}"}} {cum}')
            cum += self.latency_counts[-1]
            out.append(f'mlops_request_seconds_bucket{{le="+Inf"}} {cum}')
            out.append(f"mlops_request_seconds_sum {self.latency_sum}")
            out.append(f"mlops_request_seconds_count {self.latency_n}")
            out += [
                "# TYPE mlops_batches_total counter",
                f"mlops_batches_total {self.batches}",
                "# TYPE mlops_batch_rows_total counter",
                f"mlops_batch_rows_total {self.batch_rows}",
            ]
        out += [
            "# HELP mlops_model_info The model version being served.",
            "# TYPE mlops_model_info gauge",
            f'mlops_model_info{{model="{model}",version="{version}",canary="{canary or ""}"}} 1',
        ]
        return "\n".join(out) + "\n"
