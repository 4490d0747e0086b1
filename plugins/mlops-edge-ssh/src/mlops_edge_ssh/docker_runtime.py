"""The `docker` runtime of a device (fleet.toml `runtime = "docker"`): the serving runtime
as a Docker image, the model version as a bundle folder bind-mounted into it.

The image holds the base (Debian with Python, built locally: packaging/docker/base-image.sh)
and the runtime layer's `site/` (layers.runtime_layer: numpy, onnxruntime, starlette,
uvicorn, orjson ... and mlops-console), as two layers: the third-party packages, then
mlops-console alone on top, so a new mlops-console changes only the top layer. No model is
inside: the agent keeps versions/<id>/ as for the `process` runtime and the supervisor's
child is `docker run ... -v {bundle}:/bundle:ro -v {logs}/predlog:/logs IMAGE` (serve_argv), so
install, switch, rollback and gc are unchanged.

Transfer, with no registry: `docker save` of the image on the controller (cached), the
layer stacks present on the device (device_layers: chain ids of every image there), and a
delta tar (delta_tar) with the manifest, the config and only the layer tars the device
lacks. `docker load` looks a layer up by its chain id first and opens its tar only when
the device lacks it (moby image/tarexport/load.go; tested against this machine's engine),
so the delta loads as the whole image would. The delta is an ordinary object: sent with
transfer.put_objects (chunked, resumable), then `load_command(...)` on the device.

Only the controller's own CPU architecture can be built (no qemu/buildx): a device of
another architecture gets layers.PlatformError.

Which engine the device's `docker` talks to (device_docker(root)): `<root>/docker.sock`
when that socket exists on the device, else the CLI's default (DOCKER_HOST or
/var/run/docker.sock). It is decided on the device each time a command runs (a tiny
`sh -c`), so nothing about the device's engine is stored on the controller. The
controller-side variable MLOPS_EDGE_DOCKER_HOST, when set, names the engine for every
device instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform as _platform
import re
import shlex
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_console.errors import MlopsError
from mlops_edge_ssh import layers

__all__ = [
    "DockerRuntimeError",
    "EdgeImage",
    "chain_ids",
    "delta_tar",
    "device_docker",
    "device_layers",
    "edge_image",
    "load_command",
    "load_delta",
    "serve_argv",
]

FORMAT = 1  # of the image's layout and the cache entries; bump to rebuild every image
DEFAULT_BASE = "mlops-local/python:3.11"
REPO = "mlops-edge/runtime"
SITE = "/opt/mlops/site"
OWN_TOP = ("mlops_console",)  # what goes in the top layer (with its .dist-info)

Progress = Callable[[str], None]


class DockerRuntimeError(MlopsError):
    """The controller's or a device's Docker engine could not do what the runtime needs."""


@dataclass(frozen=True)
class EdgeImage:
    ref: str  # mlops-edge/runtime:<key>
    id: str  # sha256:... of the image config
    diff_ids: list[str]  # RootFS.Layers, bottom first
    save_path: Path  # `docker save` of it (a tar)
    size: int  # of save_path

    @property
    def chain_ids(self) -> list[str]:
        return chain_ids(self.diff_ids)


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """The chain id of every prefix of a layer stack (what a layer store keys layers by):
    chain(0) = diff(0), chain(i) = sha256(chain(i-1) + " " + diff(i))."""
    out: list[str] = []
    for d in diff_ids:
        out.append(
            d if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest()
        )
    return out


# ---------------------------------------------------------------------------- controller


def _docker(*args: str, check: bool = True, timeout: float = 600, **kw: Any):
    try:
        proc = subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=timeout, **kw
        )
    except FileNotFoundError:
        raise DockerRuntimeError(
            "the docker command is not installed on the controller; the docker runtime "
            "builds its image with the controller's engine (see packaging/docker/engine.sh)"
        ) from None
    if check and proc.returncode != 0:
        raise DockerRuntimeError(
            f"docker {' '.join(args[:2])} failed: {(proc.stderr or proc.stdout).strip()[-600:]}"
        )
    return proc


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlops-console" / "edge-docker"


def _host_machine() -> str:
    return layers.Platform.parse(_platform.machine(), "3.0").machine


def check_platform(platform: layers.Platform) -> None:
    """PlatformError unless `platform` has the controller's CPU architecture."""
    here = _host_machine()
    if platform.machine != here:
        raise layers.PlatformError(
            f'runtime = "docker" needs an image built for {platform.machine}, and this '
            f"controller builds images only for its own architecture ({here}): it has no "
            "emulator (qemu/binfmt) or buildx to build for another. What to do: use "
            'runtime = "process" for this device (its runtime layer is built with pip for '
            f"{platform.machine}, no emulation needed), or run the rollout from a "
            f"{platform.machine} controller."
        )


