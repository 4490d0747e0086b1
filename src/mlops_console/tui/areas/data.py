"""The Data area: dataset versions (contract reports, profiles, the diff with the version
before) and feature views."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from mlops_console.tui.areas.common import Area, Listing, _num, _when, severity, spark

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


def _data(ws: Workspace) -> Listing:
    rows: list[tuple[str, list[str]]] = []
    for d in ws.data.list():
        for v in ws.data.versions(d.name):
            rows.append(
                (
                    f"{d.name}/{v.version}",
                    [
                        d.name,
                        f"v{v.version}" + (" *" if v.version == d.current_version else ""),
                        v.status,
                        str(v.rows),
                        str(len(v.failed_rules) or "-"),
                        _when(v.created_at),
                    ],
                )
            )
    try:
        views = ws.features.views()
    except Exception:  # a broken view file is shown in its detail, never breaks the list
        views = {}
    for name, view in views.items():
        rows.append(
            (
                f"view:{name}",
                [
                    name,
                    "feature view",
                    "sql" if view.sql else (view.source or "-"),
                    str(len(view.features) or "-"),
                    "-",
                    "-",
                ],
            )
        )
    return Listing(["dataset", "version", "status", "rows", "failed rules", "ingested"], rows)


def _data_detail(ws: Workspace, key: str) -> str:
    if key.startswith("view:"):
        return json.dumps(ws.features.describe(key[5:]), indent=2, default=str)
    name, version = key.split("/")
    v = ws.data.version(name, int(version))
    lines = [
        f"{name} v{version}: {v.status}, {v.rows} rows",
        "Sources: " + ", ".join(s["path"] for s in v.sources),
        "",
    ]
    if v.failed_rules:
        lines.append("Failing contract rules:")
        lines += [f"  {r['rule']} {r['column'] or ''}: {r['detail']}" for r in v.failed_rules]
        lines.append("")
    prof = ws.data.profile(name, int(version))
    lines.append("Profile (histogram of 20 bins, min to max):")
    for col, p in prof.get("columns", {}).items():
        hist = (p.get("histogram") or {}).get("counts")
        extra = (
            f"{spark(hist) if hist else '':20} min {_num(p.get('min'))} median "
            f"{_num(p.get('quantiles', {}).get('0.5'))} max {_num(p.get('max'))}"
            if "quantiles" in p
            else ", ".join(f"{t['value']}:{t['count']}" for t in p.get("top", [])[:3])
        )
        lines.append(f"  {col[:18]:18} {p['type']:9} nulls {p['nulls']:<6} {extra}")
    if int(version) > 1:
        try:
            d = ws.data.diff(name, int(version) - 1, int(version))
        except Exception as exc:  # e.g. the earlier version was quarantined and removed
            lines += ["", f"Diff with v{int(version) - 1}: not available ({exc})"]
        else:
            lines += ["", f"Diff with v{d['from']}: rows {d['rows'][0]} -> {d['rows'][1]}"]
            sch = d["schema"]
            if sch["added"] or sch["removed"] or sch["type_changed"]:
                lines.append(
                    f"  schema: added {sch['added']}, removed {sch['removed']}, "
                    f"type changed {sch['type_changed']}"
                )
            for col, e in d["columns"].items():
                if e.get("psi") is not None:
                    c = severity(e["psi"] >= 0.2, e["psi"])
                    lines.append(f"  {col[:18]:18} [{c}]psi {_num(e['psi'])}[/]")
    return "\n".join(lines)


AREA = Area(
    "data",
    "Data",
    "Dataset versions: status, contract reports of quarantined versions, profiles with "
    "histograms, the diff with the version before; feature views.",
    _data,
    _data_detail,
)
