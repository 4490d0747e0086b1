"""Full rollouts with the docker runtime (fleet.toml `runtime = "docker"`): every device has
a dockerd of its own in its network namespace (device_docker.py), the edge image is built
on the controller's engine and reaches the devices as a delta tar over SSH (no registry),
and the model bundle is bind-mounted into a `--network host` container that the device's
supervisor runs. Every assertion reads the device itself: its engine's containers, its
current symlink, its files, and what its server answers on its own loopback.

Skipped (with the reason) only where no engine can be started; never when CI=true."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
from device_docker import DeviceDocker, mounts_of, newer_layer
from test_fleet_rollout import mlops, rollout, vid
from tests.docker_engine import BASE, module_engine

from mlops_edge_ssh import docker_runtime as dr
from mlops_edge_ssh import layers


@pytest.fixture(scope="module")
def engine():
    """The controller's engine (it builds the edge image)."""
    with module_engine(BASE):
        yield


@pytest.fixture
def same_console(monkeypatch):
    """The controller's mlops-console stays as it was when the test started: its source
    tree may be edited while the test runs, and each change is a new top image layer (a
    true delta, but not the one this test is about)."""
    source = layers._own_source()
    monkeypatch.setattr(layers, "_own_source", lambda: source)


@pytest.fixture
def docker_lab(engine, device_lab_factory, same_console):
    """Two devices (gw-01 in plant-a, gw-02 in plant-b), each with its own dockerd."""
    lab = device_lab_factory(2)
    engines = [DeviceDocker(d) for d in lab.devices]
    states = [e.state for e in engines]
    try:
        for e in engines:
            e.start()
        yield lab, engines
    finally:
        for e in engines:
            e.stop()
    for state in states:
        assert not mounts_of(state), f"mounts left under {state}"


def container(engine: DeviceDocker) -> dict:
    """The device engine's one running server container, as `docker inspect` shows it."""
    ids = engine.cli("ps", "-q", "--filter", "label=mlops-edge=serve").stdout.split()
    assert len(ids) == 1, engine.cli("ps", "-a").stdout
    return json.loads(engine.cli("inspect", ids[0]).stdout)[0]


def device_serving(dev, engine: DeviceDocker, port: int = 8080) -> dict:
    """What a docker device serves, from its own state: the current link, the supervisor's
    record, the running container (its bundle mount, its environment) and the server's
    own answer on the device's loopback."""
    root = Path(dev.root)
    current = os.readlink(root / "current").split("/")[-1]
    server = json.loads((root / "run" / "server.json").read_text())
    assert Path(f"/proc/{server['pid']}").exists(), "the supervisor's child is dead"
    c = container(engine)
    mounts = {m["Destination"]: m["Source"] for m in c["Mounts"]}
    env = dict(e.split("=", 1) for e in c["Config"]["Env"])
    got = dev.run(
        "python3",
        "-c",
        f"import urllib.request as u; print(u.urlopen('http://127.0.0.1:{port}/version').read().decode())",
    )
    assert got.returncode == 0, got.stderr
    return {
        "current": current,
        "version_id": server["version_id"],
        "serve": server["serve"],
        "container": c["Id"],
        "name": c["Name"].lstrip("/"),
        "image": c["Image"],
        "network": c["HostConfig"]["NetworkMode"],
        "bundle": mounts.get("/bundle"),
        "max_rows": env.get("MLOPS_MAX_ROWS"),
        "answer": json.loads(got.stdout),
    }


@pytest.fixture
def newer_console(monkeypatch, tmp_path):
    """``activate()``: from then on the controller's runtime layer holds one more
    mlops-console module (as after an upgrade of the controller), so its edge image is a
    new one whose top layer alone differs. That image is cached under tmp_path and
    removed from the controller's engine at teardown."""
    real = layers.runtime_layer
    work = tmp_path / "newer"
    made: dict[str, layers.RuntimeLayer] = {}
    lock = threading.Lock()  # the devices' threads ask for it at once

    def runtime_layer(platform, **kw):
        with lock:
            return made.get(str(platform)) or make(platform, **kw)

    def make(platform, **kw):
        made[str(platform)] = newer_layer(real(platform, **kw), work / f"layer-{len(made)}")
        return made[str(platform)]

    def activate() -> None:
        (work / "cache").mkdir(parents=True)
        monkeypatch.setattr(layers, "runtime_layer", runtime_layer)
        monkeypatch.setattr(dr, "_default_cache", lambda: work / "cache")

    yield activate
    for meta in (work / "cache").glob("image-*.json"):
        ref = json.loads(meta.read_text())["ref"]
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)


