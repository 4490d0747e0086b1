"""The Deployments area: what serves where, canaries, history; deploy, promote, roll back, stop."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from mlops_console.tui.areas.common import Action, Area, Listing, _when, traffic_lines

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


def _deployments(ws: Workspace) -> Listing:
    return Listing(
        ["deployment", "target", "serving", "canary", "status", "endpoint"],
        [
            (
                d.name,
                [
                    d.name,
                    d.target,
                    f"{d.model} v{d.version}",
                    f"v{d.canary_version} {d.canary_percent:.0f}%" if d.canary_version else "-",
                    d.status,
                    d.endpoint,
                ],
            )
            for d in ws.deployments.list()
        ],
    )


def _deployment_detail(ws: Workspace, key: str) -> str:
    st = ws.deployments.status(key)
    hist = ws.deployments.history(key)[-10:]
    lines = [
        json.dumps(
            {
                "name": st.name,
                "target": st.target,
                "model": st.model,
                "version": st.version,
                "canary_version": st.canary_version,
                "status": st.status,
                "endpoint": st.endpoint,
            },
            indent=2,
        ),
        "",
        "Live:",
        json.dumps(st.live, indent=2, default=str)[:1500],
        "",
        *traffic_lines(ws, key),
        "",
        "History:",
    ]
    lines += [
        f"  {_when(e.at)} {e.action} {e.from_version or '-'} -> {e.to_version or '-'} {e.detail[:60]}"
        for e in hist
    ]
    return "\n".join(lines)


def _dep_deploy(ws: Workspace, key: str, answer: str) -> str:
    """`MODEL[@alias|/version] [PERCENT]`: hot-swap, or start a canary at PERCENT."""
    parts = answer.split()
    if not parts:
        raise ValueError("type a model reference, e.g. churn@challenger 10")
    percent = float(parts[1]) if len(parts) > 1 else None
    rec = ws.deployments.deploy(
        parts[0],
        name=key,
        strategy="canary" if percent else "replace",
        canary_percent=percent or 10.0,
    )
    if rec.canary_version:
        return f"{key}: canary v{rec.canary_version} at {rec.canary_percent:.0f}%"
    return f"{key}: serving v{rec.version}"


def _dep_stop(ws: Workspace, key: str) -> str:
    ws.deployments.stop(key)
    return f"{key}: stopped"


def _dep_promote(ws: Workspace, key: str) -> str:
    return f"{key}: now serving v{ws.deployments.promote(key, 'from the console').version}"


def _dep_rollback(ws: Workspace, key: str) -> str:
    return f"{key}: serving v{ws.deployments.rollback(key, 'from the console').version}"


AREA = Area(
    "deployments",
    "Deployments",
    "What serves where; canaries; history.",
    _deployments,
    _deployment_detail,
    [
        Action("p", "deployment: promote", "Promote the canary", _dep_promote),
        Action("b", "deployment: rollback", "Drop the canary / go back", _dep_rollback),
        Action("s", "deployment: stop", "Stop the selected deployment", _dep_stop),
        Action(
            "d",
            "deployment: deploy",
            "Deploy a version here, or a canary at a percent",
            _dep_deploy,
            ask="MODEL[@alias|/version] [CANARY PERCENT], e.g. churn@challenger 10",
        ),
    ],
)
