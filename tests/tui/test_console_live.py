"""The console is safe to act in, live, discoverable and usable at 80 columns: the
selection follows its row, the sidebar and the screen agree, details and logs refresh,
sorting and paging keep their place, `:` takes aliases, the status bar says what is shown."""

from __future__ import annotations

import asyncio
import time

import pytest

from mlops_console.tui.app import Confirm, MlopsConsole
from tests.tui.helpers import small_workspace
from tests.tui.test_console import settle


@pytest.fixture
def cws(ws):
    return small_workspace(ws)


def keys_of(app) -> list[str]:
    return [k.value for k in app.query_one("#table").rows]


def bar(app) -> str:
    return str(app.query_one("#bar").render())


def detail(app) -> str:
    return str(app.query_one("#detail").render())


async def wait_for(pilot, condition, what: str, timeout: float = 60.0) -> None:
    """Wait on a condition (the machine may be loaded), never on a fixed time alone."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.1)


async def test_the_selection_stays_on_its_job_when_another_shell_submits_one(cws):
    app = MlopsConsole(cws, poll_seconds=3600, live=False)
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.focused is app.query_one("#table")  # focus starts on the table
        await pilot.press("colon", *"automation", "enter")
        await settle(app, pilot)
        first = cws.jobs.list()[0].id
        cws.jobs.cancel(first)  # one queued chain per pipeline: make room for more
        for _ in range(3):
            job = cws.jobs.submit("chain", "p")
            cws.jobs.cancel(job.id)
        await pilot.press("r")
        await settle(app, pilot)
        table = app.query_one("#table")
        table.move_cursor(row=keys_of(app).index(str(first)))
        await pilot.pause()
        newer = cws.jobs.submit("chain", "p")  # from another shell: a row above ours
        await pilot.press("r")
        await settle(app, pilot)
        assert str(newer.id) in keys_of(app)
        assert app.selected_key() == str(first)
        await pilot.press("n")  # run now asks about the job selected, in words
        await wait_for(pilot, lambda: isinstance(app.screen, Confirm), "the question")
        assert f"job {first}" in app.screen.question
        await pilot.press("escape")
        # a screen switch starts at the top
        await pilot.press("colon", *"models", "enter")
        await settle(app, pilot)
        await pilot.press("colon", *"automation", "enter")
        await settle(app, pilot)
        assert app.query_one("#table").cursor_row == 0


async def test_moving_in_the_sidebar_switches_the_screen(cws):
    app = MlopsConsole(cws, poll_seconds=3600, live=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(app, pilot)
        app.query_one("#areas").focus()
        await pilot.press("down")
        await settle(app, pilot)
        assert app.area.name == "data"
        await pilot.press("down")
        await settle(app, pilot)
        assert app.area.name == "runs" and app.listing is not None
        assert app.query_one("#areas").index == 2


async def test_the_detail_shown_refreshes_with_the_screen(cws):
    app = MlopsConsole(cws, poll_seconds=0.5, live=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("colon", *"models", "enter")
        await settle(app, pilot)
        app.query_one("#table").move_cursor(row=keys_of(app).index("m/2"))
        await pilot.press("enter")
        await settle(app, pilot)
        assert "@champion" not in detail(app).split("\n", 3)[2]
        cws.models.promote("m/2", reason="from another shell")
        # the next poll reloads the table and the card of the selected version with it
        await wait_for(pilot, lambda: "from another shell" in detail(app), "the card refreshed")
        assert app.selected_key() == "m/2"


async def test_sort_by_keys_numerically_kept_across_reloads(ws):
    small_workspace(ws, versions=1, job=False)
    digest = ws.artifacts.put_bytes(b"model")
    for auc in (0.85, 0.9, 0.1, 0.55):
        ws.models.register("n", artifact=digest, metrics={"holdout_roc_auc": auc})
    app = MlopsConsole(ws, poll_seconds=3600, live=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("colon", *"models", "enter")
        await settle(app, pilot)
        cols = app.listing.columns
        for _ in range(cols.index("metric") + 1):
            await pilot.press("o")
        await settle(app, pilot)
        table = app.query_one("#table")
        labels = [str(c.label) for c in table.columns.values()]
        assert "metric ▲" in labels
        metric = cols.index("metric")
        values = [table.get_row_at(i)[metric] for i in range(table.row_count)]
        numbers = [float(v) for v in values if v != "-"]
        assert numbers == sorted(numbers) and values[-1] in ("-", max(values))
        await pilot.press("O")
        await settle(app, pilot)
        values = [table.get_row_at(i)[metric] for i in range(table.row_count)]
        numbers = [float(v) for v in values if v != "-"]
        assert numbers == sorted(numbers, reverse=True) and numbers[0] == 0.9
        await pilot.press("r")  # a reload keeps the sort
        await settle(app, pilot)
        assert "metric ▼" in [str(c.label) for c in table.columns.values()]
        assert "sort metric ▼" in bar(app)


async def test_pages_of_a_long_list_with_true_totals(ws):
    small_workspace(ws, versions=1, job=False)
    digest = ws.artifacts.put_bytes(b"model")
    for _ in range(149):
        ws.models.register("many", artifact=digest, metrics={"holdout_roc_auc": 0.7})
    app = MlopsConsole(ws, poll_seconds=3600, live=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("colon", *"models", "enter")
        await settle(app, pilot)
        assert "1-100 of 150" in bar(app) and app.query_one("#table").row_count == 100
        await pilot.press("right_square_bracket")
        await settle(app, pilot)
        assert "101-150 of 150" in bar(app) and app.query_one("#table").row_count == 50
        await pilot.press("slash", *"many/149", "enter")  # a filter starts at page one
        await settle(app, pilot)
        assert "1-1 of 1" in bar(app) and "filter 'many/149'" in bar(app)
        await pilot.press("slash", *"no such thing", "enter")
        await settle(app, pilot)
        assert "no rows match 'no such thing'" in bar(app)
        await pilot.press("escape")  # esc on the table clears the filter
        await settle(app, pilot)
        assert "1-100 of 150" in bar(app) and "filter" not in bar(app)


async def test_colon_takes_aliases_and_sub_views_with_completion(cws):
    app = MlopsConsole(cws, poll_seconds=3600, live=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("colon", *"jobs", "enter")
        await settle(app, pilot)
        assert app.area.name == "automation" and app.view == "!schedule:"
        assert all(not k.startswith("schedule:") for k in keys_of(app))
        await pilot.press("colon", *"reg", "tab")  # tab completes "registry"
        assert app.query_one("#prompt").value == "registry"
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.area.name == "models"
        await pilot.press("colon", *"nowhere", "enter")
        await settle(app, pilot)
        assert app.area.name == "models"  # said so, stayed


async def test_help_shows_keys_as_the_terminal_shows_them(cws):
    app = MlopsConsole(cws, poll_seconds=3600, live=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        text = detail(app)
        assert "question_mark" not in text and "colon" not in text
        for shown in ("?", ":", "/", "space", "esc", "[", "]"):
            assert any(line.strip().startswith(shown) for line in text.splitlines()), shown
        assert "Command palette" in text and "Follow" in text


async def test_follow_a_job_log_live(cws):
    app = MlopsConsole(cws, poll_seconds=3600, live=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("colon", *"automation", "enter")
        await settle(app, pilot)
        job = cws.jobs.get(int(app.selected_key()))
        await pilot.press("f")
        await wait_for(pilot, lambda: "followed live" in detail(app), "the followed log")
        assert "following" in bar(app)
        with open(job.log_path, "a") as fh:
            fh.write("a line written while followed\n")
        await wait_for(pilot, lambda: "a line written while followed" in detail(app), "new line")
        await pilot.press("f")  # again: stops
        await pilot.pause()
        assert app.following is None and "following" not in bar(app)


async def test_at_80_columns_the_sidebar_folds_and_the_overview_figures_show(cws):
    app = MlopsConsole(cws, poll_seconds=3600, live=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert app.query_one("#areas").has_class("collapsed")
        assert app.listing.columns[:4] == ["kind", "name", "state", "req/s"]
        await pilot.press("ctrl+b")  # the sidebar comes back on demand
        await pilot.pause()
        assert not app.query_one("#areas").has_class("collapsed")
        await pilot.press("colon", *"models", "enter")
        await settle(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        await pilot.press("e")  # the full-screen detail renders the card as Markdown
        await pilot.pause()
        md = app.query_one("#detail-md")
        assert md.display and not app.query_one("#table").display
        await pilot.press("escape")
        await pilot.pause()
        assert app.query_one("#table").display


async def test_the_palette_offers_only_what_applies(cws):
    app = MlopsConsole(cws, poll_seconds=3600, live=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(app, pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "daemon: start" in titles
        app.daemon_running = True  # as the listener sets it when a daemon answers
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "daemon: start" not in titles
        await pilot.press("colon", *"data", "enter")
        await settle(app, pilot)
        (app.ws.root / "features" / "f.toml").write_text(
            'name = "f"\nentities = ["id"]\ntimestamp = "ts"\nsource = "d"\nfeatures = ["x1"]\n'
        )
        await pilot.press("r")
        await settle(app, pilot)
        app.query_one("#table").move_cursor(row=keys_of(app).index("view:f"))
        await pilot.pause()
        names = [c.title for c in app.get_system_commands(app.screen)]
        assert not any(n.startswith("data: ingest") for n in names)  # not on a feature view
        app.query_one("#table").move_cursor(row=keys_of(app).index("d/1"))
        await pilot.pause()
        names = [c.title for c in app.get_system_commands(app.screen)]
        assert any(n.startswith("data: ingest") for n in names)
        await asyncio.sleep(0)


async def test_the_full_detail_shows_the_row_the_keys_act_on(cws):
    app = MlopsConsole(cws, poll_seconds=3600, live=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("colon", *"models", "enter")
        await settle(app, pilot)
        table = app.query_one("#table")
        table.move_cursor(row=keys_of(app).index("m/1"))
        await pilot.press("enter")
        await settle(app, pilot)
        table.move_cursor(row=keys_of(app).index("m/2"))
        await pilot.pause()
        await pilot.press("e")
        await settle(app, pilot)
        assert "Model card: m version 2" in detail(app) and app.selected_key() == "m/2"


async def test_a_question_quoting_typed_markup_is_shown_as_typed(cws):
    app = MlopsConsole(cws, poll_seconds=3600, live=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        app.push_screen(Confirm("Deploy m v2 as [/x] on local?"))
        await pilot.pause()
        assert isinstance(app.screen, Confirm)
        await pilot.press("escape")


async def test_a_switch_drops_the_old_screens_rows_and_keys_at_once(cws, monkeypatch):
    import threading

    from mlops_console.tui.areas import BY_NAME

    gate = threading.Event()
    area = BY_NAME["deployments"]
    slow = area.load
    monkeypatch.setattr(area, "load", lambda ws: (gate.wait(30), slow(ws))[1])
    app = MlopsConsole(cws, poll_seconds=3600, live=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("colon", *"models", "enter")
        await settle(app, pilot)
        assert app.query_one("#table").row_count == 2
        await pilot.press("colon", *"deployments", "enter")
        await pilot.pause()
        assert app.query_one("#table").row_count == 0  # no Models row to act on here
        assert app.check_action("area_action", ("deployment-stop",)) is False
        gate.set()
        await settle(app, pilot)
        await pilot.press("colon", *"models", "enter")
        await settle(app, pilot)
        await pilot.press("slash", *"zzzz", "enter")  # nothing shown: nothing offered
        await settle(app, pilot)
        assert app.check_action("area_action", ("model-promote",)) is False


def test_cells_sort_naturally():
    from mlops_console.tui.app import _sort_rows

    rows = [(c, [c]) for c in ("churn/10", "churn/2", "churn/9", "-", "1e5a3b2c", "0a")]
    assert [k for k, _ in _sort_rows(rows, 0, False)] == [
        "0a",
        "1e5a3b2c",
        "churn/2",
        "churn/9",
        "churn/10",
        "-",
    ]
    nums = [(c, [c]) for c in ("v10", "v9", "12%", "0.85", "0.9", "[red]3[/]")]
    assert [k for k, _ in _sort_rows(nums, 0, True)] == [
        "12%",
        "v10",
        "v9",
        "[red]3[/]",
        "0.9",
        "0.85",
    ]


async def test_a_warm_up_waits_for_the_paint_and_none_runs_for_a_screen_left(cws, monkeypatch):
    """The Overview's slow work (measuring windows) starts after its table is shown; one
    queued for a screen the user has left does not run (it would slow the new screen)."""
    from mlops_console.tui import app as console
    from mlops_console.tui.areas import BY_NAME

    monkeypatch.setattr(console, "WARM_AFTER_S", 5.0)  # wide: the switch below lands inside
    calls: list[float] = []
    overview = BY_NAME["overview"]
    real = overview.warm
    monkeypatch.setattr(overview, "warm", lambda ws: (calls.append(time.monotonic()), real(ws))[1])
    app = MlopsConsole(cws, poll_seconds=3600, live=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.listing is not None, "the Overview filled")
        filled = time.monotonic()
        await wait_for(pilot, lambda: calls, "the Overview's warm-up")
        assert calls[0] - filled >= 2.5  # queued after the fill, not with it
        await wait_for(pilot, lambda: not app._warming, "the warm-up done")
        app.show_area("overview")
        await wait_for(pilot, lambda: app.listing is not None and app._warming, "a warm-up queued")
        app.show_area("runs")  # left before it is due
        await wait_for(pilot, lambda: not app._warming, "the queued warm-up dropped")
        assert len(calls) == 1 and app.area.name == "runs"
        app.show_area("overview")  # a screen that warms queues its own again
        await wait_for(pilot, lambda: len(calls) == 2, "the Overview's next warm-up")
