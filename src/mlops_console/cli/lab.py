"""mlops lab list | start | status | hint | check | solve | reset | events | stop | class."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from mlops_console.cli.output import (
    Output,
    emit_json,
    json_option,
    output_options,
    pass_workspace,
    table,
    when,
)

if TYPE_CHECKING:
    from mlops_console.labs.classroom import StudentStatus
    from mlops_console.labs.service import LabStatus
    from mlops_console.workspace import Workspace


@click.group()
def lab() -> None:
    """Teaching labs: scripted ML incidents with objectives, hints, a solution and reset."""


def _status_output(st: LabStatus) -> Output:
    def human() -> None:
        click.echo(f"{st.title} ({st.scenario})")
        for text in st.fired:
            click.echo(f"  ! {text}")
        for o in st.objectives:
            mark = "[x]" if o.passed else "[ ]"
            click.echo(f"  {mark} {o.title}")
            click.echo(f"        {o.reason}")
        passed = sum(o.passed for o in st.objectives)
        click.echo(
            f"{passed} of {len(st.objectives)} objectives pass"
            + (" - scenario complete." if st.done else "; `mlops lab hint` helps.")
        )

    return Output(st.to_dict(), human)


@lab.command("list")
@output_options
@pass_workspace
def list_scenarios(ws: Workspace) -> Output:
    """List the scenarios: shipped ones, [labs] paths and $MLOPS_LABS_PATH."""
    found = ws.labs.list()

    def human() -> None:
        table(
            ["scenario", "objectives", "title"],
            [(s.name, s.objectives or "-", s.title or f"(invalid: {s.error})") for s in found],
        )

    return Output({"scenarios": [s.to_dict() for s in found]}, human)


@lab.command("start")
@click.argument("scenario")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.pass_context
def start(ctx: click.Context, scenario: str, directory: str | None) -> None:
    """Start SCENARIO in DIRECTORY (a new workspace there) or in this workspace.

    Builds the starting state (it may train a model: seconds), keeps it for `reset` and
    fires what happens at the start."""
    from mlops_console.cli.output import open_workspace
    from mlops_console.workspace import Workspace

    ws = Workspace.init(directory) if directory else open_workspace(ctx)
    with ws:
        click.echo(f"Building the starting state of {scenario} in {ws.root} ...", err=True)
        st = ws.labs.start(scenario)
        sc = ws.labs.scenario(scenario)
        click.echo(sc.summary)
        _status_output(st).human()
        if directory:
            click.echo(f"Work in it: cd {directory}  (then `mlops lab status`, `mlops lab hint`)")


@lab.command("status")
@output_options
@pass_workspace
def status(ws: Workspace) -> Output:
    """The scenario's objectives: which pass, and why or why not."""
    return _status_output(ws.labs.status())


@lab.command("check")
@json_option
@click.pass_context
def check(ctx: click.Context, as_json: bool) -> None:
    """Check every objective now (recorded in the event timeline); exit 1 until all pass."""
    from mlops_console.cli.output import open_workspace

    with open_workspace(ctx) as ws:
        st = ws.labs.check()
    out = _status_output(st)
    if as_json:
        emit_json(out.data)
    else:
        out.human()
    if not st.done:
        ctx.exit(1)


@lab.command("hint")
@click.argument("objective", required=False)
@pass_workspace
def hint(ws: Workspace, objective: str | None) -> None:
    """The next hint for the first objective not passed (or for OBJECTIVE)."""
    h = ws.labs.next_hint(objective)
    if h is None:
        click.echo("No more hints here: every objective passes, or all its hints were shown.")
        return
    click.echo(f"{h.title} - hint {h.number} of {h.total}:")
    click.echo(f"  {h.text}")


@lab.command("solve")
@output_options
@pass_workspace
def solve(ws: Workspace) -> Output:
    """Run the scenario's reference solution (a trainer's demo), then check."""
    click.echo("Running the reference solution ...", err=True)
    return _status_output(ws.labs.solve())


@lab.command("reset")
@output_options
@pass_workspace
def reset(ws: Workspace) -> Output:
    """Back to the starting state (servers and daemon stopped first)."""
    return _status_output(ws.labs.reset())


@lab.command("stop")
@pass_workspace
def stop(ws: Workspace) -> None:
    """Stop the lab's servers, daemon and devices (`mlops lab reset` starts it again)."""
    ws.labs.stop()
    click.echo(
        "The lab's servers, daemon and lab devices (if it has any) are stopped; its files "
        "stay. `mlops lab reset` starts it again."
    )


@lab.command("events")
@output_options
@pass_workspace
def events(ws: Workspace) -> Output:
    """The lab's event timeline: start, injections, hints, checks, passes, resets."""
    found = ws.labs.events()
    return Output(
        {"events": [e.to_dict() for e in found]},
        lambda: table(["when", "kind", "what"], [(when(e.at), e.kind, e.text) for e in found]),
    )


# --- a class --------------------------------------------------------------------------


@lab.group("class")
def klass() -> None:
    """A class on one box: N student workspaces of one scenario."""


def _class_output(found: list[StudentStatus]) -> Output:
    ids = list(found[0].objectives) if found and found[0].objectives else []

    def human() -> None:
        table(
            ["student", "port", "done", *ids],
            [
                (
                    s.student,
                    s.port,
                    f"{s.done}/{s.total}" if not s.error else f"error: {s.error}",
                    *("x" if s.objectives.get(i) else "." for i in ids),
                )
                for s in found
            ],
        )

    return Output({"students": [s.to_dict() for s in found]}, human)


_ROOT = click.option(
    "--root",
    default="class",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder of the student workspaces.",
)


@klass.command("init")
@click.argument("count", type=int)
@click.option("--scenario", required=True, help="The scenario every student starts.")
@_ROOT
@click.option("--base-port", default=8200, show_default=True, help="First student's first port.")
@output_options
def class_init(count: int, scenario: str, root: str, base_port: int) -> Output:
    """Create COUNT student workspaces under --root, each running --scenario."""
    from mlops_console.labs import classroom

    found = classroom.init(
        Path(root),
        count,
        scenario,
        base_port=base_port,
        progress=lambda text: click.echo(text, err=True),
    )
    return _class_output(found)


@klass.command("status")
@_ROOT
@output_options
def class_status(root: str) -> Output:
    """Each student's objectives (x passes, . not yet)."""
    from mlops_console.labs import classroom

    return _class_output(classroom.status(Path(root)))


@klass.command("reset")
@_ROOT
@output_options
def class_reset(root: str) -> Output:
    """Reset every student's workspace to the starting state."""
    from mlops_console.labs import classroom

    return _class_output(classroom.reset(Path(root)))


@klass.command("console")
@_ROOT
@click.option("--read-only", is_flag=True, help="Disable every action that changes something.")
def class_console(root: str, read_only: bool) -> None:
    """The console on the class: one row per student with their objectives (the Lab
    area); the other areas show the first student's workspace."""
    from mlops_console.labs import classroom
    from mlops_console.workspace import Workspace

    found = classroom.status(Path(root))  # a folder with no class is one clear error
    if not found:
        raise click.ClickException(f"The class at {root} has no students.")
    from mlops_console.cli.console import open_console

    open_console(
        Workspace.open(found[0].root),
        read_only=read_only,
        start_area="lab",
        class_root=Path(root).resolve(),
    )


@klass.command("stop")
@_ROOT
def class_stop(root: str) -> None:
    """Stop every student's servers and daemon."""
    from mlops_console.labs import classroom

    click.echo(f"Stopped the servers of {classroom.stop(Path(root))} students.")


COMMANDS: list[click.Command] = [lab]
