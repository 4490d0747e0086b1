"""Ray's REST API on the dashboard (port 8265): Serve's declarative application config
and the actors' logs. httpx only: the workstation never imports Ray."""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from mlops_console.deploy.base import DeployError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
SERVE = "/api/serve/applications/"
# what a PUT may carry besides the applications: what the GET shows of the running instance
INSTANCE_KEYS = (
    "proxy_location",
    "http_options",
    "grpc_options",
    "logging_config",
    "target_capacity",
)
HTTP_OPTIONS = ("host", "port", "root_path", "request_timeout_s", "keep_alive_timeout_s")


def dashboard_address(config: dict[str, Any]) -> str:
    """The deployment's `address`, else RAY_ADDRESS when it is an http(s) URL (Ray also
    uses it for `ray.init` forms such as "auto"), else the loopback default."""
    env = os.environ.get("RAY_ADDRESS", "")
    address = config.get("address") or (env if env.startswith(("http://", "https://")) else "")
    address = address or DEFAULT_ADDRESS
    if not isinstance(address, str) or not address.startswith(("http://", "https://")):
        raise DeployError(
            f"The Ray address {address!r} is not an http(s) URL of Ray's dashboard; give "
            "it as --address http://HOST:8265."
        )
    return address.rstrip("/")


class Dashboard:
    """One Ray cluster's dashboard."""

    def __init__(self, address: str, timeout: float = 30.0):
        self.address = address.rstrip("/")
        self.timeout = timeout

    def _request(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            return httpx.request(method, self.address + path, timeout=self.timeout, **kw)
        except httpx.TransportError as exc:
            raise DeployError(
                f"Ray's dashboard at {self.address} cannot be reached ({type(exc).__name__}: "
                f"{exc or 'no answer'}); start a Ray head (`ray start --head`) or give its "
                "address with --address http://HOST:8265."
            ) from None

    def _checked(self, r: httpx.Response, what: str) -> httpx.Response:
        if r.status_code >= 400:
            text = r.text.strip().splitlines()
            detail = " ".join(text[-3:])[:600] if text else r.reason_phrase
            raise DeployError(
                f"Ray's dashboard at {self.address} refused to {what} (HTTP {r.status_code}): "
                f"{detail}"
            )
        return r

    def instance(self) -> dict[str, Any]:
        """Serve's state: applications by name (each with `deployed_app_config`, status,
        deployments and replicas), the proxies and the HTTP options."""
        r = self._checked(self._request("GET", SERVE), "show Serve's applications")
        try:
            return r.json()
        except ValueError:
            raise DeployError(
                f"{self.address} answered {SERVE} with something other than JSON: is it "
                "Ray's dashboard (port 8265)?"
            ) from None

    def put(self, body: dict[str, Any]) -> None:
        self._checked(self._request("PUT", SERVE, json=body), "deploy the Serve config")

    def apply(self, name: str, app: dict[str, Any] | None, http: dict[str, Any]) -> dict[str, Any]:
        """PUT the running config with application `name` set to `app` (None: removed),
        every other application as it was deployed. `http` (host, port) applies only to a
        Serve instance this PUT starts. The instance as it was before."""
        before = self.instance()
        apps = []
        for other, details in sorted((before.get("applications") or {}).items()):
            if other == name:
                continue
            deployed = details.get("deployed_app_config")
            if not deployed:
                raise DeployError(
                    f"Application {other!r} on the Ray cluster at {self.address} was deployed "
                    "from Python (serve.run), not by a config: a config PUT would remove it, "
                    "so nothing was changed. Deploy it from a config too, or use another cluster."
                )
            apps.append(deployed)
        if app is not None:
            apps.append(app)
        body: dict[str, Any] = {"applications": apps}
        for key in INSTANCE_KEYS:
            if before.get(key) not in (None, {}):
                body[key] = before[key]
        if isinstance(body.get("http_options"), dict):
            body["http_options"] = {
                k: v for k, v in body["http_options"].items() if k in HTTP_OPTIONS
            }
        if not (before.get("controller_info") or {}).get("actor_id"):
            # no Serve instance runs yet: this PUT starts it, with its proxy where we say
            body["http_options"] = {**body.get("http_options", {}), **http}
            body.setdefault("proxy_location", "HeadOnly")
        body.pop("grpc_options", None)  # only the GET's defaults; a PUT may not restate them
        if not apps:
            body.pop("http_options", None)
        self.put(body)
        return before

    def application(self, name: str) -> dict[str, Any] | None:
        return (self.instance().get("applications") or {}).get(name)

    def wait(self, name: str, generation: int, timeout: float = 180.0) -> dict[str, Any]:
        """Wait until application `name` runs `generation` of our config; its details.
        A failed deployment raises with Ray's message."""
        deadline = time.monotonic() + timeout
        details: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            details = self.application(name)
            if details is not None and _generation(details) == generation:
                status = details.get("status")
                if status == "RUNNING" and _deployments_healthy(details):
                    return details
                if status in ("DEPLOY_FAILED", "UNHEALTHY"):
                    raise DeployError(f"Ray could not deploy {name}: {_message(details)}")
            time.sleep(0.25)
        raise DeployError(
            f"{name} was not running on Ray after {timeout:g} s (status "
            f"{(details or {}).get('status', 'missing')}: {_message(details or {})})."
        )

    def proxy_url(self, before: dict[str, Any] | None = None) -> str:
        """Where Ray's HTTP proxy is reached: its host and port, or the dashboard's host
        when the proxy listens on every address."""
        info = before if before is not None else self.instance()
        http = info.get("http_options") or {}
        host = http.get("host") or "127.0.0.1"
        if host in ("0.0.0.0", "::", ""):
            host = urlsplit(self.address).hostname or "127.0.0.1"
        return f"http://{host}:{http.get('port') or 8000}"

    def actor_log(self, actor_id: str, lines: int, suffix: str = "err") -> str:
        r = self._request(
            "GET",
            "/api/v0/logs/file",
            params={"actor_id": actor_id, "lines": lines, "suffix": suffix},
        )
        return r.text if r.status_code == 200 else ""


def _generation(details: dict[str, Any]) -> int | None:
    for dep in (details.get("deployed_app_config") or {}).get("deployments") or []:
        config = dep.get("user_config")
        if dep.get("name") == "MlopsModel" and isinstance(config, dict):
            return config.get("generation")
    return None


def _deployments_healthy(details: dict[str, Any]) -> bool:
    deps = details.get("deployments") or {}
    return bool(deps) and all(d.get("status") == "HEALTHY" for d in deps.values())


def _message(details: dict[str, Any]) -> str:
    parts = [details.get("message") or ""]
    for dep_name, dep in (details.get("deployments") or {}).items():
        if dep.get("message"):
            parts.append(f"{dep_name}: {dep['message']}")
    text = " ".join(p for p in parts if p).strip()
    # Ray's messages end in a replica's traceback: its last lines say what failed
    lines = [line for line in text.splitlines() if line.strip()]
    return " ".join(lines[-4:])[:800] or "no message"
