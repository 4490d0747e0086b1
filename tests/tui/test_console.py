"""The console with Pilot: every screen loads, filters, shows details; actions change the
registry after confirmation; read-only refuses them; a failing action is a notification."""

import pytest
from textual.worker import WorkerCancelled, WorkerFailed

from mlops_console.tui.app import Confirm, MlopsConsole
from mlops_console.tui.areas import AREAS
from tests.tui.helpers import small_workspace
from tests.unit.test_pipeline import make_data


@pytest.fixture
def cws(ws):
    return small_workspace(ws)


async def settle(app, pilot):
    """Wait for loading and actions (the event-stream listener runs for the app's life);
    a worker that failed, now or before, fails the test (see conftest.worker_errors)."""
    await pilot.pause()
    # an action's result (a Message) starts a reload: wait for that one too
    while busy := [w for w in app.workers if w.group != "events" and not w.is_finished]:
        for worker in busy:
            try:
                await worker.wait()
            except WorkerCancelled:  # a load replaced by a newer one
                pass
            except WorkerFailed as exc:
                raise AssertionError(f"console worker {worker.name} failed: {exc.error!r}") from exc
        await pilot.pause()
    assert not app.worker_errors, f"console workers failed: {app.worker_errors}"


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_every_screen_loads_and_shows_details(cws, size):
    app = MlopsConsole(cws, poll_seconds=3600)
    async with app.run_test(size=size) as pilot:
        for area in AREAS:
            await pilot.press("colon", *area.name, "enter")
            await settle(app, pilot)
            assert app.area.name == area.name
            table = app.query_one("#table")
            assert table.row_count == len(app.listing.rows)
            if table.row_count and area.name != "plugins":
                await pilot.press("enter")
                await settle(app, pilot)
                assert str(app.query_one("#detail").render()).strip()