def why(r, lab) -> str:
    """What each device of rollout `r` ended as, and the tail of its server log."""
    lines = [f"rollout {r.state}: {r.reason}"]
    for d in r.devices:
        lines.append(f"{d.device} {d.state}: {d.detail.get('reason')} {d.detail.get('gate')}")
    for dev in lab.devices:
        log = Path(dev.root) / "logs" / "server.log"
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else "(no log)"
        lines.append(f"--- {dev.name} server.log\n{tail}")
    return "\n".join(lines)


def set_max_rows(ws, n: int) -> None:
    """[serving] max_rows in mlops.toml: what the next rollout hands to the server."""
    path = ws.root / "mlops.toml"
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("max_rows")]
    at = lines.index("[serving]") + 1
    lines.insert(at, f"max_rows = {n}")
    path.write_text("\n".join(lines) + "\n")
    ws._config = None  # read again by the next rollout


def test_a_wave_asking_for_one_delta_at_once_gets_one_whole_tar(tmp_path):
    """The devices of a wave need the same delta at the same moment (each in a thread of
    its own): every one gets the same, whole tar (no engine needed: a saved image is a tar
    of layer tars and a manifest)."""
    import hashlib
    import io
    from concurrent.futures import ThreadPoolExecutor

    save = tmp_path / "image.tar"
    diff_ids, names = [], []
    with tarfile.open(save, "w") as tar:
        for i in range(3):
            blob = os.urandom(4 << 20)
            diff_ids.append("sha256:" + hashlib.sha256(blob).hexdigest())
            names.append(f"l{i}/layer.tar")
            info = tarfile.TarInfo(names[-1])
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        manifest = json.dumps([{"RepoTags": ["r:t"], "Layers": names}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    image = dr.EdgeImage("r:t", "sha256:" + "e" * 64, diff_ids, save, save.stat().st_size)
    present = set(image.chain_ids[:2])
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda _: dr.delta_tar(image, present), range(6)))
    assert len(set(got)) == 1, got
    path, sha, size = got[0]
    assert layers._sha256(path) == sha and path.stat().st_size == size
    with tarfile.open(path) as tar:
        assert sorted(tar.getnames()) == ["l2/layer.tar", "manifest.json"]


