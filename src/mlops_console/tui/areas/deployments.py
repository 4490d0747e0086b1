"""The Deployments area: what serves where, canaries, history, and a loud note where a
deployment does not serve its model's champion; deploy, promote, roll back, stop."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from rich.markup import escape

from mlops_console.errors import Conflict
from mlops_console.tui.areas.common import (
    Action,
    Area,
    Listing,
    _when,
    champions,
    serving_gap,
    traffic_lines,
)

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


def _gap_cell(gap: str) -> str:
    """Red when the champion is not served; yellow when it is on its way as the canary."""
    if not gap:
        return ""
    return f"[red]{gap}[/]" if gap.startswith("NOT SERVING") else f"[yellow]{gap}[/]"


def _deployments(ws: Workspace) -> Listing:
    champ = champions(ws)
    rows = []
    for d in ws.deployments.list():
        gap = serving_gap(champ.get(d.model), d.version, d.canary_version)
        rows.append(
            (
                d.name,
                [
                    d.name,
                    d.target,
                    f"{d.model} v{d.version}",
                    f"v{d.canary_version} {d.canary_percent:.0f}%" if d.canary_version else "-",
                    d.status + (f" {_gap_cell(gap)}" if gap else ""),
                    d.endpoint,
                ],
            )
        )
    return Listing(["deployment", "target", "serving", "canary", "status", "endpoint"], rows)


def _deployment_detail(ws: Workspace, key: str) -> str:
    st = ws.deployments.status(key)
    hist = ws.deployments.history(key)[-10:]
    gap = serving_gap(champions(ws).get(st.model), st.version, st.canary_version)
    lines = []
    if gap:
        lines += [_gap_cell(gap)]
        if gap.startswith("NOT SERVING"):
            lines += [
                f"  deploy it here with d ({st.model}@champion), or move the champion back "
                "in the Models area",
            ]
        lines.append("")
    lines += [
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
        f"  {_when(e.at)} {e.action} {e.from_version or '-'} -> {e.to_version or '-'} {escape(e.detail[:60])}"
        for e in hist
    ]
    return "\n".join(lines)


def _deploy_request(ws: Workspace, answer: str) -> tuple[str, float | None]:
    """(model reference, canary percent or None) from `MODEL[@alias|/version] [PERCENT]`."""
    parts = answer.split()
    if not parts or len(parts) > 2:
        raise ValueError("type a model reference and maybe a percent, e.g. churn@challenger 10")
    try:
        percent = float(parts[1]) if len(parts) > 1 else None
    except ValueError:
        raise ValueError(
            f"{parts[1]!r} is not a canary percent; type e.g. churn@challenger 10"
        ) from None
    if percent is not None and not 0 < percent < 100:
        raise ValueError(f"a canary percent is between 0 and 100, not {parts[1]}")
    return parts[0], percent


def _dep_deploy(ws: Workspace, key: str, answer: str) -> str:
    """`MODEL[@alias|/version] [PERCENT]`: hot-swap, or start a canary at PERCENT."""
    ref, percent = _deploy_request(ws, answer)
    rec = ws.deployments.deploy(
        ref,
        name=key,
        strategy="canary" if percent else "replace",
        canary_percent=percent or 10.0,
    )
    if rec.canary_version:
        return f"{key}: canary v{rec.canary_version} at {rec.canary_percent:.0f}%"
    return f"{key}: serving v{rec.version}"


def _confirm_deploy(ws: Workspace, key: str, answer: str) -> str:
    ref, percent = _deploy_request(ws, answer)
    mv = ws.models.resolve(ref)
    rec = ws.deployments.get(key)
    if percent:
        return (
            f"Start {mv.name} v{mv.version} as a canary of deployment {key} at {percent:g}% "
            f"of its traffic (v{rec.version} keeps the rest)?"
        )
    if not rec.running:
        return f"Start deployment {key} (stopped) serving {mv.name} v{mv.version}?"
    return f"Replace {rec.model} v{rec.version} with {mv.name} v{mv.version} on deployment {key}?"


def _dep_stop(ws: Workspace, key: str) -> str:
    ws.deployments.stop(key)
    return f"{key}: stopped"


def _confirm_stop(ws: Workspace, key: str) -> str:
    rec = ws.deployments.get(key)
    canary = f" and canary v{rec.canary_version}" if rec.canary_version else ""
    return (
        f"Stop deployment {key} (serving {rec.model} v{rec.version}{canary})? "
        "It stops answering requests."
    )


def _dep_promote(ws: Workspace, key: str) -> str:
    return f"{key}: now serving v{ws.deployments.promote(key, 'from the console').version}"


def _confirm_promote(ws: Workspace, key: str) -> str:
    rec = ws.deployments.get(key)
    if rec.canary_version is None:
        raise Conflict(f"{key} has no canary to promote; deploy one with d (MODEL PERCENT).")
    return (
        f"Promote canary v{rec.canary_version} of deployment {key} to 100%? "
        f"v{rec.version} stops serving."
    )


def _dep_rollback(ws: Workspace, key: str) -> str:
    return f"{key}: serving v{ws.deployments.rollback(key, 'from the console').version}"


def _confirm_rollback(ws: Workspace, key: str) -> str:
    rec = ws.deployments.get(key)
    if rec.canary_version is not None:
        return (
            f"Drop canary v{rec.canary_version} of deployment {rec.name}? "
            f"v{rec.version} serves all its traffic again."
        )
    previous = ws.deployments.previous_version(rec)
    if previous is None:
        raise Conflict(f"{rec.name} has no canary and no earlier version to roll back to.")
    return f"Roll deployment {rec.name} back from {rec.model} v{rec.version} to v{previous}?"


AREA = Area(
    "deployments",
    "Deployments",
    "What serves where; canaries; history. A deployment that does not serve its model's "
    "champion says so in red.",
    _deployments,
    _deployment_detail,
    [
        Action(
            "p",
            "deployment: promote",
            "Promote the canary",
            _dep_promote,
            confirm=_confirm_promote,
        ),
        Action(
            "b",
            "deployment: rollback",
            "Drop the canary / go back",
            _dep_rollback,
            confirm=_confirm_rollback,
        ),
        Action(
            "s",
            "deployment: stop",
            "Stop the selected deployment",
            _dep_stop,
            confirm=_confirm_stop,
        ),
        Action(
            "d",
            "deployment: deploy",
            "Deploy a version here, or a canary at a percent",
            _dep_deploy,
            ask="MODEL[@alias|/version] [CANARY PERCENT], e.g. churn@challenger 10",
            confirm=_confirm_deploy,
        ),
    ],
)
