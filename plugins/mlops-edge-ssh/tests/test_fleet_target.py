"""The `fleet` deploy target and the prediction-log pull, against real sshd devices.

Each test copies the run's trained workspace (conftest `trained`: m/1 and m/2), rolls it
out to two devices of a device lab (netdevices.py) and checks what the core sees: the deploy service's records, the devices' served versions, and the core's
monitoring counting the rows the devices served, per device and for the fleet."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MARK = 123.0  # x2 of the test's own traffic (the gates' golden rows are training rows)
RECORDS = [{"x1": 0.5, "x2": MARK, "plan": "pro"}, {"x1": -1.0, "x2": MARK, "plan": "basic"}]


def _marked(ws, deployment: str) -> int:
    """Rows of the test's traffic that monitoring has for `deployment`."""
    import time

    rows, _, _ = ws.monitor.frames(deployment, 0, time.time() + 60)
    return 0 if rows is None else int((rows["in.x2"] == MARK).sum())


@pytest.fixture
def make_ws(ws_for):
    """A copy of the trained workspace whose lab devices are all in `group`."""

    def make(lab, group: str = "m"):
        ws = ws_for(lab)
        fleet = ws.root / "fleet.toml"
        text = fleet.read_text()
        for g in ("plant-a", "plant-b"):
            text = text.replace(f'groups = ["{g}"]', f'groups = ["{group}"]')
        fleet.write_text(text)
        return ws

    return make


def _run(ws, work):
    from mlops_edge_ssh import inventory
    from mlops_edge_ssh.ssh import Links

    fleet = inventory.load(Path(ws.root))

    async def go():
        links = Links(fleet)
        try:
            return await work(links, fleet)
        finally:
            await links.close()

    return asyncio.run(go())


def _send(ws, device: str, requests: int, rows: int) -> None:
    import httpx

    from mlops_edge_ssh.device import DeviceOps

    body = {"dataframe_records": [RECORDS[i % 2] for i in range(rows)]}

    async def work(links, fleet):
        async with (
            DeviceOps(links, fleet.device(device)).forward() as url,
            httpx.AsyncClient(base_url=url, timeout=30) as c,
        ):
            for _ in range(requests):
                r = await c.post("/invocations", json=body)
                assert r.status_code == 200, r.text

    _run(ws, work)


def _agent(ws, device: str, *args: str) -> dict:
    from mlops_edge_ssh.device import DeviceOps

    async def work(links, fleet):
        return await DeviceOps(links, fleet.device(device)).agent(*args)

    return _run(ws, work)


def _restart(ws, device: str) -> None:
    """Stop the device's server (it closes its open prediction-log segment) and start it
    again on the same version."""
    cur = _agent(ws, device, "probe")["current"]
    _agent(ws, device, "stop")
    _agent(ws, device, "switch", cur, "60")
    _wait_ready(ws, device)


def _wait_ready(ws, device: str, timeout: float = 60) -> None:
    import time

    import httpx

    from mlops_edge_ssh.device import DeviceOps

    async def work(links, fleet):
        deadline = time.monotonic() + timeout
        async with DeviceOps(links, fleet.device(device)).forward() as url:
            while True:
                try:
                    async with httpx.AsyncClient(base_url=url, timeout=5) as c:
                        if (await c.get("/ping")).status_code == 200:
                            return
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"{device}: the server did not come up"
                await asyncio.sleep(0.2)

    _run(ws, work)


def _serving(ws, device: str) -> tuple[str | None, bool]:
    info = _agent(ws, device, "probe")
    return info.get("current"), bool((info.get("server") or {}).get("alive"))


