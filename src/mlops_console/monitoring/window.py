"""The monitoring service's record: the report of one window of a deployment.

`to_dict()` is the JSON `mlops monitor show --json` has always given: a measure that was
not taken (no model, no reference, no rows) is absent, not null. A window of one device or
one group of a fleet deployment adds `scope` ("device gw-01", "group plant-a") and the
`devices` measured, right after `deployment`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

LATENCY = ("error_rate", "rps", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms")
STABILITY = ("nan_output_rate", "out_of_range_rate", "saturated_rate")


@dataclass
class WindowReport:
    """Every measure of one window of a deployment (`ws.monitor.measure`).

    The measures are documents with detail per column (see measures.py); each is None
    when the window could not take it, and `note` says why."""

    deployment: str
    window: str | float  # as asked: "1h", or seconds
    start: float
    end: float
    model: str | None  # None: no deployment record (only a prediction log)
    # rows served in the window per version and role ({"version", "role", "rows"}),
    # shadows left out
    versions: list[dict[str, Any]]
    version: int | None  # the version measured
    performance: dict[str, Any]  # requests, rps, latency percentiles, errors, memory
    rows: int  # rows of `version` in the window
    staleness: dict[str, Any] | None = None  # model and training data age
    enough_rows: bool | None = None  # [monitoring] min_rows reached: verdicts count
    drift: dict[str, Any] | None = None
    stability: dict[str, Any] | None = None
    decay: dict[str, Any] | None = None
    note: str | None = None  # why a measure is missing or carries no verdict
    scope: str | None = None  # None: the whole deployment; "device D" or "group G" of a fleet
    devices: list[str] | None = None  # with a scope: the devices whose rows were measured

    @property
    def subject(self) -> str:
        """What was measured, in words: "churn", "churn device gw-01"."""
        return f"{self.deployment} {self.scope}" if self.scope else self.deployment

    def value(self, measure: str) -> float | None:
        """The value of a named measure (an alert rule's `measure`); None: not measured."""
        perf = self.performance or {}
        drift = self.drift or {}
        stab = self.stability or {}
        decay = self.decay or {}
        stale = self.staleness or {}
        if measure in LATENCY:
            v = perf.get(measure)
        elif measure == "drift_share":
            v = drift.get("drift_share") if self.enough_rows else None
        elif measure == "prediction_psi":
            v = (drift.get("prediction") or {}).get("psi") if self.enough_rows else None
        elif measure.startswith("psi:"):
            found = [f for f in drift.get("features", []) if f["column"] == measure[4:]]
            v = found[0].get("psi") if found and self.enough_rows else None
        elif measure in STABILITY:
            v = stab.get(measure)
        elif measure == "collapsed":
            v = None if "collapsed" not in stab else float(stab["collapsed"])
        elif measure.startswith("decay:"):
            v = (decay.get("drop") or {}).get(measure[6:])
        elif measure.startswith("metric:"):
            v = (decay.get("metrics") or {}).get(measure[7:])
        else:
            v = stale.get(measure)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        return float(v)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"deployment": self.deployment}
        if self.scope:
            out.update(scope=self.scope, devices=self.devices or [])
        out.update(
            {
                "window": self.window,
                "start": self.start,
                "end": self.end,
                "model": self.model,
                "versions": self.versions,
                "version": self.version,
                "performance": self.performance,
                "rows": self.rows,
            }
        )
        # measure() stops at the first thing missing, so the note always comes last
        for key, value in (
            ("staleness", self.staleness),
            ("enough_rows", self.enough_rows),
            ("drift", self.drift),
            ("stability", self.stability),
            ("decay", self.decay),
            ("note", self.note),
        ):
            if value is not None:
                out[key] = value
        return out
