"""`mlops fleet ...` as an engineer meets it: what it says when a pin, a rollout id or a
controller is missing, its progress lines, its exit codes, and (on the device lab) the
host-key and login refusals, a link cut mid-command and a reconcile of a downed server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncssh
import pytest

from mlops_console.workspace import Workspace
from mlops_edge_ssh import inventory
from mlops_edge_ssh.cli import NO_CONTROLLER, TransferProgress
from mlops_edge_ssh.ssh import Links, Unreachable
from mlops_edge_ssh.store import FleetStore

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOo2ZbX3c8qC3r6kP3q0b8cL7o1Ykq9sX0mJtA0d8F2T"
FLEET_TOML = f"""\
[defaults]
known_host = "{KEY}"

[group.plant-a]
pin = "churn/3"

[[device]]
name = "gw-01"
host = "127.0.0.1"
port = 1
groups = ["plant-a"]

[[device]]
name = "gw-02"
host = "127.0.0.1"
port = 2
"""


def mlops(root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_WORKSPACE"}
    return subprocess.run(
        [sys.executable, "-m", "mlops_console.cli.main", "-w", str(root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=env,
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    ws = Workspace.init(tmp_path / "ws")
    ws.close()
    (tmp_path / "ws" / "fleet.toml").write_text(FLEET_TOML)
    return tmp_path / "ws"


def record_rollout(root: Path, owner: str | None = None) -> str:
    """A rollout of churn/3 to gw-01 recorded as running, as a controller leaves it."""
    with Workspace.open(root) as ws:
        store = FleetStore(Path(ws.state))
        try:
            rid = store.create_rollout(
                {
                    "model": "churn",
                    "version": 3,
                    "digest": "d" * 64,
                    "ref": "churn/3",
                    "waves": [["gw-01"]],
                    "soak": 0.0,
                    "max_failed": 0.1,
                    "max_unreachable": 0.3,
                    "auto_rollback": True,
                    "gate": {},
                    "golden": {},
                },
                [("gw-01", 0, "pending")],
            )
            if owner:
                store.set_rollout(rid, owner=owner, heartbeat=time.time())
        finally:
            store.close()
    return rid


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_unpin_says_whether_there_was_a_pin_and_refuses_an_unknown_group(root):
    out = mlops(root, "fleet", "unpin", "--group", "plant-zz")
    assert out.returncode == 1 and "No device is in group 'plant-zz'" in out.stderr
    out = mlops(root, "fleet", "unpin", "--group", "plant-a")
    assert out.returncode == 0 and "Unpinned group plant-a (was churn/3)." in out.stdout
    text = (root / "fleet.toml").read_text()
    assert "[group.plant-a]" not in text and "\n\n\n" not in text  # no empty table left
    out = mlops(root, "fleet", "unpin", "--group", "plant-a")
    assert out.returncode == 0 and out.stdout.strip() == "group plant-a had no pin."
    out = mlops(root, "fleet", "unpin", "--device", "gw-02")
    assert out.returncode == 0 and out.stdout.strip() == "gw-02 had no pin."


def test_add_refuses_a_known_host_that_is_no_host_key(root):
    out = mlops(root, "fleet", "add", "gw-09", "--host", "10.0.0.9", "--known-host", "garbage")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "known_host 'garbage' is not a host key line" in out.stderr
    assert "gw-09" not in (root / "fleet.toml").read_text()


def test_history_of_an_unknown_id_and_a_rollout_no_controller_holds(root):
    rid = record_rollout(root, owner=f"{socket.gethostname()}:{dead_pid()}:{time.time():.0f}")
    out = mlops(root, "fleet", "history", "r-nope")
    assert out.returncode == 1
    assert "No rollout r-nope; `mlops fleet history` lists them" in out.stderr
    for args in (("history",), ("history", rid), ("status", "--cached")):
        out = mlops(root, "fleet", *args)
        assert out.returncode == 0, out.stdout + out.stderr
        assert NO_CONTROLLER.strip() in out.stdout, (args, out.stdout)


def test_resume_names_the_host_and_pid_of_the_controller_that_holds_it(root):
    record_rollout(root, owner=f"{socket.gethostname()}:{os.getpid()}:{time.time():.0f}")
    out = mlops(root, "fleet", "resume")
    assert out.returncode == 1
    assert f"by a controller on host {socket.gethostname()} (pid {os.getpid()})" in out.stderr
    assert str(os.getpid()) + ":" not in out.stderr  # not the internal owner id
    out = mlops(root, "fleet", "status", "--cached")
    assert NO_CONTROLLER.strip() not in out.stdout  # it is alive


def test_transfer_progress_is_said_every_tenth_and_again_after_a_resend(root):
    rid = record_rollout(root)
    said: list[str] = []
    with Workspace.open(root) as ws:
        store = FleetStore(Path(ws.state))
        try:
            watch = TransferProgress(Path(ws.state), said.append)
            for p in (0.0, 0.04, 0.12, 0.15, 0.37, 1.0):
                store.set_device(rid, "gw-01", state="sending", progress=p)
                watch.poll(store)
            store.set_device(rid, "gw-01", state="unreachable")  # a cut: the send starts over
            watch.poll(store)
            store.set_device(rid, "gw-01", state="sending", progress=0.1)
            watch.poll(store)
        finally:
            store.close()
    assert said == [
        "gw-01: sending, 12% of its layers sent",
        "gw-01: sending, 37% of its layers sent",
        "gw-01: sending, 100% of its layers sent",
        "gw-01: sending, 10% of its layers sent",
    ]


# -- on the device lab (real sshd) ----------------------------------------------------------


def _check(ws) -> subprocess.CompletedProcess:
    return mlops(ws.root, "fleet", "check", timeout=180)


def _fingerprint(dev) -> str:
    return asyncssh.read_public_key(str(dev.host_key) + ".pub").get_fingerprint("sha256")


def _device_line(dev) -> str:
    return " ".join(dev.known_hosts_line().split()[1:])


@pytest.mark.slow
def test_refusals_name_the_real_fingerprint_and_what_to_edit(device_lab_factory, ws_for):
    lab = device_lab_factory(2)
    ws = ws_for(lab)
    gw1, gw2 = lab.devices
    gw2.rotate_host_key()
    out = _check(ws)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"offered host key {_fingerprint(gw2)}" in out.stdout, out.stdout
    assert f"then replace its line in {lab.known_hosts}" in out.stdout
    assert "  BAD host key and login  " in out.stdout  # the label, then the message
    assert f"matches its line in {lab.known_hosts}" in out.stdout  # gw-01

    # a rollout that ends paused (gw-02 refuses us) did not complete: exit 1, not 2
    # (the README's "used wrongly"); the transfer to gw-01 is said as it goes
    out = mlops(ws.root, "fleet", "rollout", "m/1", "--waves", "100%", "--soak", "0", "-y")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "paused" in out.stdout and "gw-01: sending, " in out.stdout
    mlops(ws.root, "fleet", "abort")

    lab.known_hosts.write_text(gw1.known_hosts_line() + "\n")  # gw-02 has no line at all
    out = _check(ws)
    assert "no line for this host" in out.stdout
    assert f"then add its line to {lab.known_hosts} (`ssh-keyscan" in out.stdout

    # known_host in fleet.toml: gw-01 right, gw-02 given gw-01's key
    text = lab.fleet_toml()
    text = text.replace('name = "gw-01"', f'name = "gw-01"\nknown_host = "{_device_line(gw1)}"')
    text = text.replace('name = "gw-02"', f'name = "gw-02"\nknown_host = "{_device_line(gw1)}"')
    (ws.root / "fleet.toml").write_text(text)
    out = _check(ws)
    assert "matches known_host in fleet.toml" in out.stdout
    assert "then update `known_host` of gw-02 in fleet.toml" in out.stdout
    assert "unknown" not in out.stdout

    lab.write_known_hosts()
    (ws.root / "fleet.toml").write_text(lab.fleet_toml(key=None))
    out = _check(ws)
    assert out.returncode == 1 and "refused the key None" not in out.stdout
    assert "none is configured for gw-01" in out.stdout
    assert 'key = "keys/fleet_ed25519" in [defaults]' in out.stdout


@pytest.mark.slow
def test_a_link_cut_during_a_command_is_unreachable_not_a_failure(device_lab_factory, tmp_path):
    lab = device_lab_factory(1)
    (tmp_path / "fleet.toml").write_text(lab.fleet_toml())
    fleet = inventory.load(tmp_path)
    dev = fleet.device("gw-01")

    async def go() -> None:
        links = Links(fleet)
        try:
            assert (await links.run(dev, ["true"])).exit_status == 0
            cmd = asyncio.create_task(links.run(dev, ["sleep", "30"]))
            await asyncio.sleep(1)
            lab.devices[0].link_down()
            with pytest.raises(Unreachable, match="the link dropped during `sleep 30`"):
                await asyncio.wait_for(cmd, 60)  # keepalives: 5 s x 3
        finally:
            lab.devices[0].link_up()
            await links.close()

    asyncio.run(go())


def _kill_server(dev_root: Path) -> None:
    import json

    for name in ("supervisor.json", "server.json"):  # as a reboot without systemd leaves it
        pid = json.loads((dev_root / "run" / name).read_text())["pid"]
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_reconcile_restarts_a_downed_server_and_reports_every_rollout(device_lab_factory, ws_for):
    from test_fleet_rollout import serving, vid

    lab = device_lab_factory(2)
    ws = ws_for(lab)
    out = mlops(ws.root, "fleet", "rollout", "m/1", "--waves", "100%", "--soak", "0", "-y")
    assert out.returncode == 0, out.stdout + out.stderr
    gw1 = lab.devices[0].root
    _kill_server(gw1)
    deadline = time.monotonic() + 20
    while serving(gw1) != "dead" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert serving(gw1) == "dead"
    # gw-02 pinned to the bad m/3: its rollout fails the gate, reconcile did not complete
    assert mlops(ws.root, "fleet", "pin", "m/3", "--device", "gw-02").returncode == 0
    out = mlops(ws.root, "fleet", "reconcile")
    assert out.returncode == 1, out.stdout + out.stderr
    assert serving(gw1) == vid(ws, "m/1")
    assert "m/1 done" in out.stdout and "m/3" in out.stdout, out.stdout
    assert "1 failed" in out.stdout or "1 rolled_back" in out.stdout, out.stdout


def test_writes_lost_with_their_link_print_no_traceback_but_bugs_still_do(caplog):
    import asyncio
    import gc

    import asyncssh

    from mlops_edge_ssh.ssh import quiet_lost_links

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(quiet_lost_links)

        async def lost() -> None:
            raise asyncssh.ConnectionLost("Server not responding to keepalive")

        async def bug() -> None:
            raise ValueError("a real bug")

        for coro in (lost, bug):
            task = asyncio.ensure_future(coro())
            await asyncio.sleep(0.01)
            del task
            gc.collect()

    asyncio.run(main())  # the loop's default handler logs to the asyncio logger
    assert "a real bug" in caplog.text and "keepalive" not in caplog.text, caplog.text
