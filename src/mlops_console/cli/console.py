"""mlops console."""

from __future__ import annotations

import click

from mlops_console.cli.output import open_workspace


@click.command("console")
@click.option("--read-only", is_flag=True, help="Disable every action that changes something.")
@click.pass_context
def console(ctx: click.Context, read_only: bool) -> None:
    """Open the terminal console on the workspace."""
    from mlops_console.tui.app import MlopsConsole, run

    run(MlopsConsole(open_workspace(ctx), read_only=read_only))


COMMANDS: list[click.Command] = [console]
