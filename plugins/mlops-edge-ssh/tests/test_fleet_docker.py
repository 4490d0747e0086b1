"""The docker runtime, for real: the edge image built on the controller's engine (started
by packaging/docker/engine.sh), a dockerd inside a device's network namespace
(device_docker.py), delta tars sent with the resumable transfer and `docker load`ed over
SSH, and the serve argv serving a trained ONNX bundle through an SSH port forward.

Skipped (with the reason) only where no engine can be started; never when CI=true."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import tarfile
import time
from pathlib import Path

import asyncssh
import httpx
import pytest
from device_docker import DeviceDocker, mounts_of, newer_layer
from test_fleet_layers import train_bundle
from tests.docker_engine import BASE, module_engine

from mlops_edge_ssh import docker_runtime as dr
from mlops_edge_ssh import layers, transfer


def _host_platform() -> layers.Platform:
    return layers.Platform(
        "x86_64" if os.uname().machine == "x86_64" else os.uname().machine, "3.11", "glibc", "2.36"
    )


def test_other_architecture_is_a_platform_error():
    other = "aarch64" if os.uname().machine != "aarch64" else "x86_64"
    with pytest.raises(layers.PlatformError) as info:
        dr.edge_image(layers.Platform(other, "3.11", "glibc", "2.36"))
    text = str(info.value)
    assert other in text and 'runtime = "process"' in text


def test_chain_ids_argv_and_device_docker(monkeypatch):
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    chains = dr.chain_ids([a, b])
    import hashlib

    assert chains[0] == a
    assert chains[1] == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    monkeypatch.delenv("MLOPS_EDGE_DOCKER_HOST", raising=False)
    docker = dr.device_docker("/opt/edge root")
    assert docker[:2] == ["sh", "-c"] and docker[-1] == "/opt/edge root"
    monkeypatch.setenv("MLOPS_EDGE_DOCKER_HOST", "unix:///x.sock")
    assert dr.device_docker("/r") == ["docker", "-H", "unix:///x.sock"]
    img = dr.EdgeImage("r:t", "sha256:" + "c" * 64, [a], Path("/x"), 1)
    argv = dr.serve_argv(img, 9123, ["docker"])
    assert argv[:2] == ["sh", "-c"] and "--port 9123" in argv[2] and img.id in argv[2]
    assert argv[4:] == ["mlops-edge-9123", "{bundle}", "{digest}", "{logs}", "docker"]
    assert dr.load_command("/r/objects/ab", ["docker"]) == [
        "docker",
        "load",
        "-q",
        "-i",
        "/r/objects/ab",
    ]


# --------------------------------------------------------------------------- real engines


@pytest.fixture(scope="module")
def engine():
    with module_engine(BASE):
        yield


@pytest.fixture(scope="module")
def images(engine, tmp_path_factory):
    """The edge image (cached like a real controller's), and a second one whose runtime
    layer has a changed mlops-console (so only the top layer differs)."""
    t0 = time.monotonic()
    steps: list[str] = []
    first = dr.edge_image(_host_platform(), progress=steps.append)
    t1 = time.monotonic() - t0
    layer = layers.runtime_layer(layers.Platform(*_image_platform_args()))
    work = tmp_path_factory.mktemp("image2")
    layer2 = newer_layer(layer, work)
    t0 = time.monotonic()
    second = dr.edge_image(_host_platform(), layer=layer2, cache_dir=work / "cache")
    t2 = time.monotonic() - t0
    print(
        f"\nedge image: {first.size / 1e6:.1f} MB saved, {t1:.1f} s ({steps}); "
        f"second image {t2:.1f} s"
    )
    yield first, second
    subprocess.run(["docker", "rmi", "-f", second.ref], capture_output=True)


def _image_platform_args():
    cache = dr._default_cache()
    for meta in cache.glob("base-*.json"):
        d = json.loads(meta.read_text())
        return d["machine"], d["python"], d["libc"], d["glibc_version"]
    raise AssertionError("edge_image wrote no base platform")


@pytest.mark.slow
def test_edge_image_is_cached_and_layered(images):
    first, second = images
    assert len(first.diff_ids) == 3 and first.save_path.stat().st_size == first.size
    assert second.diff_ids[:2] == first.diff_ids[:2] and second.diff_ids[2] != first.diff_ids[2]
    t0 = time.monotonic()
    again = dr.edge_image(_host_platform())
    assert again == first and time.monotonic() - t0 < 5
    out = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            first.id,
            "python3",
            "-c",
            "import mlops_console.serving.app, onnxruntime, numpy; print('ok')",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout.strip() == "ok", out.stderr


async def _connect(dev):
    return await asyncssh.connect(**dev.asyncssh_options(keepalive_interval=5))


async def _send(dev, path: Path, sha: str) -> transfer.TransferStats:
    async def fresh():
        return await _connect(dev)

    stats = await transfer.put_objects(fresh, str(dev.root), [(sha, path)], compress=True)
    return stats[0]


async def _wait_http(url: str, proc_alive, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            try:
                if (await client.get(url + "/ping")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert await proc_alive(), "the server wrapper exited"
            assert time.monotonic() < deadline, "the server did not answer in time"
            await asyncio.sleep(0.3)


@pytest.mark.slow
async def test_delta_load_serve_and_stop_on_a_device(images, device_lab_factory, tmp_path):
    first, second = images
    lab = device_lab_factory(1)
    dev = lab.devices[0]
    engine = DeviceDocker(dev)
    figures: dict[str, float] = {}
    try:
        engine.start()
        docker = dr.device_docker(str(dev.root))
        conn = await _connect(dev)
        try:
            # 1) an empty device: the delta is the whole saved image
            assert await dr.device_layers(conn, docker) == set()
            path, sha, size = dr.delta_tar(first, set())
            assert path == first.save_path and size == first.size
            t0 = time.monotonic()
            st = await _send(dev, path, sha)
            figures["full_send_s"] = time.monotonic() - t0
            figures["full_wire"] = st.wire_bytes_sent
            t0 = time.monotonic()
            await dr.load_delta(conn, f"{dev.root}/objects/{sha}", docker, first)
            figures["full_load_s"] = time.monotonic() - t0
            assert not (Path(dev.root) / "objects" / sha).exists()
            present = await dr.device_layers(conn, docker)
            assert set(first.chain_ids) <= present

            # 2) the second image: only its top layer travels, and loads
            path2, sha2, size2 = dr.delta_tar(second, present)
            figures.update(full=first.size, second_full=second.size, delta=size2)
            assert size2 < second.size / 50, (size2, second.size)
            with tarfile.open(path2) as tar:
                names = tar.getnames()
            assert "manifest.json" in names
            assert sum(n.endswith("layer.tar") for n in names) == 1
            assert dr.delta_tar(second, present) == (path2, sha2, size2)  # cached
            t0 = time.monotonic()
            st2 = await _send(dev, path2, sha2)
            figures["delta_wire"] = st2.wire_bytes_sent
            await dr.load_delta(conn, f"{dev.root}/objects/{sha2}", docker, second)
            figures["delta_send_load_s"] = time.monotonic() - t0
            ok = engine.cli(
                "run",
                "--rm",
                "--network",
                "none",
                second.id,
                "python3",
                "-c",
                "import mlops_console.edge_marker as m; print(m.NEWER)",
            )
            assert ok.stdout.strip() == "True", ok.stderr

            # the plain way, for comparison: docker save | ssh docker load (all of it)
            t0 = time.monotonic()
            async with conn.create_process(
                shlex.join(dr.load_command("/dev/stdin", docker)), encoding=None
            ) as proc:
                with second.save_path.open("rb") as f:
                    while chunk := f.read(1 << 20):
                        proc.stdin.write(chunk)
                        await proc.stdin.drain()
                proc.stdin.write_eof()
                await proc.wait()
            assert proc.exit_status == 0
            figures["plain_save_ssh_load_s"] = time.monotonic() - t0
            figures["plain_bytes"] = second.size

            # 3) serve a real ONNX bundle from the bind mount, through an SSH forward
            bundle, digest = train_bundle(tmp_path)
            logs = Path(dev.root) / "logs"
            logs.mkdir(mode=0o700, exist_ok=True)
            port = 18080
            subst = {"{bundle}": str(bundle), "{digest}": digest, "{logs}": str(logs)}
            argv = [subst.get(a, a) for a in dr.serve_argv(second, port, docker)]
            log = tmp_path / "serve.log"
            started = await conn.run(
                shlex.join(["sh", "-c", '"$@" >"$0" 2>&1 </dev/null & echo $!', str(log), *argv]),
                check=True,
            )
            pid = int(str(started.stdout).strip())

            async def alive() -> bool:
                r = await conn.run(f"kill -0 {pid}", check=False)
                return r.exit_status == 0

            listener = await conn.forward_local_port("127.0.0.1", 0, "127.0.0.1", port)
            url = f"http://127.0.0.1:{listener.get_port()}"
            t0 = time.monotonic()
            try:
                await _wait_http(url, alive)
            except AssertionError:
                raise AssertionError(log.read_text(errors="replace")[-3000:]) from None
            figures["ready_s"] = time.monotonic() - t0
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                r = await client.post(
                    "/invocations",
                    json={
                        "dataframe_split": {
                            "columns": ["x1", "x2", "plan"],
                            "data": [[2.5, 0.1, "pro"], [-2.5, 0.0, "basic"]],
                        }
                    },
                )
                assert r.status_code == 200, r.text
                assert len(r.json()["predictions"]) == 2
            ran = engine.cli(
                "inspect",
                "--format",
                "{{.Image}} {{.HostConfig.NetworkMode}}",
                dr.container_name(port),
            )
            assert ran.stdout.split() == [second.id, "host"], ran.stderr

            # 4) SIGTERM to the wrapper (the supervisor's stop) stops and removes it
            t0 = time.monotonic()
            await conn.run(f"kill -TERM {pid}", check=True)
            while await alive() or engine.cli("ps", "-aq").stdout.strip():
                assert time.monotonic() - t0 < 15, engine.cli("ps", "-a").stdout
                await asyncio.sleep(0.1)
            figures["stop_s"] = time.monotonic() - t0
            listener.close()
            written = [p for p in (logs / "predlog").rglob("*") if p.is_file()]
            assert written, "the server wrote nothing into the mounted prediction logs"
        finally:
            conn.close()
    finally:
        state = engine.state
        engine.stop()
        print("\n" + json.dumps({k: round(v, 2) for k, v in figures.items()}, indent=1))
    assert not mounts_of(state)
    # no second mount of the device's namespace (it would outlive DeviceLab.stop)
    info = Path("/proc/self/mountinfo").read_text().splitlines()
    ours = [ln.split()[3] for ln in info if ln.split()[4] == f"/run/netns/{dev.ns}"]
    assert len(ours) == 1
    assert [ln.split()[4] for ln in info if ln.split()[3] == ours[0]] == [f"/run/netns/{dev.ns}"]
