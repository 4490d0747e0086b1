"""One shape for what happens in the loop: chain, deployment and alert events.

The chain, the deployments service and the alert rules all describe what happened as an
`Event`; a notifier (built-in or a plugin's) receives `event.notice(settings, state)`, a
plain dict with the same fields plus its `[notifiers.NAME]` settings and the workspace
state folder. Life-cycle events (not alerts: those follow their rule's `notify`) go to the
notifiers `[notify]` in mlops.toml names, for the kinds it lists.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace

log = logging.getLogger("mlops_console.events")

# life-cycle kinds `[notify] events` may name
LIFECYCLE = (
    "quarantined",  # a chain stopped: its data broke the dataset's contract
    "gates_failed",  # a chain stopped: the trained version failed its gates
    "chain_failed",  # a chain ended in failure (quarantined and gates_failed ones too)
    "chain_cancelled",
    "chain_succeeded",
    "deploy_failed",  # a deploy or hot swap did not take; the previous version keeps serving
    "promoted",  # a canary became the primary version
    "rolled_back",  # a canary was dropped, or a deployment went back a version
    "deleted",  # a deployment was deleted
)
DEFAULT_EVENTS = ["quarantined", "rolled_back", "promoted", "chain_failed"]
# alert kinds (`[[alerts]] notify` routes them): opened, resolved, acknowledged, action


@dataclass(frozen=True)
class Event:
    """What happened, in one line (`text`), with what it happened to."""

    kind: str
    text: str
    severity: str = "info"  # info, warning, critical
    deployment: str | None = None
    pipeline: str | None = None
    job: int | None = None
    model: str | None = None
    version: int | None = None
    detail: str = ""
    alert: dict[str, Any] | None = None
    at: float = field(default_factory=time.time)

    def notice(self, settings: dict[str, Any] | None, state: str) -> dict[str, Any]:
        """What a notifier receives: the event's fields, its settings and the state folder."""
        return {**asdict(self), "settings": settings or {}, "state": state}


def deliver(ws: Workspace, event: Event, names: list[str]) -> dict[str, str]:
    """Hand `event` to each named notifier once; returns name -> "ok" or why it failed.
    A failure is logged with its reason and never raised: a notifier cannot fail the
    operation that had something to say."""
    from mlops_console.plugins import load_plugins

    available = load_plugins().notifiers()
    outcome: dict[str, str] = {}
    for name in names:
        if name == "console":
            continue  # the daemon's event stream carries events to the console
        fn = available.get(name)
        if fn is None:
            outcome[name] = "no such notifier (`mlops plugins list` shows them)"
        else:
            settings = ws.config.notifiers.get(name)
            try:
                fn(event.notice(settings.model_dump() if settings else {}, str(ws.state)))
                outcome[name] = "ok"
            except Exception as exc:  # reported below with its reason, never raised
                outcome[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
        if outcome[name] != "ok":
            log.warning(
                "notifier %s did not take the %s event: %s", name, event.kind, outcome[name]
            )
    return outcome


def publish(ws: Workspace, event: Event) -> dict[str, str]:
    """Send a life-cycle event to the notifiers `[notify]` names, if it lists its kind."""
    settings = ws.config.notify
    if event.kind not in settings.events:
        return {}
    return deliver(ws, event, settings.notifiers)
