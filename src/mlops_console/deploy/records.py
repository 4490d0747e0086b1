"""The deployments service's records: a deployment, its status, its history, a canary verdict.

Each `to_dict()` is the JSON the CLI's `--json` and the daemon's API have always given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Deployment:
    """What a deployment serves, where, and how (a row of the `deployment` table)."""

    name: str
    target: str
    model: str
    version: int
    canary_version: int | None
    canary_percent: float
    status: str
    endpoint: str
    # the target's settings (host, port, runtime, what it built from): the dict every
    # DeployTarget verb receives
    config: dict[str, Any]
    created_at: float
    updated_at: float

    @property
    def ref(self) -> str:
        """The version the primary serves, as a reference (`model/version`)."""
        return f"{self.model}/{self.version}"

    @property
    def canary_ref(self) -> str | None:
        """The canary's version as a reference, or None without a canary."""
        return None if self.canary_version is None else f"{self.model}/{self.canary_version}"

    @property
    def running(self) -> bool:
        """Recorded as running (what the target reports live is `status()`'s `live`)."""
        return self.status == "running"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            "model": self.model,
            "version": self.version,
            "canary_version": self.canary_version,
            "canary_percent": self.canary_percent,
            "status": self.status,
            "endpoint": self.endpoint,
            "config": self.config,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass
class DeploymentStatus(Deployment):
    """A deployment with what its target reports now: `live` (the target's `get`) and
    `stats` (its `status`, only while it runs; empty otherwise)."""

    live: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def live_status(self) -> str | None:
        """What the target says it is doing now ('running', 'stopped', ...)."""
        return self.live.get("status")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "live": self.live, "stats": self.stats}


@dataclass
class DeploymentEvent:
    """One change in a deployment's history (a row of `deployment_event`)."""

    at: float
    action: str
    from_version: int | None
    to_version: int | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "action": self.action,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "detail": self.detail,
        }


@dataclass
class CanaryVerdict:
    """What `judge_canary` decided ('promote', 'rollback', 'wait' or 'healthy'), on what
    figures of the canary's traffic, against which thresholds."""

    requests: int
    errors: int
    client_errors: int
    p99_ms: float | None
    max_error_rate: float
    max_p99_ms: float
    decision: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "client_errors": self.client_errors,
            "p99_ms": self.p99_ms,
            "max_error_rate": self.max_error_rate,
            "max_p99_ms": self.max_p99_ms,
            "decision": self.decision,
        }