def _base_image(progress: Progress) -> str:
    ref = (
        os.environ.get("MLOPS_EDGE_DOCKER_BASE")
        or os.environ.get("MLOPS_DOCKER_BASE_IMAGE")
        or DEFAULT_BASE
    )
    if _docker("image", "inspect", ref, check=False).returncode == 0:
        return ref
    if ref != DEFAULT_BASE:
        raise DockerRuntimeError(f"the base image {ref} is not on the controller's engine")
    from mlops_console.deploy.docker import packaging_dir

    script = packaging_dir() / "base-image.sh"
    progress(f"building the base image {ref} (debootstrap, about a minute, once)")
    proc = subprocess.run(["bash", str(script), ref], capture_output=True, text=True)
    if proc.returncode != 0:
        raise DockerRuntimeError(f"could not build the base image {ref}: {proc.stderr[-600:]}")
    return ref


def _image_platform(base_id: str, cache: Path) -> layers.Platform:
    """The base image's Python and C library (what its runtime layer is built for)."""
    meta = cache / f"base-{base_id.split(':')[-1][:16]}.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        d = json.loads(meta.read_text())
        return layers.Platform(d["machine"], d["python"], d["libc"], d["glibc_version"])
    probe = (
        "import os,platform,sys;print(platform.machine());print(sys.version.split()[0]);"
        "print(' '.join(os.confstr('CS_GNU_LIBC_VERSION').split()) if hasattr(os,'confstr') else 'musl')"
    )
    cmd = ["run", "--rm", "--network", "none", "--entrypoint", "python3", base_id, "-c", probe]
    out = _docker(*cmd, timeout=120).stdout.split("\n")
    p = layers.Platform.parse(out[0], out[1], out[2])
    meta.write_text(
        json.dumps(
            {
                "machine": p.machine,
                "python": p.python,
                "libc": p.libc,
                "glibc_version": p.glibc_version,
            }
        )
    )
    return p


_DOCKERFILE = f"""\
ARG BASE
FROM ${{BASE}}
COPY deps {SITE}
COPY own {SITE}
ENV PYTHONPATH={SITE} PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
ARG KEY
LABEL mlops-edge-runtime=${{KEY}}
"""


