"""The `docker` target: an image with the serving runtime and the bundle, run with a
published loopback port, a health check and resource limits. No registry is needed:
the runtime comes from a wheelhouse in the build context, base images are built locally,
and `export` writes the image as a tar (`docker save`)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import httpx

from mlops_console.deploy.base import Capability, DeployError
from mlops_console.deploy.server import ServerTarget, http
from mlops_console.names import check_name, inside
from mlops_console.plugins import hookimpl

RUNTIME = (
    "numpy",
    "onnxruntime",
    "scikit-learn",
    "pandas",
    "joblib",
    "starlette",
    "uvicorn",
    "httptools",
    "orjson",
    "pyarrow",  # CSV and Parquet request bodies, parsed to typed columns
)


def base_image(config: dict[str, Any], configured: str) -> str:
    """The base image to build on: the deployment's own, else MLOPS_DOCKER_BASE_IMAGE, else
    `configured` (`[serving] docker_base_image` of mlops.toml)."""
    return config.get("base_image") or os.environ.get("MLOPS_DOCKER_BASE_IMAGE") or configured


LABEL = "mlops-console"


def packaging_dir() -> Path:
    packaged = resources.files("mlops_console") / "packaging" / "docker"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[3] / "packaging" / "docker"


def wheelhouse() -> Path:
    """The serving runtime as wheels, pinned to this environment's versions (so a bundle
    pickled here unpickles there), built once per machine and cached."""
    pins = [f"{name}=={metadata.version(name)}" for name in RUNTIME]
    key = hashlib.sha256(
        ("\n".join(pins) + metadata.version("mlops-console")).encode()
    ).hexdigest()[:16]
    folder = (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "mlops-console"
        / f"wheelhouse-{key}"
    )
    if (folder / "requirements.txt").exists():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip"]
    try:
        subprocess.run(
            [*pip, "download", "--quiet", "--only-binary=:all:", "-d", str(tmp), *pins],
            check=True,
            capture_output=True,
            text=True,
        )
        src = Path(__file__).resolve().parents[3]
        if (src / "pyproject.toml").exists():
            subprocess.run(
                [*pip, "wheel", "--quiet", "--no-deps", "-w", str(tmp), str(src)],
                check=True,
                capture_output=True,
                text=True,
            )
        else:
            subprocess.run(
                [
                    *pip,
                    "download",
                    "--quiet",
                    "--no-deps",
                    "-d",
                    str(tmp),
                    f"mlops-console=={metadata.version('mlops-console')}",
                ],
                check=True,
                capture_output=True,
                text=True,
            )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DeployError(
            f"Could not gather the serving runtime's wheels: {exc.stderr[-500:]}"
        ) from None
    (tmp / "requirements.txt").write_text("\n".join(pins) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def own_wheel(dest: Path) -> None:
    """This mlops-console as a wheel, built fresh from its source (or the released one)."""
    pip = [sys.executable, "-m", "pip"]
    src = Path(__file__).resolve().parents[3]
    if (src / "pyproject.toml").exists():
        cmd = [*pip, "wheel", "--quiet", "--no-deps", "--no-cache-dir", "-w", str(dest), str(src)]
    else:
        cmd = [
            *pip,
            "download",
            "--quiet",
            "--no-deps",
            "-d",
            str(dest),
            f"mlops-console=={metadata.version('mlops-console')}",
        ]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        raise DeployError(f"Could not build the mlops-console wheel: {exc.stderr[-500:]}") from None


class DockerTarget(ServerTarget):
    name = "docker"
    capabilities = ServerTarget.capabilities | {Capability.IMAGE_EXPORT}

    def __init__(self, ws):
        super().__init__(ws)
        self._client = None

    @property
    def client(self):
        if self._client is None:
            import docker

            try:
                self._client = docker.from_env()
                self._client.ping()
            except Exception as exc:
                raise DeployError(
                    f"No Docker engine answers ({exc}). Start one (see "
                    "packaging/docker/engine.sh) or use --target local."
                ) from None
        return self._client

    def _running(self, name: str) -> bool:
        c = self._container(name)
        return c is not None and c.status == "running"

    def _bundle_path(self, bundle: Path) -> str:
        return f"/bundles/{bundle.name}"  # the bundles folder is mounted there

    def _container(self, name: str):
        import docker

        try:
            return self.client.containers.get(f"mlops-{name}")
        except docker.errors.NotFound:
            return None

    def build(
        self, name: str, bundle: Path, config: dict[str, Any], digest: str | None = None
    ) -> str:
        """Build the serving image for a bundle; cached layers make a rebuild take seconds."""
        ctx = self._dir(name) / "build"
        shutil.rmtree(ctx, ignore_errors=True)
        ctx.mkdir()
        shutil.copy(packaging_dir() / "Dockerfile", ctx / "Dockerfile")
        shutil.copytree(wheelhouse(), ctx / "wheelhouse")
        own_wheel(ctx / "app")
        shutil.copytree(bundle, ctx / "bundle", copy_function=shutil.copyfile)
        tag = f"mlops-serve-{name}:{bundle.name}".lower()
        base = base_image(config, self.ws.config.serving.docker_base_image)
        try:
            self.client.images.build(
                path=str(ctx),
                tag=tag,
                rm=True,
                labels={LABEL: name},
                buildargs={"BASE_IMAGE": base, "BUNDLE_DIGEST": digest or ""},
            )
        except Exception as exc:
            hint = ""
            if "registry" in str(exc) or "pull" in str(exc):
                hint = (
                    f" The base image {base!r} is not on this machine and no registry answers: "
                    "build one with packaging/docker/base-image.sh and set MLOPS_DOCKER_BASE_IMAGE "
                    "(or docker_base_image in [serving] of mlops.toml)."
                )
            raise DeployError(
                f"The image for {name} (base {base}) did not build: {exc}.{hint}"
            ) from None
        finally:
            shutil.rmtree(ctx, ignore_errors=True)
        return tag

    def create(
        self, name: str, bundle: Path, config: dict[str, Any], digest: str | None = None
    ) -> dict[str, Any]:
        c = self._container(name)
        if c is not None and c.status == "running" and self._healthy(config):
            return self.get(name, config)
        if c is not None:
            c.remove(force=True)
        # recorded with the deployment, so `deployments export` builds from the same base
        # even once MLOPS_DOCKER_BASE_IMAGE says something else
        config["base_image"] = base_image(config, self.ws.config.serving.docker_base_image)
        tag = self.build(name, bundle, config, digest)
        bundles = self._dir(name) / "bundles"
        logs = inside(self.ws.state / "logs" / "predictions", check_name("deployment", name))
        logs.mkdir(parents=True, exist_ok=True)
        env = self._server_env(name)
        # tokens reach the server as mounted files, not variables `docker inspect` shows
        secrets = {}
        for kind in ("admin", "feedback"):
            variable = f"MLOPS_{kind.upper()}_TOKEN"
            if env.pop(variable, None) is not None:
                secrets[str(self._dir(name) / f"{kind}-token")] = {
                    "bind": f"/run/secrets/{kind}-token",
                    "mode": "ro",
                }
                env[variable + "_FILE"] = f"/run/secrets/{kind}-token"
        try:
            self.client.containers.run(
                tag,
                name=f"mlops-{name}",
                detach=True,
                init=True,
                labels={LABEL: name},
                ports={"8080/tcp": (config.get("host", "127.0.0.1"), int(config["port"]))},
                environment={
                    **env,
                    **({"MLOPS_BUNDLE_DIGEST": digest} if digest else {}),
                    # clients reach the container through the published port on this host
                    "MLOPS_ALLOWED_HOSTS": ",".join(
                        [*self.ws.config.serving.allowed_hosts, config.get("host", "127.0.0.1")]
                    ),
                },
                volumes={
                    str(bundles): {"bind": "/bundles", "mode": "ro"},
                    str(logs): {"bind": "/logs", "mode": "rw"},
                    **secrets,
                },
                # the workspace owner's uid, so the 0700 state it mounts is readable; with
                # no capabilities even uid 0 cannot read what its owner could not
                user=f"{os.getuid()}:{os.getgid()}",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                read_only=True,
                tmpfs={"/tmp": "rw,noexec,nosuid,size=64m"},
                pids_limit=256,
                mem_limit=config.get("memory", "1g"),
                nano_cpus=int(float(config.get("cpus", 1.0)) * 1e9),
            )
        except Exception as exc:
            raise DeployError(f"The container for {name} did not start: {exc}") from None
        deadline = time.time() + 120
        while time.time() < deadline:
            if self._healthy(config):
                return self.get(name, config)
            c = self._container(name)
            if c is None or c.status == "exited":
                break
            time.sleep(0.2)
        logs_text = self.logs(name, 20)
        self.delete(name, config)
        raise DeployError(f"The container for {name} did not become healthy: {logs_text}")

    def delete(self, name: str, config: dict[str, Any] | None = None) -> None:
        c = self._container(name)
        if c is not None:
            c.stop(timeout=5)
            c.remove(force=True)

    def get(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        c = self._container(name)
        info: dict[str, Any] = {"name": name, "target": self.name, "endpoint": self._url(config)}
        if c is None:
            return {**info, "status": "stopped"}
        c.reload()
        health = (c.attrs.get("State", {}).get("Health") or {}).get("Status")
        info.update(
            {
                "container": c.short_id,
                "image": c.image.tags[0] if c.image.tags else c.image.short_id,
                "health": health,
            }
        )
        if c.status != "running":
            return {**info, "status": c.status}
        try:
            return {
                **info,
                "status": "running",
                "serving": http("GET", self._url(config) + "/version", timeout=2).json(),
            }
        except httpx.HTTPError:
            return {**info, "status": "unhealthy"}

    def list(self) -> list[str]:
        return sorted(
            c.labels.get(LABEL, c.name)
            for c in self.client.containers.list(filters={"label": LABEL})
        )

    def logs(self, name: str, tail: int = 100) -> str:
        c = self._container(name)
        return "" if c is None else c.logs(tail=tail).decode(errors="replace")

    def export(
        self,
        name: str,
        bundle: Path,
        config: dict[str, Any],
        dest: Path,
        digest: str | None = None,
    ) -> Path:
        """Write the image serving `bundle` as a tar, for `docker load` where no registry is;
        built on the base image the deployment was created from (`config["base_image"]`)."""
        tag = self.build(name, bundle, config, digest)
        image = self.client.images.get(tag)
        dest = Path(dest)
        with open(dest, "wb") as fh:
            for chunk in image.save(named=True):
                fh.write(chunk)
        return dest


@hookimpl
def mlops_deploy_targets():
    return {"docker": DockerTarget}
