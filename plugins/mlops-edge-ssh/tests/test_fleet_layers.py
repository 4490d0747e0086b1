"""The runtime layers, for real: built with pip from the package index for this machine and
for aarch64, extracted, and the model server started from them with the system Python (the
interpreter the test devices run), serving a real ONNX bundle."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import fleetdata
import httpx
import pytest
import zstandard

from mlops_console.errors import MlopsError
from mlops_edge_ssh import layers
from mlops_edge_ssh.layers import (
    Platform,
    PlatformError,
    ProcessRuntime,
    RuntimeLayer,
    process_runtime,
    runtime_layer,
    server_command,
    server_env,
)

SYSTEM_PYTHON = "/usr/bin/python3"
HEAVY = ("sklearn", "pandas", "pyarrow", "joblib", "scipy")


def system_platform() -> Platform:
    out = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import platform,sys;print(platform.machine());print(sys.version)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    ldd = subprocess.run(["ldd", "--version"], capture_output=True, text=True).stdout
    return Platform.parse(out[0], out[1], ldd.splitlines()[0] if ldd else "glibc")


needs_system_python = pytest.mark.skipif(
    not Path(SYSTEM_PYTHON).exists(), reason="needs the system Python the devices run"
)


@pytest.fixture(scope="session")
def layer_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("edge-runtime")


@pytest.fixture(scope="session")
def host_layer(layer_cache) -> tuple[ProcessRuntime, float]:
    started = time.monotonic()
    runtime = process_runtime(system_platform(), cache_dir=layer_cache)
    return runtime, time.monotonic() - started


def members(layer: RuntimeLayer) -> list[str]:
    with tarfile.open(layer.path) as tar:
        return tar.getnames()


def tops(layer: RuntimeLayer) -> set[str]:
    return {n.split("/")[1] for n in members(layer) if n.count("/") >= 1}


def zstd_size(layer: RuntimeLayer) -> int:
    """What the layer weighs on the wire (zstd, level 3, as the transfer compresses)."""
    out = 0
    cctx = zstandard.ZstdCompressor(level=3)
    with layer.path.open("rb") as f:
        for chunk in iter(lambda: f.read(4 << 20), b""):
            out += len(cctx.compress(chunk))
    return out


def test_platform_parse_and_tags():
    p = Platform.parse("arm64", "Python 3.11.2", "ldd (Debian GLIBC 2.36-9+deb12u14) 2.36")
    assert p == Platform("aarch64", "3.11", "glibc", "2.36")
    tags = p.tags()
    assert tags[0] == "manylinux_2_36_aarch64" and tags[-1] == "manylinux_2_5_aarch64"
    assert "manylinux2014_aarch64" in tags and "manylinux1_aarch64" not in tags
    assert "manylinux1_x86_64" in Platform.parse("x86_64", "3.12").tags()
    assert Platform.parse("x86_64", "3.12").tags()[0] == "manylinux_2_28_x86_64"  # unknown glibc
    musl = Platform.parse("x86_64", "3.11.9", "musl libc (x86_64)\nVersion 1.2.4")
    assert musl.libc == "musl" and musl.tags() == ["musllinux_1_2_x86_64", "musllinux_1_1_x86_64"]
    with pytest.raises(PlatformError):
        Platform.parse("x86_64", "three")


def test_server_command_and_env_isolate_the_layer():
    cmd = server_command("/r/runtime/abc", "/r/bundles/m-1", 9001, "/r/logs", "d" * 64)
    assert cmd[:4] == ["python3", "-S", "-B", "-m"] and "mlops_console.serving.app" in cmd
    assert cmd[cmd.index("--runtime") + 1] == "onnx" and cmd[cmd.index("--port") + 1] == "9001"
    env = server_env("/r/runtime/abc")
    assert env["PYTHONPATH"] == "/r/runtime/abc/site"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONNOUSERSITE"] == "1"
    both = server_env("/r/runtime/console", "/r/runtime/deps")
    assert both["PYTHONPATH"] == "/r/runtime/console/site:/r/runtime/deps/site"


@pytest.mark.slow
@needs_system_python
def test_host_layers_are_deterministic_cached_and_lean(host_layer, tmp_path):
    runtime, seconds = host_layer
    deps, console = runtime.layers
    print(
        f"\nfirst build for {deps.platform}: {seconds:.1f} s; dependencies "
        f"{deps.size / 1e6:.1f} MB, console {console.size / 1e6:.2f} MB "
        f"({zstd_size(console) / 1e6:.2f} MB zstd)"
    )
    for layer in runtime.layers:
        assert layer.path.stat().st_size == layer.size
        names = members(layer)
        assert names[0] == "site" and all(n == "site" or n.startswith("site/") for n in names)
        assert names == sorted(names, key=lambda n: n.split("/"))
        assert not any(n.endswith((".pyc", ".pyo")) or "__pycache__" in n for n in names)
        with tarfile.open(layer.path) as tar:
            infos = tar.getmembers()
        assert all(i.mtime == 0 and i.uid == 0 and i.gid == 0 for i in infos)
        assert layer.path.parent.stat().st_mode & 0o777 == 0o700
    assert {"numpy", "onnxruntime", "starlette", "uvicorn", "orjson"} <= set(deps.packages)
    assert "mlops-console" not in deps.packages and "mlops_console" not in tops(deps)
    assert not {"scikit-learn", "pandas", "pyarrow", "joblib", "scipy"} & set(deps.packages)
    assert {"numpy", "onnxruntime"} <= tops(deps)
    assert not set(HEAVY) & tops(deps)
    assert "bin" not in tops(deps)  # console scripts name the controller's Python
    # the console layer is the console's own files only: small on the wire
    assert set(console.packages) == {"mlops-console"}
    assert {t.split("-")[0] for t in tops(console)} == {"mlops_console"}
    assert console.size < 0.05 * deps.size and zstd_size(console) < 1.5e6

    started = time.monotonic()
    again = process_runtime(deps.platform, cache_dir=deps.path.parents[1])
    cached = time.monotonic() - started
    print(f"cached: {cached:.3f} s")
    assert cached < 2 and again == runtime

    other = process_runtime(deps.platform, cache_dir=tmp_path / "elsewhere")
    assert [x.sha256 for x in other.layers] == [x.sha256 for x in runtime.layers]
    assert other.deps.path != deps.path
    assert not [p for p in (tmp_path / "elsewhere").iterdir() if p.name.startswith(".build-")]

    # the docker runtime's single layer: both layers' files in one site/
    whole = runtime_layer(deps.platform, cache_dir=deps.path.parents[1])
    assert whole.sha256 not in (deps.sha256, console.sha256)
    assert members(whole) == sorted(
        set(members(deps)) | set(members(console)), key=lambda n: n.split("/")
    )
    assert whole.packages == {**deps.packages, **console.packages}


@pytest.mark.slow
@needs_system_python
def test_a_changed_console_source_changes_only_the_small_console_layer(
    host_layer, layer_cache, tmp_path, monkeypatch
):
    runtime, _ = host_layer
    real = layers._own_source()
    assert real.tree is not None, "needs mlops-console installed from its source tree"
    tree = tmp_path / "console"  # the same source, and one module more (a newer console)
    keep = shutil.ignore_patterns("__pycache__", "*.pyc")
    for top in ("src/mlops_console", "sample_data", "packaging/docker"):
        shutil.copytree(real.tree / top, tree / top, ignore=keep)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (real.tree / name).is_file():
            shutil.copy(real.tree / name, tree / name)
    (tree / "src/mlops_console/edge_marker.py").write_text("NEWER = True\n")
    monkeypatch.setattr(layers, "_own_source", lambda: layers._Source(real.key + "-newer", tree))

    started = time.monotonic()
    newer = process_runtime(runtime.deps.platform, cache_dir=layer_cache)
    print(
        f"\nnewer console: {time.monotonic() - started:.1f} s, {newer.console.size / 1e6:.2f} MB"
        f" ({zstd_size(newer.console) / 1e6:.2f} MB zstd)"
    )
    assert newer.deps == runtime.deps  # the same 130 MB layer, not rebuilt
    assert newer.console.sha256 != runtime.console.sha256
    assert "site/mlops_console/edge_marker.py" in members(newer.console)
    assert "site/mlops_console/edge_marker.py" not in members(runtime.console)
    assert zstd_size(newer.console) < 1.5e6


def train_bundle(root: Path) -> tuple[Path, str]:
    """A real registered model with an ONNX file, exported as a bundle folder."""
    from mlops_console.registry.bundle import export_bundle
    from mlops_console.workspace import Workspace

    fleetdata.train_workspace(
        root / "ws",
        {"d": fleetdata.frame(0, 400)},
        [("p", "m", "d", 7, fleetdata.LR, fleetdata.lr(1.0))],
    )
    with Workspace.open(root / "ws") as ws:
        mv = ws.models.resolve("m/1")
        folder = export_bundle(ws.artifacts, mv.artifact_hash, root / "bundle", read_only=True)
    assert "model.onnx" in json.loads((folder / "bundle.json").read_text())["files"]
    return folder, mv.artifact_hash


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@needs_system_python
def test_server_runs_from_the_extracted_layers_on_the_system_python(host_layer, tmp_path):
    runtime, _ = host_layer
    deps_dir, console_dir = (tmp_path / "root" / "runtime" / x.sha256 for x in runtime.layers)
    for layer, layer_dir in zip(runtime.layers, (deps_dir, console_dir), strict=True):
        layer_dir.mkdir(parents=True)
        with tarfile.open(layer.path) as tar:
            tar.extractall(layer_dir, filter="data")
        for path in [layer_dir, *layer_dir.rglob("*")]:  # a device keeps its layers read-only
            if not path.is_symlink():
                path.chmod(path.stat().st_mode & ~0o222)
    layer_dir = deps_dir
    bundle, digest = train_bundle(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    cmd = server_command(str(layer_dir), str(bundle), port, str(logs), digest, SYSTEM_PYTHON)
    # a device's minimal environment; nothing of the controller's venv
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    env.update(server_env(str(console_dir), str(deps_dir)))
    err = tmp_path / "server.err"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, err.read_text()
            try:
                if httpx.get(url + "/ping", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.2)
        body = {
            "dataframe_split": {
                "columns": ["x1", "x2", "plan"],
                "data": [[2.5, 0.1, "pro"], [-2.5, 0.0, "basic"]],
            }
        }
        r = httpx.post(url + "/invocations", json=body, timeout=30)
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert len(preds) == 2, preds
        r = httpx.post(
            url + "/invocations",
            json={"inputs": {"x1": [0.3], "x2": [1.0], "plan": ["max"]}},
            timeout=30,
        )
        assert r.status_code == 200 and len(r.json()["predictions"]) == 1, r.text

        # what the server process really loaded: the layer's copies, nothing heavy
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert str(deps_dir / "site" / "onnxruntime") in maps
        assert "site-packages" not in maps and "dist-packages" not in maps
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert not list(deps_dir.rglob("__pycache__")) and not list(console_dir.rglob("__pycache__"))

    # no heavy package is imported by the server's modules on the ONNX path, and the
    # console comes from its own layer
    probe = (
        "import sys, mlops_console.serving.app as a, mlops_console.serving.model as m;"
        f"print(sorted(k for k in {HEAVY!r} if k in sys.modules)); print(a.__file__)"
    )
    out = subprocess.run(
        [SYSTEM_PYTHON, "-S", "-B", "-c", probe], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    heavy, app = out.stdout.split("\n")[:2]
    assert heavy == "[]" and app.startswith(str(console_dir / "site" / "mlops_console")), out


def elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF"
    return int.from_bytes(data[18:20], "little" if data[5] == 1 else "big")


@pytest.mark.slow
def test_aarch64_layer_holds_aarch64_binaries(layer_cache):
    started = time.monotonic()
    steps: list[str] = []
    runtime = process_runtime(
        Platform.parse("aarch64", "3.11", "glibc 2.36"),
        cache_dir=layer_cache,
        progress=steps.append,
    )
    layer = runtime.deps
    print(f"\naarch64 build: {time.monotonic() - started:.1f} s, {layer.size / 1e6:.1f} MB")
    assert any("downloading wheels for aarch64/3.11" in s for s in steps)
    assert {"numpy", "onnxruntime"} <= set(layer.packages)
    assert set(runtime.console.packages) == {"mlops-console"}
    with tarfile.open(layer.path) as tar:
        sos = [
            m
            for m in tar.getmembers()
            if m.name.startswith("site/onnxruntime/capi/") and m.name.endswith(".so")
        ]
        assert sos
        for m in sos:
            f = tar.extractfile(m)
            assert f is not None
            assert elf_machine(f.read(64)) == 183, m.name  # EM_AARCH64


@pytest.mark.slow
def test_platform_without_onnxruntime_builds_says_so(layer_cache):
    with pytest.raises(PlatformError) as info:
        runtime_layer(Platform.parse("armv7l", "3.9", "glibc 2.31"), cache_dir=layer_cache)
    text = str(info.value)
    print("\n" + text)
    assert "onnxruntime" in text and "armv7l / Python 3.9" in text
    assert "another Python" in text
    assert "Traceback" not in text and "pip._internal" not in text
    assert not [p for p in layer_cache.iterdir() if p.name.startswith((".build-", ".wheels-"))]


def test_no_network_says_so_and_names_the_offline_way(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # no local indexes or find-links
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("MLOPS_EDGE_WHEELHOUSE", raising=False)
    with pytest.raises(MlopsError) as info:
        runtime_layer(Platform.parse("aarch64", "3.11", "glibc 2.36"), cache_dir=tmp_path)
    assert not isinstance(info.value, PlatformError)
    text = str(info.value)
    assert "could not be reached" in text and "MLOPS_EDGE_WHEELHOUSE" in text
    assert "Traceback" not in text
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