async def test_filter_narrows_the_table(cws):
    app = MlopsConsole(cws, poll_seconds=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("colon", *"models", "enter")
        await settle(app, pilot)
        assert app.query_one("#table").row_count == 2
        await pilot.press("slash", *"m/2", "enter")
        await settle(app, pilot)
        assert app.query_one("#table").row_count == 1
        await pilot.press("slash", "escape")
        await settle(app, pilot)
        assert app.query_one("#table").row_count == 2


async def test_promote_asks_then_changes_the_registry(cws):
    app = MlopsConsole(cws, poll_seconds=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("colon", *"models", "enter")
        await settle(app, pilot)
        table = app.query_one("#table")
        row = [k.value for k in table.rows].index("m/1")
        table.move_cursor(row=row)
        await pilot.press("p")
        await pilot.pause()
        assert isinstance(app.screen, Confirm)
        await pilot.press("escape")  # no: nothing changes
        await settle(app, pilot)
        from mlops_console.errors import NotFound

        with pytest.raises(NotFound):
            cws.models.resolve("m@champion")
        await pilot.press("p")
        await pilot.pause()
        await pilot.press("y")
        await settle(app, pilot)
        # m/1 is not the challenger any more (m/2 is): the registry refuses, the console says why
        assert "failed" in app.last_message and "challenger" in app.last_message
        table.move_cursor(row=[k.value for k in table.rows].index("m/2"))
        await pilot.press("p")
        await pilot.pause()
        await pilot.press("y")
        await settle(app, pilot)
        assert cws.models.resolve("m@champion").version == 2


async def test_read_only_refuses_actions(cws):
    app = MlopsConsole(cws, read_only=True, poll_seconds=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("colon", *"automation", "enter")
        await settle(app, pilot)
        await pilot.press("c")
        await pilot.pause()
        assert not isinstance(app.screen, Confirm)
        assert cws.jobs.list()[0].status == "queued"


async def test_cancel_a_job_and_help(cws):
    app = MlopsConsole(cws, poll_seconds=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("colon", *"automation", "enter")
        await settle(app, pilot)
        await pilot.press("c")
        await pilot.pause()
        await pilot.press("y")
        await settle(app, pilot)
        assert cws.jobs.list()[0].status == "cancelled"
        await pilot.press("question_mark")
        await pilot.pause()
        assert "job: cancel" in str(app.query_one("#detail").render())


async def test_compare_marked_runs_and_sort_by_a_column(cws):
    app = MlopsConsole(cws, poll_seconds=3600)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("colon", *"runs", "enter")
        await settle(app, pilot)
        table = app.query_one("#table")
        assert table.row_count == 2
        table.move_cursor(row=0)
        await pilot.press("space")
        table.move_cursor(row=1)
        await pilot.press("space", "v")
        await settle(app, pilot)
        text = str(app.query_one("#detail").render())
        assert "Comparing 2 runs" in text and "model.C" in text and "holdout_roc_auc" in text
        before = [table.get_row_at(i)[0] for i in range(2)]
        await pilot.click("#table", offset=(3, 0))  # the header of the first column
        await pilot.pause()
        await pilot.click("#table", offset=(3, 0))  # again: the other way round
        await pilot.pause()
        after = [table.get_row_at(i)[0] for i in range(2)]
        assert sorted(before) == sorted(after) and app._sorted[1] is True


async def test_data_screen_shows_histograms_and_feature_views(cws):
    (cws.root / "features" / "f.toml").write_text(
        'name = "f"\nentities = ["id"]\ntimestamp = "ts"\nsource = "d"\nfeatures = ["x1"]\n'
    )
    make_data(900, seed=3).to_parquet(cws.root / "data" / "d.parquet")
    cws.data.ingest("d")
    app = MlopsConsole(cws, poll_seconds=3600)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("colon", *"data", "enter")
        await settle(app, pilot)
        keys = [k.value for k in app.query_one("#table").rows]
        assert "view:f" in keys and "d/2" in keys
        app.query_one("#table").move_cursor(row=keys.index("d/2"))
        await pilot.press("enter")
        await settle(app, pilot)
        text = str(app.query_one("#detail").render())
        assert "Diff with v1" in text and any(b in text for b in "▁▂▃▄▅▆▇█")


async def test_archive_a_version_and_run_a_pipeline_now(cws):
    app = MlopsConsole(cws, poll_seconds=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("colon", *"models", "enter")
        await settle(app, pilot)
        table = app.query_one("#table")
        table.move_cursor(row=[k.value for k in table.rows].index("m/1"))
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await settle(app, pilot)
        assert cws.models.get_version("m", 1).status == "archived"
        await pilot.press("colon", *"automation", "enter")
        await settle(app, pilot)
        await pilot.press("n")
        await pilot.pause()
        await pilot.press("y")
        await settle(app, pilot)
        assert "queued already" in app.last_message  # one queued chain per pipeline
        cws.jobs.cancel(cws.jobs.list()[0].id)
        await pilot.press("n")
        await pilot.pause()
        await pilot.press("y")
        await settle(app, pilot)
        assert "queued chain" in app.last_message
        assert any(j.trigger == "console" for j in cws.jobs.list())


async def test_a_run_with_stepped_metrics_gets_a_chart(cws):
    with cws.runs.start(experiment="curves") as run:
        for step in range(20):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
    app = MlopsConsole(cws, poll_seconds=3600)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("colon", *"runs", "enter")
        await settle(app, pilot)
        table = app.query_one("#table")
        table.move_cursor(row=[k.value for k in table.rows].index(run.id))
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.chart_shown and list(app.chart_shown["series"]) == ["loss"]
        assert app.query_one("#chart").has_class("visible")
        assert "20 steps" in str(app.query_one("#detail").render())
        await pilot.press("colon", *"models", "enter")
        await settle(app, pilot)
        assert not app.query_one("#chart").has_class("visible")


@pytest.mark.slow
async def test_schedules_and_watchers_of_a_running_daemon(cws):
    from tests.integration.test_daemon import DaemonProc

    spec = (cws.root / "pipelines" / "p.toml").read_text()
    (cws.root / "pipelines" / "q.toml").write_text(
        spec.replace('name = "p"', 'name = "q"')
        + '\n[schedule]\ninterval = "1h"\non_data_change = true\n'
    )
    d = DaemonProc(cws)
    try:
        app = MlopsConsole(cws, poll_seconds=3600)
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("colon", *"automation", "enter")
            await settle(app, pilot)
            rows = dict(app.listing.rows)
            schedule = next(k for k in rows if k.startswith("schedule:") and "watch" not in k)
            assert rows[schedule][1] == "q" and rows[schedule][2] == "active"
            assert rows["schedule:watch-q"][0] == "watcher"
            table = app.query_one("#table")
            table.move_cursor(row=[k.value for k in table.rows].index(schedule))
            await pilot.press("z")
            await pilot.pause()
            await pilot.press("y")
            await settle(app, pilot)
            paused = {s["id"]: s["paused"] for s in d.client.call("GET", "/schedules")["schedules"]}
            assert paused[schedule.split(":", 1)[1]] is True, app.last_message
            await pilot.press("u")  # resuming is not destructive: no confirmation
            await settle(app, pilot)
            paused = {s["id"]: s["paused"] for s in d.client.call("GET", "/schedules")["schedules"]}
            assert paused[schedule.split(":", 1)[1]] is False, app.last_message
    finally:
        d.stop()


async def test_roll_the_champion_back(cws):
    cws.models.set_alias("m", "challenger", 1)
    cws.models.promote("m/1")
    cws.models.set_alias("m", "challenger", 2)
    cws.models.promote("m/2")
    app = MlopsConsole(cws, poll_seconds=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("colon", *"models", "enter")
        await settle(app, pilot)
        await pilot.press("b")
        await pilot.pause()
        await pilot.press("y")
        await settle(app, pilot)
        assert cws.models.resolve("m@champion").version == 1, app.last_message
        assert "v2 -> v1" in app.last_message
