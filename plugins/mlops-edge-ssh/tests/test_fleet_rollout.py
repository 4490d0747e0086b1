"""Rollouts to real devices: sshd in network namespaces, the runtime and the model sent over
SSH, servers started on the devices' loopback and gated through port forwards, link faults
made with ip/tc. Nothing is mocked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mlops_console.workspace import Workspace
from mlops_edge_ssh.service import FleetService

pytestmark = pytest.mark.slow


def rollout(ws, ref: str, **opts):
    opts.setdefault("soak", 0.5)
    opts.setdefault("waves", "100%")
    with FleetService(ws) as svc:
        rid = svc.start(svc.plan(ref, **opts))
        return svc.run(rid)


def serving(dev_root: Path) -> str | None:
    """What a device's current symlink names and whether its server is alive (read from
    its own files, not through the controller)."""
    link = dev_root / "current"
    if not link.is_symlink():
        return None
    state = json.loads((dev_root / "run" / "server.json").read_text())
    alive = Path(f"/proc/{state['pid']}").exists()
    return os.readlink(link).split("/")[-1] if alive else "dead"


def vid(ws, ref: str) -> str:
    mv = ws.models.resolve(ref)
    return f"{mv.name}-{mv.version}-{mv.artifact_hash[:12]}"


def mlops(ws, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlops_console.cli.main", "-w", str(ws.root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_ten_devices_three_waves_then_a_delta_a_pin_and_a_rollback_with_no_transfer(
    device_lab_factory, ws_for
):
    lab = device_lab_factory(10)
    ws = ws_for(lab)
    r = rollout(ws, "m/1", waves="1,50%,100%", soak=1)
    assert r.state == "done", r.to_dict()
    assert [len(w) for w in r.waves] == [1, 4, 5]
    assert r.counts() == {"healthy": 10}
    for d in lab.devices:
        assert serving(d.root) == vid(ws, "m/1")
    first = {d.device: d.detail["transfer"] for d in r.devices}
    # the runtime's two layers (dependencies, console) + the bundle's files
    assert all(t["sent_objects"] == t["objects"] == 5 for t in first.values()), first

    # gw-10 is pinned to m/1 (fleet.toml, by the CLI): the m/2 rollout skips it
    out = mlops(ws, "fleet", "pin", "m/1", "--device", "gw-10")
    assert out.returncode == 0, out.stderr
    assert 'pin = "m/1"' in (ws.root / "fleet.toml").read_text()

    # m/2: only the files that changed travel; the runtime is already there
    r2 = rollout(ws, "m/2", waves="1,50%,100%", soak=0)
    assert r2.state == "done" and r2.counts() == {"healthy": 9, "skipped": 1}
    pinned = next(d for d in r2.devices if d.device == "gw-10")
    assert "pinned to m/1" in pinned.detail["reason"]
    assert serving(lab.devices[9].root) == vid(ws, "m/1")
    for d in r2.devices:
        if d.device == "gw-10":
            continue
        t = d.detail["transfer"]
        assert 1 <= t["sent_objects"] <= 3, t
        assert t["wire_bytes"] < 0.01 * first[d.device]["wire_bytes"], t

    # the status every command shows, from outside
    st = json.loads(mlops(ws, "fleet", "status", "--json").stdout)
    assert {(d["name"], d["reachable"], d["serving"], d["health"]) for d in st["devices"]} == {
        (d.name, True, "m/2" if d.name != "gw-10" else "m/1", "ok") for d in lab.devices
    }

    # a whole-fleet rollback: the previous version is on every device, nothing is sent
    objects_before = {d.name: sorted(os.listdir(d.root / "objects")) for d in lab.devices}
    res = {
        x["device"]: x
        for x in json.loads(mlops(ws, "fleet", "rollback", "--json").stdout)["devices"]
    }
    assert res.pop("gw-10") == {  # it never left m/1: nothing to go back to
        "device": "gw-10",
        "ok": False,
        "reason": "no previous version on the device",
    }
    assert all(x["ok"] for x in res.values()), res
    for d in lab.devices:
        assert serving(d.root) == vid(ws, "m/1")
        assert sorted(os.listdir(d.root / "objects")) == objects_before[d.name]


def test_a_newer_console_sends_its_small_layer_alone_and_reuses_the_dependencies(
    device_lab_factory, ws_for, monkeypatch, tmp_path
):
    """A newer console on the controller (one module more): m/2 sends that small layer
    alone; the dependencies layer on the devices is reused, and m/2 is served with it.
    (Apart from the ten-device test, so that each stays well inside the time limit on a
    loaded machine and the two can run on different workers.)"""
    lab = device_lab_factory(2)
    ws = ws_for(lab)
    r = rollout(ws, "m/2", soak=0)  # m/2's files are on the devices from here on
    assert r.state == "done" and r.counts() == {"healthy": 2}, r.to_dict()
    first = {d.device: d.detail["transfer"] for d in r.devices}
    assert rollout(ws, "m/1", soak=0).counts() == {"healthy": 2}
    from device_docker import newer_layer

    from mlops_edge_ssh import layers

    real = layers.process_runtime
    newer: dict[str, layers.ProcessRuntime] = {}

    def process_runtime(platform, **kw):
        if str(platform) not in newer:
            was = real(platform, **kw)
            console = newer_layer(was.console, tmp_path / f"newer-{len(newer)}")
            newer[str(platform)] = layers.ProcessRuntime(was.deps, console)
        return newer[str(platform)]

    monkeypatch.setattr(layers, "process_runtime", process_runtime)
    r3 = rollout(ws, "m/2", soak=0)
    assert r3.state == "done" and r3.counts() == {"healthy": 2}, r3.to_dict()
    (runtime,) = newer.values()
    deps, console = runtime.deps.sha256, runtime.console.sha256
    for d in r3.devices:
        t = d.detail["transfer"]
        assert t["sent_objects"] == 1 and t["raw_bytes"] == runtime.console.size, t
        assert t["wire_bytes"] < 1.5e6 and t["wire_bytes"] < 0.05 * first[d.device]["wire_bytes"]
        root = next(x.root for x in lab.devices if x.name == d.device)
        assert serving(root) == vid(ws, "m/2")
        pid = json.loads((root / "run" / "server.json").read_text())["pid"]
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        path = next(e for e in environ if e.startswith(b"PYTHONPATH=")).decode()
        assert path == f"PYTHONPATH={root}/runtime/{console}/site:{root}/runtime/{deps}/site"
        assert (root / "runtime" / console / "site/mlops_console/edge_marker.py").is_file()


def test_a_bad_model_fails_the_golden_rows_is_rolled_back_and_the_rollout_aborts(
    device_lab_factory, ws_for
):
    lab = device_lab_factory(3)
    ws = ws_for(lab)
    assert rollout(ws, "m/1").counts() == {"healthy": 3}
    r = rollout(ws, "m/3", waves="1,100%", max_failed="10%")
    assert r.state == "aborted", r.to_dict()
    first, *rest = r.devices
    assert first.state == "failed"
    gate = first.detail["gate"]
    assert gate["step"] == "golden" and "recorded labels" in gate["reason"]
    assert '"predictions"' in gate["response"]  # what the device answered is kept
    assert first.detail["rolled_back_to"] == vid(ws, "m/1")
    assert first.detail["rollback_s"] < 30
    assert all(d.state == "skipped" for d in rest)
    for d in lab.devices:  # the failed one is back on m/1; the others never left it
        assert serving(d.root) == vid(ws, "m/1")
    with FleetService(ws) as svc:
        desired = svc.store.desired()
    assert desired[first.device]["version"] == 1


def test_unreachable_is_not_failed_and_converges_when_the_device_comes_back(
    device_lab_factory, ws_for
):
    lab = device_lab_factory(3)
    ws = ws_for(lab)
    (ws.root / "fleet.toml").write_text(
        (ws.root / "fleet.toml").read_text() + "\n[fleet]\nconnect_timeout = 4\n"
    )
    lab.devices[2].link_down()
    r = rollout(ws, "m/1", max_unreachable="50%", max_failed="0%")
    assert r.state == "done", r.to_dict()  # an unreachable device is no verdict on the model
    assert r.counts() == {"healthy": 2, "unreachable": 1}
    assert "come back" in r.reason
    st = json.loads(mlops(ws, "fleet", "status", "--json").stdout)
    down = next(d for d in st["devices"] if d["name"] == "gw-03")
    assert down["reachable"] is False and down["desired"] == "m/1" and not down["converged"]
    lab.devices[2].link_up()
    out = mlops(ws, "fleet", "reconcile")
    assert out.returncode == 0, out.stdout + out.stderr
    assert serving(lab.devices[2].root) == vid(ws, "m/1")
    st = json.loads(mlops(ws, "fleet", "status", "--json").stdout)
    assert all(d["converged"] and d["serving"] == "m/1" for d in st["devices"])


def test_a_changed_host_key_is_refused_and_nothing_is_sent(device_lab_factory, ws_for):
    lab = device_lab_factory(2)
    ws = ws_for(lab)
    lab.devices[1].rotate_host_key()
    out = mlops(ws, "fleet", "check")
    assert out.returncode == 1
    assert "gw-02" in out.stdout and "does not vouch for" in out.stdout
    assert "ssh-keygen -lf" in out.stdout and "Traceback" not in out.stdout + out.stderr
    # a refusal is no verdict on the model: 1 of 2 is past --max-unreachable 30%, a pause
    r = rollout(ws, "m/1", max_failed="0%")
    states = {d.device: d for d in r.devices}
    assert r.state == "paused" and "refusing us" in r.reason, r.to_dict()
    assert states["gw-01"].state == "healthy"
    assert states["gw-02"].state == "refused" and "host key" in states["gw-02"].detail["reason"]
    assert not (lab.devices[1].root / "objects").exists()
    # the engineer checked the new key on the device and accepted it: resume converges
    lab.write_known_hosts()
    out = mlops(ws, "fleet", "resume", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["rollout"]["counts"] == {"healthy": 2}
    assert serving(lab.devices[1].root) == vid(ws, "m/1")


def _wait(cond, timeout: float, what: str, every: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def _device_state(ws, name: str):
    with FleetService(ws) as svc:
        r = svc.store.active() or svc.store.rollout()
        return next((d for d in r.devices if d.device == name), None) if r else None


def kill_while_sending(proc: subprocess.Popen, ws, device: str, above: float = 0.0) -> None:
    """SIGKILL the controller `proc` once `device` is sending (more than `above` of it)."""
    try:
        _wait(
            lambda: (
                (s := _device_state(ws, device))
                and s.state == "sending"
                and (s.progress or 0) > above
            ),
            300,
            f"{device} to be sending",
            every=0.05,
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_link_cut_for_25s_mid_transfer_resumes_and_resends_at_most_one_chunk(
    device_lab_factory, ws_for
):
    lab = device_lab_factory(2)
    ws = ws_for(lab)
    for d in lab.devices:
        d.limit_rate(40_000)  # 40 Mbit/s: the ~40 MB runtime takes several seconds
    result: dict = {}

    def run() -> None:
        with Workspace.open(ws.root) as w:
            result["r"] = rollout(w, "m/1")

    t = threading.Thread(target=run)
    t.start()
    cut = lab.devices[1]
    _wait(
        lambda: (
            (s := _device_state(ws, "gw-02")) and s.state == "sending" and (s.progress or 0) > 0.15
        ),
        240,
        "gw-02 to be part-way through its transfer",
        every=0.05,
    )
    cut.link_down()
    time.sleep(25)
    cut.link_up()
    t.join(600)
    assert not t.is_alive()
    r = result["r"]
    assert r.counts() == {"healthy": 2}, r.to_dict()
    clean = r.devices[0].detail["transfer"]["wire_bytes"]
    cutd = r.devices[1].detail["transfer"]["wire_bytes"]
    assert r.devices[1].detail["transfer"]["chunks_reused"] >= 1
    assert cutd - clean <= 1024 * 1024 + 4096, (clean, cutd)
    assert serving(cut.root) == vid(ws, "m/1")


def test_the_controller_killed_mid_rollout_resumes_with_no_device_half_switched(
    device_lab_factory, ws_for
):
    lab = device_lab_factory(3)
    ws = ws_for(lab)
    for d in lab.devices:
        d.limit_rate(40_000)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlops_console.cli.main",
            "-w",
            str(ws.root),
            "fleet",
            "rollout",
            "m/1",
            "--waves",
            "1,100%",
            "--soak",
            "1s",
            "-y",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    kill_while_sending(proc, ws, "gw-02", above=0.2)
    with FleetService(ws) as svc:
        r = svc.store.rollout()
        assert r.state == "running" and r.counts().get("healthy") == 1
    st = json.loads(mlops(ws, "fleet", "status", "--json", "--cached").stdout)
    assert st["rollout"]["state"] == "running"
    out = mlops(ws, "fleet", "resume", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    done = json.loads(out.stdout)["rollout"]
    assert done["state"] == "done" and done["counts"] == {"healthy": 3}
    resumed = next(d for d in done["devices"] if d["device"] == "gw-02")
    assert resumed["detail"]["transfer"]["chunks_reused"] >= 1  # went on, did not restart
    for d in lab.devices:
        assert serving(d.root) == vid(ws, "m/1")


def test_a_link_lost_in_the_gate_is_unreachable_and_an_abort_leaves_nothing_on_the_version(
    device_lab_factory, ws_for
):
    """gw-01 loses its link while it is being gated, gw-03 is down from the start, gw-02
    passes; the engineer aborts in the soak. No device is failed; gw-02 is rolled back;
    gw-01 (which may serve the aborted version) gets its previous version back as desired
    and `reconcile` puts it there once the link is back; nobody's desired state names the
    aborted version."""
    lab = device_lab_factory(4)
    ws = ws_for(lab)
    assert rollout(ws, "m/1").counts() == {"healthy": 4}
    fleet = ws.root / "fleet.toml"
    # a long gate window (from fleet.toml's [gate]), so the link can drop in the middle
    fleet.write_text(fleet.read_text() + "\n[fleet]\nconnect_timeout = 4\n[gate]\nrequests = 400\n")
    lab.devices[2].link_down()
    proc = subprocess.Popen(
        [
            sys.executable,
            *("-m", "mlops_console.cli.main", "-w", str(ws.root)),
            *("fleet", "rollout", "m/2", "--waves", "3,100%", "--soak", "10m"),
            *("--max-failed", "0%", "--max-unreachable", "100%", "-y"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        _wait(
            lambda: (s := _device_state(ws, "gw-01")) and s.state == "gating",
            300,
            "gw-01 to be gated",
            every=0.05,
        )
        lab.devices[0].link_down()
        _wait(
            lambda: (
                {d.device: d.state for d in svc_rollout(ws).devices if d.device != "gw-04"}
                == {"gw-01": "unreachable", "gw-02": "healthy", "gw-03": "unreachable"}
            ),
            300,
            "the first wave to be judged",
        )
        r = svc_rollout(ws)
        assert r.state == "running", r.to_dict()  # not aborted by --max-failed 0%
        gw1 = next(d for d in r.devices if d.device == "gw-01")
        assert gw1.detail["step"] == "gating" and "failed" not in r.counts()
        out = mlops(ws, "fleet", "abort", "--reason", "seen enough")
        assert out.returncode == 0, out.stdout + out.stderr
        proc.wait(300)
    finally:
        if proc.poll() is None:
            proc.kill()
    r = svc_rollout(ws)
    states = {d.device: d for d in r.devices}
    assert r.state == "aborted", r.to_dict()
    assert states["gw-02"].state == "rolled_back"
    assert serving(lab.devices[1].root) == vid(ws, "m/1")
    assert states["gw-01"].state == "unreachable"
    assert "not rolled back" in states["gw-01"].detail["reason"]
    assert serving(lab.devices[0].root) == vid(ws, "m/2")  # cut off on the new version
    assert states["gw-03"].state == states["gw-04"].state == "skipped"
    with FleetService(ws) as svc:
        desired = svc.store.desired()
    assert {n: d["version"] for n, d in desired.items()} == {f"gw-0{i}": 1 for i in (1, 2, 3, 4)}
    lab.devices[0].link_up()
    lab.devices[2].link_up()
    fleet.write_text(fleet.read_text().replace("requests = 400", "requests = 20"))
    out = mlops(ws, "fleet", "reconcile")
    assert out.returncode == 0, out.stdout + out.stderr
    for d in lab.devices:
        assert serving(d.root) == vid(ws, "m/1"), d.name


def svc_rollout(ws):
    with FleetService(ws) as svc:
        return svc.store.active() or svc.store.rollout()
