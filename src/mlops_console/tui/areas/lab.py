"""The Lab area: the teaching lab running in this workspace (`mlops lab start`), its
objectives with check marks, the next hint on a key, and the scenario's event timeline as
the detail. Each reload checks the objectives against the workspace's real state, so a
student sees an objective turn green as they fix things from another shell.

Opened by `mlops lab class console --root DIR` (MlopsConsole(class_root=DIR)), it is the
trainer's view instead: one row per student with their objectives, the detail one
student's verdicts. A class's checks are re-run at most every CLASS_EVERY seconds."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from mlops_console.tui.areas.common import Action, Area, Listing, _when

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace

NONE = "none"  # the one row shown while no lab runs here
TIMELINE = 40  # the newest events the detail shows


CLASS_EVERY = 10.0
_class_cache: dict[str, tuple[float, list[Any]]] = {}
_class_lock = threading.Lock()


_class_root: list[Path] = []  # the class folder this console shows, if any


def set_class_root(root: Path | None) -> None:
    """Show the class at `root` (None: this workspace's own lab)."""
    _class_root[:] = [root] if root is not None else []


def class_root() -> Path | None:
    """The class folder the console was opened on (`mlops lab class console`), if any."""
    return _class_root[0] if _class_root else None


def _class_status(root: Path, fresh: bool = False) -> list[Any]:
    """Every student's status, re-checked at most every CLASS_EVERY seconds (a class of
    30 is 30 workspaces' checks)."""
    from mlops_console.labs import classroom

    with _class_lock:
        at, found = _class_cache.get(str(root), (0.0, []))
        if fresh or time.monotonic() - at > CLASS_EVERY:
            found = classroom.status(root)
            _class_cache[str(root)] = (time.monotonic(), found)
        return found


def _class(root: Path) -> Listing:
    rows = []
    for s in _class_status(root):
        marks = " ".join(
            f"[green]✓[/]{escape(k)}" if ok else f"[red]✗[/]{escape(k)}"
            for k, ok in s.objectives.items()
        )
        done = f"{s.done}/{s.total}" if not s.error else "[red]error[/]"
        rows.append(
            (s.student, [escape(s.student), done, marks or escape(s.error[:80]), str(s.port)])
        )
    return Listing(["student", "pass", "objectives", "port"], rows)


def _class_detail(root: Path, key: str) -> str:
    found = {s.student: s for s in _class_status(root)}
    s = found.get(key)
    if s is None:
        return f"No student {escape(key)} in the class at {escape(str(root))}."
    lines = [
        f"{escape(s.student)}: {s.done} of {s.total} objectives pass",
        f"  workspace {escape(s.root)}",
    ]
    if s.error:
        lines += ["", f"  [red]{escape(s.error)}[/]"]
    lines += [""] + [f"  {'✓' if ok else '✗'} {escape(k)}" for k, ok in s.objectives.items()]
    lines += [
        "",
        f"  mlops -w {escape(s.root)} lab status    that student's verdicts, with reasons",
        f"  mlops -w {escape(s.root)} console       that student's console",
        f"  mlops lab class reset --root {escape(str(root))}   every student back to the start",
    ]
    return "\n".join(lines)


def _lab(ws: Workspace) -> Listing:
    root = class_root()
    if root is not None:
        return _class(root)
    columns = ["", "objective", "now", "hints"]
    if ws.labs.current() is None:
        return Listing(
            columns,
            [(NONE, ["", "no lab here", "mlops lab list, then mlops lab start SCENARIO", ""])],
        )
    status = ws.labs.status()
    rows = [
        (
            o.id,
            [
                "[green]✓[/]" if o.passed else "[red]✗[/]",
                escape(o.title),
                escape(o.reason[:90]),
                f"{o.hints_shown}/{o.hints_total}",
            ],
        )
        for o in status.objectives
    ]
    return Listing(columns, rows)


def _lab_detail(ws: Workspace, key: str) -> str:
    root = class_root()
    if root is not None:
        return _class_detail(root, key)
    scenario = ws.labs.current()
    if scenario is None or key == NONE:
        return (
            "No lab runs in this workspace.\n\n"
            "  mlops lab list              the scenarios\n"
            "  mlops lab start drift DIR   a workspace with the incident under way\n"
            "  mlops -w DIR console        this console on it: objectives, hints, timeline"
        )
    status = ws.labs.status()
    passed = sum(o.passed for o in status.objectives)
    lines = [
        f"Lab {escape(status.scenario)}: {escape(status.title)}",
        f"{passed} of {len(status.objectives)} objectives pass"
        + (" - the lab is done." if status.done else ""),
        "",
        escape(status.summary.strip()),
        "",
    ]
    wanted = next((o for o in status.objectives if o.id == key), None)
    if wanted is not None:
        mark = "passes" if wanted.passed else "not yet"
        lines += [f"Objective {escape(wanted.title)}: {mark}", f"  {escape(wanted.reason)}"]
        shown = _hints_shown(ws, key, wanted.hints_shown)
        if shown:
            lines += ["", "Hints shown:"] + [f"  {i}. {escape(h)}" for i, h in shown]
        elif wanted.hints_total and not wanted.passed:
            lines.append(f"  h shows a hint ({wanted.hints_total} in all).")
        lines.append("")
    events = ws.labs.events()
    lines.append(f"Timeline ({len(events)} events, newest last):")
    if len(events) > TIMELINE:
        lines.append(f"  ({len(events) - TIMELINE} older events left out)")
    lines += [f"  {_when(e.at)}  {e.kind:7} {escape(e.text)}" for e in events[-TIMELINE:]]
    return "\n".join(lines)


def _hints_shown(ws: Workspace, objective: str, count: int) -> list[tuple[int, str]]:
    """The hints of an objective already shown (1-based number, text)."""
    scenario = ws.labs.current()
    if scenario is None or not count:
        return []
    for o in scenario.objectives:
        if o.id == objective:
            return list(enumerate(o.hints[:count], 1))
    return []


def _hint(ws: Workspace, key: str) -> str:
    hint = ws.labs.next_hint(None if key == NONE else key)
    if hint is None:
        return "No more hints for this objective." if key != NONE else "All objectives pass."
    return f"Hint {hint.number}/{hint.total} ({hint.title}): {hint.text}"


def _check(ws: Workspace, key: str) -> str:
    root = class_root()
    if root is not None:
        found = _class_status(root, fresh=True)
        finished = sum(1 for s in found if s.total and s.done == s.total)
        return f"Class checked: {finished} of {len(found)} students have every objective."
    status = ws.labs.check()
    passed = sum(o.passed for o in status.objectives)
    done = " The lab is done." if status.done else ""
    return f"{passed} of {len(status.objectives)} objectives pass ({status.seconds:.1f}s).{done}"


def _reset(ws: Workspace, key: str) -> str:
    status = ws.labs.reset()
    return f"Lab {status.scenario} is back at its start."


def _solve(ws: Workspace, key: str, progress=None) -> str:
    if progress is not None:
        progress("the reference solution runs")
    status = ws.labs.solve()
    passed = sum(o.passed for o in status.objectives)
    return f"Solved: {passed} of {len(status.objectives)} objectives pass."


def _in_lab(key: str) -> bool:
    return key != NONE and class_root() is None  # a class row is not this workspace's lab


AREA = Area(
    "lab",
    "Lab",
    "The teaching lab in this workspace: objectives checked against the real state, hints "
    "one at a time (h), a check recorded in the timeline (c); the detail is the timeline.",
    _lab,
    _lab_detail,
    [
        Action("h", "lab: hint", "Show the next hint", _hint, destructive=False, applies=_in_lab),
        Action(
            "c",
            "lab: check",
            "Check every objective now (every student's, in a class)",
            _check,
            destructive=False,
            applies=lambda key: key != NONE,
        ),
        Action(
            "R",
            "lab: reset",
            "Put the lab back at its start",
            _reset,
            applies=_in_lab,
            confirm=lambda ws, key: "Reset the lab to its start? Everything done since is lost.",
        ),
        Action(
            "S",
            "lab: solve",
            "Run the reference solution (a trainer's demo)",
            _solve,
            applies=_in_lab,
            progress=True,
            confirm=lambda ws, key: "Run the reference solution? It does the lab for you.",
        ),
    ],
    live=True,
)