def edge_image(
    platform: layers.Platform,
    *,
    progress: Progress | None = None,
    layer: layers.RuntimeLayer | None = None,
    cache_dir: Path | None = None,
) -> EdgeImage:
    """The serving-runtime image for a docker device of `platform`, built on the
    controller's engine once per (base image, runtime layer) and saved as a tar (cached).

    `layer`: the runtime layer to put in it (default: layers.runtime_layer for the base
    image's Python/libc on this architecture). The device's own Python does not matter:
    the image brings its own. PlatformError for a device of another architecture."""
    say = progress or (lambda _s: None)
    check_platform(platform)
    _docker("version", "--format", "{{.Server.Version}}", timeout=30)
    cache = Path(cache_dir) if cache_dir else _default_cache()
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    with layers._locked(cache / ".base.lock"):  # the devices of a wave ask at once: one build
        base = _base_image(say)
    base_id = _docker("image", "inspect", "--format", "{{.Id}}", base).stdout.strip()
    if layer is None:
        layer = layers.runtime_layer(_image_platform(base_id, cache), progress=say)
    key = hashlib.sha256(f"{FORMAT} {base_id} {layer.sha256}".encode()).hexdigest()[:16]
    ref = f"{REPO}:{key}"
    meta_path = cache / f"image-{key}.json"
    save = cache / f"image-{key}.tar"
    cached = _read_image(meta_path, save)
    if cached and _docker("image", "inspect", cached.id, check=False).returncode == 0:
        return cached
    with layers._locked(cache / f".image-{key}.lock"):
        cached = _read_image(meta_path, save)
        if cached and _docker("image", "inspect", cached.id, check=False).returncode == 0:
            return cached
        if _docker("image", "inspect", ref, check=False).returncode != 0:
            say(f"building the edge image {ref}")
            _build(ref, base, key, layer)
        inspect = json.loads(_docker("image", "inspect", ref).stdout)[0]
        image_id, diffs = inspect["Id"], list(inspect["RootFS"]["Layers"])
        say(f"saving {ref}")
        tmp = save.with_name(save.name + ".tmp")
        _docker("save", "-o", str(tmp), ref)
        os.replace(tmp, save)
        size = save.stat().st_size
        meta_path.write_text(
            json.dumps(
                {"ref": ref, "id": image_id, "diff_ids": diffs, "size": size, "layer": layer.sha256}
            )
        )
    say(f"edge image {ref}: {len(diffs)} layers, {size / 1e6:.1f} MB saved")
    return EdgeImage(ref, image_id, diffs, save, size)


def _read_image(meta_path: Path, save: Path) -> EdgeImage | None:
    try:
        d = json.loads(meta_path.read_text())
        if save.stat().st_size != d["size"]:
            return None
        return EdgeImage(d["ref"], d["id"], d["diff_ids"], save, d["size"])
    except (OSError, ValueError, KeyError):
        return None


def _build(ref: str, base: str, key: str, layer: layers.RuntimeLayer) -> None:
    with tempfile.TemporaryDirectory(prefix="mlops-edge-image-") as tmp:
        ctx = Path(tmp)
        with tarfile.open(layer.path) as tar:
            tar.extractall(ctx, filter="tar")  # mtimes 0 kept: the layers are reproducible
        (ctx / "deps").mkdir()
        (ctx / "own").mkdir()
        site = ctx / "site"
        for entry in sorted(site.iterdir()):
            top = entry.name.split("-")[0] if entry.name.endswith(".dist-info") else entry.name
            dest = "own" if top in OWN_TOP else "deps"
            os.rename(entry, ctx / dest / entry.name)
        if not any((ctx / "own").iterdir()):
            raise DockerRuntimeError(f"the runtime layer {layer.sha256[:12]} has no mlops_console")
        site.rmdir()
        (ctx / "Dockerfile").write_text(_DOCKERFILE)
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the classic builder: no buildx here
        _docker(
            "build",
            "-q",
            "--build-arg",
            f"BASE={base}",
            "--build-arg",
            f"KEY={key}",
            "-t",
            ref,
            str(ctx),
            env=env,
            timeout=1800,
        )


# ---------------------------------------------------------------------------- the delta


def _save_manifest(tar: tarfile.TarFile) -> list[dict[str, Any]]:
    f = tar.extractfile("manifest.json")
    if f is None:
        raise DockerRuntimeError("the saved image has no manifest.json")
    return json.loads(f.read())


