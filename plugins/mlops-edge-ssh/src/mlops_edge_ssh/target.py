"""The `fleet` deploy target: one deployment is a group of edge devices.

`mlops deploy m/3 --target fleet`, and a pipeline's `[deploy] target = "fleet"` after a
retrain, run a gated rollout (waves, soak, abort and pause thresholds, automatic rollback)
through FleetService, exactly as `mlops fleet rollout` does.

Which devices: the deployment's config, else the deployment's own name as a group.

    config["group"]    a group (or tag key=value) of fleet.toml
    config["devices"]  or a list of device names
    (neither)          the group named like the deployment (a chain deploys to a
                       deployment named after the model: `[group.churn]` devices)

How (the defaults of `mlops fleet rollout`): config["waves"] = "1,10%,50%,100%",
["soak"] = "60s", ["max_failed"] = "10%", ["max_unreachable"] = "30%",
["auto_rollback"] = true, ["gate"] = {} (GateSettings).

The verbs:
- create / update (role "primary"): plan + start + run a rollout of the version the bundle
  folder names (its bundle.json), checked against `digest`; the fleet ships the registry's
  objects, not the folder. An unfinished rollout of the same version is resumed. A rollout
  that ends aborted or failed, or pauses (too many unreachable), raises DeployRefused (a
  chain that meets it ends gates_failed and is not retried: the same version would fail
  again): the devices it switched were rolled back (aborted) or wait for `mlops fleet
  resume` (paused).
  Canary and shadow roles are refused (no such capability: the fleet's own waves and gates
  are its canary).
- get / status: each selected device polled now (serving, health, reachable), the versions
  served with their counts, and the model's last rollout.
- list: recorded fleet deployments with at least one device observed serving their model
  (from the fleet store: no SSH).
- delete: stops the server on every selected device (agent `stop`; the versions stay on
  the device, so a later rollout or `mlops fleet rollback` serves again without transfer).
  Unreachable devices are named in a DeployError after the others were stopped.
- predict: through an SSH port forward to one healthy device serving the model.
- logs: the server log of each selected device (`mlops fleet logs DEVICE` for one).
- rollback: every selected device back to its previous version (no transfer).
- fetch_prediction_logs (remote_logs): a resumable pull of each reachable device's
  segments into `.mlops/deployments/NAME/predlog/DEVICE/`, then published (a hard link,
  a fixed name, so a repeat is harmless) into the deployment's log folder as
  `STEM--DEVICE.jsonl`: the core's monitoring reads the device from that name.
- scopes: each selected device with its fleet.toml groups (no SSH), so `mlops monitor NAME
  --device D | --group G` and the alerts measure one device or one group against the
  deployment's version (`mlops monitor NAME--DEVICE` is `--device DEVICE`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from mlops_console.deploy.base import Capability, DeployError, DeployRefused, DeployTarget
from mlops_console.errors import MlopsError
from mlops_console.monitoring.collect import DEVICE_SEP
from mlops_console.names import check_name, inside
from mlops_edge_ssh import inventory, predlogs
from mlops_edge_ssh.device import DeviceOps, version_id
from mlops_edge_ssh.inventory import Device, Fleet
from mlops_edge_ssh.rollout import controller_alive
from mlops_edge_ssh.service import FleetService
from mlops_edge_ssh.ssh import DeviceError, Links
from mlops_edge_ssh.store import Rollout

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "waves": "1,10%,50%,100%",
    "soak": "60s",
    "max_failed": "10%",
    "max_unreachable": "30%",
    "auto_rollback": True,
}
SEP = DEVICE_SEP  # STEM--DEVICE: one device's segment; NAME--DEVICE: one device's monitoring


def device_deployment(name: str, device: str) -> str:
    """The name one device's traffic of deployment `name` is monitored under (the core
    resolves it to `name` measured on that device alone)."""
    return f"{name}{SEP}{device}"


def _orphan(r: Rollout, deployment: str) -> bool:
    """Whether `r` is a rollout this deployment started whose controller is gone while it
    was running or aborting (not one an engineer paused, nor one another command runs)."""
    return (
        r.created_by == f"deploy:{deployment}"
        and r.state in ("running", "aborting")
        and not controller_alive(r)
    )


class FleetTarget(DeployTarget):
    name = "fleet"
    capabilities = frozenset({Capability.FLEET, Capability.REMOTE_LOGS})

    # -- helpers ---------------------------------------------------------------------------
    def _service(self) -> FleetService:
        return FleetService(self.ws, say=lambda m: log.info("fleet: %s", m))

    def _fleet(self) -> Fleet:
        return inventory.load(Path(self.ws.root))

    def _selector(self, name: str, config: dict[str, Any], fleet: Fleet):
        group = config.get("group")
        devices = list(config.get("devices") or []) or None
        if group is None and devices is None:
            if any(name in d.groups for d in fleet.devices):
                group = name
            else:
                groups = sorted({g for d in fleet.devices for g in d.groups})
                raise DeployError(
                    f"Deployment {name!r} on the fleet names no devices: set its group "
                    f'(config "group"), or put the devices in a group named {name!r} in '
                    f"fleet.toml (groups now: {', '.join(groups) or 'none'})."
                )
        return group, devices

    def _devices(self, name: str, config: dict[str, Any], fleet: Fleet | None = None):
        fleet = fleet or self._fleet()
        group, devices = self._selector(name, config, fleet)
        try:
            return fleet.select(group, devices)
        except MlopsError as exc:
            raise DeployError(str(exc)) from None

    def _endpoint(self, name: str, config: dict[str, Any]) -> str:
        fleet = self._fleet()
        group, devices = self._selector(name, config, fleet)
        return "fleet:" + (group or ",".join(devices or []))

    def _version(self, bundle: Path, digest: str | None):
        """The registered version a bundle folder is (the fleet ships registry objects)."""
        try:
            manifest = json.loads((Path(bundle) / "bundle.json").read_bytes())
            mv = self.ws.models.get_version(manifest["name"], int(manifest["version"]))
        except (OSError, ValueError, KeyError) as exc:
            raise DeployError(
                f"{bundle} is not a bundle folder of a registered version ({exc})."
            ) from None
        if digest and mv.artifact_hash != digest:
            raise DeployError(
                f"{bundle}/bundle.json names {mv.ref}, whose registered hash is not {digest[:12]}."
            )
        return mv

    def _run(self, fleet: Fleet, work):
        async def go():
            links = Links(fleet)
            try:
                return await work(links)
            finally:
                await links.close()

        return asyncio.run(go())

    # -- create / update ------------------------------------------------------------------
    def create(
        self, name: str, bundle: Path, config: dict[str, Any], digest: str | None = None
    ) -> dict[str, Any]:
        mv = self._version(bundle, digest)
        fleet = self._fleet()
        group, devices = self._selector(name, config, fleet)
        opts = {**DEFAULTS, **{k: config[k] for k in DEFAULTS if config.get(k) is not None}}
        from mlops_console.durations import parse_duration

        with self._service() as svc:
            r = svc.store.active()
            if r is not None and (r.model, r.version) != (mv.name, mv.version) and _orphan(r, name):
                # this deployment's last rollout lost its controller (a daemon killed in the
                # middle of a chain, whose retry deploys again): it goes on from its record
                # first, so no device is left half-way, then the new version rolls out
                svc.store.event("resumed", f"resumed by deploy:{name} before {mv.ref}", r.id)
                svc.run(r.id)
                r = svc.store.active()
            if r is not None and (r.model, r.version) == (mv.name, mv.version):
                if controller_alive(r):  # a chain that retried would retrain for nothing
                    raise DeployRefused(
                        f"Rollout {r.id} of {r.target} is running under {r.owner}; "
                        "`mlops fleet status` follows it."
                    )
                if r.state in ("pausing", "paused"):
                    svc.store.set_rollout(r.id, state="running", reason=None)
                rid = r.id  # resumed from its record
            elif r is not None:  # it waits for the engineer: not retried by a chain
                raise DeployRefused(
                    f"Rollout {r.id} of {r.target} is {r.state}; `mlops fleet resume` or "
                    f"`mlops fleet abort` it before deploying {mv.ref}."
                )
            else:
                try:
                    p = svc.plan(
                        mv.ref,
                        group=group,
                        devices=devices,
                        waves=str(opts["waves"]),
                        soak=parse_duration(opts["soak"]),
                        max_failed=opts["max_failed"],
                        max_unreachable=opts["max_unreachable"],
                        auto_rollback=bool(opts["auto_rollback"]),
                        gate=config.get("gate"),
                    )
                except MlopsError as exc:
                    raise DeployError(f"{name}: {exc}") from None
                rid = svc.start(p, actor=f"deploy:{name}")
            done = svc.run(rid)
        self._judge(name, done)
        return self.get(name, config)

    @staticmethod
    def _judge(name: str, r: Rollout) -> None:
        counts = r.counts()
        shown = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        if r.state == "done":
            if not counts.get("healthy"):
                raise DeployRefused(
                    f"{name}: rollout {r.id} of {r.target} ended with no device serving it "
                    f"({shown}); `mlops fleet status {r.id}` shows why."
                )
            return
        if r.state == "paused":
            raise DeployRefused(
                f"{name}: rollout {r.id} of {r.target} paused: {r.reason} ({shown}). "
                "Deploying the same version again, or `mlops fleet resume`, goes on."
            )
        raise DeployRefused(
            f"{name}: rollout {r.id} of {r.target} {r.state}: {r.reason} ({shown}); devices it "
            "switched were put back on their previous version."
        )

    def update(
        self,
        name: str,
        bundle: Path,
        config: dict[str, Any],
        role: str = "primary",
        percent: float = 0.0,
        digest: str | None = None,
    ) -> dict[str, Any]:
        if role != "primary":
            raise DeployError(
                f"The fleet target has no {role}: a rollout's first wave and its gates are "
                "the canary. Deploy with --strategy replace (the rollout runs in waves)."
            )
        return self.create(name, bundle, config, digest=digest)

    # -- reading ---------------------------------------------------------------------------
    def _model(self, name: str) -> str | None:
        rec = self.ws.deployments.find(name)
        return rec.model if rec else None

    def get(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        devs = self._devices(name, config)
        names = [d.name for d in devs]
        with self._service() as svc:
            st = svc.status(live=True, names=names)
            model = self._model(name)
            last = _last_rollout(svc, model, names)
        rows = [
            {
                k: r.get(k)
                for k in ("name", "reachable", "serving", "desired", "converged", "health", "error")
            }
            for r in st["devices"]
        ]
        mine = [
            r
            for r in rows
            if r["serving"] and (model is None or r["serving"].split("/")[0] == model)
        ]
        versions: dict[str, int] = {}
        for r in mine:
            versions[r["serving"]] = versions.get(r["serving"], 0) + 1
        healthy = [r for r in mine if r["reachable"] and r["health"] == "ok"]
        status = "running" if healthy else ("unhealthy" if mine else "stopped")
        return {
            "name": name,
            "target": self.name,
            "status": status,
            "endpoint": self._endpoint(name, config),
            "devices": rows,
            "serving_devices": len(healthy),
            "versions": versions,
            "rollout": last.to_dict() if last else None,
        }

    def status(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        devs = self._devices(name, config)
        with self._service() as svc:
            rows = [r for r in svc.devices() if r["name"] in {d.name for d in devs}]
        requests = sum(int((r["telemetry"] or {}).get("requests") or 0) for r in rows)
        errors = sum(int((r["telemetry"] or {}).get("errors") or 0) for r in rows)
        return {
            "devices": {r["name"]: r["telemetry"] for r in rows},
            "requests": requests,
            "errors": errors,
        }

    def list(self) -> builtins.list[str]:
        with self._service() as svc:
            observed = svc.store.observed()
        out = []
        fleet = self._fleet()
        for rec in self.ws.deployments.list():
            if rec.target != self.name:
                continue
            try:
                devs = self._devices(rec.name, rec.config, fleet)
            except DeployError:
                continue
            if any(
                (observed.get(d.name) or {}).get("model") == rec.model
                and (observed.get(d.name) or {}).get("reachable")
                for d in devs
            ):
                out.append(rec.name)
        return out

    # -- delete, rollback ------------------------------------------------------------------
    def delete(self, name: str, config: dict[str, Any] | None = None) -> None:
        fleet = self._fleet()
        try:
            devs = self._devices(name, config or {}, fleet)
        except DeployError:
            return  # nothing it could be serving
        failed: dict[str, str] = {}

        async def work(links: Links) -> None:
            async def one(d: Device) -> None:
                async with links.parallel:
                    try:
                        await DeviceOps(links, d).agent("stop")
                    except DeviceError as e:
                        failed[d.name] = e.reason
                        return
                    # it serves nothing now, and reconcile must not bring the version back
                    svc.store.observe(
                        d.name, True, health="stopped", serving=None, model=None, version=None
                    )
                    svc.store.clear_desired(d.name)
                    svc.store.event("stop", f"server stopped (deployment {name})", None, d.name)

            await asyncio.gather(*(one(d) for d in devs))

        with self._service() as svc:
            self._run(fleet, work)
        if failed:
            raise DeployError(
                f"{name}: the servers of {', '.join(sorted(failed))} were not stopped ("
                + "; ".join(f"{k}: {v}" for k, v in sorted(failed.items()))
                + "); the other devices were."
            )

    def rollback(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        names = [d.name for d in self._devices(name, config)]
        with self._service() as svc:
            out = svc.rollback(names=names)
        bad = [o for o in out if not o["ok"]]
        if bad and len(bad) == len(out):
            raise DeployError(
                f"{name}: no device rolled back: "
                + "; ".join(f"{o['device']}: {o['reason']}" for o in bad)
            )
        return self.get(name, config)

    # -- predict, logs ---------------------------------------------------------------------
    def predict(
        self,
        name: str,
        config: dict[str, Any],
        records: builtins.list[dict[str, Any]],
        output: str = "predict",
    ) -> builtins.list:
        import httpx

        fleet = self._fleet()
        devs = self._devices(name, config, fleet)
        model = self._model(name)
        with self._service() as svc:
            observed = svc.store.observed()

        def rank(d: Device) -> int:  # healthy devices serving the model first
            o = observed.get(d.name) or {}
            return (
                0
                if o.get("reachable") and o.get("health") == "ok" and o.get("model") == model
                else 1
            )

        tried: builtins.list[str] = []

        async def work(links: Links):
            for d in sorted(devs, key=rank):
                try:
                    async with (
                        DeviceOps(links, d).forward() as url,
                        httpx.AsyncClient(base_url=url, timeout=60) as client,
                    ):
                        r = await client.post(
                            f"/invocations?output={output}", json={"dataframe_records": records}
                        )
                except (DeviceError, httpx.HTTPError, OSError) as e:
                    tried.append(f"{d.name}: {getattr(e, 'reason', None) or type(e).__name__}")
                    continue
                if r.status_code >= 500 or r.status_code == 404:
                    tried.append(f"{d.name}: HTTP {r.status_code}")
                    continue
                if r.status_code != 200:  # the request itself: every device would refuse it
                    raise DeployError(f"{name} ({d.name}): {r.json().get('message', r.text)}")
                return r.json()["predictions"]
            raise DeployError(f"{name}: no device answered ({'; '.join(tried) or 'no devices'}).")

        return self._run(fleet, work)

    def logs(self, name: str, tail: int = 100) -> str:
        rec = self.ws.deployments.find(name)
        fleet = self._fleet()
        devs = self._devices(name, rec.config if rec else {}, fleet)
        parts: dict[str, str] = {}

        async def work(links: Links) -> None:
            async def one(d: Device) -> None:
                async with links.parallel:
                    try:
                        parts[d.name] = await DeviceOps(links, d).logs(tail)
                    except DeviceError as e:
                        parts[d.name] = f"(not read: {e.reason})"

            await asyncio.gather(*(one(d) for d in devs))

        self._run(fleet, work)
        return "\n".join(f"--- {d.name} ---\n{parts.get(d.name, '').rstrip()}" for d in devs)

    # -- prediction logs -------------------------------------------------------------------
    def staging_dir(self, name: str, device: str) -> Path:
        return inside(
            self.ws.state / "deployments", check_name("deployment", name), "predlog", device
        )

    def scopes(self, name: str, config: dict[str, Any]) -> dict[str, builtins.list[str]]:
        """Each device of the deployment with its fleet.toml groups (no SSH)."""
        return {d.name: list(d.groups) for d in self._devices(name, config)}

    def fetch_prediction_logs(self, name: str, config: dict[str, Any], dest: Path) -> int:
        """Pull every reachable device's new prediction-log bytes and publish the complete
        segments into `dest` as `STEM--DEVICE.jsonl`; how many were published.
        Unreachable devices are skipped (logged): the next collection resumes them."""
        fleet = self._fleet()
        devs = self._devices(name, config, fleet)
        published = [0]
        errors: dict[str, str] = {}

        def publish(dev: Device, seg: Path) -> None:
            stem = seg.name[: -len(".jsonl")]
            t = Path(dest) / f"{stem}{SEP}{dev.name}.jsonl"
            t.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.link(seg, t)
            seg.unlink()
            published[0] += 1

        async def work(links: Links) -> None:
            async def one(d: Device) -> None:
                async with links.parallel:
                    try:
                        res = await predlogs.pull(links, d, self.staging_dir(name, d.name), store)
                    except DeviceError as e:
                        errors[d.name] = e.reason
                        return
                    for seg in res.complete:
                        publish(d, seg)

            await asyncio.gather(*(one(d) for d in devs))

        with self._service() as svc:
            store = svc.store
            self._run(fleet, work)
        for dev, why in sorted(errors.items()):
            log.warning("prediction logs of %s on %s not pulled: %s", name, dev, why)
        return published[0]


def _last_rollout(svc: FleetService, model: str | None, names: builtins.list[str]):
    wanted = set(names)
    for r in svc.history(50):
        if (model is None or r.model == model) and wanted & {d.device for d in r.devices}:
            return r
    return None


__all__ = ["DEFAULTS", "FleetTarget", "device_deployment", "version_id"]
