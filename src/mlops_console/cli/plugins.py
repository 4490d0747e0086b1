"""mlops plugins list [--check]: what is installed, read without importing it."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

import click

from mlops_console.cli.output import emit_json, json_option, table

if TYPE_CHECKING:
    from mlops_console.plugins import PluginInfo


@click.group()
def plugins() -> None:
    """Plugins: what is installed, what loads, what failed and why."""


@plugins.command("list")
@json_option
@click.option(
    "--check", is_flag=True, help="Import each plugin and ask its hooks; exit 1 if one fails."
)
@click.pass_context
def plugins_list(ctx: click.Context, as_json: bool, check: bool) -> None:
    """List built-in and installed plugins from their entry points (nothing is imported
    unless --check)."""
    from mlops_console.plugins import installed, load_plugins

    if check:
        # each plugin adds its commands to a copy of the command group: a plugin that
        # takes a built-in command's name is reported too
        root = ctx.find_root().command
        assert isinstance(root, click.Group)  # `mlops` itself
        load_plugins().register_commands(click.Group(commands=dict(root.commands)))
    info = load_plugins().info if check else installed()
    if as_json:
        emit_json({"plugins": [asdict(i) for i in info]})
    else:
        table(
            ["plugin", "distribution", "module", "hooks", "status"],
            [
                (
                    i.name,
                    f"{i.distribution} {i.version}",
                    i.module,
                    ", ".join(h.removeprefix("mlops_") for h in i.hooks) or "-",
                    _status(i),
                )
                for i in info
            ],
        )
    if check and any(i.loaded is False for i in info):
        raise click.exceptions.Exit(1)


def _status(i: PluginInfo) -> str:
    if i.loaded is None:
        return "not imported (--check imports)"
    if not i.loaded:
        return f"FAILED: {i.error}"
    return "ok: " + (", ".join(i.provides) or "-")


COMMANDS: list[click.Command] = [plugins]
