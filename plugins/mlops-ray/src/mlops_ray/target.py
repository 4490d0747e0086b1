"""The `ray` target: a deployment is one Ray Serve application, deployed through the
dashboard's REST API (`PUT /api/serve/applications/`).

That PUT is declarative: it removes every application it is not given. So each change
reads the running config and changes only this deployment's application; an application
deployed from Python (which a config PUT would remove) makes it refuse instead.

The application runs our ASGI app (`mlops_ray.app`); which versions serve (primary,
canary and its share) is its deployment's `user_config`, which Ray applies to the running
replicas in place: a hot swap, a canary, a promote and a rollback are each one PUT.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import Any

import httpx

from mlops_console.deploy.base import Capability, DeployError, DeployTarget
from mlops_console.names import check_name, inside
from mlops_ray.appconfig import DEPLOYMENT, deployment_config, proxy_http, version_spec
from mlops_ray.dashboard import Dashboard, dashboard_address

IMPORT_PATH = "mlops_ray.app:build"


class RayTarget(DeployTarget):
    name = "ray"
    capabilities = frozenset({Capability.CANARY, Capability.HOT_SWAP, Capability.REMOTE_LOGS})

    # --- what the workstation keeps ---------------------------------------------------------

    def _dir(self, name: str) -> Path:
        d = inside(self.ws.state / "deployments", check_name("deployment", name))
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _token(self, name: str, kind: str = "ray") -> str:
        """The deployment's token for /-/mlops/ routes (Ray is only given its sha256), or
        its feedback token."""
        f = self._dir(name) / f"{kind}-token"
        if not f.exists():
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32))
        return f.read_text().strip()

    def _dashboard(self, config: dict[str, Any]) -> Dashboard:
        return Dashboard(dashboard_address(config))

    # --- the application's config -----------------------------------------------------------

    def _settings(self, name: str) -> dict[str, str]:
        """The replicas' server settings ([serving] of mlops.toml) as a server's MLOPS_*
        environment. A feedback token, when [serving] asks for one, is in it: Ray's
        dashboard shows it to whoever can reach the dashboard (who can run code there)."""
        serving = self.ws.config.serving
        env = dict(serving.server_env())
        if "MLOPS_PREDLOG_ROTATE" in os.environ:
            env["MLOPS_PREDLOG_ROTATE"] = os.environ["MLOPS_PREDLOG_ROTATE"]
        if serving.feedback_token:
            env["MLOPS_FEEDBACK_TOKEN"] = self._token(name, "feedback")
        return env

    def _app_config(
        self, name: str, config: dict[str, Any], user_config: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "name": name,
            "route_prefix": config.get("route_prefix") or f"/{name}",
            "import_path": IMPORT_PATH,
            "args": {
                "deployment": name,
                "token_sha256": hashlib.sha256(self._token(name).encode()).hexdigest(),
                # as args, not runtime_env: a worker with its own environment starts slower
                "settings": self._settings(name),
            },
            "deployments": [deployment_config(config, user_config)],
        }

    def _current(
        self, dash: Dashboard, name: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The application's deployed config and its replicas' user_config (None: not ours
        or not deployed)."""
        details = dash.application(name)
        deployed = (details or {}).get("deployed_app_config")
        if not deployed or deployed.get("import_path") != IMPORT_PATH:
            return None, None
        for dep in deployed.get("deployments") or []:
            if dep.get("name") == DEPLOYMENT and isinstance(dep.get("user_config"), dict):
                return deployed, dep["user_config"]
        return deployed, None

    def _deploy(
        self, name: str, config: dict[str, Any], user_config: dict[str, Any], previous: dict | None
    ) -> dict[str, Any]:
        """PUT the application with `user_config`; wait until every replica serves it. A
        version the running replicas could not load is undone (`previous` is put back)."""
        dash = self._dashboard(config)
        before = dash.apply(name, self._app_config(name, config, user_config), proxy_http(config))
        try:
            dash.wait(name, user_config["generation"])
        except DeployError:
            if previous is None:
                dash.apply(name, None, {})  # a first deploy that fails leaves nothing retrying
            else:
                dash.apply(name, previous, {})
            raise
        error = self._load_error(name, config, user_config["generation"], before)
        if error:
            if previous is not None:
                dash.apply(name, previous, {})
            raise DeployError(
                f"{name}: the new version was not loaded on Ray ({error}); the previous "
                "version keeps serving."
            )
        return self.get(name, config)

    def _load_error(
        self, name: str, config: dict[str, Any], generation: int, before: dict[str, Any]
    ) -> str | None:
        """What a replica said when it could not apply `generation` (None: all applied).
        Requests reach a replica Ray picks: a few reads see most of them."""
        url = self._endpoint(name, config, before)
        deadline = time.monotonic() + 60
        seen: set[str] = set()
        while time.monotonic() < deadline:
            st = self._mlops_get(name, url, "status")
            if st is not None and st.get("generation") == generation:
                if st.get("load_error"):
                    return str(st["load_error"])
                seen.add(str(st.get("replica")))
                if len(seen) >= self._replica_count(name, config) or len(seen) >= 3:
                    return None
            time.sleep(0.1)
        if seen:
            return None
        raise DeployError(f"{name}: no replica answered on {url} within 60 s after the deploy.")

    def _replica_count(self, name: str, config: dict[str, Any]) -> int:
        details = self._dashboard(config).application(name) or {}
        dep = (details.get("deployments") or {}).get(DEPLOYMENT) or {}
        return max(1, len([r for r in dep.get("replicas") or [] if r.get("state") == "RUNNING"]))

    def _mlops_get(self, name: str, url: str, what: str) -> dict[str, Any] | None:
        try:
            r = httpx.get(
                f"{url}/-/mlops/{what}",
                headers={"Authorization": f"Bearer {self._token(name)}"},
                timeout=30,
            )
        except httpx.TransportError:
            return None
        return r.json() if r.status_code == 200 else None

    def _endpoint(self, name: str, config: dict[str, Any], before: dict | None = None) -> str:
        base = config.get("proxy_url") or self._dashboard(config).proxy_url(before)
        return str(base).rstrip("/") + (config.get("route_prefix") or f"/{name}")

    # --- the verbs --------------------------------------------------------------------------

    def create(
        self, name: str, bundle: Path, config: dict[str, Any], digest: str | None = None
    ) -> dict[str, Any]:
        dash = self._dashboard(config)
        deployed, current = self._current(dash, name)
        if deployed is None and dash.application(name) is not None:
            raise DeployError(
                f"The Ray cluster at {dash.address} already runs an application named {name!r} "
                "that mlops-console did not deploy; deploy with --name to pick another name."
            )
        user_config = {
            "generation": int((current or {}).get("generation", 0)) + 1,
            "runtime": config.get("runtime"),
            "primary": version_spec(bundle, digest),
            "canary": None,
        }
        return self._deploy(name, config, user_config, deployed)

    def update(
        self,
        name: str,
        bundle: Path,
        config: dict[str, Any],
        role: str = "primary",
        percent: float = 0.0,
        digest: str | None = None,
    ) -> dict[str, Any]:
        """Swap the primary in place, or serve `bundle` as a canary taking `percent`."""
        if role not in ("primary", "canary"):
            raise DeployError(f"The ray target cannot serve a {role} version (primary or canary).")
        dash = self._dashboard(config)
        deployed, current = self._current(dash, name)
        if deployed is None or current is None:
            if role != "primary":
                raise DeployError(f"{name} is not running on Ray; deploy a primary version first.")
            return self.create(name, bundle, config, digest=digest)
        spec = version_spec(bundle, digest)
        new = {**current, "generation": int(current.get("generation", 0)) + 1}
        if role == "primary":
            new.update(primary=spec, canary=None, runtime=config.get("runtime"))
        else:
            new["canary"] = {**spec, "percent": float(percent)}
        return self._deploy(name, config, new, deployed)

    def _change(self, name: str, config: dict[str, Any], promote: bool) -> dict[str, Any]:
        dash = self._dashboard(config)
        deployed, current = self._current(dash, name)
        if current is None:
            raise DeployError(f"{name} is not running on Ray at {dash.address}.")
        if not current.get("canary"):
            raise DeployError(
                f"{name} has no canary on Ray to {'promote' if promote else 'roll back'}."
            )
        new = {**current, "generation": int(current.get("generation", 0)) + 1, "canary": None}
        if promote:
            canary = current["canary"]
            new["primary"] = {"path": canary["path"], "digest": canary["digest"]}
        return self._deploy(name, config, new, deployed)

    def promote(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        return self._change(name, config, promote=True)

    def rollback(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        return self._change(name, config, promote=False)

    def delete(self, name: str, config: dict[str, Any] | None = None) -> None:
        dash = self._dashboard(config or {})
        deployed, _ = self._current(dash, name)
        if deployed is None:
            return  # nothing of ours runs there
        dash.apply(name, None, {})
        deadline = time.monotonic() + 60
        while dash.application(name) is not None and time.monotonic() < deadline:
            time.sleep(0.25)

    def get(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        dash = self._dashboard(config)
        info: dict[str, Any] = {"name": name, "target": self.name, "address": dash.address}
        try:
            instance = dash.instance()
        except DeployError as exc:
            return {**info, "status": "unreachable", "endpoint": "", "error": str(exc)}
        details = (instance.get("applications") or {}).get(name)
        endpoint = self._endpoint(name, config, instance)
        if details is None:
            return {**info, "status": "stopped", "endpoint": endpoint}
        status = {"RUNNING": "running", "DEPLOYING": "starting", "NOT_STARTED": "starting"}.get(
            details.get("status", ""), "unhealthy"
        )
        dep = (details.get("deployments") or {}).get(DEPLOYMENT) or {}
        replicas = [
            {k: r.get(k) for k in ("replica_id", "state", "pid", "node_ip")}
            for r in dep.get("replicas") or []
        ]
        out = {
            **info,
            "status": status,
            "endpoint": endpoint,
            "ray_status": details.get("status"),
            "replicas": replicas,
        }
        if details.get("message"):
            out["message"] = details["message"][-500:]
        return out

    def status(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """What one replica reports (versions, canary share, its metric windows), with
        every replica's state from Ray."""
        st = self._mlops_get(name, self._endpoint(name, config), "status") or {}
        live = self.get(name, config)
        return {**st, "replicas": live.get("replicas", [])}

    def list(self) -> builtins.list[str]:
        """Applications this workspace deployed that run on their Ray clusters now."""
        names = []
        for rec in self.ws.deployments.list():
            if rec.target != self.name:
                continue
            try:
                deployed, _ = self._current(self._dashboard(rec.config), rec.name)
            except DeployError:
                continue
            if deployed is not None:
                names.append(rec.name)
        return names

    def predict(
        self,
        name: str,
        config: dict[str, Any],
        records: builtins.list[dict[str, Any]],
        output: str = "predict",
    ) -> builtins.list:
        url = self._endpoint(name, config)
        try:
            r = httpx.post(
                f"{url}/invocations?output={output}",
                json={"dataframe_records": records},
                timeout=60,
            )
        except httpx.TransportError as exc:
            raise DeployError(f"{name}: Ray's proxy at {url} cannot be reached ({exc}).") from None
        if r.status_code != 200:
            try:
                message = r.json().get("message", r.text)
            except ValueError:
                message = r.text[:300]
            raise DeployError(f"{name}: {message}")
        return r.json()["predictions"]

    def logs(self, name: str, tail: int = 100) -> str:
        """The last `tail` lines of each replica's stderr (the server's own log lines)."""
        rec = self.ws.deployments.find(name)
        config = rec.config if rec else {}
        dash = self._dashboard(config)
        details = dash.application(name)
        if details is None:
            return ""
        parts = []
        for dep_name, dep in sorted((details.get("deployments") or {}).items()):
            for r in dep.get("replicas") or []:
                if not r.get("actor_id"):
                    continue
                text = dash.actor_log(r["actor_id"], tail).rstrip()
                parts.append(f"== {dep_name} replica {r.get('replica_id')} (pid {r.get('pid')}) ==")
                if text:
                    parts.append(text)
        return "\n".join(parts)

    def fetch_prediction_logs(self, name: str, config: dict[str, Any], dest: Path) -> int:
        """Drain the application's prediction-log store into `dest`: each segment is
        written (temp file, rename) before the store is told to drop it."""
        url = self._endpoint(name, config)
        headers = {"Authorization": f"Bearer {self._token(name)}"}
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        fetched = 0
        for _ in range(1000):
            try:
                r = httpx.get(f"{url}/-/mlops/predlogs", headers=headers, timeout=60)
            except httpx.TransportError as exc:
                raise DeployError(
                    f"{name}: Ray's proxy at {url} cannot be reached ({exc})."
                ) from None
            if r.status_code != 200:
                raise DeployError(f"{name}: prediction logs not fetched (HTTP {r.status_code}).")
            got = r.json()
            segments: dict[str, str] = got.get("segments") or {}
            if not segments:
                break
            for seg_name, text in segments.items():
                safe = Path(seg_name).name
                if not safe.endswith(".jsonl") or safe != seg_name:
                    continue  # never a path outside dest
                tmp = dest / f".{safe}.part"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(text)
                os.replace(tmp, dest / safe)
                fetched += 1
            httpx.post(
                f"{url}/-/mlops/predlogs/ack",
                json={"names": list(segments)},
                headers=headers,
                timeout=60,
            ).raise_for_status()
            if not got.get("left"):
                break
        return fetched
