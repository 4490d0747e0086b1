"""The Plugins area: what is loaded, what failed and why."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlops_console.tui.areas.common import Area, Listing

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


def _plugins(ws: Workspace) -> Listing:
    from mlops_console.plugins import load_plugins

    return Listing(
        ["plugin", "source", "loaded", "provides / error"],
        [
            (
                i.name,
                [
                    i.name,
                    i.source,
                    "yes" if i.loaded else "FAILED",
                    ", ".join(i.provides) if i.loaded else i.error,
                ],
            )
            for i in load_plugins().info
        ],
    )


def _plugin_detail(ws: Workspace, key: str) -> str:
    return key


AREA = Area("plugins", "Plugins", "What is loaded, what failed and why.", _plugins, _plugin_detail)