def delta_tar(
    image: EdgeImage, present: set[str], *, cache_dir: Path | None = None
) -> tuple[Path, str, int]:
    """A tar `docker load` accepts on a device holding the layer stacks `present` (chain
    ids, as device_layers returns): the saved image's manifest, config and metadata, and
    the layer tars of only the layers the device lacks. Cached per (image, layers kept);
    with nothing present it is the saved image itself. Returns (path, sha256, size)."""
    chains = image.chain_ids
    skip = 0  # layer stacks nest: the device has the first `skip` layers, or none of them
    while skip < len(chains) and chains[skip] in present:
        skip += 1
    cache = Path(cache_dir) if cache_dir else image.save_path.parent
    name = f"delta-{image.id.split(':')[-1][:16]}-{skip}"
    out = image.save_path if skip == 0 else cache / f"{name}.tar"
    meta_path = cache / f"{name}.json"
    cached = _read_delta(meta_path, out)
    if cached:
        return cached
    # the devices of a wave ask for the same delta at once (each in a thread of its own):
    # one writes it, the others wait for it and read it
    with layers._locked(cache / f".{name}.lock"):
        cached = _read_delta(meta_path, out)
        if cached:
            return cached
        return _write_delta(image, skip, out, meta_path)


def _read_delta(meta_path: Path, out: Path) -> tuple[Path, str, int] | None:
    with contextlib.suppress(OSError, ValueError, KeyError):
        d = json.loads(meta_path.read_text())
        if out.stat().st_size == d["size"]:
            return out, d["sha256"], d["size"]
    return None


def _write_delta(image: EdgeImage, skip: int, out: Path, meta_path: Path) -> tuple[Path, str, int]:
    chains = image.chain_ids
    if skip:
        tmp = out.with_name(out.name + ".tmp")
        with tarfile.open(image.save_path) as src, tarfile.open(tmp, "w") as dst:
            manifest = _save_manifest(src)
            entry = next(
                (m for m in manifest if image.ref in (m.get("RepoTags") or [])), manifest[0]
            )
            layer_files = list(entry["Layers"])
            if len(layer_files) != len(chains):
                raise DockerRuntimeError(
                    f"{image.ref}: the saved manifest lists {len(layer_files)} layers, "
                    f"the image {len(chains)}"
                )
            dropped = set(layer_files[:skip]) - set(layer_files[skip:])
            members = src.getmembers()
            # a kept link (OCI layouts dedupe blobs with links) keeps its target
            for m in members:
                if (m.issym() or m.islnk()) and m.name not in dropped:
                    target = (
                        m.linkname
                        if m.islnk()
                        else os.path.normpath(os.path.join(os.path.dirname(m.name), m.linkname))
                    )
                    dropped.discard(target)
            for m in members:
                if m.name in dropped:
                    continue
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        os.replace(tmp, out)
    digest, size = layers._sha256(out), out.stat().st_size
    tmp_meta = meta_path.with_name(meta_path.name + ".tmp")
    tmp_meta.write_text(json.dumps({"sha256": digest, "size": size, "skipped": skip}))
    os.replace(tmp_meta, meta_path)
    return out, digest, size


# ---------------------------------------------------------------------------- the device


_PICK = (
    'S="$1/docker.sock"; shift; '
    'if [ -S "$S" ]; then exec docker -H "unix://$S" "$@"; fi; exec docker "$@"'
)


def device_docker(root: str) -> list[str]:
    """The device's docker command (arguments follow it): the engine at `<root>/docker.sock`
    when that socket exists on the device, else the CLI's default engine; or
    MLOPS_EDGE_DOCKER_HOST (set on the controller) for every device."""
    host = os.environ.get("MLOPS_EDGE_DOCKER_HOST")
    if host:
        return ["docker", "-H", host]
    return ["sh", "-c", _PICK, "docker", root]


async def _run(conn, argv: list[str], timeout: float = 600):
    return await conn.run(shlex.join(argv), check=False, timeout=timeout)


async def device_layers(conn, docker: list[str]) -> set[str]:
    """The layer stacks (chain ids) of every image on the device's engine. The first
    layer's chain id is its diff id; a layer above it counts only on the same parents,
    which is what `docker load` checks."""
    script = (
        'ids=$("$@" image ls -aq --no-trunc) || exit 3; [ -z "$ids" ] && exit 0; '
        'exec "$@" image inspect --format "{{json .RootFS.Layers}}" $ids'
    )
    res = await _run(conn, ["sh", "-c", script, "layers", *docker], timeout=120)
    if res.exit_status != 0:
        raise DockerRuntimeError(
            f"the device's docker engine did not answer: {str(res.stderr).strip()[-400:]}"
        )
    present: set[str] = set()
    for line in str(res.stdout).splitlines():
        line = line.strip()
        if line and line != "null":
            present.update(chain_ids(json.loads(line)))
    return present


