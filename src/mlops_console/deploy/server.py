"""What the `local` and `docker` targets share: a model server reached over HTTP, driven
through its token-guarded admin API."""

from __future__ import annotations

import functools
import os
import secrets
import ssl
from pathlib import Path
from typing import Any

import httpx

from mlops_console.deploy.base import Capability, DeployError, DeployTarget
from mlops_console.names import check_name, inside


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for the process: httpx builds one per call otherwise, loading the
    CA bundle each time (about 20 ms: most of a status read of a local server)."""
    return httpx.create_ssl_context()


def http(method: str, url: str, **kw: Any) -> httpx.Response:
    """`httpx.request` with the process's TLS context (see `_tls`)."""
    return httpx.request(method, url, verify=_tls(), **kw)


class ServerTarget(DeployTarget):
    """A target that runs one mlops-console model server per deployment."""

    # the server swaps versions and splits or mirrors traffic itself (its admin API)
    capabilities = frozenset({Capability.CANARY, Capability.SHADOW, Capability.HOT_SWAP})

    def _running(self, name: str) -> bool:
        """Whether the deployment's server process or container is up."""
        raise NotImplementedError

    def _bundle_path(self, bundle: Path) -> str:
        """Where the server sees a bundle folder."""
        return str(bundle)

    def _dir(self, name: str) -> Path:
        d = inside(self.ws.state / "deployments", check_name("deployment", name))
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _token(self, name: str, kind: str = "admin") -> str:
        f = self._dir(name) / f"{kind}-token"
        if not f.exists():
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32))
        return f.read_text().strip()

    def _server_env(self, name: str) -> dict[str, str]:
        """The server's settings ([serving] of mlops.toml) and tokens, as its environment."""
        serving = self.ws.config.serving
        env = {**serving.server_env(), "MLOPS_ADMIN_TOKEN": self._token(name)}
        if serving.feedback_token:
            env["MLOPS_FEEDBACK_TOKEN"] = self._token(name, "feedback")
        for k in ("MLOPS_PREDLOG_ROTATE",):
            if k in os.environ:
                env[k] = os.environ[k]
        return env

    def _url(self, config: dict[str, Any]) -> str:
        return f"http://{config.get('host', '127.0.0.1')}:{config['port']}"

    def _admin(
        self, name: str, config: dict[str, Any], method: str, path: str, **kw
    ) -> httpx.Response:
        return http(
            method,
            self._url(config) + path,
            timeout=120,
            headers={"Authorization": f"Bearer {self._token(name)}"},
            **kw,
        )

    def _healthy(self, config: dict[str, Any]) -> bool:
        try:
            return http("GET", self._url(config) + "/ping", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _answers_as(self, name: str, config: dict[str, Any]) -> bool:
        """The server on the port is this deployment's: it takes this deployment's admin
        token. (Any process that took the port first would answer /ping as well.)"""
        try:
            r = http(
                "GET",
                self._url(config) + "/admin/status",
                headers={"Authorization": f"Bearer {self._token(name)}"},
                timeout=2,
            )
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def update(
        self,
        name: str,
        bundle: Path,
        config: dict[str, Any],
        role: str = "primary",
        percent: float = 0.0,
        digest: str | None = None,
    ) -> dict[str, Any]:
        """Hot-swap (primary), or load a canary or shadow beside the running version."""
        if not self._running(name) or not self._healthy(config):
            if role != "primary":
                raise DeployError(f"{name} is not running; deploy a primary version first.")
            return self.create(name, bundle, config, digest=digest)
        r = self._admin(
            name,
            config,
            "POST",
            "/admin/load",
            json={
                "path": self._bundle_path(bundle),
                "role": role,
                "percent": percent,
                "runtime": config.get("runtime"),
                **({"digest": digest} if digest else {}),
            },
        )
        if r.status_code != 200:
            raise DeployError(
                f"{name}: the new version was not loaded ({r.json().get('message')}); "
                "the previous version keeps serving."
            )
        return self.get(name, config)

    def _admin_post(self, name: str, config: dict[str, Any], path: str) -> dict[str, Any]:
        r = self._admin(name, config, "POST", path)
        if r.status_code != 200:
            raise DeployError(f"{name}: {r.json().get('message')}")
        return self.get(name, config)

    def promote(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        return self._admin_post(name, config, "/admin/promote")

    def rollback(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        return self._admin_post(name, config, "/admin/rollback")

    def status(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        r = self._admin(name, config, "GET", "/admin/status")
        return r.json() if r.status_code == 200 else {}

    def predict(
        self,
        name: str,
        config: dict[str, Any],
        records: list[dict[str, Any]],
        output: str = "predict",
    ) -> list:
        r = http(
            "POST",
            self._url(config) + f"/invocations?output={output}",
            json={"dataframe_records": records},
            timeout=60,
        )
        if r.status_code != 200:
            raise DeployError(f"{name}: {r.json().get('message', r.text)}")
        return r.json()["predictions"]
