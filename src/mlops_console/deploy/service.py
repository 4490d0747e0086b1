"""`ws.deployments`: deploy a model version to a target, canary, promote, roll back, stop.

The registry records what each deployment serves and every change (deployment_event),
so a failed deploy is visible and the previous version keeps serving.

About 500 lines on purpose: every verb here is the same three steps (look the deployment
up, ask its target, record the change in one transaction) and judging a canary is
promote-or-rollback; the records are in deploy/records.py and the targets are plugins.
"""

from __future__ import annotations

import builtins
import json
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.deploy.base import Capability, DeployTarget, PortTaken
from mlops_console.deploy.records import (
    CanaryVerdict,
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
)
from mlops_console.errors import ConfigError, Conflict, MlopsError, NotFound
from mlops_console.names import check_name, inside

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


def _free_port(start: int) -> int:
    for port in range(start, start + 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise MlopsError(f"No free port from {start}; pass --port.")


class Deployments:
    def __init__(self, ws: Workspace):
        self.ws = ws

    def target_class(self, kind: str, used_by: Deployment | None = None) -> type[DeployTarget]:
        """The class a plugin registered as target `kind` (ask it `.capabilities`);
        `used_by`: the deployment on it, which the error names if no plugin provides it."""
        from mlops_console.plugins import load_plugins

        targets = load_plugins().deploy_targets()
        if kind not in targets:
            if used_by is not None:
                raise NotFound(_unavailable(used_by))
            raise MlopsError(
                f"No deploy target {kind!r}; available: {', '.join(sorted(targets)) or 'none'}. "
                "`mlops plugins list --check` shows what loaded and what failed."
            )
        return targets[kind]

    def target(self, kind: str, used_by: Deployment | None = None) -> DeployTarget:
        return self.target_class(kind, used_by)(self.ws)

    def provides(self, kind: str) -> bool:
        """Whether an installed plugin provides target `kind` (a deployment's may be gone)."""
        from mlops_console.plugins import load_plugins

        return kind in load_plugins().deploy_targets()

    def can_canary(self, kind: str, used_by: Deployment | None = None) -> bool:
        """Whether target `kind` splits traffic for a canary (else it gates on its own)."""
        return Capability.CANARY in self.target_class(kind, used_by).capabilities

    def find(self, name: str) -> Deployment | None:
        """The deployment named `name`, or None if there is none."""
        with self.ws.db.read() as conn:
            row = conn.exec_driver_sql(f"{_SELECT} WHERE name = ?", (name,)).mappings().first()
        return None if row is None else _deployment(row)

    def get(self, name: str) -> Deployment:
        rec = self.find(name)
        if rec is None:
            raise NotFound(f"No deployment {name!r}. `mlops deployments list` shows them.")
        return rec

    def _event(self, conn, name, action, from_v, to_v, detail="") -> None:
        conn.exec_driver_sql(
            "INSERT INTO deployment_event (name, at, action, from_version, to_version, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (name, time.time(), action, from_v, to_v, detail),
        )

    def bundle_dir(self, name: str, mv) -> Path:
        """The verified bundle folder of `mv` for deployment `name`, exported if missing."""
        from mlops_console.registry.bundle import bundle_dir_matches, export_bundle

        folder = inside(
            self.ws.state / "deployments",
            check_name("deployment", name),
            "bundles",
            f"v{mv.version}-{mv.artifact_hash[:12]}",
        )
        if folder.exists() and not bundle_dir_matches(folder, mv.artifact_hash):
            # edited, or half written: what the registry vouches for is exported again
            _remove_tree(folder)
        if not folder.exists():
            tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
            _remove_tree(tmp)
            export_bundle(self.ws.artifacts, mv.artifact_hash, tmp, read_only=True)
            os.replace(tmp, folder)
        return folder

    def deploy(
        self,
        ref: str,
        target: str | None = None,
        name: str | None = None,
        port: int | None = None,
        host: str | None = None,
        strategy: str = "replace",
        canary_percent: float = 10.0,
        runtime: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> Deployment:
        """Deploy a version: create the deployment, hot-swap it, or start it as a canary.
        `options` are the target's own settings ([deploy] options), kept in its config
        beside the deployment's own (host, port, runtime), which they may not replace."""
        from mlops_console.pipeline_spec import DEPLOYMENT_SETTINGS, owned_options

        wrong = owned_options(options or {})
        if wrong:
            given = ", ".join(f"{k}=..." for k in options or {} if k in DEPLOYMENT_SETTINGS)
            raise ConfigError(f"Deploy options: {wrong} (from Python: deploy({given})).")
        mv = self.ws.models.resolve(ref)
        name = check_name("deployment", mv.name if name is None else name)
        rec = self.find(name)
        target = target or (rec.target if rec else "local")
        moving = rec is not None and rec.target != target
        # a deployment whose target no installed plugin provides cannot be stopped first:
        # moving it is how it is served again (what ran there is out of reach)
        stranded = rec is not None and moving and not self.provides(rec.target)
        if rec is not None and moving and rec.running and not stranded:
            raise Conflict(
                f"Deployment {name!r} runs on {rec.target}; stop it first "
                f"(`mlops deployments stop {name}`) to move it to {target}, or pick --name."
            )
        tgt = self.target(target, rec if rec is not None and not moving else None)
        if strategy == "canary" and Capability.CANARY not in tgt.capabilities:
            raise Conflict(
                f"The {target} target cannot run a canary; deploy with --strategy replace."
            )
        try:
            bundle = self.bundle_dir(name, mv)
        except MlopsError as exc:  # the store cannot vouch for it: nothing changes
            self._failed(name, rec, mv, str(exc))
            keeps = " The previous version keeps serving." if rec and rec.running else ""
            raise MlopsError(f"{exc}{keeps}") from None
        now = time.time()
        if rec is None or not rec.running or stranded:
            if strategy == "canary" and rec is None:
                raise Conflict(
                    f"{name} is not deployed yet: a canary needs a primary version to split with."
                )
            config = rec.config if rec else {}
            # a target records what it built from (docker: base_image) into config itself;
            # a new start builds afresh, so only where and how to serve carries over
            chosen = port or config.get("port")
            config = {
                "host": host or config.get("host") or self.ws.config.serving.host,
                "port": chosen or _free_port(self.ws.config.serving.port),
                "runtime": runtime or config.get("runtime"),
                **(options or {}),
            }
            for attempt in range(3):
                try:
                    info = tgt.create(name, bundle, config, digest=mv.artifact_hash)
                    break
                except PortTaken as exc:
                    # the port was free when picked and taken before the server listened
                    # (another workspace deploying at once): pick again, unless it was given
                    if chosen is not None or attempt == 2:
                        self._failed(name, rec, mv, str(exc))
                        raise
                    config["port"] = _free_port(int(config["port"]) + 1)
                except MlopsError as exc:  # DeployError among them: recorded, reported once
                    self._failed(name, rec, mv, str(exc))
                    raise
            with self.ws.db.write() as conn:
                conn.exec_driver_sql(
                    "INSERT INTO deployment (name, target, model_name, version, canary_version, canary_percent, "
                    "status, endpoint, config, created_at, updated_at) VALUES (?, ?, ?, ?, NULL, 0, 'running', ?, ?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET target = excluded.target, "
                    "model_name = excluded.model_name, version = excluded.version, "
                    "canary_version = NULL, canary_percent = 0, status = 'running', endpoint = excluded.endpoint, "
                    "config = excluded.config, updated_at = excluded.updated_at",
                    (
                        name,
                        target,
                        mv.name,
                        mv.version,
                        info["endpoint"],
                        json.dumps(config),
                        now,
                        now,
                    ),
                )
                moved = f"moved from {rec.target} to {target}" if rec and moving else ""
                if stranded and rec is not None and rec.running:
                    moved += (
                        f" (no installed plugin provides {rec.target!r}: what it served "
                        "there was not stopped)"
                    )
                self._event(conn, name, "create", rec.version if rec else None, mv.version, moved)
            return self.get(name)
        config = {**rec.config, **options} if options else rec.config
        if (
            strategy == "replace"
            and rec.version == mv.version
            and rec.model == mv.name
            and rec.canary_version is None
            and tgt.get(name, config).get("status") == "running"
        ):
            if config == rec.config:
                return rec  # already serving exactly this: nothing to do
            return self._configure(rec, config)
        try:
            if strategy == "canary":
                tgt.update(
                    name,
                    bundle,
                    config,
                    role="canary",
                    percent=canary_percent,
                    digest=mv.artifact_hash,
                )
            else:
                tgt.update(name, bundle, config, role="primary", digest=mv.artifact_hash)
        except MlopsError as exc:
            self._failed(name, rec, mv, str(exc))
            raise
        with self.ws.db.write() as conn:
            if strategy == "canary":
                conn.exec_driver_sql(
                    "UPDATE deployment SET canary_version = ?, canary_percent = ?, config = ?, "
                    "updated_at = ? WHERE name = ?",
                    (mv.version, canary_percent, json.dumps(config), now, name),
                )
                self._event(
                    conn,
                    name,
                    "canary",
                    rec.version,
                    mv.version,
                    f"{canary_percent}% of traffic",
                )
            else:
                conn.exec_driver_sql(
                    "UPDATE deployment SET model_name = ?, version = ?, canary_version = NULL, "
                    "canary_percent = 0, config = ?, updated_at = ? WHERE name = ?",
                    (mv.name, mv.version, json.dumps(config), now, name),
                )
                self._event(conn, name, "update", rec.version, mv.version)
        return self.get(name)

    def _configure(self, rec: Deployment, config: dict[str, Any]) -> Deployment:
        """Save new options of a deployment that already serves the version asked for.

        No target verb takes settings alone (each reads the config it is handed), so they
        are saved and the history says which changed; the next deploy hands them over."""
        changed = ", ".join(
            f"{key} {rec.config[key]!r} -> {value!r}"
            if key in rec.config
            else f"{key} {value!r} (new)"
            for key, value in config.items()
            if rec.config.get(key, _MISSING) != value
        )
        with self.ws.db.write() as conn:
            conn.exec_driver_sql(
                "UPDATE deployment SET config = ?, updated_at = ? WHERE name = ?",
                (json.dumps(config), time.time(), rec.name),
            )
            self._event(
                conn,
                rec.name,
                "configure",
                rec.version,
                rec.version,
                f"options changed: {changed}; saved, v{rec.version} keeps serving and the "
                "target uses them from its next deploy",
            )
        return self.get(rec.name)

    def _failed(self, name: str, rec: Deployment | None, mv, detail: str) -> None:
        with self.ws.db.write() as conn:
            self._event(
                conn, name, "failed", rec.version if rec else None, mv.version, detail[:2000]
            )
        self._publish(
            "deploy_failed",
            f"deploying {mv.ref} to {name} failed: {detail}",
            name,
            mv.name,
            mv.version,
            detail,
            severity="warning",
        )

    def _publish(self, kind, text, name, model, version, detail="", severity="info") -> None:
        """A life-cycle event for the notifiers `[notify]` names (mlops_console.events)."""
        from mlops_console.events import Event, publish

        publish(
            self.ws,
            Event(
                kind,
                text,
                severity=severity,
                deployment=name,
                model=model,
                version=version,
                detail=detail,
            ),
        )

    def promote(self, name: str, reason: str = "") -> Deployment:
        rec = self.get(name)
        if rec.canary_version is None:
            raise Conflict(f"{name} has no canary to promote.")
        self.target(rec.target, rec).promote(name, rec.config)
        with self.ws.db.write() as conn:
            conn.exec_driver_sql(
                "UPDATE deployment SET version = canary_version, canary_version = NULL, "
                "canary_percent = 0, updated_at = ? WHERE name = ?",
                (time.time(), name),
            )
            self._event(conn, name, "promote", rec.version, rec.canary_version, reason)
        self._publish(
            "promoted",
            f"{name}: canary v{rec.canary_version} of {rec.model} promoted over "
            f"v{rec.version}" + (f" ({reason})" if reason else ""),
            name,
            rec.model,
            rec.canary_version,
            reason,
        )
        return self.get(name)

    def rollback(self, name: str, reason: str = "") -> Deployment:
        """Drop the canary; without one, go back to the version served before the last update."""
        rec = self.get(name)
        if rec.canary_version is not None:
            self.target(rec.target, rec).rollback(name, rec.config)
            with self.ws.db.write() as conn:
                conn.exec_driver_sql(
                    "UPDATE deployment SET canary_version = NULL, canary_percent = 0, "
                    "updated_at = ? WHERE name = ?",
                    (time.time(), name),
                )
                self._event(conn, name, "rollback", rec.canary_version, rec.version, reason)
            self._publish(
                "rolled_back",
                f"{name}: canary v{rec.canary_version} of {rec.model} rolled back; "
                f"v{rec.version} serves" + (f" ({reason})" if reason else ""),
                name,
                rec.model,
                rec.version,
                reason,
                severity="warning",
            )
            return self.get(name)
        previous = self.previous_version(rec)
        if previous is None:
            raise Conflict(f"{name} has no canary and no earlier version to roll back to.")
        out = self.deploy(f"{rec.model}/{previous}", target=rec.target, name=name)
        with self.ws.db.write() as conn:
            self._event(conn, name, "rollback", rec.version, previous, reason)
        self._publish(
            "rolled_back",
            f"{name}: rolled back from v{rec.version} to v{previous} of {rec.model}"
            + (f" ({reason})" if reason else ""),
            name,
            rec.model,
            previous,
            reason,
            severity="warning",
        )
        return out

    def previous_version(self, rec: Deployment) -> int | None:
        """The version served before the last update, which `rollback` without a canary
        goes back to (None: there is none)."""
        for e in reversed(self.history(rec.name)):
            if e.action in ("update", "promote", "create") and e.to_version == rec.version:
                return e.from_version
        return None

    def stop(self, name: str) -> Deployment:
        rec = self.get(name)
        self.target(rec.target, rec).delete(name, rec.config)
        with self.ws.db.write() as conn:
            conn.exec_driver_sql(
                "UPDATE deployment SET status = 'stopped', updated_at = ? WHERE name = ?",
                (time.time(), name),
            )
            self._event(conn, name, "stop", rec.version, None)
        return self.get(name)

    def delete(self, name: str) -> None:
        """Stop the deployment and remove its folder (bundles, tokens, pid, server log),
        its prediction logs and what monitoring collected from them; its history
        (deployment_event) stays in the database."""
        import shutil

        rec = self.get(name)
        self.target(rec.target, rec).delete(name, rec.config)
        from mlops_console.monitoring.collect import monitor_dir

        state = self.ws.state
        for folder in (
            inside(state / "deployments", check_name("deployment", name)),
            inside(state / "logs" / "predictions", check_name("deployment", name)),
            monitor_dir(self.ws, name),
        ):
            if folder.exists():
                for sub in folder.rglob("*"):  # bundle folders are read-only (0500)
                    if sub.is_dir() and not sub.is_symlink():
                        sub.chmod(0o700)
                shutil.rmtree(folder)
        with self.ws.db.write() as conn:
            conn.exec_driver_sql("DELETE FROM deployment WHERE name = ?", (name,))
            self._event(conn, name, "delete", rec.version, None, f"on {rec.target}")
        self._publish(
            "deleted",
            f"{name}: deleted (it served v{rec.version} of {rec.model} on {rec.target})",
            name,
            rec.model,
            rec.version,
        )

    def list(self) -> builtins.list[Deployment]:
        with self.ws.db.read() as conn:
            rows = conn.exec_driver_sql(f"{_SELECT} ORDER BY name").mappings()
        return [_deployment(r) for r in rows]

    def status(self, name: str) -> DeploymentStatus:
        """The deployment with what its target reports now (`live`, and `stats` while it
        runs); `live` is {"status": "unavailable", "error": ...} if no plugin provides it."""
        rec = self.get(name)
        if not self.provides(rec.target):  # its plugin was removed: the record still shows
            return DeploymentStatus(
                **vars(rec), live={"status": "unavailable", "error": _unavailable(rec)}
            )
        tgt = self.target(rec.target, rec)
        live = tgt.get(name, rec.config)
        stats = tgt.status(name, rec.config) if live.get("status") == "running" else {}
        return DeploymentStatus(**vars(rec), live=live, stats=stats)

    def logs(self, name: str, tail: int = 100) -> str:
        rec = self.get(name)
        return self.target(rec.target, rec).logs(name, tail)

    def predict(
        self, name: str, records: builtins.list[dict[str, Any]], output: str = "predict"
    ) -> builtins.list:
        rec = self.get(name)
        return self.target(rec.target, rec).predict(name, rec.config, records, output)

    def export(self, name: str, dest: Path) -> Path:
        """Write the deployment's image as a tar (targets that build images only)."""
        rec = self.get(name)
        from mlops_console.plugins import load_plugins

        tgt = self.target(rec.target, rec)
        if Capability.IMAGE_EXPORT not in tgt.capabilities:
            can = [
                k
                for k, cls in load_plugins().deploy_targets().items()
                if Capability.IMAGE_EXPORT in cls.capabilities
            ]
            raise MlopsError(
                f"Target {rec.target!r} has no image to export; deploy with a target that "
                f"builds images ({', '.join(sorted(can)) or 'none installed'})."
            )
        mv = self.ws.models.resolve(rec.ref)
        return tgt.export(
            name, self.bundle_dir(name, mv), rec.config, dest, digest=mv.artifact_hash
        )

    def history(self, name: str) -> builtins.list[DeploymentEvent]:
        """The deployment's changes, oldest first (kept after it is deleted)."""
        with self.ws.db.read() as conn:
            rows = conn.exec_driver_sql(
                "SELECT at, action, from_version, to_version, detail FROM deployment_event "
                "WHERE name = ? ORDER BY at, id",
                (name,),
            ).mappings()
        return [DeploymentEvent(**r) for r in rows]

    def judge_canary(
        self,
        name: str,
        max_error_rate: float = 0.01,
        max_p99_ms: float = 250.0,
        min_requests: int = 50,
        promote: bool = True,
    ) -> CanaryVerdict:
        """Promote or roll back a canary by its health; 'wait' while it has too few requests.

        With `promote=False` a healthy canary is left as it is and judged 'healthy' (a step
        of a staged rollout, whose caller moves it on); an unhealthy one is rolled back."""
        st = self.status(name)
        if st.canary_version is None:
            raise Conflict(f"{name} has no canary to judge.")
        stats = st.stats or {}
        c, p = stats.get("canary_stats") or {}, stats.get("primary_stats") or {}
        n, errors, p99 = c.get("requests", 0), c.get("errors", 0), c.get("p99_ms")
        # requests the canary refused that the primary would have taken (a signature that
        # no longer fits the traffic) count against it, beyond the primary's own rate
        refused = c.get("client_errors", 0)
        primary_refused = p.get("client_errors", 0) / p["requests"] if p.get("requests") else 0.0
        excess = max(0.0, refused / n - primary_refused) if n else 0.0

        def verdict(decision: str) -> CanaryVerdict:
            return CanaryVerdict(n, errors, refused, p99, max_error_rate, max_p99_ms, decision)

        p99_text = f"{p99:.1f} ms" if p99 is not None else "n/a"
        if n and (
            errors / n > max_error_rate
            or excess > max_error_rate
            or (p99 is not None and p99 > max_p99_ms)
        ):
            self.rollback(
                name,
                reason=f"canary unhealthy: {errors}/{n} errors, {refused} refused, p99 {p99_text}",
            )
            return verdict("rollback")
        if n < min_requests:
            return verdict("wait")
        if not promote:
            return verdict("healthy")
        self.promote(name, reason=f"canary healthy: {errors}/{n} errors, p99 {p99_text}")
        return verdict("promote")


_SELECT = (
    "SELECT name, target, model_name, version, canary_version, canary_percent, status, "
    "endpoint, config, created_at, updated_at FROM deployment"
)


_MISSING = object()


def _unavailable(rec: Deployment) -> str:
    return (
        f"Deployment {rec.name!r} uses target {rec.target!r}, which no installed plugin "
        "provides; install the plugin or redeploy to another target "
        f"(`mlops deploy {rec.ref} --name {rec.name} --target TARGET`; `mlops plugins list` "
        "shows the targets installed)."
    )


def _deployment(row: Mapping[str, Any]) -> Deployment:
    return Deployment(
        name=row["name"],
        target=row["target"],
        model=row["model_name"],
        version=row["version"],
        canary_version=row["canary_version"],
        canary_percent=row["canary_percent"],
        status=row["status"],
        endpoint=row["endpoint"],
        config=json.loads(row["config"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _remove_tree(path: Path) -> None:
    """Remove a (read-only) bundle folder."""
    if not path.exists():
        return
    for f in path.iterdir():
        f.unlink()
    path.chmod(0o700)
    path.rmdir()
