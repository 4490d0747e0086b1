"""mlops plugins list [--check]: what is installed, read without importing it."""

from __future__ import annotations

from dataclasses import asdict

import click

from mlops_console.cli.output import emit_json, table


def register(cli: click.Group) -> None:
    @cli.group()
    def plugins() -> None:
        """Plugins: what is installed, what loads, what failed and why."""

    @plugins.command("list")
    @click.option("--json", "as_json", is_flag=True)
    @click.option(
        "--check", is_flag=True, help="Import each plugin and ask its hooks; exit 1 if one fails."
    )
    @click.pass_context
    def plugins_list(ctx, as_json, check) -> None:
        """List built-in and installed plugins from their entry points (nothing is imported
        unless --check)."""
        from mlops_console.plugins import installed, load_plugins

        if check:
            # each plugin adds its commands to a copy of the command group: a plugin that
            # takes a built-in command's name is reported too
            plugins = load_plugins()
            plugins.register_commands(click.Group(commands=dict(ctx.find_root().command.commands)))
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


def _status(i) -> str:
    if i.loaded is None:
        return "not imported (--check imports)"
    if not i.loaded:
        return f"FAILED: {i.error}"
    return "ok: " + (", ".join(i.provides) or "-")
