"""The console's Fleet area on a real workspace: devices of a fleet.toml (fake hosts on
127.0.0.1, nothing listens: the listing never contacts them) and a rollout in progress
written through FleetStore, as a controller writes it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from textual.worker import WorkerCancelled

from mlops_console.errors import MlopsError
from mlops_console.tui.app import MlopsConsole
from mlops_console.tui.areas import BY_NAME
from mlops_console.workspace import Workspace
from mlops_edge_ssh import tui
from mlops_edge_ssh.store import FleetStore

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake"
FLEET_TOML = f"""
[defaults]
known_host = "{KEY}"

[[device]]
name = "gw-01"
host = "127.0.0.1"
port = 1
groups = ["plant-a"]

[[device]]
name = "gw-02"
host = "127.0.0.1"
port = 2
groups = ["plant-a"]

[[device]]
name = "gw-03"
host = "127.0.0.1"
port = 3
pin = "churn/2"
hold = true
"""
RESPONSE = '{"detail": "[boom] model input has 3 columns, 4 expected"}'


@pytest.fixture
def ws(tmp_path: Path):
    w = Workspace.init(tmp_path / "ws")
    yield w
    w.close()


@pytest.fixture
def fleet_ws(ws):
    (Path(ws.root) / "fleet.toml").write_text(FLEET_TOML)
    return ws


@pytest.fixture
def store(fleet_ws):
    s = FleetStore(Path(fleet_ws.state))
    yield s
    s.close()


def start_rollout(store: FleetStore) -> str:
    """churn/3 to gw-01 (wave 1, failed its gate) and gw-02 (wave 2, sending); gw-03 held."""
    rid = store.create_rollout(
        {
            "model": "churn",
            "version": 3,
            "digest": "d" * 64,
            "ref": "churn@champion",
            "waves": [["gw-01"], ["gw-02"]],
            "soak": 60.0,
            "max_failed": 0.5,
            "max_unreachable": 0.3,
            "auto_rollback": True,
            "gate": {},
            "golden": {},
        },
        [("gw-01", 0, "pending"), ("gw-02", 1, "pending"), ("gw-03", -1, "skipped")],
    )
    store.set_device(rid, "gw-03", detail={"reason": "held"})
    gate = {
        "passed": False,
        "step": "golden",
        "reason": "the golden request answered 500",
        "status": 500,
        "response": RESPONSE,
    }
    store.set_device(
        rid,
        "gw-01",
        state="failed",
        previous="churn-2-aaaaaaaaaaaa",
        detail={
            "step": "gate",
            "gate": gate,
            "reason": gate["reason"],
            "rolled_back_to": "churn-2-aaaaaaaaaaaa",
        },
    )
    store.event("failed", "the golden request answered 500; back on churn-2", rid, "gw-01")
    store.set_rollout(rid, wave=1)
    store.set_device(rid, "gw-02", state="sending", progress=0.5)
    store.observe(
        "gw-01",
        True,
        serving="churn-2-aaaaaaaaaaaa",
        model="churn",
        version=2,
        health="ok",
        telemetry={
            "rss": 150 * 2**20,
            "requests": 42,
            "errors": 1,
            "p99_ms": 12.5,
            "clock_skew_s": 0.4,
        },
    )
    store.observe("gw-02", False, error="connection refused", health="unknown")
    return rid


def cells(listing, key):
    return dict(listing.rows)[key]


def test_without_fleet_toml_one_row_says_how_to_start(ws):
    listing = tui.AREA.load(ws)
    assert listing.rows == [(tui.FLEET_KEY, [tui.NO_FLEET])]
    assert "mlops fleet add NAME --host HOST" in tui.AREA.detail(ws, tui.FLEET_KEY)
    assert tui.AREA.overview is not None and tui.AREA.overview(ws) == []
    assert not (Path(ws.state) / "fleet.db").exists()  # a workspace without a fleet: no db


def test_listing_shows_recorded_states_and_a_progress_bar(fleet_ws, store):
    # nothing recorded yet: every device, never seen, no rollout
    listing = tui.AREA.load(fleet_ws)
    assert listing.columns == tui.COLUMNS
    assert [k for k, _ in listing.rows] == ["gw-01", "gw-02", "gw-03"]
    assert cells(listing, "gw-01")[2] == "?" and cells(listing, "gw-01")[7] == "never"
    assert cells(listing, "gw-01")[1] == "-"  # in no rollout
    assert cells(listing, "gw-03")[6] == "churn/2 held"

    rid = start_rollout(store)
    listing = tui.AREA.load(fleet_ws)
    assert listing.rows[0][0] == f"rollout:{rid}"
    head = listing.rows[0][1]
    assert head[0] == "rollout" and head[1] == "[cyan]running[/] wave 2/2" and head[3] == "churn/3"
    gw1, gw2, gw3 = (cells(listing, n) for n in ("gw-01", "gw-02", "gw-03"))
    assert gw1[1] == "w1 [red]failed[/]"
    assert gw1[2] == "yes" and gw1[3] == "churn/2" and gw1[5] == "[green]ok[/]"
    assert gw1[7] != "never"
    assert gw2[1] == "w2 [cyan]sending[/] ████░░░░ 50%"
    assert gw2[2] == "[red]NO[/]" and "unknown" in gw2[5]
    assert gw3[1] == "[dim]skipped[/]"
    assert tui.bar(0.5) == "████░░░░ 50%" and tui.bar(None) == "░░░░░░░░ 0%"


def test_detail_of_a_failed_device_keeps_the_gate_and_its_answer(fleet_ws, store):
    rid = start_rollout(store)
    text = tui.AREA.detail(fleet_ws, "gw-01")
    assert "127.0.0.1:1" in text and "plant-a" in text
    assert "rss 150 MiB" in text and "requests 42" in text and "p99 12.5 ms" in text
    assert "clock skew +0.4s" in text
    assert f"In rollout {rid}" in text and "wave 1: [red]failed[/] (attempt 0" in text
    assert "reason: the golden request answered 500 (step gate)" in text
    assert "failed at golden" in text
    assert "(status 500)" in text and "model input has 3 columns, 4 expected" in text
    assert "\\[boom]" in text  # the device's words are text, not markup
    assert "rolled back to churn-2-aaaaaaaaaaaa" in text
    assert "back on churn-2" in text  # its last events
    from rich.text import Text

    assert "[boom]" in Text.from_markup(text).plain  # and the pane renders it

    roll = tui.AREA.detail(fleet_ws, f"rollout:{rid}")
    assert "wave 1: 1 [red]failed[/]" in roll
    assert "wave 2 (current): 1 [cyan]sending[/]" in roll
    assert "skipped: gw-03 (held)" in roll
    Text.from_markup(roll)


def test_pause_asks_the_running_rollout_to_pause(fleet_ws, store):
    rid = start_rollout(store)
    pause = next(a for a in tui.AREA.actions if a.name == "fleet: pause")
    assert not pause.destructive
    assert pause.run(fleet_ws, "gw-01") == (
        f"Rollout {rid}: pause asked; it stops after the steps in flight."
    )
    assert store.rollout(rid).state == "pausing"
    assert "pausing" in cells(tui.AREA.load(fleet_ws), f"rollout:{rid}")[1]


def test_refresh_reaches_the_devices_and_records_who_did_not_answer(fleet_ws):
    refresh = next(a for a in tui.AREA.actions if a.name == "fleet: refresh")
    assert not refresh.destructive
    assert refresh.run(fleet_ws, "gw-01") == "0 of 3 device(s) reached now."  # nothing listens
    gw1 = cells(tui.AREA.load(fleet_ws), "gw-01")
    assert gw1[2] == "[red]NO[/]" and gw1[5] == "[dim]unknown[/]"
    assert "cannot be reached" in tui.AREA.detail(fleet_ws, "gw-01")


def test_device_actions_need_a_device_row(fleet_ws, store):
    rid = start_rollout(store)
    by_name = {a.name: a for a in tui.AREA.actions}
    with pytest.raises(MlopsError, match="select a device row"):
        by_name["device: rollback"].run(fleet_ws, f"rollout:{rid}")
    with pytest.raises(MlopsError, match="select a device row"):
        by_name["device: pin"].run(fleet_ws, tui.FLEET_KEY, "churn/2")
    with pytest.raises(MlopsError, match="not an option"):
        tui._parse_rollout("churn@champion speed=fast")
    assert tui._parse_rollout("churn@champion waves=1,100% soak=2m") == (
        "churn@champion",
        {"waves": "1,100%", "soak": 120.0},
    )
    assert {a.key for a in tui.AREA.actions}.isdisjoint(set("q:/rl? vU"))  # console keys


def test_overview_shows_fleet_rows(fleet_ws, store):
    rid = start_rollout(store)
    from mlops_console.tui.areas.overview import AREA as OVERVIEW

    MlopsConsole(fleet_ws, poll_seconds=3600, live=False)  # adds the plugins' areas
    assert BY_NAME.get("fleet") is tui.AREA
    listing = OVERVIEW.load(fleet_ws)
    rows = dict(listing.rows)
    fleet = rows["area:fleet:fleet:"]
    # the Overview's columns: kind, name, state, four figures, then what
    assert fleet[:2] == ["fleet", "3 device(s)"] and "churn/2 on 1" in fleet[-1]
    assert fleet[2] == "1/3 reachable | [red]1 unreachable[/] | 1 never seen"
    rollout = rows[f"area:fleet:rollout:{rid}"]
    assert rollout[:2] == ["rollout", rid] and rollout[-1] == "churn/3"
    assert rows["area:fleet:gw-02"][:2] == ["device", "gw-02"]
    assert "gw-02" in OVERVIEW.detail(fleet_ws, "area:fleet:gw-02")
    assert "Waves:" in OVERVIEW.detail(fleet_ws, f"area:fleet:rollout:{rid}")


async def settle(app, pilot):
    await pilot.pause()
    while busy := [w for w in app.workers if w.group != "events" and not w.is_finished]:
        for worker in busy:
            try:
                await worker.wait()
            except WorkerCancelled:
                pass
        await pilot.pause()


async def test_console_shows_the_fleet_and_its_polls_follow_the_rollout(fleet_ws, store):
    rid = start_rollout(store)
    app = MlopsConsole(fleet_ws, poll_seconds=0.2, live=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("colon", *"fleet", "enter")
        await settle(app, pilot)
        assert app.area is tui.AREA
        table = app.query_one("#table")
        assert table.row_count == 4  # the rollout and three devices
        assert "50%" in str(table.get_row("gw-02")[1])
        await pilot.press("down", "enter")  # gw-01
        await settle(app, pilot)
        assert "the golden request answered 500" in str(app.query_one("#detail").render())

        # a controller elsewhere (the daemon's, say) moves gw-02 on and rolls gw-01 back:
        # the console's polls show both, the shown detail too, though a daemon runs (its
        # events say nothing of a rollout's progress)
        app.daemon_running = True
        moved = threading.Event()

        def controller() -> None:
            other = FleetStore(Path(fleet_ws.state))
            other.set_device(rid, "gw-02", progress=0.75)
            other.set_device(rid, "gw-01", state="rolled_back")
            other.close()
            moved.set()

        threading.Thread(target=controller).start()
        detail = app.query_one("#detail")
        for _ in range(100):
            await pilot.pause(0.1)
            if (
                moved.is_set()
                and "75%" in str(table.get_row("gw-02")[1])
                and "rolled_back" in str(detail.render())
            ):
                break
        assert "██████░░ 75%" in str(table.get_row("gw-02")[1])
        assert "rolled_back" in str(detail.render())
        app.daemon_running = False

        await pilot.press("z")  # pause: no confirmation needed
        await settle(app, pilot)
        assert app.last_message.endswith("pause asked; it stops after the steps in flight.")
        assert store.rollout(rid).state == "pausing"
