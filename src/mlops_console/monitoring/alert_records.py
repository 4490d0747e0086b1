"""The alerts' records: an alert of a rule on one deployment, and its history's events.

An alert of one device or one group of a fleet deployment has a scope ("device gw-01",
"group plant-a"), kept in the table's `scope` column ("" for the whole deployment), so
`deployment` is always the deployment's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

COLS = (
    "id, rule, deployment, scope, measure, severity, state, value, threshold, window, detail, "
    "action, action_result, opened_at, updated_at, acknowledged_at, acknowledged_by, resolved_at"
)


class AlertState(StrEnum):
    """Open until someone acknowledges it or its measure recovers; resolved is the end."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"

    @property
    def active(self) -> bool:
        return self is not AlertState.RESOLVED


@dataclass
class Alert:
    """An alert as `ws.alerts` gives it."""

    id: int
    rule: str  # the `[[alerts]]` rule's name
    deployment: str
    measure: str  # e.g. drift_share, psi:COLUMN, latency_p99_ms
    severity: str  # info, warning, critical
    state: AlertState
    value: float | None  # the last value measured
    threshold: float
    window: str  # the rule's window, e.g. 5m
    detail: str
    action: str  # none, retrain, rollback
    action_result: str  # what the action did ("" before, or without, one)
    opened_at: float
    updated_at: float
    acknowledged_at: float | None
    acknowledged_by: str
    resolved_at: float | None
    scope: str = ""  # "": the whole deployment; "device D" or "group G" of a fleet

    @property
    def subject(self) -> str:
        """What the alert is about, in words: "churn", "churn device gw-01"."""
        return f"{self.deployment} {self.scope}" if self.scope else self.deployment

    @classmethod
    def from_row(cls, row: Any) -> Alert:
        """A row of `SELECT {COLS}`, read by column name."""
        return cls(
            id=row["id"],
            rule=row["rule"],
            deployment=row["deployment"],
            scope=row["scope"],
            measure=row["measure"],
            severity=row["severity"],
            state=AlertState(row["state"]),
            value=row["value"],
            threshold=row["threshold"],
            window=row["window"],
            detail=row["detail"],
            action=row["action"],
            action_result=row["action_result"],
            opened_at=row["opened_at"],
            updated_at=row["updated_at"],
            acknowledged_at=row["acknowledged_at"],
            acknowledged_by=row["acknowledged_by"],
            resolved_at=row["resolved_at"],
        )

    def to_dict(self) -> dict[str, Any]:
        """The alert as the CLI's `--json`, the event stream and the notifiers show it; an
        alert of a device or group adds its `scope` and `subject` after `deployment`."""
        scoped = {"scope": self.scope, "subject": self.subject} if self.scope else {}
        return {
            "id": self.id,
            "rule": self.rule,
            "deployment": self.deployment,
            **scoped,
            "measure": self.measure,
            "severity": self.severity,
            "state": self.state.value,
            "value": self.value,
            "threshold": self.threshold,
            "window": self.window,
            "detail": self.detail,
            "action": self.action,
            "action_result": self.action_result,
            "opened_at": self.opened_at,
            "updated_at": self.updated_at,
            "acknowledged_at": self.acknowledged_at,
            "acknowledged_by": self.acknowledged_by,
            "resolved_at": self.resolved_at,
        }


@dataclass
class AlertEvent:
    """One line of an alert's history."""

    at: float
    kind: str  # opened, notified, notify_failed, action, acknowledged, resolved
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "kind": self.kind, "detail": self.detail}
