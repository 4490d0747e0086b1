"""The plugin's hooks: `mlops fleet`, the `fleet` deploy target, the console's Fleet area,
the `fleet` teaching lab (its scenario, steps, checkers and devices).
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


@hookimpl
def mlops_lab_scenario_dirs() -> list[Any]:
    from mlops_edge_ssh.lab import SCENARIOS

    return [SCENARIOS]


@hookimpl
def mlops_lab_steps() -> dict[str, Any]:
    from mlops_edge_ssh.lab import DevicesStep, LinkStep, RolloutStep

    return {"fleet.devices": DevicesStep, "fleet.link": LinkStep, "fleet.rollout": RolloutStep}


@hookimpl
def mlops_lab_checks() -> dict[str, Any]:
    from mlops_edge_ssh.lab import ResumedCheck, ServingCheck, WavesCheck

    return {"fleet.serving": ServingCheck, "fleet.waves": WavesCheck, "fleet.resumed": ResumedCheck}


@hookimpl
def mlops_lab_stop(ws) -> None:
    """Stop the lab devices of `ws` (sshd's, flaky links, the servers on them), if any."""
    from mlops_edge_ssh.labdevices import DEVICES_FILE, LabDevices, lab_dir

    if (lab_dir(ws) / DEVICES_FILE).exists():
        LabDevices(ws).stop()
