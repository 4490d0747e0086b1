"""The console's Lab panel on a real lab (the first-model scenario): objectives with check
marks that turn green when the workspace changes from another shell, the next hint on
`h`, the timeline as the detail, and a pointer to `mlops lab start` where no lab runs."""

from __future__ import annotations

import pytest

from mlops_console.tui.app import MlopsConsole
from mlops_console.workspace import Workspace
from tests.tui.test_console import settle
from tests.tui.test_console_live import detail, keys_of, wait_for


@pytest.fixture
def lab_ws(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    ws.labs.start("first-model")
    yield ws
    ws.labs.stop()
    ws.close()


def cells(app, key: str) -> list[str]:
    """The row's cells (none while a reload has the table empty)."""
    from textual.widgets._data_table import RowDoesNotExist

    table = app.query_one("#table")
    try:
        return [str(c) for c in table.get_row(key)]
    except RowDoesNotExist:
        return ["", "", "", ""]


async def test_the_lab_panel_checks_hints_and_shows_the_timeline(lab_ws):
    app = MlopsConsole(lab_ws, poll_seconds=3600, live=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("colon", *"lab", "enter")
        await settle(app, pilot)
        assert keys_of(app)[0] == "ingest"
        assert "✗" in cells(app, "ingest")[0]
        await pilot.press("h")  # the first hint of the objective selected
        await wait_for(
            pilot,
            lambda: lab_ws.labs._state().hints_shown.get("ingest") == 1,
            "the hint to be shown",
        )
        assert any("Hint 1/3" in n.message for n in app._notifications)
        await pilot.press("enter")  # the selected objective's detail
        await settle(app, pilot)
        await wait_for(pilot, lambda: "Hints shown:" in detail(app), "the hint in the detail")
        assert "mlops data add" in detail(app)
        assert "Timeline" in detail(app) and "start" in detail(app)
        # the student fixes it from another shell: the mark turns green on the next reload
        name = next(p.name for p in (lab_ws.root / "data").iterdir() if p.suffix == ".csv")
        lab_ws.data.add("churn", f"data/{name}", timestamp="event_time", entities=["customer_id"])
        lab_ws.data.ingest("churn")
        await pilot.press("r")
        await settle(app, pilot)
        await wait_for(pilot, lambda: "✓" in cells(app, "ingest")[0], "the objective to pass")
        assert "✗" in cells(app, "champion")[0]


async def test_no_lab_points_at_mlops_lab_start(ws):
    app = MlopsConsole(ws, poll_seconds=3600, live=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("colon", *"labs", "enter")  # an alias of the area
        await settle(app, pilot)
        assert keys_of(app) == ["none"]
        await pilot.press("enter")
        await wait_for(pilot, lambda: "mlops lab start" in detail(app), "the pointer")
        assert "hint" not in str(app.query_one("Footer").render()).lower()  # nothing to act on


async def test_the_trainers_class_view_shows_each_student_and_rechecks_on_c(tmp_path):
    """`mlops lab class console`: the Lab area lists the students of a real class (two
    first-model workspaces); a student who ingests from their own shell turns green on
    `c`; the detail is that student's verdicts; nothing of one lab is offered on a row."""
    from mlops_console.labs import classroom

    root = tmp_path / "class"
    found = classroom.init(root, 2, "first-model", base_port=free_base_port())
    try:
        ws = Workspace.open(found[0].root)
        app = MlopsConsole(
            ws, poll_seconds=3600, live=False, start_area="lab", class_root=root.resolve()
        )
        async with app.run_test(size=(140, 40)) as pilot:
            await settle(app, pilot)
            assert keys_of(app) == ["student-01", "student-02"]
            total = found[1].total
            assert cells(app, "student-02")[1] == f"0/{total}"
            assert "✗[/]ingest" in cells(app, "student-02")[2]
            with Workspace.open(found[1].root) as other:  # student 2, from another shell
                csv = next(p.name for p in (other.root / "data").iterdir() if p.suffix == ".csv")
                other.data.add(
                    "churn", f"data/{csv}", timestamp="event_time", entities=["customer_id"]
                )
                other.data.ingest("churn")
            await pilot.press("down", "c")
            await wait_for(
                pilot, lambda: "✓[/]ingest" in cells(app, "student-02")[2], "student 2 to pass"
            )
            assert cells(app, "student-02")[1] == f"1/{total}"
            assert "✗[/]ingest" in cells(app, "student-01")[2]  # the others are as they were
            await pilot.press("enter")
            await wait_for(pilot, lambda: "student-02: 1 of" in detail(app), "the detail")
            assert "lab class reset" in detail(app)
            footer = str(app.query_one("Footer").render()).lower()
            assert "hint" not in footer and "solve" not in footer
        ws.close()
    finally:
        classroom.stop(root)


def free_base_port() -> int:
    """A base port with 20 free ports above it (two students' ranges)."""
    import socket

    for base in range(18400, 19400, 20):
        try:
            for port in range(base, base + 20):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise AssertionError("no 20 free ports in 18400-19400")
