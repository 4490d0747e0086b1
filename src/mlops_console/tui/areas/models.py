"""The Models area: versions, aliases, gates and model cards; promote, roll back, archive."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from mlops_console.tui.areas.common import Action, Area, Listing, _num, _when

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


def _models(ws: Workspace) -> Listing:
    """Every version in two queries (the light columns only: this is the first page of a
    registry with thousands of versions)."""
    with ws.db.read() as conn:
        aliases: dict[tuple[str, int], list[str]] = {}
        for name, alias, version in conn.exec_driver_sql(
            "SELECT model_name, alias, version FROM model_alias ORDER BY alias"
        ):
            aliases.setdefault((name, version), []).append(alias)
        versions = conn.exec_driver_sql(
            "SELECT model_name, version, status, metrics, gates_passed, created_at "
            "FROM model_version ORDER BY model_name, version"
        ).fetchall()
    rows: list[tuple[str, list[str]]] = []
    for name, version, status, metrics, gates, created in versions:
        m = json.loads(metrics or "{}")
        rows.append(
            (
                f"{name}/{version}",
                [
                    f"{name}/{version}",
                    status,
                    ", ".join("@" + a for a in aliases.get((name, version), [])) or "-",
                    "pass" if gates else ("FAIL" if gates is not None and not gates else "-"),
                    _num(m.get("holdout_roc_auc", m.get("holdout_rmse"))),
                    _when(created),
                ],
            )
        )
    return Listing(["version", "status", "aliases", "gates", "metric", "registered"], rows)


def _model_detail(ws: Workspace, key: str) -> str:
    from mlops_console.registry.cards import card_markdown

    return card_markdown(ws.models.card(key))


def _promote(ws: Workspace, key: str) -> str:
    move = ws.models.promote(key, reason="from the console")
    return f"{move.model}@{move.alias}: v{move.from_version or '-'} -> v{move.to_version}"


def _rollback(ws: Workspace, key: str) -> str:
    move = ws.models.rollback(key.split("/")[0], reason="from the console")
    return f"{move.model}@{move.alias}: v{move.from_version} -> v{move.to_version}"


def _archive(ws: Workspace, key: str) -> str:
    mv = ws.models.archive(key)
    return f"{mv.ref}: {mv.status}"


AREA = Area(
    "models",
    "Models",
    "Versions, aliases, gates and model cards.",
    _models,
    _model_detail,
    [
        Action("p", "model: promote", "Make the selected version champion", _promote),
        Action("b", "model: rollback", "Move champion back to its previous version", _rollback),
        Action("x", "model: archive", "Archive the selected version", _archive),
    ],
)
