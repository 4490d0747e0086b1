"""The fleet as one service over a workspace: what the CLI, the console and the daemon
call. Synchronous methods; each runs its own asyncio loop for the SSH work."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlops_console.errors import MlopsError
from mlops_edge_ssh import inventory, layers
from mlops_edge_ssh.device import DeviceOps, version_id
from mlops_edge_ssh.inventory import Device, Fleet
from mlops_edge_ssh.rollout import (
    Controller,
    Plan,
    controller_alive,
    owner_text,
    plan,
    request,
    start,
)
from mlops_edge_ssh.ssh import DeviceError, Links
from mlops_edge_ssh.store import FleetStore, Rollout

MIN_DISK = 200 * 1024 * 1024
MIN_MEM = 128 * 1024 * 1024
MAX_SKEW = 30.0


class FleetService:
    def __init__(self, ws, say: Callable[[str], None] | None = None):
        self.ws = ws
        self.say = say or (lambda _m: None)
        self.store = FleetStore(Path(ws.state))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> FleetService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def fleet(self) -> Fleet:
        return inventory.load(Path(self.ws.root))

    # -- reading ------------------------------------------------------------------------
    def devices(self) -> list[dict[str, Any]]:
        fleet = self.fleet
        observed = self.store.observed()
        desired = self.store.desired()
        out = []
        for d in fleet.devices:
            row = d.to_dict()
            row.update(self._state_fields(d, observed.get(d.name), desired.get(d.name)))
            out.append(row)
        return out

    @staticmethod
    def _state_fields(d: Device, obs: dict[str, Any] | None, want: dict[str, Any] | None):
        obs = obs or {}
        desired = f"{want['model']}/{want['version']}" if want else None
        serving = None
        if obs.get("model") and obs.get("version") is not None:
            serving = f"{obs['model']}/{obs['version']}"
        elif obs.get("serving"):
            parts = str(obs["serving"]).rsplit("-", 2)
            serving = f"{parts[0]}/{parts[1]}" if len(parts) == 3 else obs["serving"]
        return {
            "reachable": bool(obs.get("reachable")) if obs else None,
            "serving": serving,
            "desired": desired,
            "converged": desired is None or desired == serving,
            "health": obs.get("health"),
            "last_seen": obs.get("seen_at"),
            "checked_at": obs.get("checked_at"),
            "error": obs.get("error"),
            "telemetry": obs.get("telemetry") or {},
        }

    def status(self, live: bool = True, names: list[str] | None = None) -> dict[str, Any]:
        """Each device (reached now unless `live` is False) and the current rollout."""
        fleet = self.fleet
        if live:
            asyncio.run(self._poll(fleet, fleet.select(None, names)))
        rows = [r for r in self.devices() if not names or r["name"] in names]
        r = self.store.active() or self.store.rollout()
        return {
            "devices": rows,
            "rollout": r.to_dict() if r else None,
            "controller_alive": controller_alive(r) if r else False,
        }

    async def _poll(self, fleet: Fleet, devs: list[Device]) -> None:
        links = Links(fleet)

        async def one(d: Device) -> None:
            async with links.parallel:
                ops = DeviceOps(links, d)
                try:
                    t = await ops.telemetry()
                except DeviceError as e:
                    self.store.observe(d.name, False, error=e.reason, health="unknown")
                    return
                cur = t.get("current")
                meta = next(
                    (v for v in (ops.probe_info or {}).get("versions", []) if v.get("id") == cur),
                    {},
                )
                self.store.observe(
                    d.name,
                    True,
                    serving=cur,
                    model=meta.get("model"),
                    version=meta.get("version"),
                    health=t.get("health"),
                    telemetry=t,
                )

        try:
            await asyncio.gather(*(one(d) for d in devs))
        finally:
            await links.close()

    def check(
        self, names: list[str] | None = None, group: str | None = None
    ) -> list[dict[str, Any]]:
        """Is each device ready to take rollouts? Every finding, not just the first."""
        fleet = self.fleet
        devs = fleet.select(group, names)
        results: dict[str, dict[str, Any]] = {}

        async def run() -> None:
            links = Links(fleet)

            async def one(d: Device) -> None:
                async with links.parallel:
                    results[d.name] = await self._check_one(links, d)

            try:
                await asyncio.gather(*(one(d) for d in devs))
            finally:
                await links.close()

        asyncio.run(run())
        return [results[d.name] for d in devs]

    async def _check_one(self, links: Links, d: Device) -> dict[str, Any]:
        res: dict[str, Any] = {"name": d.name, "address": d.address, "ok": False, "checks": []}

        def add(name: str, ok: bool, say: str) -> None:
            res["checks"].append({"check": name, "ok": ok, "detail": say})

        ops = DeviceOps(links, d)
        try:
            await links.get(d)
        except DeviceError as e:
            local = e.reason.startswith(("the known_hosts file", "the key file"))
            if not local:  # else a file on this side is missing: the device was not tried
                ok = e.kind != "unreachable"
                add("reachable", ok, "yes" if ok else e.reason)
            if e.kind != "unreachable":
                add("host key and login", False, e.reason)
            res["reachable"] = e.kind != "unreachable"
            self.store.observe(d.name, False, error=e.reason)
            return res
        res["reachable"] = True
        add("reachable", True, "yes")
        add(
            "host key verified",
            True,
            "matches known_host in fleet.toml"
            if d.known_host
            else f"matches its line in {d.known_hosts}",
        )
        try:
            info = await ops.probe()
        except DeviceError as e:
            add("python", False, f"{d.python} cannot run the device agent: {e.reason}")
            return res
        res["probe"] = {
            k: info.get(k)
            for k in (
                "machine",
                "python_full",
                "libc",
                "libc_version",
                "os",
                "kernel",
                "cpus",
                "mem_total",
                "mem_available",
                "disk_free",
                "systemd",
                "docker",
                "zstd",
                "current",
                "previous",
            )
        }
        add("os", True, f"{info.get('os')} ({info.get('kernel')}), {info.get('machine')}")
        add("python", True, f"Python {info.get('python_full')}")
        disk = int(info.get("disk_free") or 0)
        add(
            "disk",
            disk >= MIN_DISK,
            f"{disk / 2**20:.0f} MiB free under {d.root}"
            + ("" if disk >= MIN_DISK else f" (at least {MIN_DISK / 2**20:.0f} MiB needed)"),
        )
        mem = int(info.get("mem_available") or 0)
        add("memory", mem >= MIN_MEM, f"{mem / 2**20:.0f} MiB available")
        add(
            "cpu",
            bool(info.get("cpus")),
            f"{info.get('cpus')} CPU(s), load {info.get('loadavg', 0):.2f}",
        )
        skew = float(info.get("time", time.time())) - time.time()
        add(
            "clock",
            abs(skew) <= MAX_SKEW,
            f"skew {skew:+.1f}s"
            + (
                ""
                if abs(skew) <= MAX_SKEW
                else " (set the device's clock: logs and telemetry are time-stamped)"
            ),
        )
        if d.runtime == "docker":
            add(
                "runtime",
                bool(info.get("docker")),
                "docker present"
                if info.get("docker")
                else 'runtime = "docker" but the device has no docker command',
            )
        else:
            try:
                platform = ops.platform()
                rt = await asyncio.to_thread(layers.process_runtime, platform)
                there = set(info.get("runtimes", []))
                missing = [x for x in rt.layers if x.sha256 not in there]
                add(
                    "runtime",
                    True,
                    f"a build exists for {platform} ({rt.size / 2**20:.0f} MiB, "
                    + (
                        "on the device"
                        if not missing
                        else f"{sum(x.size for x in missing) / 2**20:.0f} MiB not sent yet"
                    )
                    + ")",
                )
            except layers.PlatformError as e:
                add("runtime", False, str(e))
        add(
            "compression",
            True,
            "zstd present" if info.get("zstd") else "no zstd on the device: layers go uncompressed",
        )
        server = info.get("server") or {}
        serving = info.get("current")
        add(
            "serving",
            True,
            f"{serving or 'nothing'}"
            + (" (server up)" if server.get("alive") else " (server down)" if serving else "")
            + f"; {len(info.get('versions') or [])} version(s) installed",
        )
        res["ok"] = all(c["ok"] for c in res["checks"])
        self.store.observe(
            d.name, True, serving=serving, health="ok" if server.get("alive") else "down"
        )
        return res

    # -- rollouts -------------------------------------------------------------------------
    def plan(self, ref: str, **opts: Any) -> Plan:
        return plan(self.ws, self.fleet, ref, **opts)

    def start(self, p: Plan, actor: str | None = None) -> str:
        return start(self.ws, self.store, p, actor)

    def run(self, rid: str | None = None) -> Rollout:
        r = self._rollout(rid)
        if controller_alive(r):
            raise MlopsError(
                f"Rollout {r.id} is being run {owner_text(r.owner)}; `mlops fleet status` "
                "shows how it goes."
            )
        ctl = Controller(self.ws, self.fleet, self.store, r.id, say=self.say)
        try:
            return asyncio.run(ctl.run())
        finally:
            from mlops_edge_ssh import transfer

            transfer.forget_wire()  # the chunks kept for the rollout's devices

    def _rollout(self, rid: str | None) -> Rollout:
        r = self.store.rollout(rid) if rid else (self.store.active() or self.store.rollout())
        if r is None and rid:
            raise MlopsError(f"No rollout {rid}; `mlops fleet history` lists them.")
        if r is None:
            raise MlopsError("No rollout yet; `mlops fleet rollout MODEL@ALIAS` starts one.")
        return r

    def rollout_record(self, rid: str | None = None) -> Rollout:
        return self._rollout(rid)

    def pause(self) -> Rollout:
        return request(self.store, "pausing", "paused by request")

    def resume(self, rid: str | None = None) -> Rollout:
        r = self._rollout(rid)
        if r.state in ("done", "aborted", "failed"):
            raise MlopsError(f"Rollout {r.id} is {r.state}; there is nothing to resume.")
        if controller_alive(r):
            raise MlopsError(
                f"Rollout {r.id} is being run {owner_text(r.owner)}; there is nothing to resume."
            )
        if r.state in ("pausing", "paused"):
            self.store.set_rollout(r.id, state="running", reason=None)
        self.store.event("resumed", "resumed", r.id)
        return self.run(r.id)

    def abort(self, reason: str = "aborted by request") -> Rollout:
        r = self._rollout(None)
        if r.state in ("done", "aborted", "failed"):
            raise MlopsError(f"Rollout {r.id} is already {r.state}.")
        if controller_alive(r):
            return request(self.store, "aborting", reason)
        self.store.set_rollout(r.id, state="aborting", reason=reason)
        return self.run(r.id)

    def rollback(
        self, names: list[str] | None = None, group: str | None = None
    ) -> list[dict[str, Any]]:
        """Put devices back on the version they served before (kept on the device: no
        transfer)."""
        fleet = self.fleet
        devs = fleet.select(group, names)
        out: list[dict[str, Any]] = []

        async def run() -> None:
            links = Links(fleet)

            async def one(d: Device) -> None:
                async with links.parallel:
                    ops = DeviceOps(links, d)
                    t0 = time.monotonic()
                    try:
                        info = await ops.probe()
                        if not info.get("previous"):
                            out.append(
                                {
                                    "device": d.name,
                                    "ok": False,
                                    "reason": "no previous version on the device",
                                }
                            )
                            return
                        res = await ops.rollback()
                        cur = res.get("current")
                        meta = next(
                            (v for v in info.get("versions", []) if v.get("id") == cur), None
                        )
                        if meta:
                            self.store.set_desired(
                                d.name, meta["model"], meta["version"], meta["digest"], None
                            )
                        self.store.observe(
                            d.name,
                            True,
                            serving=cur,
                            model=(meta or {}).get("model"),
                            version=(meta or {}).get("version"),
                            health="ok",
                        )
                        self.store.event("rollback", f"rolled back to {cur}", None, d.name)
                        out.append(
                            {
                                "device": d.name,
                                "ok": True,
                                "serving": cur,
                                "seconds": round(time.monotonic() - t0, 3),
                            }
                        )
                    except DeviceError as e:
                        out.append(
                            {"device": d.name, "ok": False, "reason": e.reason, "kind": e.kind}
                        )

            try:
                await asyncio.gather(*(one(d) for d in devs))
            finally:
                await links.close()

        asyncio.run(run())
        order = {d.name: i for i, d in enumerate(devs)}
        return sorted(out, key=lambda x: order[x["device"]])

    def reconcile(self) -> list[Rollout]:
        """Bring every device that is not on its desired version there (unreachable devices
        that came back, pins), and every device on it whose server is down (a reboot without
        systemd, a crash loop): the switch starts it again. One rollout (a single wave,
        gated) per version; the rollouts run, in order (none: nothing to do)."""
        fleet = self.fleet
        desired = self.store.desired()
        asyncio.run(self._poll(fleet, list(fleet.devices)))
        observed = self.store.observed()
        by_target: dict[str, list[str]] = {}
        for d in fleet.devices:
            want = d.effective_pin or (
                f"{desired[d.name]['model']}/{desired[d.name]['version']}"
                if d.name in desired
                else None
            )
            if not want or d.held:
                continue
            obs = observed.get(d.name) or {}
            if not obs.get("reachable"):
                continue
            have = f"{obs.get('model')}/{obs.get('version')}" if obs.get("model") else None
            down = (
                obs.get("health") == "down"
                or (obs.get("telemetry") or {}).get("server_alive") is False
            )
            if have != want or down:
                by_target.setdefault(want, []).append(d.name)
        ran: list[Rollout] = []
        for ref, names in by_target.items():
            self.say(f"reconciling {', '.join(names)} to {ref}")
            p = plan(
                self.ws,
                fleet,
                ref,
                devices=names,
                waves="100%",
                soak=0,
                max_failed="100%",
                max_unreachable="100%",
            )
            rid = start(self.ws, self.store, p, "reconcile")
            try:
                ctl = Controller(self.ws, fleet, self.store, rid, say=self.say)
                ran.append(asyncio.run(ctl.run()))
            finally:
                from mlops_edge_ssh import transfer

                transfer.forget_wire()  # the chunks kept for its devices
        return ran

    def logs(self, name: str, lines: int = 100) -> str:
        d = self.fleet.device(name)

        async def run() -> str:
            links = Links(self.fleet)
            try:
                return await DeviceOps(links, d).logs(lines)
            finally:
                await links.close()

        return asyncio.run(run())

    def history(self, limit: int = 20) -> list[Rollout]:
        return self.store.rollouts(limit)

    def events(self, rid: str | None = None, device: str | None = None, limit: int = 200):
        return self.store.events(rid, device, limit)

    def record_golden(self, ref: str, rows: int | None = None) -> Path:
        """Record golden rows for a model from a version known to be good: its inputs and
        that version's answers, in golden/<model>.json. Later rollouts of any version of
        the model must agree with them (`min_agreement`, 90% by default)."""
        import json

        from mlops_edge_ssh.gate import GOLDEN_ROWS, build_golden

        mv = self.ws.models.resolve(ref)
        g = build_golden(self.ws, mv, rows=rows or GOLDEN_ROWS)  # distinct training rows
        n = len(g.rows)
        path = Path(self.ws.root) / "golden" / f"{mv.name}.json"
        path.parent.mkdir(exist_ok=True)
        doc = {
            "recorded_from": mv.ref,
            "recorded_at": time.time(),
            "columns": g.columns,
            "data": g.rows[:n],
            "labels": g.expected[:n],
        }
        path.write_text(json.dumps(doc, indent=1) + "\n")
        return path

    # -- pins and holds (written to fleet.toml, the engineer's text) ----------------------
    def pin(self, ref: str, device: str | None = None, group: str | None = None) -> Fleet:
        mv = self.ws.models.resolve(ref)
        scope, name = ("group", group) if group else ("device", device)
        if not name:
            raise MlopsError("Name a device, or --group G.")
        return inventory.set_key(Path(self.ws.root), scope, name, "pin", mv.ref)

    def unpin(self, device: str | None = None, group: str | None = None) -> str | None:
        """Remove a device's or a group's pin; the pin it had, or None if it had none."""
        scope, name = ("group", group) if group else ("device", device)
        if not name:
            raise MlopsError("Name a device, or --group G.")
        fleet = self.fleet
        had = (fleet.groups.get(name) or {}).get("pin") if group else fleet.device(name).pin
        inventory.set_key(Path(self.ws.root), scope, name, "pin", None)
        return had

    def hold(self, device: str, on: bool = True) -> Fleet:
        return inventory.set_key(Path(self.ws.root), "device", device, "hold", True if on else None)


__all__ = ["FleetService", "version_id"]
