"""Snapshot tests (pytest-textual-snapshot): every screen at 80x24 and 160x48.

What varies between runs is frozen: run ids (uuid4) come from a counter while the
workspace is built, times are shown as one fixed time, the workspace lives at a fixed
path, and the console does not follow a daemon. Update after a deliberate change of the
screens with `pytest tests/tui/test_snapshots.py --snapshot-update` and look at the SVGs.
"""

from __future__ import annotations

import importlib
import itertools
import pkgutil
import shutil
import tempfile
import uuid
from pathlib import Path
from unittest import mock

import pytest

from mlops_console.tui import areas
from mlops_console.tui.app import MlopsConsole
from mlops_console.workspace import Workspace
from tests.tui.helpers import small_workspace

ROOT = Path(tempfile.gettempdir()) / "mlops-console-snapshots" / "ws"


@pytest.fixture(scope="module")
def sws():
    shutil.rmtree(ROOT.parent, ignore_errors=True)
    counter = itertools.count(1)
    with mock.patch("uuid.uuid4", lambda: uuid.UUID(int=next(counter))):
        ws = small_workspace(Workspace.init(ROOT), auto=True)
    yield ws
    ws.close()
    shutil.rmtree(ROOT.parent, ignore_errors=True)


@pytest.fixture(autouse=True)
def only_the_example_plugin(monkeypatch):
    """The screens show the example plugin only, whatever else is installed (the
    first-party edge plugin adds a Fleet area and a Plugins row of its own)."""
    from mlops_console import plugins

    def forget_plugin_areas() -> None:  # an earlier test may have added them
        for area in list(areas._plugin_areas):
            areas.AREAS.remove(area)
            areas.BY_NAME.pop(area.name, None)
        areas._plugin_areas.clear()

    monkeypatch.setenv("MLOPS_PLUGINS", "example")
    plugins.load_plugins.cache_clear()
    forget_plugin_areas()
    yield
    plugins.load_plugins.cache_clear()
    forget_plugin_areas()


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    """Every area module formats times with the `_when` it imported: freeze each one."""
    frozen = lambda ts: "-" if ts is None else "2026-01-01 12:00"  # noqa: E731
    for info in pkgutil.iter_modules(areas.__path__, areas.__name__ + "."):
        module = importlib.import_module(info.name)
        if hasattr(module, "_when"):
            monkeypatch.setattr(module, "_when", frozen)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
@pytest.mark.parametrize("area", [a.name for a in areas.AREAS])
def test_screen(sws, snap_compare, area, size):
    app = MlopsConsole(sws, poll_seconds=3600, live=False)

    async def go(pilot):
        await pilot.press("colon", *area, "enter")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=go)
