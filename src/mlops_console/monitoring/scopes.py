"""The devices and groups of a deployment served by many devices (a fleet).

A fleet's target publishes each device's prediction-log segments as `STEM--DEVICE.jsonl`
(collect.segment_device reads the device back) and answers `DeployTarget.scopes` with each
device's groups. A scope is what monitoring and alerts measure on its own: "device D" (its
rows alone) or "group G" (the rows of its devices); None is the whole deployment.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mlops_console.errors import MlopsError, NotFound
from mlops_console.monitoring import collect as col
from mlops_console.names import is_name

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace

log = logging.getLogger(__name__)


def resolve(ws: Workspace, name: str) -> tuple[str, str | None]:
    """(deployment, device): `NAME--DEVICE` without a record of its own is a device of
    deployment NAME (recorded, or with a prediction log while NAME--DEVICE has none)."""
    base, sep, device = name.rpartition(col.DEVICE_SEP)
    if not sep or not base or not is_name("deployment", base):
        return name, None
    if ws.deployments.find(name) is not None:
        return name, None
    if ws.deployments.find(base) is not None:
        return base, device
    logs = ws.state / "logs" / "predictions"
    if not (logs / name).is_dir() and (logs / base).is_dir():
        return base, device
    return name, None


def device_groups(
    ws: Workspace, deployment: str, seen: set[str] | None = None
) -> dict[str, list[str]]:
    """Each device of a deployment with the groups it is in ({} for one server): the
    target's (`DeployTarget.scopes`) and those `seen` in its logs (default: every
    collected or open segment's)."""
    out: dict[str, list[str]] = {}
    rec = ws.deployments.find(deployment)
    if rec is not None and ws.deployments.provides(rec.target):
        try:
            target = ws.deployments.target(rec.target)
            out = {
                str(d): [str(g) for g in gs]
                for d, gs in target.scopes(rec.name, rec.config).items()
            }
        except Exception as exc:  # an unreadable inventory: the devices seen still count
            log.warning("devices of %s unknown: %s: %s", deployment, type(exc).__name__, exc)
    if seen is None:
        rows = col.monitor_dir(ws, deployment) / "rows"
        seen = {col.segment_device(p.name) for p in rows.glob("*.parquet")}
        seen |= {dev for dev, _ in col.live_segments(ws, deployment)}
    for dev in sorted(seen - {""}):
        out.setdefault(dev, [])
    return out


def scope_devices(
    known: dict[str, list[str]], deployment: str, device: str | None, group: str | None
) -> tuple[str | None, list[str] | None]:
    """The scope ("device D", "group G" or None) and the devices it measures."""
    if device is None and group is None:
        return None, None
    if device is not None and group is not None:
        raise MlopsError("Name a device or a group, not both.")
    if device is not None:
        if device not in known:
            raise NotFound(
                f"{deployment} has no device {device!r} (its devices: "
                f"{', '.join(sorted(known)) or 'none: it is not served by devices'})."
            )
        return f"device {device}", [device]
    members = sorted(d for d, gs in known.items() if group in gs)
    if not members:
        groups = sorted({g for gs in known.values() for g in gs})
        raise NotFound(
            f"{deployment} has no device in group {group!r} (its groups: "
            f"{', '.join(groups) or 'none'})."
        )
    return f"group {group}", members


def all_scopes(known: dict[str, list[str]]) -> dict[str, list[str]]:
    """Every scope worth measuring on its own: each device, and each group that is not
    the whole deployment (scope -> its devices); {} for one server."""
    out = {f"device {d}": [d] for d in sorted(known)}
    everyone = set(known)
    for g in sorted({g for gs in known.values() for g in gs}):
        members = sorted(d for d, gs in known.items() if g in gs)
        if set(members) != everyone:
            out[f"group {g}"] = members
    return out
