"""Rollouts: a durable record of desired state per device, advanced in waves behind
health gates, with abort thresholds that keep "unreachable" apart from "failed".

Every step a device takes is written before and after it is taken, so a controller killed
anywhere resumes from the record: a device that was sending resumes its transfer from the
last verified chunk; one that was switching or gating is probed, switched again if it is
not on the target (a switch is idempotent and atomic on the device) and gated again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_console.errors import MlopsError
from mlops_edge_ssh import layers
from mlops_edge_ssh.device import DeviceOps, Target, version_id
from mlops_edge_ssh.gate import GateSettings, Golden, build_golden
from mlops_edge_ssh.inventory import Device, Fleet
from mlops_edge_ssh.ssh import (
    AuthRefused,
    DeviceError,
    HostKeyRefused,
    Links,
    Unreachable,
    quiet_lost_links,
)
from mlops_edge_ssh.store import FINAL, FleetStore, Rollout

Say = Callable[[str], None]


def parse_waves(spec: str, n: int) -> list[int]:
    """Cumulative device counts per wave: "1,10%,50%,100%" for 20 devices -> [1, 2, 10, 20].
    Waves that add nobody are dropped; the last wave always reaches every device."""
    if n == 0:
        return []
    out: list[int] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(%?)", part)
        if not m:
            raise MlopsError(
                f"wave {part!r} is not a count or a percentage; use e.g. --waves 1,10%,50%,100%."
            )
        value = float(m.group(1))
        prev = out[-1] if out else 0
        count = math.ceil(n * value / 100) if m.group(2) else prev + int(value)
        if (m.group(2) and value > 100) or value <= 0:
            raise MlopsError(f"wave {part!r} must be between 1 device and 100%.")
        count = min(n, max(count, out[-1] if out else 0))
        if not out or count > out[-1]:
            out.append(count)
    if not out or out[-1] < n:
        out.append(n)
    return out


def parse_fraction(value: str | float, what: str) -> float:
    if isinstance(value, (int, float)):
        f = float(value)
    else:
        s = value.strip()
        try:
            f = float(s[:-1]) / 100 if s.endswith("%") else float(s)
        except ValueError:
            raise MlopsError(f"{what} {value!r} is not a percentage like 10%.") from None
    if not 0 <= f <= 1:
        raise MlopsError(f"{what} {value!r} must be between 0% and 100%.")
    return f


@dataclass
class Plan:
    model: str
    version: int
    digest: str
    ref: str
    waves: list[list[Device]]
    skipped: list[tuple[Device, str]]
    soak: float
    max_failed: float
    max_unreachable: float
    auto_rollback: bool
    gate: GateSettings
    selector: str | None = None

    @property
    def target(self) -> str:
        return f"{self.model}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "ref": self.ref,
            "selector": self.selector,
            "waves": [[d.name for d in w] for w in self.waves],
            "skipped": [{"device": d.name, "reason": why} for d, why in self.skipped],
            "soak_s": self.soak,
            "max_failed": self.max_failed,
            "max_unreachable": self.max_unreachable,
            "auto_rollback": self.auto_rollback,
        }


def plan(
    ws,
    fleet: Fleet,
    ref: str,
    *,
    group: str | None = None,
    devices: list[str] | None = None,
    waves: str = "1,10%,50%,100%",
    soak: float = 60.0,
    max_failed: str | float = "10%",
    max_unreachable: str | float = "30%",
    auto_rollback: bool = True,
    gate: dict[str, Any] | None = None,
) -> Plan:
    mv = ws.models.resolve(ref)
    chosen = fleet.select(group, devices)
    go: list[Device] = []
    skipped: list[tuple[Device, str]] = []
    for d in chosen:
        pin = d.effective_pin
        if d.held:
            skipped.append((d, "held"))
        elif pin and pin != mv.ref and pin.split("/")[0] == mv.name:
            skipped.append((d, f"pinned to {pin}"))
        else:
            go.append(d)
    if not go:
        raise MlopsError(
            "No device would get the version: "
            + (", ".join(f"{d.name} {why}" for d, why in skipped) or "the selection is empty")
            + "."
        )
    counts = parse_waves(waves, len(go))
    grouped = [go[(counts[i - 1] if i else 0) : c] for i, c in enumerate(counts)]
    return Plan(
        model=mv.name,
        version=mv.version,
        digest=mv.artifact_hash,
        ref=ref,
        waves=grouped,
        skipped=skipped,
        soak=float(soak),
        max_failed=parse_fraction(max_failed, "--max-failed"),
        max_unreachable=parse_fraction(max_unreachable, "--max-unreachable"),
        auto_rollback=auto_rollback,
        gate=GateSettings.from_dict({**fleet.gate, **(gate or {})}),  # [gate], then ours
        selector=group,
    )


def golden_file(ws, model: str) -> Path:
    return Path(ws.root) / "golden" / f"{model}.json"


def start(ws, store: FleetStore, p: Plan, actor: str | None = None) -> str:
    """Record the rollout (nothing is sent yet); its id."""
    active = store.active()
    if active is not None:
        todo = (
            "`mlops fleet resume` goes on with it (its unreachable devices too) or `mlops fleet "
            "abort` ends it"
            if active.state in ("paused", "pausing") or not controller_alive(active)
            else "wait for it (`mlops fleet status` follows it) or `mlops fleet abort` it"
        )
        raise MlopsError(
            f"Rollout {active.id} ({active.target}) is {active.state}: {todo}, before "
            "another starts."
        )
    mv = ws.models.get_version(p.model, p.version)
    golden = build_golden(ws, mv, golden_file(ws, p.model))
    rows: list[tuple[str, int, str]] = []
    for i, wave in enumerate(p.waves):
        rows += [(d.name, i, "pending") for d in wave]
    rows += [(d.name, -1, "skipped") for d, _ in p.skipped]
    rid = store.create_rollout(
        {
            "model": p.model,
            "version": p.version,
            "digest": p.digest,
            "ref": p.ref,
            "selector": p.selector,
            "waves": [[d.name for d in w] for w in p.waves],
            "soak": p.soak,
            "max_failed": p.max_failed,
            "max_unreachable": p.max_unreachable,
            "auto_rollback": p.auto_rollback,
            "gate": p.gate.__dict__,
            "golden": golden.to_dict(),
            "created_by": actor,
        },
        rows,
    )
    for d, why in p.skipped:
        store.set_device(rid, d.name, detail={"reason": why})
    store.event(
        "rollout", f"rollout of {p.target} to {sum(map(len, p.waves))} devices planned", rid
    )
    return rid


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{time.time():.0f}"


@dataclass
class Controller:
    ws: Any
    fleet: Fleet
    store: FleetStore
    rid: str
    say: Say = print
    owner: str = field(default_factory=owner_id)
    give_up_after: float = 600.0  # seconds without progress before a device is unreachable

    def __post_init__(self) -> None:
        self._layers: dict[layers.Platform, layers.ProcessRuntime] = {}
        self._layer_lock = asyncio.Lock()

    # -- the whole rollout ------------------------------------------------------------
    async def run(self) -> Rollout:
        r = self._load()
        if r.state in FINAL:
            return r
        if r.owner and not controller_alive(r):
            self.store.set_rollout(self.rid, owner=None, heartbeat=None)  # it died
        if not self.store.claim(self.rid, self.owner):
            raise MlopsError(
                f"Rollout {self.rid} is being run {owner_text(r.owner)} (it beat "
                f"{time.time() - (r.heartbeat or 0):.0f}s ago); use `mlops fleet status`."
            )
        if r.state == "paused":
            self.store.set_rollout(self.rid, state="running", reason=None)
        asyncio.get_running_loop().set_exception_handler(quiet_lost_links)
        self.links = Links(self.fleet)
        self.target = Target.from_workspace(self.ws, r.model, r.version, r.digest)
        self.golden = Golden.from_dict(r.golden)
        self.gate_settings = GateSettings.from_dict(r.gate)
        beat = asyncio.create_task(self._beat())
        try:
            return await self._run()
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            await self.links.close()
            self.store.release(self.rid, self.owner)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(3)
            if not self.store.beat(self.rid, self.owner):
                self.lost = True  # another controller took it over (ours stalled)
                return

    def _load(self) -> Rollout:
        if getattr(self, "lost", False):
            raise MlopsError(
                f"Rollout {self.rid} was taken over by another controller (this one stalled "
                "past its heartbeat); this one stops. `mlops fleet status` follows it."
            )
        r = self.store.rollout(self.rid)
        if r is None:
            raise MlopsError(f"No rollout {self.rid}; `mlops fleet history` lists them.")
        return r

    def _event(self, kind: str, msg: str, device: str | None = None) -> None:
        self.store.event(kind, msg, self.rid, device)
        self.say(f"{device}: {msg}" if device else msg)

    async def _run(self) -> Rollout:
        r = self._load()
        for wave in range(r.wave, len(r.waves)):
            self.store.set_rollout(self.rid, wave=wave)
            r = self._load()
            if await self._stopped(r):
                return self._load()
            names = r.waves[wave]
            todo = [
                d
                for d in r.devices
                if d.device in names
                and d.state not in ("healthy", "failed", "rolled_back", "skipped")
            ]
            self._event("wave", f"wave {wave + 1}/{len(r.waves)}: {len(names)} device(s)")
            desired = self.store.desired()
            for d in todo:
                if "prior_desired" not in d.detail:  # what an abort puts back
                    prior = desired.get(d.device)
                    self.store.set_device(
                        self.rid, d.device, detail={**d.detail, "prior_desired": prior}
                    )
                self.store.set_desired(d.device, r.model, r.version, r.digest, self.rid)
            await asyncio.gather(
                *(self._deliver(self.fleet.device(d.device)) for d in todo if self._known(d.device))
            )
            if await self._judge():
                return self._load()
            if r.soak and wave < len(r.waves) - 1:
                self._event("soak", f"wave {wave + 1} passed its gates; soaking {r.soak:g}s")
                if not await self._soak(r.soak, names):
                    return self._load()
                if await self._judge():
                    return self._load()
        r = self._load()
        counts = r.counts()
        unreachable = counts.get("unreachable", 0)
        refused = counts.get("refused", 0)
        reasons = []
        if unreachable:
            reasons.append(
                f"{unreachable} device(s) unreachable: they get {r.target} when they come back "
                "(`mlops fleet reconcile`)"
            )
        if refused:
            reasons.append(
                f"{refused} device(s) refused us (host key or login; `mlops fleet check` says "
                f"why): they get {r.target} once that is fixed (`mlops fleet reconcile`)"
            )
        reason = "; ".join(reasons) or None
        self.store.set_rollout(self.rid, state="done", reason=reason)
        self._event("done", f"rollout of {r.target} done: {self._summary(counts)}")
        await self._gc(r)
        return self._load()

    def _known(self, name: str) -> bool:
        try:
            self.fleet.device(name)
            return True
        except MlopsError:
            self.store.set_device(
                self.rid, name, state="skipped", detail={"reason": "no longer in fleet.toml"}
            )
            return False

    @staticmethod
    def _summary(counts: dict[str, int]) -> str:
        return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to do"

    async def _stopped(self, r: Rollout) -> bool:
        """Honour a pause or an abort asked for from outside (another command)."""
        if r.state == "pausing":
            self.store.set_rollout(self.rid, state="paused", reason="paused by request")
            self._event(
                "paused", f"rollout paused at wave {r.wave + 1}; `mlops fleet resume` goes on"
            )
            return True
        if r.state == "aborting":
            await self._abort(r.reason or "aborted by request")
            return True
        return False

    async def _judge(self) -> bool:
        """After a wave: abort past --max-failed, pause past --max-unreachable. True: stop."""
        r = self._load()
        if await self._stopped(r):
            return True
        attempted = [
            d for d in r.devices if 0 <= d.wave <= r.wave and d.state not in ("skipped", "pending")
        ]
        n = max(1, len(attempted))
        failed = sum(d.state == "failed" for d in attempted)
        unreachable = sum(d.state in ("unreachable", "refused") for d in attempted)
        if failed and failed / n > r.max_failed:
            await self._abort(
                f"{failed} of {n} device(s) failed their gate ({failed / n:.0%} > "
                f"--max-failed {r.max_failed:.0%})"
            )
            return True
        if unreachable and unreachable / n > r.max_unreachable:
            why = (
                f"{unreachable} of {n} device(s) unreachable or refusing us "
                f"({unreachable / n:.0%} > "
                f"--max-unreachable {r.max_unreachable:.0%}); not a verdict on the model: "
                "`mlops fleet resume` when the links are back"
            )
            self.store.set_rollout(self.rid, state="paused", reason=why)
            self._event("paused", why)
            return True
        return False

    async def _soak(self, seconds: float, names: list[str]) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(min(0.5, max(0.0, end - time.monotonic())))
            r = self._load()
            if r.state != "running":
                await self._stopped(r)
                return False
        # the soak is over: every device of the wave must still be healthy, with no errors
        r = self._load()
        checks = [d for d in r.devices if d.device in names and d.state == "healthy"]
        await asyncio.gather(
            *(
                self._recheck(self.fleet.device(d.device), d.detail)
                for d in checks
                if self._known(d.device)
            )
        )
        return True

    async def _recheck(self, dev: Device, detail: dict[str, Any]) -> None:
        ops = DeviceOps(self.links, dev, give_up_after=self.give_up_after)
        try:
            t = await ops.telemetry()
        except (Unreachable, HostKeyRefused, AuthRefused) as e:
            # not a verdict on the model; it was healthy when last seen, but it counts for
            # --max-unreachable, and an abort knows it may serve the version
            state = "unreachable" if isinstance(e, Unreachable) else "refused"
            self.store.set_device(
                self.rid,
                dev.name,
                state=state,
                detail={**detail, "reason": f"after its soak: {e.reason}", "step": "healthy"},
            )
            self.store.observe(dev.name, False, error=e.reason)
            self._event(state, f"not reached after its soak ({e.reason})", dev.name)
            return
        except DeviceError as e:
            t = {"health": f"agent error: {e.reason}"}
        before = (detail.get("gate") or {}).get("errors_baseline", 0)
        errors = (t.get("errors") or 0) - before
        if t.get("health") == "ok" and t.get("current") == self.target.id and errors <= 0:
            self.store.observe(
                dev.name,
                True,
                serving=self.target.id,
                model=self.target.model,
                version=self.target.version,
                health="ok",
                telemetry=t,
            )
            return
        why = (
            f"after the soak: health {t.get('health')}, serving {t.get('current')}, "
            f"{errors:g} failed request(s)"
        )
        await self._fail(dev, ops, {"step": "soak", "reason": why, "telemetry": t})

    # -- one device -------------------------------------------------------------------
    def _dstate(self, name: str):
        r = self._load()
        return next(d for d in r.devices if d.device == name)

    async def _layer(self, platform: layers.Platform) -> layers.ProcessRuntime:
        async with self._layer_lock:
            if platform not in self._layers:
                self.say(f"building the runtime layers for {platform}")
                self._layers[platform] = await asyncio.to_thread(layers.process_runtime, platform)
            return self._layers[platform]

    async def _deliver(self, dev: Device) -> None:
        async with self.links.parallel, self.links.link_slot(dev):
            if self._load().state != "running":
                return
            d = self._dstate(dev.name)
            ops = DeviceOps(self.links, dev, give_up_after=self.give_up_after)
            self.store.set_device(self.rid, dev.name, attempts=d.attempts + 1)
            try:
                await self._steps(dev, ops, d.state, d.detail)
            except (Unreachable, HostKeyRefused, AuthRefused) as e:
                # no verdict on the model: the device keeps the version as desired and
                # converges when it can be reached (and trusted) again
                now = self._dstate(dev.name)
                state = "unreachable" if isinstance(e, Unreachable) else "refused"
                step = now.state  # how far it got, which an abort needs to know
                if step in ("unreachable", "refused"):
                    step = now.detail.get("step", step)
                self.store.set_device(
                    self.rid,
                    dev.name,
                    state=state,
                    detail={**now.detail, "reason": e.reason, "step": step},
                )
                self.store.observe(dev.name, False, error=e.reason)
                self._event(state, e.reason, dev.name)
            except layers.PlatformError as e:
                await self._fail(dev, ops, {"step": "platform", "reason": str(e)}, switched=False)
            except DeviceError as e:
                await self._fail(
                    dev, ops, {"step": d.state, "reason": e.reason, **getattr(e, "detail", {})}
                )
            except Exception as e:
                await self._fail(dev, ops, {"step": d.state, "reason": f"{type(e).__name__}: {e}"})

    async def _steps(self, dev: Device, ops: DeviceOps, state: str, detail: dict[str, Any]) -> None:
        tid = self.target.id
        info = await ops.probe()
        if "previous" not in detail:
            cur = info.get("current")
            meta = (
                None
                if cur == tid
                else next((v for v in info.get("versions", []) if v.get("id") == cur), None)
            )
            detail = {**detail, "previous": cur if cur != tid else None, "previous_meta": meta}
            if cur == tid:
                detail["was_on_target"] = True  # not switched by this rollout
            self.store.set_device(self.rid, dev.name, previous=detail["previous"], detail=detail)
        if info.get("current") == tid and (info.get("server") or {}).get("alive"):
            state = "gating"  # already switched (a resumed rollout, or it was there before)
        elif state in ("switching", "gating"):
            state = "switching"  # installed; the switch is idempotent
        else:
            state = "sending"
        if state in ("pending", "unreachable", "sending"):
            self.store.set_device(self.rid, dev.name, state="sending", progress=0.0)
            after = None
            runtime_sha: list[str] | str  # the process runtime's layers, or "" (docker)
            if dev.runtime == "docker":
                # the [serving] limits reach the server only if the container is given them
                names = tuple(self.ws.config.serving.server_env())
                items, after = await ops.docker_runtime(env_names=names)
                runtime_sha = ""
            else:
                runtime = await self._layer(ops.platform())
                runtime_sha = [layer.sha256 for layer in runtime.layers]
                present = set(info.get("runtimes", []))  # each layer is sent once, if lacking
                items = [(x.sha256, x.path) for x in runtime.layers if x.sha256 not in present]
            items += self.target.files
            last = [0.0]

            def progress(sent: int, total: int) -> None:
                now = time.monotonic()
                if now - last[0] > 0.5 or sent >= total:
                    last[0] = now
                    self.store.set_device(self.rid, dev.name, progress=sent / max(total, 1))

            stats = await ops.send(items, progress)
            server_env = self.ws.config.serving.server_env()  # [serving] limits, rotation
            if after is not None:
                argv = await after()
                await ops.configure("", argv=argv, env={}, server_env=server_env, version=tid)
            else:
                await ops.configure(runtime_sha, server_env=server_env, version=tid)
            await ops.install(self.target, runtime_sha)
            detail = {**detail, "transfer": stats}
            self.store.set_device(
                self.rid, dev.name, state="switching", progress=1.0, detail=detail
            )
            self._event(
                "sent",
                f"{stats['sent_objects']} of {stats['objects']} object(s) sent, "
                f"{stats['wire_bytes']} bytes on the wire",
                dev.name,
            )
            state = "switching"
        if state == "switching":
            t0 = time.monotonic()
            await ops.switch(tid)
            detail = {**detail, "switch_s": round(time.monotonic() - t0, 3)}
            self.store.set_device(self.rid, dev.name, state="gating", detail=detail)
        result = await ops.gate(self.golden, self.target.version, self.gate_settings)
        if not result.passed:
            await self._fail(
                dev,
                ops,
                {**detail, "step": "gate", "gate": result.to_dict(), "reason": result.reason},
            )
            return
        base = 0.0
        with contextlib.suppress(DeviceError):
            base = float((await ops.telemetry()).get("errors") or 0)
        gate = {**result.to_dict(), "errors_baseline": base}
        # an earlier attempt's error (unreachable, refused) is history now, in the events
        done = {k: v for k, v in detail.items() if k not in ("reason", "step")}
        self.store.set_device(self.rid, dev.name, state="healthy", detail={**done, "gate": gate})
        self.store.observe(
            dev.name,
            True,
            serving=tid,
            model=self.target.model,
            version=self.target.version,
            health="ok",
        )
        self._event(
            "healthy", f"serving {self.target.model}/{self.target.version}, gate passed", dev.name
        )

    async def _fail(
        self, dev: Device, ops: DeviceOps, detail: dict[str, Any], switched: bool = True
    ) -> None:
        """A failed device goes back to its previous version (no transfer), if it has one."""
        d = self._dstate(dev.name)
        detail = {**d.detail, **detail}
        rolled = None
        reachable = True
        if switched:
            try:
                info = await ops.probe()
                if info.get("current") == self.target.id:
                    if info.get("previous"):
                        t0 = time.monotonic()
                        await ops.rollback()
                        rolled = info.get("previous")
                        detail["rollback_s"] = round(time.monotonic() - t0, 3)
                    else:
                        await ops.agent("stop")
                        detail["stopped"] = (
                            "no previous version to go back to: its server was stopped"
                        )
            except DeviceError as e:
                detail["rollback_error"] = e.reason
                reachable = not isinstance(e, Unreachable)
        detail["rolled_back_to"] = rolled
        self.store.set_device(self.rid, dev.name, state="failed", detail=detail)
        # the device converges to the version it goes back to, never the failed one (also
        # when the rollback could not be done now: reconcile does it later)
        meta = detail.get("previous_meta") or self._meta_of(rolled, ops)
        if meta:
            self.store.set_desired(
                dev.name, meta["model"], meta["version"], meta["digest"], self.rid
            )
        else:
            self._restore_desired(dev.name, detail)
        if reachable:
            self.store.observe(
                dev.name, True, serving=rolled, health="failed", error=detail.get("reason")
            )
        else:  # what it serves is not known now
            self.store.observe(dev.name, False, error=detail.get("rollback_error"))
        self._event(
            "failed",
            f"{detail.get('reason')}" + (f"; back on {rolled}" if rolled else ""),
            dev.name,
        )

    @staticmethod
    def _meta_of(vid: str | None, ops: DeviceOps) -> dict[str, Any] | None:
        """model, version and digest of a version the device's last probe listed."""
        versions = (ops.probe_info or {}).get("versions", []) if vid else []
        return next((v for v in versions if v.get("id") == vid), None)

    def _restore_desired(self, name: str, detail: dict[str, Any]) -> None:
        """Put back the device's desired version from before this rollout set it."""
        if "prior_desired" not in detail:
            return  # this rollout never set it
        prior = detail["prior_desired"]
        if prior:
            self.store.set_desired(
                name, prior["model"], prior["version"], prior["digest"], prior.get("rollout_id")
            )
        else:
            self.store.clear_desired(name)

    async def _abort(self, why: str) -> None:
        """Stop the rollout: devices that were not reached keep (or get back) the version
        they had as desired; with auto-rollback, every device that may have switched goes
        back to its previous version, and one that cannot be reached now is left with that
        version as desired, for `mlops fleet reconcile`."""
        r = self._load()
        self.store.set_rollout(self.rid, state="aborting", reason=why)
        self._event("abort", f"aborting: {why}")
        maybe_switched: list[str] = []
        for d in r.devices:
            step = d.detail.get("step")
            if d.detail.get("was_on_target") and d.state != "failed":
                # it served this version before the rollout: not one it switched
                self._restore_desired(d.device, d.detail)
                continue
            if d.state in ("healthy", "switching", "gating") or (
                d.state in ("unreachable", "refused") and step in ("switching", "gating", "healthy")
            ):
                maybe_switched.append(d.device)
            elif d.state in ("pending", "unreachable", "refused", "sending"):
                self.store.set_device(
                    self.rid,
                    d.device,
                    state="skipped",
                    detail={**d.detail, "reason": "rollout aborted"},
                )
                self._restore_desired(d.device, d.detail)
        if r.auto_rollback:
            await asyncio.gather(
                *(self._roll_one(name) for name in maybe_switched if self._known(name))
            )
        else:  # --no-rollback: the healthy ones stay; the rest do not converge to it later
            for d in r.devices:
                if d.device in maybe_switched and d.state != "healthy":
                    self._restore_desired(d.device, d.detail)
        self.store.set_rollout(self.rid, state="aborted", reason=why)
        self._event("aborted", f"rollout of {r.target} aborted: {why}")

    async def _roll_one(self, name: str) -> None:
        d = self._dstate(name)
        detail = d.detail
        dev = self.fleet.device(name)
        ops = DeviceOps(self.links, dev, give_up_after=self.give_up_after)
        meta = detail.get("previous_meta")
        try:
            info = await ops.probe()
            if info.get("current") != self.target.id:
                self.store.set_device(
                    self.rid,
                    name,
                    state="rolled_back",
                    detail={**detail, "rolled_back_to": info.get("current")},
                )
                self._restore_desired(name, detail)
                return
            t0 = time.monotonic()
            if info.get("previous"):
                await ops.rollback()
                back = info.get("previous")
                meta = meta or self._meta_of(back, ops)
                msg = f"back on {back} (no transfer)"
            else:
                await ops.agent("stop")
                back = None
                msg = "no previous version to go back to: its server was stopped"
            self.store.set_device(
                self.rid,
                name,
                state="rolled_back",
                detail={
                    **detail,
                    "rollback_s": round(time.monotonic() - t0, 3),
                    "rolled_back_to": back,
                    **({} if back else {"stopped": msg}),
                },
            )
            if back and meta:
                self.store.set_desired(
                    name, meta["model"], meta["version"], meta["digest"], self.rid
                )
            else:
                self._restore_desired(name, detail)
            self.store.observe(name, True, serving=back, health="ok" if back else "stopped")
            self._event("rolled_back", msg, name)
        except (Unreachable, HostKeyRefused, AuthRefused) as e:
            # it may serve the aborted version: it goes back when it can be reached
            if meta:
                self.store.set_desired(
                    name, meta["model"], meta["version"], meta["digest"], self.rid
                )
                later = f"`mlops fleet reconcile` puts {meta['model']}/{meta['version']} back"
            else:
                self._restore_desired(name, detail)
                later = "it had no previous version; check it with `mlops fleet check`"
            self.store.set_device(
                self.rid,
                name,
                state="unreachable",
                detail={
                    **detail,
                    "reason": f"not rolled back: {e.reason}; {later}",
                    "step": detail.get("step") or d.state,  # a re-run abort tries again
                },
            )
            self._event("rollback_failed", f"not rolled back ({e.reason}); {later}", name)
        except DeviceError as e:
            self.store.set_device(
                self.rid,
                name,
                state="failed",
                detail={**detail, "rollback_error": e.reason},
            )
            # whatever it serves now, it should go back: reconcile tries again
            if meta:
                self.store.set_desired(
                    name, meta["model"], meta["version"], meta["digest"], self.rid
                )
            else:
                self._restore_desired(name, detail)
            self._event("rollback_failed", f"could not roll back: {e.reason}", name)

    async def _gc(self, r: Rollout) -> None:
        healthy = [d.device for d in r.devices if d.state == "healthy"]

        async def one(name: str) -> None:
            with contextlib.suppress(DeviceError, MlopsError):
                await DeviceOps(self.links, self.fleet.device(name)).gc()

        await asyncio.gather(*(one(n) for n in healthy))


