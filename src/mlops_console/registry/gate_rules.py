"""Which versions may take the champion and challenger aliases (the promotion rules).

Checked inside the write transaction that moves the alias, so a version cannot change
between the check and the move.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from mlops_console.errors import Conflict

if TYPE_CHECKING:
    from mlops_console.config import RegistrySection


def check_gate_rules(conn, reg: RegistrySection, name: str, alias: str, version: int) -> None:
    """Only a version that passed its gates may be challenger; only a challenger may
    become champion. Versions registered without gates (None, not by a pipeline) are
    not restricted; a pipeline's version without gate results has not passed them."""
    if alias not in (reg.champion_alias, reg.challenger_alias):
        return
    row = conn.exec_driver_sql(
        "SELECT gates_passed, gates, lineage FROM model_version "
        "WHERE model_name = ? AND version = ?",
        (name, version),
    ).first()
    if row is None:
        return
    if row[0] is None:
        if "spec" not in json.loads(row[2]):
            return
        # trained by a pipeline, so it has gates; none recorded (a crash between
        # registering and evaluating, before both were one transaction) is not a pass
        raise Conflict(
            f"v{version} has no recorded gate results (its evaluation never finished), so "
            f"it cannot be @{alias}; `mlops test {name}/{version}` evaluates it."
        )
    if not row[0]:
        failed = [g for g in json.loads(row[1]).get("results", []) if not g.get("passed")]
        why = "; ".join(f"{g['name']}: {g['detail']}" for g in failed[:3])
        raise Conflict(
            f"{name}/{version} failed its promotion gates ({why}); it cannot be "
            f"@{alias}. Train a better version or change the gates in the pipeline spec."
        )
    if alias == reg.champion_alias:
        # the current challenger, or a version that has been champion before (going back)
        eligible = conn.exec_driver_sql(
            "SELECT 1 FROM model_alias WHERE model_name = ? AND alias = ? AND version = ? "
            "UNION ALL SELECT 1 FROM alias_event WHERE model_name = ? AND alias = ? AND to_version = ? "
            "LIMIT 1",
            (name, reg.challenger_alias, version, name, reg.champion_alias, version),
        ).first()
        if not eligible:
            raise Conflict(
                f"{name}/{version} is not @{reg.challenger_alias}; only a challenger may "
                f"become @{alias}. Run `mlops models promote {name}/{version} --alias "
                f"{reg.challenger_alias}` first."
            )
