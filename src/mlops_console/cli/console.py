"""mlops console."""

from __future__ import annotations

import click

from mlops_console.cli.output import open_workspace


@click.command("console")
@click.option("--read-only", is_flag=True, help="Disable every action that changes something.")
@click.pass_context
def console(ctx: click.Context, read_only: bool) -> None:
    """Open the terminal console on the workspace."""
    open_console(open_workspace(ctx), read_only=read_only)


def open_console(ws, read_only: bool = False, start_area: str | None = None, class_root=None):
    """Run the console on `ws` (Textual is imported here, only when it is opened)."""
    from mlops_console.tui.app import MlopsConsole, run

    run(MlopsConsole(ws, read_only=read_only, start_area=start_area, class_root=class_root))


COMMANDS: list[click.Command] = [console]
