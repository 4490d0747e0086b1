"""The `mlops` command line: one noun per area, `--json` on every list and show.

Exit codes: 0 success, 1 the operation failed (the message says why), 2 wrong usage.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from mlops_console import __version__
from mlops_console.errors import MlopsError, storage_error


class MlopsGroup(click.Group):
    """Turns user errors into one plain message on stderr and exit code 1. Plugins' commands
    (the `mlops_register_commands` hook) are added only when a name is not a built-in one
    or the commands are listed, so a built-in command never imports the plugins."""

    _plugin_commands_added = False

    def _add_plugin_commands(self) -> None:
        if self._plugin_commands_added:
            return
        self._plugin_commands_added = True
        from mlops_console.plugins import add_plugin_commands

        add_plugin_commands(self)

    def get_command(self, ctx: click.Context, cmd_name: str):
        found = super().get_command(ctx, cmd_name)
        if found is None and not self._plugin_commands_added:
            self._add_plugin_commands()
            found = super().get_command(ctx, cmd_name)
        return found

    def list_commands(self, ctx: click.Context):
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MlopsError as exc:
            if (ctx.obj or {}).get("debug"):
                traceback.print_exc()
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)
        except Exception as exc:
            # a full or read-only disk can surface anywhere (an artifact, a snapshot, the
            # registry): here it becomes one sentence, whatever command hit it
            problem = storage_error(exc, _state_dir(ctx))
            if problem is None:
                raise
            if (ctx.obj or {}).get("debug"):
                traceback.print_exc()
            click.echo(f"Error: {problem}", err=True)
            ctx.exit(1)


def _state_dir(ctx: click.Context):
    """The `.mlops` folder of the workspace the command used (None if there is none)."""
    from mlops_console.workspace import STATE_DIR, find_root

    try:
        return find_root((ctx.obj or {}).get("workspace")) / STATE_DIR
    except MlopsError:
        return None


@click.group(cls=MlopsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-w",
    "--workspace",
    "workspace",
    type=click.Path(file_okay=False),
    help="Workspace folder (default: nearest one up from here).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.version_option(__version__, prog_name="mlops-console")
@click.pass_context
def cli(ctx: click.Context, workspace: str | None, debug: bool) -> None:
    """mlops-console: the whole model life cycle on one machine."""
    ctx.ensure_object(dict)
    ctx.obj["workspace"] = workspace
    ctx.obj["debug"] = debug


COMMAND_MODULES = (
    "automation",
    "console",
    "data",
    "demo",
    "deploy",
    "features",
    "lab",
    "models",
    "monitor",
    "plugins",
    "runs",
    "serve",
    "traffic",
    "workspace_cmds",
)


def _register() -> None:
    """Every command module lists its commands in COMMANDS; they are added here, one way."""
    import importlib

    for name in COMMAND_MODULES:
        for command in importlib.import_module(f"mlops_console.cli.{name}").COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    # what the CLI writes (registry, lake, models, logs, tokens) is for its user alone
    os.umask(0o077)
    try:
        cli(prog_name="mlops")
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