def test_rollout_traffic_and_resumable_log_pull_reach_monitoring(device_lab_factory, make_ws):
    from mlops_console.monitoring.collect import log_dir
    from mlops_edge_ssh import predlogs
    from mlops_edge_ssh.service import FleetService
    from mlops_edge_ssh.ssh import Unreachable
    from mlops_edge_ssh.target import FleetTarget

    lab = device_lab_factory(2)
    ws = make_ws(lab)
    a, b = (d.name for d in lab.devices)
    with FleetService(ws) as svc:
        p = svc.plan("m/1", group="m", waves="100%", soak=0)
        r = svc.run(svc.start(p))
        assert r.state == "done" and r.counts() == {"healthy": 2}, r.to_dict()
        for name in (a, b):
            assert _serving(ws, name)[0].startswith("m-1-")

        # the gates' requests (x-mlops-probe) are not traffic: the devices logged none
        _restart(ws, a)
        _restart(ws, b)
        staging = FleetTarget(ws).staging_dir("m", a)

        async def pull(links, fleet, **kw):
            return await predlogs.pull(links, fleet.device(a), staging, svc.store, **kw)

        gate = _run(ws, pull)
        assert gate.complete == [] and gate.removed_remote == 0 and gate.bytes == 0

        _send(ws, a, requests=5, rows=3)
        _send(ws, b, requests=2, rows=4)
        import time

        time.sleep(2.5)  # the server flushes its log every second

        # 1. while the segment is open: its bytes so far come over, nothing more is complete
        first = _run(ws, pull)
        assert first.listed == 1 and first.bytes > 0 and first.complete == gate.complete
        (part,) = staging.glob(".*.part")
        stem = part.name[1:].split(".jsonl")[0]
        assert svc.store.pull_offset(a, stem) == first.bytes

        # 2. more traffic, the segment closed; the pull is cut after its first chunk
        _send(ws, a, requests=1, rows=3)
        time.sleep(1.5)
        _restart(ws, a)
        cut = []

        def on_chunk(_stem: str, offset: int) -> None:
            if not cut:
                cut.append(offset)
                lab[0].link_down()

        try:
            with pytest.raises(Unreachable):
                _run(ws, lambda links, fleet: pull(links, fleet, chunk=64, on_chunk=on_chunk))
        finally:
            lab[0].link_up()
        after_cut = svc.store.pull_offset(a, stem)
        assert after_cut == cut[0] == first.bytes + 64

        # 3. resumed: only the bytes not yet copied come over; the segment is whole
        last = _run(ws, pull)
        (done,) = [p for p in last.complete if p.name.startswith(stem)]
        size = done.stat().st_size
        assert last.bytes == size - after_cut
        assert [json.loads(x)["rows"] for x in done.read_bytes().splitlines()] == [3] * 6
        assert done.stat().st_size == size and not part.exists()
        assert last.removed_remote == 1

        async def remote(links, fleet):
            conn = await links.get(fleet.device(a))
            async with conn.start_sftp_client() as sftp:
                return await predlogs.list_segments(sftp, fleet.device(a).root)

        assert not [s for s in _run(ws, remote) if s.closed]  # removed from the device

    # 4. the target publishes both devices' segments where monitoring reads them
    _restart(ws, b)
    got = FleetTarget(ws).fetch_prediction_logs("m", {"group": "m"}, log_dir(ws, "m"))
    names = sorted(p.name for p in log_dir(ws, "m").iterdir())
    assert got == len(names) >= 2  # a: traffic; b: traffic (the gates logged nothing)
    assert {n.rsplit("--", 1)[1] for n in names} == {f"{a}.jsonl", f"{b}.jsonl"}
    # nothing is published twice
    assert FleetTarget(ws).fetch_prediction_logs("m", {"group": "m"}, log_dir(ws, "m")) == 0

    fleet_report = ws.monitor.measure("m", window="1h")
    assert _marked(ws, "m") == 6 * 3 + 2 * 4
    assert _marked(ws, f"m--{a}") == 18 and _marked(ws, f"m--{b}") == 8
    per_device = [ws.monitor.measure(f"m--{n}", window="1h").rows for n in (a, b)]
    assert fleet_report.rows == sum(per_device) == 6 * 3 + 2 * 4  # no golden rows in it