@pytest.mark.slow
def test_docker_rollout_delta_rollback_and_failed_gate(docker_lab, ws_for, newer_console):
    lab, engines = docker_lab
    ws = ws_for(lab, runtime="docker")
    dev_a, eng_a = lab.devices[0], engines[0]
    v1, v2 = vid(ws, "m/1"), vid(ws, "m/2")

    # m/1 onto empty engines: the whole image travels (one delta object) with the bundle
    set_max_rows(ws, 1111)
    r1 = rollout(ws, "m/1")
    assert r1.state == "done" and r1.counts() == {"healthy": 2}, why(r1, lab)
    first = {d.device: d.detail["transfer"] for d in r1.devices}
    for d, e in zip(lab.devices, engines, strict=True):
        s = device_serving(d, e)
        assert s["current"] == s["version_id"] == v1
        assert s["serve"] == f"versions/{v1}.serve.json"
        assert s["network"] == "host" and s["name"] == dr.container_name(8080)
        assert s["bundle"] == str(Path(d.root).resolve() / "versions" / v1)
        assert s["answer"]["model"] == "m" and s["answer"]["version"] == 1
        assert s["max_rows"] == "1111"  # the [serving] limits reach the container
        # the gate's requests (x-mlops-probe: gate), the only ones so far, were not logged
        assert not any((Path(d.root) / "logs" / "predlog").rglob("*.jsonl*")), d.name
        assert not (Path(d.root) / "runtime").exists() or not os.listdir(Path(d.root) / "runtime")
    t = first["gw-01"]
    assert t["sent_objects"] == t["objects"]  # the image delta + every bundle file
    image_bytes = t["raw_bytes"]
    assert image_bytes > 50e6, t
    images_before = eng_a.cli("image", "ls", "-q", "--no-trunc").stdout.split()
    c1 = device_serving(dev_a, eng_a)["container"]

    # m/2: the engine has every layer, so no image object is even offered; only the
    # bundle's changed files travel
    set_max_rows(ws, 2222)
    r2 = rollout(ws, "m/2", soak=0)
    assert r2.state == "done" and r2.counts() == {"healthy": 2}, why(r2, lab)
    n_bundle = first["gw-01"]["objects"] - 1
    for d in r2.devices:
        t2 = d.detail["transfer"]
        assert t2["objects"] == n_bundle, t2  # the image delta is not among them
        assert 1 <= t2["sent_objects"] <= n_bundle, t2
        assert t2["wire_bytes"] < 0.01 * first[d.device]["wire_bytes"], t2
    assert eng_a.cli("image", "ls", "-q", "--no-trunc").stdout.split() == images_before
    for d, e in zip(lab.devices, engines, strict=True):
        s = device_serving(d, e)
        assert s["current"] == s["version_id"] == v2 and s["answer"]["version"] == 2
        assert s["bundle"] == str(Path(d.root).resolve() / "versions" / v2)
        assert s["max_rows"] == "2222"
        assert not [o for o in os.listdir(Path(d.root) / "objects") if o.endswith(".tar")]
    c2 = device_serving(dev_a, eng_a)["container"]
    assert c2 != c1

    # `mlops fleet rollback`: m/1 again, in a new container, with m/1's own serve config
    # (its max_rows), and nothing sent
    objects = {d.name: sorted(os.listdir(Path(d.root) / "objects")) for d in lab.devices}
    out = mlops(ws, "fleet", "rollback", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert all(x["ok"] for x in json.loads(out.stdout)["devices"]), out.stdout
    for d, e in zip(lab.devices, engines, strict=True):
        s = device_serving(d, e)
        assert s["current"] == s["version_id"] == v1 and s["answer"]["version"] == 1
        assert s["serve"] == f"versions/{v1}.serve.json"
        assert s["bundle"] == str(Path(d.root).resolve() / "versions" / v1)
        assert s["max_rows"] == "1111", "the rollback ran m/2's serve config"
        assert s["container"] not in (c1, c2)
        assert sorted(os.listdir(Path(d.root) / "objects")) == objects[d.name]
    assert eng_a.cli("image", "ls", "-q", "--no-trunc").stdout.split() == images_before

    # m/3 fails the golden rows on gw-01: back on m/1 in its container, nothing re-sent
    r3 = rollout(ws, "m/3", waves="1,100%", max_failed="10%")
    assert r3.state == "aborted", r3.to_dict()
    failed = next(d for d in r3.devices if d.device == "gw-01")
    assert failed.state == "failed" and failed.detail["gate"]["step"] == "golden"
    assert failed.detail["rolled_back_to"] == v1
    assert failed.detail["transfer"]["objects"] == n_bundle
    for d, e in zip(lab.devices, engines, strict=True):
        s = device_serving(d, e)
        assert s["current"] == s["version_id"] == v1 and s["answer"]["version"] == 1
        assert s["max_rows"] == "1111"
    image1 = s["image"]

    # a newer console on the controller: m/2 again (its bundle is on the device), and only
    # the new top layer travels; a rollback then runs m/1 on m/1's own image again
    newer_console()
    r5 = rollout(ws, "m/2", soak=0)
    assert r5.state == "done" and r5.counts() == {"healthy": 2}, why(r5, lab)
    for d in r5.devices:
        t5 = d.detail["transfer"]
        assert t5["objects"] == n_bundle + 1 and t5["sent_objects"] == 1, t5  # the delta
        assert t5["raw_bytes"] < image_bytes / 20, t5
    for d, e in zip(lab.devices, engines, strict=True):
        s = device_serving(d, e)
        assert s["current"] == v2 and s["answer"]["version"] == 2 and s["image"] != image1
        newer = e.cli("run", "--rm", "--network", "none", s["image"], "python3", "-c",
                      "import mlops_console.edge_marker as m; print(m.NEWER)")  # fmt: skip
        assert newer.stdout.strip() == "True", newer.stderr
    out = mlops(ws, "fleet", "rollback", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    for d, e in zip(lab.devices, engines, strict=True):
        s = device_serving(d, e)
        assert s["current"] == v1 and s["answer"]["version"] == 1
        assert s["image"] == image1, "the rollback ran m/2's image"
