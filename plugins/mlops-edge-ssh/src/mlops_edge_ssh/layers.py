"""The runtime layers: everything the model server needs on a device, as relocatable,
content-addressed tars, built on the controller for the device's platform.

The process runtime is two layers, each a `site/` folder to put on PYTHONPATH:
- the dependencies layer (about 130 MB): numpy, onnxruntime, starlette, uvicorn, orjson
  (httptools when it has a build for the platform) and their dependencies, built once per
  (platform, pinned versions), whatever mlops-console's source is;
- the console layer (about 1 MB): this mlops-console (without its dependencies), built once
  per (platform, mlops-console source).
Both are cached, sent once to each device and reused by every model version: a new console
sends only its small layer. The versions are the controller's own, so an ONNX model scores
there as it does here. Nothing of scikit-learn, pandas, pyarrow or joblib: the server loads
none of them for an ONNX bundle.

A device extracts each tar into `<root>/runtime/<sha256>/` and runs `server_command(...)`
with `server_env(console_dir, deps_dir)` (the layers read-only, no bytecode written into
them, the device's own site-packages never on the path). `runtime_layer` is both layers as
one tar, for the docker runtime's image.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from mlops_console.errors import MlopsError

__all__ = [
    "ROOTS",
    "Platform",
    "PlatformError",
    "ProcessRuntime",
    "RuntimeLayer",
    "process_runtime",
    "runtime_layer",
    "server_command",
    "server_env",
]

# What the server imports for an ONNX bundle; their dependencies come along.
ROOTS = ("numpy", "onnxruntime", "starlette", "uvicorn", "orjson", "h11")
# Wanted when the platform has a build of them, skipped otherwise (uvicorn falls back to h11).
OPTIONAL = ("httptools",)
OWN = "mlops-console"
FORMAT = 2  # of the cache entries and the layers' layout; bump to rebuild every layer
DEFAULT_GLIBC = "2.28"  # what a layer targets when the device's glibc is not known

Progress = Callable[[str], None]

_MACHINES = {
    "amd64": "x86_64",
    "x64": "x86_64",
    "arm64": "aarch64",
    "armv8l": "armv7l",
    "i386": "i686",
    "i486": "i686",
    "i586": "i686",
}
_MANYLINUX_LEGACY = {(2, 5): "manylinux1", (2, 12): "manylinux2010", (2, 17): "manylinux2014"}


class PlatformError(MlopsError):
    """No runtime layer can be built for the device's platform; says which package has no
    build for it and what to do."""


@dataclass(frozen=True)
class Platform:
    machine: str  # `uname -m` of the device: x86_64, aarch64, armv7l ...
    python: str  # major.minor of the device's python3: "3.11"
    libc: str = "glibc"  # "glibc" or "musl"
    glibc_version: str | None = None  # "2.36" when known

    @classmethod
    def parse(cls, uname_m: str, python_version: str, libc: str = "glibc") -> Platform:
        """From what a device reports: `uname -m`, `python3 --version` (or "3.11.2"), and
        `ldd --version` (its first lines) or just "glibc", "glibc 2.36", "musl"."""
        machine = uname_m.strip().lower()
        machine = _MACHINES.get(machine, machine)
        if not re.fullmatch(r"[a-z0-9_]+", machine):
            raise PlatformError(f"{uname_m!r} is not a machine name as `uname -m` prints it.")
        m = re.search(r"(\d+)\.(\d+)", python_version)
        if not m:
            raise PlatformError(
                f"{python_version!r} is not a Python version (expected what `python3 --version` "
                "prints, e.g. 'Python 3.11.2')."
            )
        python = f"{m.group(1)}.{m.group(2)}"
        text = libc.strip().lower()
        if "musl" in text:
            return cls(machine, python, "musl", None)
        if text and not ("glibc" in text or "gnu" in text or re.fullmatch(r"[\d.\s]+", text)):
            raise PlatformError(
                f"{libc!r} names no C library this knows: a layer needs glibc or musl."
            )
        versions = re.findall(r"\b2\.(\d+)\b", text)
        glibc = f"2.{versions[-1]}" if versions else None
        return cls(machine, python, "glibc", glibc)

    def __str__(self) -> str:
        libc = self.libc + (f" {self.glibc_version}" if self.glibc_version else "")
        return f"{self.machine} / Python {self.python} ({libc})"

    @property
    def slug(self) -> str:
        libc = self.libc + (self.glibc_version or "")
        return f"{self.machine}-py{self.python}-{libc}"

    def tags(self) -> list[str]:
        """The wheel platform tags that run on this platform, most specific first."""
        m = self.machine
        if self.libc == "musl":
            return [f"musllinux_1_2_{m}", f"musllinux_1_1_{m}"]
        major, minor = (int(x) for x in (self.glibc_version or DEFAULT_GLIBC).split("."))
        tags = []
        for n in range(minor, 4, -1):
            tags.append(f"manylinux_{major}_{n}_{m}")
            legacy = _MANYLINUX_LEGACY.get((major, n))
            if legacy and (legacy == "manylinux2014" or m in ("x86_64", "i686")):
                tags.append(f"{legacy}_{m}")
        return tags


@dataclass(frozen=True)
class RuntimeLayer:
    path: Path  # an uncompressed tar whose single top folder is "site/"
    sha256: str  # of the tar
    size: int
    platform: Platform
    packages: dict[str, str] = field(default_factory=dict)  # name -> version inside


@dataclass(frozen=True)
class ProcessRuntime:
    """The layers the `process` runtime's server runs from, in the order a device is told
    them: the dependencies first, then the console (its `site/` first on the path)."""

    deps: RuntimeLayer
    console: RuntimeLayer

    @property
    def layers(self) -> tuple[RuntimeLayer, RuntimeLayer]:
        return (self.deps, self.console)

    @property
    def size(self) -> int:
        return self.deps.size + self.console.size


def server_command(
    layer_dir: str,
    bundle_dir: str,
    port: int,
    log_dir: str,
    digest: str,
    python: str = "python3",
) -> list[str]:
    """How a device starts the server from the layers extracted into `layer_dir` (the
    dependencies') and beside it. Run it with `server_env(console_dir, layer_dir)`: -S keeps
    the device's site-packages (system and user) off the path, so only the layers' `site/`
    and the standard library are imported; -B writes no bytecode into the layers."""
    return [
        python,
        "-S",
        "-B",
        "-m",
        "mlops_console.serving.app",
        bundle_dir,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-dir",
        log_dir,
        "--runtime",
        "onnx",
        "--digest",
        digest,
    ]


def server_env(*layer_dirs: str) -> dict[str, str]:
    """The environment variables `server_command` runs with, the `site/` of each of
    `layer_dirs` on the path in that order (the console's layer first, so its modules win).
    Set them over a minimal environment: PATH, HOME, LANG; not the login shell's PYTHON*
    variables."""
    if not layer_dirs:
        raise ValueError("server_env needs the folder of at least one layer")
    return {
        "PYTHONPATH": ":".join(str(Path(d) / "site") for d in layer_dirs),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONSAFEPATH": "1",  # the working folder is never on the path
        "PYTHONUNBUFFERED": "1",
    }


# ---------------------------------------------------------------------------- building


def process_runtime(
    platform: Platform,
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    wheelhouse: Path | None = None,
) -> ProcessRuntime:
    """The dependencies and console layers for `platform`, each built once and cached.

    `cache_dir`: where layers live (default `$XDG_CACHE_HOME/mlops-console/edge-runtime`).
    `wheelhouse` (or MLOPS_EDGE_WHEELHOUSE): a folder of wheels to build from offline (the
    platform's wheels, and hatchling, the build backend of mlops-console from source);
    without it the first build for a platform downloads its wheels from the package index.
    Raises PlatformError when a package the server needs has no build for the platform.
    """
    say = progress or (lambda _step: None)
    root = Path(cache_dir) if cache_dir else _default_cache()
    _private_dir(root)
    house = wheelhouse or (
        Path(os.environ["MLOPS_EDGE_WHEELHOUSE"])
        if os.environ.get("MLOPS_EDGE_WHEELHOUSE")
        else None
    )
    pins = _pins(platform)
    base = {"format": FORMAT, "platform": asdict(platform), "tags": platform.tags()}
    deps = _cached(
        root,
        "deps",
        platform,
        {**base, "pins": pins},
        lambda tmp: _build_deps(platform, pins, root, tmp, house, say),
        say,
    )
    source = _own_source()
    console = _cached(
        root,
        "console",
        platform,
        {**base, "own": source.key},
        lambda tmp: _build_console(platform, source, root, tmp, house, say),
        say,
    )
    return ProcessRuntime(deps, console)


def runtime_layer(
    platform: Platform,
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    wheelhouse: Path | None = None,
) -> RuntimeLayer:
    """The whole runtime for `platform` as one layer (the dependencies and the console
    layer's files in one `site/`), built once from `process_runtime`'s layers and cached:
    what the docker runtime puts in its image. Same arguments and errors."""
    say = progress or (lambda _step: None)
    parts = process_runtime(platform, cache_dir=cache_dir, progress=progress, wheelhouse=wheelhouse)
    root = Path(cache_dir) if cache_dir else _default_cache()
    key = {"format": FORMAT, "layers": [layer.sha256 for layer in parts.layers]}
    return _cached(root, "layer", platform, key, lambda tmp: _merge(parts, tmp), say)


def _cached(
    root: Path,
    kind: str,
    platform: Platform,
    key_doc: dict,
    build: Callable[[Path], _Built],
    say: Progress,
) -> RuntimeLayer:
    """The layer cached under `kind`-`platform.slug`-hash(`key_doc`), else `build(tmp)`
    (it leaves layer.tar and layer.json in tmp) renamed into place, under a lock."""
    key = hashlib.sha256(json.dumps(key_doc, sort_keys=True).encode()).hexdigest()[:20]
    final = root / f"{kind}-{platform.slug}-{key}"
    cached = _read(final, platform)
    if cached:
        return cached
    with _locked(root / f".{kind}-{key}.lock"):
        cached = _read(final, platform)  # built by another process while we waited
        if cached:
            return cached
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=root))
        try:
            layer = build(tmp)
            tmp.chmod(0o700)
            shutil.rmtree(final, ignore_errors=True)  # a damaged entry _read refused
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    say(f"{kind} layer for {platform}: {layer.size / 1e6:.1f} MB, sha256 {layer.sha256[:12]}")
    return RuntimeLayer(
        final / "layer.tar", layer.sha256, layer.size, platform, dict(layer.packages)
    )


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlops-console" / "edge-runtime"


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        path.chmod(0o700)


@contextlib.contextmanager
def _locked(path: Path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(folder: Path, platform: Platform) -> RuntimeLayer | None:
    try:
        meta = json.loads((folder / "layer.json").read_text())
        tar = folder / "layer.tar"
        if tar.stat().st_size != meta["size"]:
            return None
        return RuntimeLayer(tar, meta["sha256"], meta["size"], platform, meta["packages"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- pins: the controller's versions of the server's packages and their dependencies


def _marker_env(platform: Platform) -> dict[str, str]:
    return {
        "python_version": platform.python,
        "python_full_version": platform.python + ".0",
        "implementation_name": "cpython",
        "implementation_version": platform.python + ".0",
        "platform_python_implementation": "CPython",
        "platform_machine": platform.machine,
        "platform_system": "Linux",
        "sys_platform": "linux",
        "os_name": "posix",
        "platform_release": "",
        "platform_version": "",
        "extra": "",
    }


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(platform: Platform) -> dict[str, str]:
    """name -> the controller's installed version, for every package the server's roots
    need on `platform` (a dependency the controller lacks, e.g. a backport for an older
    Python, maps to "" and is left to pip)."""
    from packaging.requirements import Requirement

    env = _marker_env(platform)
    pins: dict[str, str] = {}
    todo = [*ROOTS, *OPTIONAL]
    while todo:
        name = _canon(todo.pop())
        if name in pins:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if name in ROOTS:
                raise MlopsError(
                    f"{name} is not installed here; the controller pins the devices' runtime "
                    f"to its own versions. Install it (pip install {name}) and try again."
                ) from None
            pins[name] = ""
            continue
        pins[name] = dist.version
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(req.name)
    return dict(sorted(pins.items()))


def _requirements(pins: dict[str, str], skip: Iterable[str] = ()) -> list[str]:
    skipped = {_canon(s) for s in skip}
    return [f"{n}=={v}" if v else n for n, v in pins.items() if n not in skipped]


# --- our own package, as a wheel built from its source (once per source version)


@dataclass(frozen=True)
class _Source:
    key: str  # version + hash of the source tree, or the released version
    tree: Path | None  # the source tree with pyproject.toml, when there is one


def _own_source() -> _Source:
    import mlops_console

    version = metadata.version(OWN)
    tree = Path(mlops_console.__file__).resolve().parents[2]
    if not (tree / "pyproject.toml").is_file():
        return _Source(f"{version}-release", None)
    digest = hashlib.sha256()
    for top in ("pyproject.toml", "src/mlops_console", "sample_data", "packaging/docker"):
        base = tree / top
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
                continue
            digest.update(str(path.relative_to(tree)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return _Source(f"{version}-{digest.hexdigest()[:16]}", tree)


def _own_wheel(source: _Source, root: Path, house: Path | None, say: Progress) -> Path:
    folder = root / f"own-{source.key}"
    found = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if found:
        return found[0]
    shutil.rmtree(folder, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".own-", dir=root))
    try:
        if source.tree is not None:
            say(f"building the {OWN} wheel from {source.tree}")
            # offline, the build backend (hatchling) comes from the wheelhouse too
            cmd = [*_pip(), "wheel", "--no-deps", "--no-cache-dir", "-w", str(tmp)]
            cmd += [*_index(house), str(source.tree)]
        else:
            say(f"downloading the {OWN} {metadata.version(OWN)} wheel")
            cmd = [*_pip(), "download", "--no-deps", "--only-binary=:all:", "-d", str(tmp)]
            cmd += [*_index(house), f"{OWN}=={metadata.version(OWN)}"]
        proc = _run(cmd)
        if proc.returncode != 0:
            raise MlopsError(
                f"Could not build the {OWN} wheel for the runtime layer: {_tail(proc.stderr)}"
                + _offline_hint(proc.stderr, house)
            )
        with contextlib.suppress(OSError):
            os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(folder.glob("*.whl"))[0]


# --- pip


def _pip() -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_REQUIRE_VIRTUALENV",)}
    env["PIP_NO_WARN_SCRIPT_LOCATION"] = "1"
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def _index(house: Path | None) -> list[str]:
    return ["--no-index", "--find-links", str(house)] if house else []


def _target(platform: Platform) -> list[str]:
    out = ["--only-binary=:all:", "--implementation", "cp", "--python-version", platform.python]
    for tag in platform.tags():
        out += ["--platform", tag]
    return out


_NETWORK = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ProxyError",
    "Max retries exceeded",
    "Connection refused",
    "SSLError",
)
_NO_BUILD = re.compile(
    r"(?:Could not find a version that satisfies the requirement|No matching distribution found for) ([A-Za-z0-9_.\-\[\]]+)"
)


def _is_network(stderr: str) -> bool:
    return any(s in stderr for s in _NETWORK)


def _offline_hint(stderr: str, house: Path | None, offline: bool = False) -> str:
    if house is None and (offline or _is_network(stderr)):
        return (
            " The package index could not be reached: the first build of a platform's layer "
            "downloads its wheels. Connect this machine to the index, or give a folder of "
            "wheels to build from offline (MLOPS_EDGE_WHEELHOUSE=/path, or wheelhouse=)."
        )
    if house is not None:
        return f" (built offline from the wheels in {house})"
    return ""


def _tail(text: str, n: int = 600) -> str:
    lines = [
        ln.strip()
        for ln in text.strip().splitlines()
        if ln.strip() and not ln.lstrip().startswith(("WARNING", "Traceback", "File "))
    ]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (" ".join(errors or lines[-3:]))[-n:] or "pip failed without a message"


def _download(
    platform: Platform, pins: dict[str, str], dest: Path, house: Path | None, say: Progress
) -> list[str]:
    """Download the wheels for `platform` into `dest`; returns the optional packages left
    out for lack of a build. PlatformError names whatever else has none."""
    say(f"downloading wheels for {platform.machine}/{platform.python}")
    skipped: list[str] = []
    while True:
        reqs = _requirements(pins, skipped)
        proc = _run(
            [*_pip(), "download", *_target(platform), *_index(house), "-d", str(dest), *reqs]
        )
        if proc.returncode == 0:
            return skipped
        if house is None and (_is_network(proc.stderr) or not _index_answers(pins, house)):
            raise MlopsError(
                f"Could not download the wheels of the runtime layer for {platform} "
                f"({_tail(proc.stderr)})." + _offline_hint(proc.stderr, house, offline=True)
            )
        missing = _missing(platform, pins, skipped, house)
        optional = [n for n in missing if n in OPTIONAL]
        required = [n for n in missing if n not in OPTIONAL]
        if required:
            raise PlatformError(_no_build_message(platform, pins, required, house))
        if not optional:  # not a missing build: say what pip said
            raise MlopsError(
                f"Could not gather the wheels of the runtime layer for {platform}: "
                f"{_tail(proc.stderr)}" + _offline_hint(proc.stderr, house)
            )
        say(f"no build of {', '.join(optional)} for {platform}: the layer goes without")
        skipped += optional


def _index_answers(pins: dict[str, str], house: Path | None) -> bool:
    """Whether the index serves a pure-Python wheel the layer needs (h11, for any
    platform): when it does not, pip's "no matching distribution" means no network."""
    with tempfile.TemporaryDirectory() as tmp:
        req = f"h11=={pins['h11']}" if pins.get("h11") else "h11"
        cmd = [*_pip(), "download", "--no-deps", "--only-binary=:all:", *_index(house)]
        return _run([*cmd, "-d", tmp, req]).returncode == 0


def _has_build(platform: Platform, requirement: str, house: Path | None) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        proc = _run(
            [
                *_pip(),
                "download",
                "--no-deps",
                *_target(platform),
                *_index(house),
                "-d",
                tmp,
                requirement,
            ]
        )
    return proc.returncode == 0


def _missing(
    platform: Platform, pins: dict[str, str], skipped: list[str], house: Path | None
) -> list[str]:
    """The pinned packages with no build for `platform`, each checked on its own: the
    server's own packages first, their dependencies only when those all have builds."""
    names = [n for n in pins if n not in skipped]
    first = [n for n in names if n in ROOTS or n in OPTIONAL]
    missing: list[str] = []
    for group in (first, [n for n in names if n not in first]):
        reqs = _requirements({n: pins[n] for n in group})
        with ThreadPoolExecutor(4) as pool:
            found = list(pool.map(lambda r: _has_build(platform, r, house), reqs))
        missing += [n for n, ok in zip(group, found, strict=True) if not ok]
        if any(n not in OPTIONAL for n in missing):
            break
    return missing


def _newest(platform: Platform, name: str, house: Path | None) -> str | None:
    """The newest version of `name` with a build for `platform`, if any."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = _run(
            [*_pip(), "download", "--no-deps", *_target(platform), *_index(house), "-d", tmp, name]
        )
        if proc.returncode != 0:
            return None
        for whl in Path(tmp).glob("*.whl"):
            return whl.name.split("-")[1]
    return None


def _no_build_message(
    platform: Platform, pins: dict[str, str], names: list[str], house: Path | None
) -> str:
    with ThreadPoolExecutor(4) as pool:
        newest = dict(
            zip(names, pool.map(lambda n: _newest(platform, n, house), names), strict=True)
        )
    where = f"the wheels in {house}" if house else "the package index"
    # the server's own packages first, then their dependencies
    order = sorted(names, key=lambda n: (n not in ROOTS, n))
    none = [n for n in order if not newest[n]]
    older = [n for n in order if newest[n]]
    pinned = lambda n: f"{n} {pins[n]}" if pins[n] else n  # noqa: E731
    if none:
        head = (
            f"no build of {', '.join(none)} for {platform}: {where} has no version of "
            f"{'it' if len(none) == 1 else 'them'} for this platform"
        )
        if older:
            head += f"; nor of the controller's {', '.join(pinned(n) for n in older)}"
    else:
        head = (
            f"no build of {', '.join(pinned(n) for n in older)} (the controller's "
            f"version{'s' if len(older) > 1 else ''}, which the layer pins so models score as "
            f"they do on the controller) for {platform}; {where} has only older ones "
            f"({', '.join(f'{n} {newest[n]}' for n in older)})"
        )
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    other_python = (
        f"run the server with another Python on the device (Python {here}, the controller's: "
        "install it there and name it as the device's python)"
    )
    other_platform = (
        "deploy to devices of a platform these packages are built for (onnxruntime publishes "
        "Linux builds for x86_64 and aarch64 with glibc 2.28 or newer; none for musl)"
    )
    if not none:
        todo = other_python
    elif platform.python != here:
        todo = f"{other_platform}, and {other_python}"
    else:
        todo = other_platform
    return f"{head}. What to do: {todo}."


# --- assembling the layer


@dataclass(frozen=True)
class _Built:
    sha256: str
    size: int
    packages: dict[str, str]


def _build_deps(
    platform: Platform,
    pins: dict[str, str],
    root: Path,
    tmp: Path,
    house: Path | None,
    say: Progress,
) -> _Built:
    started = time.monotonic()
    wheels_key = hashlib.sha256(
        json.dumps([asdict(platform), platform.tags(), pins, str(house)]).encode()
    ).hexdigest()[:20]
    wheels = root / f"wheels-{platform.slug}-{wheels_key}"
    skipped_file = wheels / "skipped.json"
    if skipped_file.is_file():
        skipped = json.loads(skipped_file.read_text())
    else:
        dl = Path(tempfile.mkdtemp(prefix=".wheels-", dir=root))
        try:
            skipped = _download(platform, pins, dl, house, say)
            (dl / "skipped.json").write_text(json.dumps(skipped))
            shutil.rmtree(wheels, ignore_errors=True)
            os.rename(dl, wheels)
        finally:
            shutil.rmtree(dl, ignore_errors=True)
    say(f"installing the runtime's dependencies for {platform.machine}/{platform.python}")
    site = tmp / "site"
    proc = _run(
        [
            *_pip(),
            *_install(platform, site),
            "--find-links",
            str(wheels),
            *_requirements(pins, skipped),
        ]
    )
    if proc.returncode != 0:
        raise MlopsError(
            f"Could not install the runtime layer for {platform}: {_tail(proc.stderr)}"
        )
    return _finish(platform, site, tmp, started, say, skipped=skipped)


def _build_console(
    platform: Platform,
    source: _Source,
    root: Path,
    tmp: Path,
    house: Path | None,
    say: Progress,
) -> _Built:
    started = time.monotonic()
    own = _own_wheel(source, root, house, say)
    say(f"installing {OWN} for {platform.machine}/{platform.python}")
    site = tmp / "site"
    proc = _run(
        [
            *_pip(),
            *_install(platform, site),
            "--no-deps",
            "--find-links",
            str(own.parent),
            f"{OWN}=={metadata.version(OWN)}",
        ]
    )
    if proc.returncode != 0:
        raise MlopsError(f"Could not install the {OWN} layer for {platform}: {_tail(proc.stderr)}")
    return _finish(platform, site, tmp, started, say, own=source.key)


def _merge(parts: ProcessRuntime, tmp: Path) -> _Built:
    """One layer holding the files of all of `parts` (they share no file)."""
    started = time.monotonic()
    site = tmp / "site"
    for layer in parts.layers:
        with tarfile.open(layer.path) as tar:
            tar.extractall(tmp, filter="tar")  # our own tars: checked when they were packed
    return _finish(
        parts.deps.platform,
        site,
        tmp,
        started,
        lambda _s: None,
        layers=[layer.sha256 for layer in parts.layers],
    )


def _install(platform: Platform, site: Path) -> list[str]:
    out = ["install", "--no-index", "--no-compile", "--no-warn-script-location"]
    return [*out, "--target", str(site), *_target(platform)]


def _finish(
    platform: Platform, site: Path, tmp: Path, started: float, say: Progress, **about: object
) -> _Built:
    """Prune `site`, pack it as tmp/layer.tar and describe it in tmp/layer.json."""
    _prune(site)
    packages = _installed(site)
    say(f"packing the layer for {platform.machine}/{platform.python}")
    tar = tmp / "layer.tar"
    _pack(site, tar)
    shutil.rmtree(site)
    digest = _sha256(tar)
    built = _Built(digest, tar.stat().st_size, packages)
    (tmp / "layer.json").write_text(
        json.dumps(
            {
                "format": FORMAT,
                "sha256": digest,
                "size": built.size,
                "platform": asdict(platform),
                "packages": packages,
                **about,
                "seconds": round(time.monotonic() - started, 1),
            },
            indent=1,
            sort_keys=True,
        )
    )
    return built


# Never imported by the server; about 10 MB a device need not receive.
_UNUSED = (
    "onnxruntime/transformers",
    "onnxruntime/quantization",
    "onnxruntime/tools",
    "onnxruntime/datasets",
    "numpy/f2py",
    "mlops_console/sample_data",
)


def _prune(site: Path) -> None:
    """Drop what a relocated layer cannot use or need: console scripts (their shebangs
    name this machine's Python), bytecode, pip's own marks, test suites and tools."""
    shutil.rmtree(site / "bin", ignore_errors=True)
    for rel in _UNUSED:
        shutil.rmtree(site / rel, ignore_errors=True)
    for tests in sorted((site / "numpy").rglob("tests")):
        if tests.is_dir():
            shutil.rmtree(tests, ignore_errors=True)
    for path in sorted(site.rglob("*"), reverse=True):
        if path.is_dir() and path.name == "__pycache__":
            shutil.rmtree(path)
        elif path.suffix in (".pyc", ".pyo") or path.name in ("direct_url.json", "REQUESTED"):
            path.unlink()


def _installed(site: Path) -> dict[str, str]:
    out = {}
    for info in site.glob("*.dist-info"):
        meta = metadata.PathDistribution(info)
        out[_canon(meta.metadata["Name"])] = meta.version
    return dict(sorted(out.items()))


def _pack(site: Path, tar_path: Path) -> None:
    """A deterministic tar of `site` as `site/`: sorted members, mtime 0, owner 0:0,
    modes 0755/0644."""
    entries = [site, *sorted(site.rglob("*"), key=lambda p: p.relative_to(site).parts)]
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in entries:
            rel = "site" if path == site else "site/" + path.relative_to(site).as_posix()
            st = path.lstat()
            info = tarfile.TarInfo(rel)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                resolved = (path.parent / target).resolve()
                if os.path.isabs(target) or not resolved.is_relative_to(site.resolve()):
                    raise MlopsError(f"{rel} links outside the layer ({target}); not packed.")
                info.type = tarfile.SYMTYPE
                info.linkname = target
                info.mode = 0o777
                tar.addfile(info)
            elif stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                info.size = st.st_size
                info.mode = 0o755 if st.st_mode & 0o111 else 0o644
                with path.open("rb") as f:
                    tar.addfile(info, f)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