def test_deploy_service_drives_the_fleet_target(device_lab_factory, make_ws, monkeypatch):
    """What a chain's deploy step calls after a retrain promotes a version:
    ws.deployments.deploy(ref, target=spec.deploy.target, name=model)."""
    from mlops_console.pipeline_spec import PipelineDeploy
    from mlops_edge_ssh import target

    # [deploy] target = "fleet" is a provided target ...
    assert PipelineDeploy(target="fleet", auto=True).target == "fleet"
    # ... but the core passes no target settings: one wave after another, unsoaked here
    monkeypatch.setitem(target.DEFAULTS, "soak", 0)

    lab = device_lab_factory(2)
    ws = make_ws(lab)  # both devices in group "m": the deployment named after the model
    names = [d.name for d in lab.devices]

    rec = ws.deployments.deploy("m/1", target="fleet")
    assert (rec.name, rec.target, rec.version, rec.endpoint) == ("m", "fleet", 1, "fleet:m")
    for n in names:
        cur, alive = _serving(ws, n)
        assert cur.startswith("m-1-") and alive

    rec = ws.deployments.deploy("m/2", target="fleet")  # the next promotion: a rollout
    assert rec.version == 2
    mv2 = ws.models.resolve("m/2")
    for n in names:
        cur, alive = _serving(ws, n)
        assert cur == f"m-2-{mv2.artifact_hash[:12]}" and alive
    st = ws.deployments.status("m")
    assert st.live["status"] == "running" and st.live["versions"] == {"m/2": 2}
    assert st.live["rollout"]["state"] == "done" and st.live["rollout"]["waves"] == [
        [names[0]],
        [names[1]],
    ]
    assert [e.action for e in ws.deployments.history("m")] == ["create", "update"]
    assert ws.deployments.list()[0].name in target.FleetTarget(ws).list()

    preds = ws.deployments.predict("m", RECORDS)
    assert len(preds) == 2
    assert all(f"--- {n} ---" in ws.deployments.logs("m") for n in names)

    # the monitoring collection fetches the fleet's logs through the target
    for n in names:
        _restart(ws, n)
    out = ws.monitor.collect("m")
    assert out["m"]["fetched"] >= 1 and _marked(ws, "m") == 2  # the gates logged nothing

    ws.deployments.stop("m")
    assert all(not _serving(ws, n)[1] for n in names)


def test_a_deploy_killed_mid_rollout_is_resumed_by_the_next_deploy(device_lab_factory, make_ws):
    """The daemon killed in the middle of a chain's fleet rollout: its retry deploys again
    (a newer version, since it trains again). The rollout whose controller died goes on
    from its record first (no device left half-way, its chunks reused), then the new
    version rolls out."""
    import subprocess
    import sys

    from test_fleet_rollout import kill_while_sending, serving, vid

    from mlops_edge_ssh.service import FleetService

    lab = device_lab_factory(2)
    ws = make_ws(lab)
    for d in lab.devices:
        d.limit_rate(40_000)
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "mlops_console.cli.main", "-w", str(ws.root)),
            *("deploy", "m/1", "--target", "fleet", "-o", "soak=0", "-o", "waves=100%"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    kill_while_sending(proc, ws, "gw-01")
    with FleetService(ws) as svc:
        first = svc.store.active()
    assert first is not None and (first.version, first.state) == (1, "running")

    ws.deployments.deploy("m/2", target="fleet", options={"soak": 0, "waves": "100%"})
    with FleetService(ws) as svc:
        resumed, latest = svc.store.rollout(first.id), svc.store.rollout()
        events = [e["kind"] for e in svc.store.events(first.id)]
    assert resumed.state == "done" and resumed.counts() == {"healthy": 2}, resumed.to_dict()
    assert "resumed" in events
    assert sum(d.detail["transfer"]["chunks_reused"] for d in resumed.devices) >= 1
    assert (latest.version, latest.state) == (2, "done"), latest.to_dict()
    for d in lab.devices:
        assert serving(d.root) == vid(ws, "m/2")
