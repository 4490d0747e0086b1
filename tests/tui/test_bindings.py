"""The footer shows the keys of the area on screen (remapped, disabled when read-only), and
polling is one-shot: a poll never starts while the last one still loads."""

from __future__ import annotations

import threading
import time

import pytest

from mlops_console.tui.app import Confirm, MlopsConsole
from mlops_console.tui.areas import BY_NAME, Listing
from tests.tui.helpers import small_workspace
from tests.tui.test_console import settle


@pytest.fixture
def cws(ws):
    return small_workspace(ws, versions=1)


def footer(app) -> dict[str, tuple[str, bool]]:
    """What the footer shows: key -> (description, disabled)."""
    return {k.key: (k.description, k.has_class("-disabled")) for k in app.query("Footer FooterKey")}


async def test_the_footer_shows_the_actions_of_the_area_on_screen(cws):
    app = MlopsConsole(cws, poll_seconds=3600, live=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(app, pilot)
        keys = footer(app)
        assert "q" in keys and "p" not in keys and "c" not in keys  # overview: no actions
        await pilot.press("colon", *"models", "enter")
        await settle(app, pilot)
        keys = footer(app)
        assert keys["p"] == ("promote", False) and keys["b"] == ("rollback", False)
        assert keys["x"] == ("archive", False) and "c" not in keys
        await pilot.press("colon", *"automation", "enter")
        await settle(app, pilot)
        keys = footer(app)
        assert keys["c"] == ("cancel", False) and keys["n"] == ("run now", False)
        assert "p" not in keys and "x" not in keys
        await pilot.press("c")  # the binding runs the action
        await pilot.pause()
        assert isinstance(app.screen, Confirm)
        await pilot.press("escape")


async def test_enter_on_a_fresh_confirmation_never_says_yes(cws):
    before = [(m.kind, m.to_version) for m in cws.models.history("m")]
    app = MlopsConsole(cws, poll_seconds=3600, live=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("colon", *"models", "enter")
        await settle(app, pilot)
        await pilot.press("p")
        await pilot.pause()
        assert isinstance(app.screen, Confirm)
        await pilot.press("enter")  # the focused button is No
        await pilot.pause()
        assert not isinstance(app.screen, Confirm)
    assert [(m.kind, m.to_version) for m in cws.models.history("m")] == before


async def test_the_footer_shows_remapped_keys_and_read_only_disables_them(cws):
    with open(cws.root / "mlops.toml", "a") as fh:
        fh.write('\n[console]\nkeys = { "model-promote" = "P" }\n')
    from mlops_console.workspace import Workspace

    ws = Workspace.open(cws.root)
    app = MlopsConsole(ws, read_only=True, poll_seconds=3600, live=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("colon", *"models", "enter")
        await settle(app, pilot)
        keys = footer(app)
        assert keys["P"] == ("promote", True) and "p" not in keys
        assert keys["b"] == ("rollback", True)
        await pilot.press("P")
        await pilot.pause()
        assert not isinstance(app.screen, Confirm)
    ws.close()


async def test_a_poll_never_overlaps_the_last_one(cws, monkeypatch):
    """Polls every 20 ms over a load that takes 150 ms: a poll that started on a timer
    regardless (set_interval) would run several loads at once."""
    running = 0
    most = 0
    loads = 0
    lock = threading.Lock()

    def slow(ws) -> Listing:
        nonlocal running, most, loads
        with lock:
            running += 1
            loads += 1
            most = max(most, running)
        time.sleep(0.15)
        with lock:
            running -= 1
        return Listing(["kind"], [("a", ["a"])])

    monkeypatch.setattr(BY_NAME["overview"], "load", slow)
    app = MlopsConsole(cws, poll_seconds=0.02, live=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(1.5)
    assert app.polls >= 3 and loads >= 4  # the first load, then polls one after another
    assert most == 1, f"{most} loads ran at once"


async def test_polling_goes_on_when_another_load_replaces_a_polled_one(cws, monkeypatch):
    """A key press (or an action's reload) right after a poll cancels the polled load
    before it runs (the loads are exclusive): the next poll must be armed all the same."""
    app = MlopsConsole(cws, poll_seconds=0.3, live=False)
    poll = app.poll

    def poll_then_load() -> None:
        poll()
        app.load()  # replaces the polled load before its thread starts

    monkeypatch.setattr(app, "poll", poll_then_load)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(100):  # wait on the condition, up to 10 s on a loaded machine
            await pilot.pause(0.1)
            if app.polls >= 3:
                break
    assert app.polls >= 3, f"polling stopped after {app.polls} poll(s)"


@pytest.mark.slow
async def test_U_starts_a_daemon_the_listener_then_follows(cws):
    from mlops_console.automation import lifecycle

    app = MlopsConsole(cws, poll_seconds=3600)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            assert not app.daemon_running
            await pilot.press("U")
            for _ in range(600):  # the daemon migrates and settles first: up to a minute
                await pilot.pause(0.1)
                if app.daemon_running:
                    break
            assert app.daemon_running and "daemon: live" in app.sub_title
            assert lifecycle.status(cws).running
    finally:
        lifecycle.stop(cws)