def load_command(object_path: str, docker: list[str]) -> list[str]:
    """`docker load` of an object on the device (run it with shlex.join over SSH)."""
    return [*docker, "load", "-q", "-i", object_path]


async def load_delta(conn, object_path: str, docker: list[str], image: EdgeImage) -> None:
    """Load the delta sent as `object_path`, check the image is there, and remove the
    object (the engine keeps the layers; the tar is not kept twice)."""
    res = await _run(conn, load_command(object_path, docker), timeout=1800)
    if res.exit_status != 0:
        raise DockerRuntimeError(
            f"docker load on the device failed: {str(res.stderr or res.stdout).strip()[-600:]}"
        )
    got = await _run(conn, [*docker, "image", "inspect", "--format", "{{.Id}}", image.id])
    if got.exit_status != 0 or str(got.stdout).strip() != image.id:
        raise DockerRuntimeError(f"after docker load, the device has no image {image.id[:19]}")
    await _run(conn, ["rm", "-f", object_path])


_SERVE = """\
n=$1; b=$2; d=$3; l=$4; shift 4
"$@" rm -f "$n" >/dev/null 2>&1
mkdir -p "$l/predlog" || exit 1
"$@" run --rm --init --name "$n" --label mlops-edge=serve --network host \\
  --user "$(id -u):$(id -g)" --cap-drop ALL --security-opt no-new-privileges \\
  --read-only --tmpfs /tmp --stop-timeout 5 %(env)s\\
  -v "$b:/bundle:ro" -v "$l/predlog:/logs" %(image)s \\
  python3 -B -m mlops_console.serving.app /bundle --host 127.0.0.1 --port %(port)d \\
  --log-dir /logs --runtime onnx --digest "$d" &
c=$!
trap '"$@" stop -t 5 "$n" >/dev/null 2>&1' TERM INT HUP
wait $c; r=$?
while kill -0 $c 2>/dev/null; do wait $c; r=$?; done
exit $r
"""


def container_name(port: int) -> str:
    """One server per port on a device (it serves on the device's loopback)."""
    return f"mlops-edge-{port}"


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def serve_argv(
    image: EdgeImage, port: int, docker: list[str], env_names: Iterable[str] = ()
) -> list[str]:
    """The supervisor's child for a docker device (a version's serve config argv; {bundle}
    {digest} {logs} are the agent's placeholders, passed as arguments, never spliced into
    the script). A small sh that removes a leftover container of the same name, runs the
    server attached (its output in the server log), and on SIGTERM (the supervisor's
    stop) runs `docker stop`, then exits with the container's status.

    `env_names`: variables of the serve config's env (the [serving] limits) handed on to
    the container (`-e NAME`: a container sees none of its client's environment). The
    prediction log goes to {logs}/predlog, as with the process runtime, where `fleet`
    pulls it from."""
    names = sorted(set(env_names))
    bad = [n for n in names if not _ENV_NAME.fullmatch(n)]
    if bad:
        raise DockerRuntimeError(f"not a variable name for the server's environment: {bad}")
    script = _SERVE % {
        "image": shlex.quote(image.id),
        "port": int(port),
        "env": "".join(f"-e {n} " for n in names),
    }
    return [
        "sh",
        "-c",
        script,
        "mlops-edge-serve",
        container_name(port),
        "{bundle}",
        "{digest}",
        "{logs}",
        *docker,
    ]


def stop_command(port: int, docker: list[str]) -> list[str]:
    """Remove the server's container on the device (e.g. after a SIGKILLed supervisor)."""
    return [*docker, "rm", "-f", container_name(port)]