def request(store: FleetStore, state: str, reason: str) -> Rollout:
    """Ask the running controller to pause or abort (it acts between device steps)."""
    r = store.active()
    if r is None:
        raise MlopsError("No rollout is running; `mlops fleet history` lists past ones.")
    if state == "pausing" and r.state in ("paused", "aborting"):
        return r  # already paused; or aborting, which a pause must not undo
    store.set_rollout(r.id, state=state, reason=reason)
    store.event(state, reason, r.id)
    return store.rollout(r.id)  # type: ignore[return-value]


def owner_text(owner: str | None) -> str:
    """A controller's owner id ("HOST:PID:STARTED") as the engineer reads it."""
    host, _, rest = (owner or "").partition(":")
    pid = rest.partition(":")[0]
    if not host or not pid:
        return "by another controller"
    return f"by a controller on host {host} (pid {pid})"


def controller_alive(r: Rollout, stale_after: float = 20.0) -> bool:
    """Whether a controller holds `r`: its heartbeat is fresh and, when it ran on this
    machine, its process still lives (a killed one is known dead at once)."""
    if not r.owner or (r.heartbeat or 0) <= time.time() - stale_after:
        return False
    host, _, rest = r.owner.partition(":")
    pid = rest.partition(":")[0]
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


__all__ = [
    "Controller",
    "Plan",
    "controller_alive",
    "parse_waves",
    "plan",
    "request",
    "start",
    "version_id",
]
