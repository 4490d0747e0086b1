"""Built-in notifiers, registered through the `mlops_notifiers` hook like any plugin's.

A notifier is `callable(event: dict) -> None` that raises on failure; the dispatcher
records the outcome (and, for alerts, retries). `event` is `Event.notice(...)` (see
mlops_console.events): what happened (`kind`: an alert's opened, resolved, acknowledged,
action, or a life-cycle kind such as quarantined, rolled_back, promoted, chain_failed), a
one-line `text`, `severity`, what it happened to (`deployment`, `pipeline`, `job`, `model`,
`version`; `alert` for alert events, else None), `at`, the notifier's `[notifiers.NAME]`
settings from mlops.toml (`settings`) and the workspace state folder (`state`).
"console" is not here: the daemon's event stream carries alert events to the console.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from mlops_console.plugins import hookimpl


def log_notifier(event: dict[str, Any]) -> None:
    settings = event.get("settings") or {}
    path = Path(settings.get("path") or Path(event["state"]) / "logs" / "alerts.log")
    path.parent.mkdir(parents=True, exist_ok=True)
    line = time.strftime("%Y-%m-%dT%H:%M:%S%z") + " " + event["text"]
    with open(path, "a") as fh:
        fh.write(line + "\n")


def webhook_notifier(event: dict[str, Any]) -> None:
    """POST the alert; Slack-compatible `{"text": ...}` by default, or the alert as JSON."""
    import httpx

    settings = event.get("settings") or {}
    url = settings.get("url")
    if settings.get("url_env"):
        url = os.environ.get(settings["url_env"]) or url
    if not url:
        raise RuntimeError(
            'no webhook URL: set [notifiers.webhook] url_env = "VARIABLE" in mlops.toml and '
            "export VARIABLE=https://..."
        )
    body = (
        {"text": event["text"]}
        if settings.get("format", "slack") == "slack"
        else {k: v for k, v in event.items() if k not in ("settings", "state")}
    )
    try:
        r = httpx.post(url, json=body, timeout=float(settings.get("timeout") or 5.0))
    except Exception as exc:  # the URL may hold a secret: never put it (or its error) in a message
        raise RuntimeError(f"webhook not reached ({type(exc).__name__})") from None
    if r.status_code >= 300:
        raise RuntimeError(f"webhook answered HTTP {r.status_code}")


def desktop_notifier(event: dict[str, Any]) -> None:
    """`notify-send` where the machine has a desktop session; otherwise says why."""
    exe = shutil.which("notify-send")
    if exe is None or not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise RuntimeError("no desktop here (notify-send and a display are needed)")
    urgency = {"critical": "critical", "warning": "normal"}.get(event.get("severity", ""), "low")
    subprocess.run([exe, "-u", urgency, "mlops-console", event["text"]], check=True, timeout=10)


@hookimpl
def mlops_notifiers() -> dict[str, Any]:
    return {"log": log_notifier, "webhook": webhook_notifier, "desktop": desktop_notifier}
