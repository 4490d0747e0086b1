"""Tests of the device lab itself (netdevices.py): the fleet tests trust it, so each fault
it claims to make is checked to really happen."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import tomllib

import asyncssh
import netdevices
import pytest


async def connect(dev: netdevices.Device, **kw: object) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(**dev.asyncssh_options(**kw))


async def start_background(conn: asyncssh.SSHClientConnection, cmd: str) -> int:
    """Start ``cmd`` on the device detached from the session; return its pid."""
    r = await conn.run(f"setsid {cmd} >/dev/null 2>&1 </dev/null & echo $!", check=True)
    return int(str(r.stdout).strip())


def test_devices_answer_ssh_each_in_its_own_namespace(device_lab):
    lab = device_lab
    assert [d.name for d in lab] == ["gw-01", "gw-02", "gw-03"]
    assert len({d.ns for d in lab}) == 3 and len({d.host for d in lab}) == 3

    async def probe(dev):
        async with await connect(dev) as conn:
            arch = (await conn.run("uname -m", check=True)).stdout.strip()
            addrs = (await conn.run("ip -o addr", check=True)).stdout
            return arch, addrs

    async def probe_all():
        return await asyncio.gather(*(probe(d) for d in lab))

    results = asyncio.run(asyncio.wait_for(probe_all(), 30))
    host_addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    for dev, (arch, addrs) in zip(lab, results, strict=True):
        assert arch == os.uname().machine
        assert f"inet {dev.host}/24" in addrs
        assert lab.host_address not in addrs  # not the host's namespace
        assert all(o.host not in addrs for o in lab if o is not dev)
        assert len(addrs.splitlines()) <= 4  # lo and eth0 only (v4/v6)
        assert dev.root.is_dir() and not any(dev.root.iterdir())
    assert all(d.host not in host_addrs for d in lab)

    fleet = tomllib.loads(lab.fleet_toml(runtime="docker", health_timeout=5))
    assert fleet["defaults"]["user"] == "root"
    assert fleet["defaults"]["runtime"] == "docker"
    assert fleet["defaults"]["health_timeout"] == 5
    assert fleet["defaults"]["key"] == str(lab.client_key)
    assert fleet["defaults"]["known_hosts"] == str(lab.known_hosts)
    assert [(d["name"], d["host"], d["port"], d["root"], d["groups"]) for d in fleet["device"]] == [
        ("gw-01", lab[0].host, 22, str(lab[0].root), ["plant-a"]),
        ("gw-02", lab[1].host, 22, str(lab[1].root), ["plant-a"]),
        ("gw-03", lab[2].host, 22, str(lab[2].root), ["plant-b"]),
    ]


def test_device_server_reachable_only_through_a_port_forward(device_lab):
    dev = device_lab[0]

    async def go():
        async with await connect(dev) as conn:
            pid = await start_background(
                conn, f"{sys.executable} -m http.server --bind 127.0.0.1 8099"
            )
            assert pid in dev.pids_in_namespace()
            listener = await conn.forward_local_port("127.0.0.1", 0, "127.0.0.1", 8099)
            port = listener.get_port()
            deadline = time.monotonic() + 10
            while True:  # the server takes a moment to bind
                try:
                    r, w = await asyncio.open_connection("127.0.0.1", port)
                    w.write(b"GET / HTTP/1.0\r\n\r\n")
                    head = await asyncio.wait_for(r.read(100), 5)
                    w.close()
                    if head.startswith(b"HTTP/1.0 200"):
                        break
                except (OSError, asyncio.IncompleteReadError):
                    pass
                assert time.monotonic() < deadline, "device server never answered"
                await asyncio.sleep(0.05)
            listener.close()

    asyncio.run(asyncio.wait_for(go(), 30))
    with pytest.raises(OSError):  # refused: it listens on the device's loopback only
        socket.create_connection((dev.host, 8099), timeout=3).close()


def test_rotated_host_key_is_refused_until_known_hosts_is_rewritten(device_lab):
    dev = device_lab[1]

    async def run_true():
        async with await connect(dev) as conn:
            await conn.run("true", check=True)

    asyncio.run(run_true())
    dev.rotate_host_key()
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        asyncio.run(run_true())
    asyncio.run(asyncssh_ok(device_lab[0]))  # the others are unaffected
    device_lab.write_known_hosts()
    asyncio.run(run_true())


async def asyncssh_ok(dev):
    async with await connect(dev) as conn:
        await conn.run("true", check=True)


def test_link_down_cuts_connections_and_link_up_heals(device_lab):
    dev = device_lab[2]

    async def go():
        conn = await connect(dev, keepalive_interval=1, keepalive_count_max=3)
        await conn.run("true", check=True)
        dev.link_down()
        assert not dev.link_is_up()
        t0 = time.monotonic()
        await asyncio.wait_for(conn.wait_closed(), 15)  # keepalives go unanswered
        cut = time.monotonic() - t0
        t0 = time.monotonic()
        with pytest.raises((OSError, asyncio.TimeoutError, asyncssh.Error)):
            await connect(dev, connect_timeout=3)
        refused = time.monotonic() - t0
        await asyncssh_ok(device_lab[0])  # only its own cable is cut
        dev.link_up()
        await asyncssh_ok(dev)
        return cut, refused

    cut, refused = asyncio.run(asyncio.wait_for(go(), 60))
    assert cut < 10 and refused < 6, (cut, refused)


def test_limit_rate_slows_sftp_and_clear_restores(device_lab, tmp_path):
    dev = device_lab[0]
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(400 * 1024))

    async def put(name):
        async with await connect(dev) as conn, conn.start_sftp_client() as sftp:
            t0 = time.monotonic()
            await sftp.put(str(payload), str(dev.root / name))
            return time.monotonic() - t0

    free = asyncio.run(put("free.bin"))
    dev.limit_rate(800)
    limited = asyncio.run(put("limited.bin"))
    dev.clear_faults()
    again = asyncio.run(put("again.bin"))
    assert (dev.root / "limited.bin").read_bytes() == payload.read_bytes()
    # 400 KiB at 800 kbit/s is ~4 s; unlimited it is a fraction of a second
    assert limited > 2.0, (free, limited)
    assert limited > 4 * free and limited > 4 * again, (free, limited, again)


def test_drop_loses_packets_but_tcp_still_gets_through(device_lab):
    dev = device_lab[1]
    dev.drop(0.1)
    data = os.urandom(300 * 1024)

    async def go():
        async with await connect(dev, connect_timeout=20) as conn:
            r = await conn.run("wc -c", input=data, encoding=None, check=True)
            return int(r.stdout.split()[0])

    assert asyncio.run(asyncio.wait_for(go(), 60)) == len(data)
    assert dev.dropped_packets() > 0
    dev.drop(0)
    assert dev.dropped_packets() == 0  # rule gone with the flush


def test_device_stop_start_is_down_and_back(device_lab):
    dev = device_lab[0]

    async def go():
        conn = await connect(dev)
        sleeper = await start_background(conn, "sleep 300")
        dev.stop()
        await asyncio.wait_for(conn.wait_closed(), 5)  # session sshd killed: dropped
        assert not dev.sshd_running
        with pytest.raises(OSError):
            await connect(dev, connect_timeout=3)
        assert sleeper in dev.pids_in_namespace()  # a mere sshd stop spares the rest
        dev.start()
        await asyncssh_ok(dev)
        dev.stop(everything=True)
        assert dev.pids_in_namespace() == []
        dev.start()
        await asyncssh_ok(dev)

    asyncio.run(asyncio.wait_for(go(), 40))


def test_lab_stop_kills_everything_and_leaves_nothing(device_lab_factory):
    lab = device_lab_factory(2)
    namespaces = lab.namespaces()
    assert set(namespaces) <= set(netdevices.netns_list())

    async def go():
        async with await connect(lab[0]) as conn:
            return await start_background(conn, "sleep 300")

    sleeper = asyncio.run(go())
    assert sleeper in lab[0].pids_in_namespace()
    lab.stop()
    assert not os.path.exists(f"/proc/{sleeper}") or netdevices._is_zombie(sleeper)
    assert not set(namespaces) & set(netdevices.netns_list())
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    assert lab.uplink not in links and lab.subnet.split("/")[0] not in routes
    lab.stop()  # idempotent


def test_stale_namespaces_of_dead_runs_are_removed_live_ones_kept(device_lab_factory):
    gone = subprocess.Popen(["true"])  # a pid that no longer runs
    gone.wait()
    stale, live = f"mlt62-{gone.pid}-hub", f"mlt61-{os.getppid()}-d0"
    for ns in (stale, live):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        squatter = subprocess.Popen(["ip", "netns", "exec", stale, "sleep", "300"])
        deadline = time.monotonic() + 5
        while squatter.pid not in netdevices.netns_pids(stale):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        device_lab_factory(1)  # a new lab cleans up first
        assert squatter.wait(timeout=5) != 0  # killed
        names = netdevices.netns_list()
        assert stale not in names and live in names
    finally:
        for ns in (stale, live):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


async def _send(conn, nbytes, go=None):
    """Send ``nbytes`` over SSH into ``cat >/dev/null`` on the device (from when ``go`` is
    set); return the seconds it took until the device had read it all."""
    proc = await conn.create_process("cat >/dev/null", encoding=None)
    chunk = os.urandom(64 * 1024)
    if go is not None:
        await go.wait()
    t0 = time.monotonic()
    for _ in range(nbytes // len(chunk)):
        proc.stdin.write(chunk)
        await proc.stdin.drain()
    proc.stdin.write_eof()
    await proc.wait(check=True)
    return time.monotonic() - t0


async def _sink(dev, nbytes):
    async with await connect(dev, connect_timeout=30) as conn:
        return await _send(conn, nbytes)


def test_shared_rate_is_one_link_for_all_devices(device_lab_factory):
    lab = device_lab_factory(2, shared_link=True)
    kbit = 8000
    rate = kbit * 1000 / 8  # bytes/s
    nbytes = 1024 * 1024

    async def go():
        conns = [await connect(d) for d in lab]
        try:
            free = await _send(conns[0], nbytes)
            lab.shared_rate(kbit)
            alone = await _send(conns[0], nbytes)
            start = asyncio.Event()
            both = [asyncio.ensure_future(_send(c, nbytes, start)) for c in conns]
            await asyncio.sleep(0.2)  # both channels open, then both send at once
            start.set()
            return free, alone, await asyncio.gather(*both)
        finally:
            for c in conns:
                c.close()

    free, alone, both = asyncio.run(asyncio.wait_for(go(), 60))
    # alone: the device gets the whole link, and no more
    assert 0.4 * rate < nbytes / alone < 1.25 * rate, (free, alone, rate)
    assert alone > 1.5 * free, (free, alone)
    # two at once share that one link: twice the data takes about twice as long, and
    # neither device has the link to itself (per-device limits would give 1x each)
    assert 2 * nbytes / max(both) < 1.25 * rate, (both, rate)
    assert max(both) > 1.3 * alone and min(both) > 1.1 * alone, (
        both,
        alone,
    )  # per-device limits: ~1.0x


@pytest.mark.slow
def test_twenty_devices_share_a_lossy_2mbit_link(device_lab_factory):
    lab = device_lab_factory(20, shared_link=True)
    kbit, loss = 2000, 0.1
    lab.shared_rate(kbit, loss=loss)
    nbytes = 64 * 1024

    async def go():
        t0 = time.monotonic()
        res = await asyncio.gather(*(_sink(d, nbytes) for d in lab))
        return res, time.monotonic() - t0

    res, wall = asyncio.run(asyncio.wait_for(go(), 240))
    assert len(res) == 20
    # 20 x 64 KiB through 250 kB/s takes at least ~5 s; loss makes it slower
    assert wall > 0.8 * 20 * nbytes / (kbit * 1000 / 8), wall
    assert lab.shared_dropped_packets() > 0
