"""The console's areas, one module each (each ends with its `AREA`), assembled here in
the order the sidebar shows them; plugins add theirs after the built-in ones."""

from __future__ import annotations

import logging

from mlops_console.tui.areas import (
    automation,
    data,
    deployments,
    lab,
    lineage,
    models,
    monitoring,
    overview,
    plugins,
    runs,
)
from mlops_console.tui.areas.automation import daemon_state
from mlops_console.tui.areas.common import (
    BARS,
    Action,
    Area,
    Chart,
    Listing,
    _num,
    _when,
    severity,
    spark,
)
from mlops_console.tui.areas.runs import compare_runs

__all__ = [
    "AREAS",
    "BARS",
    "BY_NAME",
    "Action",
    "Area",
    "Chart",
    "Listing",
    "_num",
    "_when",
    "add_plugin_areas",
    "compare_runs",
    "daemon_state",
    "severity",
    "spark",
]

AREAS: list[Area] = [
    overview.AREA,
    data.AREA,
    runs.AREA,
    models.AREA,
    deployments.AREA,
    automation.AREA,
    monitoring.AREA,
    lineage.AREA,
    lab.AREA,
    plugins.AREA,
]
BY_NAME: dict[str, Area] = {a.name: a for a in AREAS}
_plugin_areas: list[Area] = []


def add_plugin_areas() -> list[Area]:
    """Append the areas plugins offer (`mlops_console_areas`) after the built-in ones, once;
    one that is not an Area or takes a taken name is logged and left out."""
    from mlops_console.plugins import load_console_plugins

    if _plugin_areas:
        return _plugin_areas
    for area in load_console_plugins().console_areas():
        if not isinstance(area, Area) or area.name in BY_NAME:
            logging.getLogger(__name__).warning(
                "console area %r of a plugin left out: not an Area, or its name is taken",
                getattr(area, "name", area),
            )
            continue
        AREAS.append(area)
        BY_NAME[area.name] = area
        _plugin_areas.append(area)
    return _plugin_areas
