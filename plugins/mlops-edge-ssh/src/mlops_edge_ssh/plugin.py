"""The plugin's hooks: `mlops fleet`, the `fleet` deploy target, the console's Fleet area.
Nothing heavy is imported until a hook is called."""

from __future__ import annotations

from mlops_console.plugins import hookimpl


@hookimpl
def mlops_register_commands(cli) -> None:
    from mlops_edge_ssh.cli import fleet

    cli.add_command(fleet)
