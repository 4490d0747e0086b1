"""Fixtures for the edge-fleet tests: real "edge devices" (sshd in network namespaces, see
netdevices.py). Without root, ``ip netns`` or sshd the tests that use a lab skip, except in
CI (CI=true), where they fail: a missing package must not pass silently. Installing what
they need: ``bash packaging/edge/test-host.sh``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import fleetdata
import netdevices
import pytest

_in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_device_lab() -> None:
    """Skip (fail in CI) when this machine cannot run the device lab."""
    missing = netdevices.missing_requirements()
    if missing:
        reason = "edge device lab unavailable: " + "; ".join(missing)
        reason += " (install with: bash packaging/edge/test-host.sh)"
        if _in_ci:
            pytest.fail(reason + " [CI=true: failing instead of skipping]", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def device_lab_factory(tmp_path: Path) -> Iterator[Callable[..., netdevices.DeviceLab]]:
    """``make(count, prefix="gw", shared_link=False) -> DeviceLab``, started under
    tmp_path; every lab made is stopped at teardown, whatever the test did."""
    require_device_lab()
    labs: list[netdevices.DeviceLab] = []

    def make(count: int, **kw: object) -> netdevices.DeviceLab:
        lab = netdevices.DeviceLab(tmp_path / f"lab{len(labs)}", count, **kw)  # type: ignore[arg-type]
        labs.append(lab)
        return lab.start()

    yield make
    errors = []
    for lab in labs:
        try:
            lab.stop()
        except Exception as e:  # stop them all, then report
            errors.append(f"{lab.tag}: {e!r}")
    assert not errors, errors


@pytest.fixture
def device_lab(device_lab_factory: Callable[..., netdevices.DeviceLab]) -> netdevices.DeviceLab:
    """Three started devices gw-01..gw-03 (gw-01, gw-02 in plant-a; gw-03 in plant-b)."""
    return device_lab_factory(3)


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """One trained workspace for the whole run (fleetdata.standard_workspace: m/1, m/2,
    the bad m/3, golden rows from m/1); tests copy it (`ws_for`), never change it."""
    return fleetdata.standard_workspace(tmp_path_factory.mktemp("fleetws") / "ws")


@pytest.fixture
def ws_for(trained: Path, tmp_path: Path):
    """``make(lab, **defaults) -> Workspace``: a fresh copy of the trained workspace with
    the lab's fleet.toml (``defaults`` go to its [defaults]); closed at teardown."""
    from mlops_console.workspace import Workspace

    opened: list[Workspace] = []

    def make(lab: netdevices.DeviceLab, **defaults: object) -> Workspace:
        root = tmp_path / "ws"
        shutil.copytree(trained, root, symlinks=True)
        (root / "fleet.toml").write_text(lab.fleet_toml(**defaults))
        ws = Workspace.open(root)
        opened.append(ws)
        return ws

    yield make
    for ws in opened:
        ws.close()


@pytest.fixture(scope="session", autouse=True)
def _no_device_namespace_left() -> Iterator[None]:
    """After the session: no namespace of this run's labs remains."""
    yield
    if shutil.which("ip") is None or os.geteuid() != 0:
        return
    left = netdevices.our_namespaces(os.getpid())
    for ns in left:  # remove them so the next run starts clean, then fail
        netdevices._kill_namespace(ns)
    assert not left, f"device-lab namespaces left behind: {left}"
