"""The plugin's hooks: `mlops fleet`, the `fleet` deploy target, the console's Fleet area.
Nothing heavy is imported until a hook is called."""

from __future__ import annotations

from typing import Any

from mlops_console.plugins import hookimpl


@hookimpl
def mlops_register_commands(cli) -> None:
    from mlops_edge_ssh.cli import fleet

    cli.add_command(fleet)


@hookimpl
def mlops_deploy_targets() -> dict[str, Any]:
    from mlops_edge_ssh.target import FleetTarget

    return {"fleet": FleetTarget}


@hookimpl
def mlops_console_areas() -> list[Any]:
    from mlops_edge_ssh.tui import AREA

    return [AREA]
