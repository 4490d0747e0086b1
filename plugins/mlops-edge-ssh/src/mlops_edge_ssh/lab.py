"""The fleet's teaching-lab steps and checkers (`mlops_lab_steps`, `mlops_lab_checks`), and
the scenario folder it ships (`labscenarios/`: the `fleet` scenario).

Steps: `fleet.devices` (lab devices on this machine, fleet.toml written), `fleet.link` (a
flaky link's rate and cuts), `fleet.rollout` (a rollout in waves, through `resume` and
`reconcile` until the fleet converges with `converge = true`). Checkers: `fleet.serving`,
`fleet.waves`, `fleet.resumed`: each asks the devices over SSH or reads the rollout record.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from mlops_console.errors import MlopsError
from mlops_console.labs.spec import PluginCheck, PluginStep

SCENARIOS = Path(__file__).resolve().parent / "labscenarios"
_DEVICE = re.compile(r"^[a-z][a-z0-9-]{0,20}$")


def _vars(text: str, state) -> str:
    """`$name` in a ref: a version a lab step remembered (`churn/$first`)."""

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name not in state.vars:
            raise MlopsError(
                f"The lab has not remembered ${name} yet; `mlops lab reset` starts it again."
            )
        return str(state.vars[name])

    return re.sub(r"\$([a-z_][a-z0-9_]*)", sub, text)


class DevicesStep(PluginStep):
    """`count` lab devices PREFIX-01.. on this machine (sshd's on loopback, no root), those
    in `flaky` behind a relay; started if stopped, links clean, fleet.toml written."""

    do: Literal["fleet.devices"]
    count: int = Field(default=3, ge=1, le=20)
    prefix: str = "gw"
    flaky: list[str] = Field(default_factory=list)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not _DEVICE.match(v):
            raise ValueError("a prefix is lowercase letters, digits and dashes")
        return v

    def names(self) -> list[str]:
        return [f"{self.prefix}-{i + 1:02d}" for i in range(self.count)]

    def run(self, ws, scenario, state) -> str:
        from mlops_edge_ssh.labdevices import LabDevices

        names = self.names()
        unknown = [f for f in self.flaky if f not in names]
        if unknown:
            raise MlopsError(
                f"{scenario.path}: fleet.devices flaky names {unknown}, not among {names}."
            )
        devs = LabDevices(ws).ensure(names, self.flaky)
        ports = ", ".join(f"{d.name} :{d.port}" + (" (flaky)" if d.flaky else "") for d in devs)
        return f"{len(devs)} lab devices up ({ports}); fleet.toml written"


class LinkStep(PluginStep):
    """A flaky device's link: its rate and how its connections are cut (seeded)."""

    do: Literal["fleet.link"]
    device: str
    rate_kbit: int = Field(default=0, ge=0, le=10_000_000, description="0: no limit")
    cut_after_s: tuple[float, float] = (0.0, 0.0)
    cut_chance: float = Field(default=0.0, ge=0, le=1)
    seed: int = 7

    @field_validator("cut_after_s")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1]:
            raise ValueError("cut_after_s is [LOW, HIGH] seconds, 0 <= LOW <= HIGH")
        return v

    def run(self, ws, scenario, state) -> str:
        from mlops_edge_ssh.labdevices import LabDevices

        params = self.model_dump(exclude={"do", "device"})
        params["cut_after_s"] = list(self.cut_after_s)
        LabDevices(ws).set_link(self.device, params)
        if not self.cut_chance:
            return f"{self.device}'s link is clean"
        lo, hi = self.cut_after_s
        return (
            f"{self.device}'s link turns flaky: {self.rate_kbit or 'unlimited'} kbit/s, "
            f"connections cut after {lo:g}-{hi:g} s"
        )


class RolloutStep(PluginStep):
    """`mlops fleet rollout REF --waves ...`; with `converge`, then `resume` (a paused
    rollout) or `reconcile` until every device is on the version, `attempts` times at most."""

    do: Literal["fleet.rollout"]
    ref: str
    waves: str = "100%"
    soak: float = Field(default=0.0, ge=0)
    max_failed: str = "10%"
    max_unreachable: str = "30%"
    converge: bool = False
    attempts: int = Field(default=10, ge=1, le=50)
    starting_state: bool = Field(
        default=False,
        description="then keep what the devices hold as the state `fleet.devices` restores",
    )

    def run(self, ws, scenario, state) -> str:
        from mlops_edge_ssh.service import FleetService

        ref = _vars(self.ref, state)
        with FleetService(ws) as svc:
            p = svc.plan(
                ref,
                waves=self.waves,
                soak=self.soak,
                max_failed=self.max_failed,
                max_unreachable=self.max_unreachable,
            )
            r = svc.run(svc.start(p, "lab"))
            how = [f"rollout {r.id} of {r.target}: {r.state}"]
            for _ in range(self.attempts if self.converge else 0):
                if _converged(r):
                    break
                if r.state in ("paused", "pausing", "running"):
                    r = svc.resume(r.id)
                    how.append(f"resumed: {r.state}")
                else:
                    ran = svc.reconcile()
                    how.append(f"reconciled ({len(ran)} rollout(s))")
                    r = svc.rollout_record(r.id)
                    if ran and all(_converged(x) for x in ran):
                        break
            if self.converge and not _fleet_on(svc, r.model, r.version):
                raise MlopsError(
                    f"The fleet did not converge on {r.target} in {self.attempts} attempts "
                    f"({'; '.join(how)}); `mlops fleet status` shows why."
                )
        if self.starting_state:
            from mlops_edge_ssh.labdevices import LabDevices

            LabDevices(ws).record_start()
        return "; ".join(how)


def _converged(r) -> bool:
    return r.state == "done" and all(d.state in ("healthy", "skipped") for d in r.devices)


def _fleet_on(svc, model: str, version: int) -> bool:
    rows = svc.devices()
    return all(row["serving"] == f"{model}/{version}" for row in rows)


# --- checkers -------------------------------------------------------------------------


def _alias_version(ws, model: str, alias: str) -> int:
    return int(ws.models.resolve(f"{model}@{alias}").version)


class ServingCheck(PluginCheck):
    """Every device of fleet.toml serves MODEL@ALIAS now (asked over SSH), its server up,
    and none is failed in the rollout record."""

    kind: Literal["fleet.serving"]
    model: str
    alias: str = "champion"
    tries: int = Field(default=3, ge=1, le=10, description="polls for a device not reached")

    def verdict(self, ws, state) -> tuple[bool, str]:
        from mlops_edge_ssh.service import FleetService

        want = f"{self.model}/{_alias_version(ws, self.model, self.alias)}"
        with FleetService(ws) as svc:
            names = [d.name for d in svc.fleet.devices]
            rows: dict[str, dict[str, Any]] = {}
            todo = list(names)
            for _ in range(self.tries):  # a flaky link may drop a probe: ask again
                for row in svc.status(live=True, names=todo)["devices"]:
                    rows[row["name"]] = row
                todo = [n for n in names if not rows[n]["reachable"]]
                if not todo:
                    break
            # the newest rollout of the version: a device it has failed, or cut off before
            # its gate passed, is not done even if it already serves the version
            r = next(iter(_rollouts_of(svc, *want.split("/"))), None)
            unfinished = []
            if r is not None:
                unfinished = [
                    f"{d.device} ({d.state})"
                    for d in r.devices
                    if d.state not in ("healthy", "skipped")
                ]
        if not names:
            return False, "fleet.toml lists no device"
        off = [
            f"{n}: {'not reached' if not rows[n]['reachable'] else rows[n]['serving'] or 'nothing'}"
            for n in names
            if not rows[n]["reachable"] or rows[n]["serving"] != want
        ]
        down = [n for n in names if rows[n]["reachable"] and rows[n]["health"] != "ok"]
        if off:
            return False, f"not every device serves {want} ({self.model}@{self.alias}): " + (
                ", ".join(off)
            )
        if down:
            return False, f"{', '.join(down)} serve {want} but their server is not healthy"
        if unfinished:
            return False, (
                f"all serve {want}, but rollout {r.id} has not passed the gate of "  # type: ignore[union-attr]
                + ", ".join(unfinished)
            )
        return True, f"all {len(names)} devices serve {want}, servers healthy"


def _rollouts_of(svc, model: str, version: int | str) -> list:
    """The rollouts of model/version, newest first."""
    return [r for r in svc.history(200) if r.model == model and r.version == int(version)]


class WavesCheck(PluginCheck):
    """MODEL@ALIAS went out in waves: a rollout of it had at least `min_waves` waves, the
    first smaller than the fleet, and that first wave came through healthy."""

    kind: Literal["fleet.waves"]
    model: str
    alias: str = "champion"
    min_waves: int = Field(default=2, ge=2)

    def verdict(self, ws, state) -> tuple[bool, str]:
        from mlops_edge_ssh.service import FleetService

        version = _alias_version(ws, self.model, self.alias)
        with FleetService(ws) as svc:
            found = _rollouts_of(svc, self.model, version)
        if not found:
            return False, f"{self.model}/{version} has not been rolled out"
        for r in found:
            total = sum(len(w) for w in r.waves)
            first = set(r.waves[0]) if r.waves else set()
            healthy = {d.device for d in r.devices if d.state == "healthy"}
            if len(r.waves) >= self.min_waves and len(first) < total and first <= healthy:
                return True, (
                    f"rollout {r.id} went in {len(r.waves)} waves "
                    f"({', '.join(str(len(w)) for w in r.waves)} devices)"
                )
        shapes = "; ".join(f"{r.id}: {len(r.waves)} wave(s)" for r in found)
        return False, f"no rollout of {self.model}/{version} went in waves ({shapes})"


class ResumedCheck(PluginCheck):
    """DEVICE, cut off in the middle of the rollout of MODEL@ALIAS, got it by `fleet resume`
    (the same rollout delivered it again, from where it stopped) or `fleet reconcile`, not
    by a new rollout from scratch."""

    kind: Literal["fleet.resumed"]
    device: str
    model: str
    alias: str = "champion"

    def verdict(self, ws, state) -> tuple[bool, str]:
        from mlops_edge_ssh.service import FleetService

        version = _alias_version(ws, self.model, self.alias)
        target = f"{self.model}/{version}"
        with FleetService(ws) as svc:
            found = _rollouts_of(svc, self.model, version)
            cut_in = {
                e["rollout_id"]
                for e in svc.events(device=self.device, limit=1000)
                if e.get("kind") in ("unreachable", "refused") and e.get("rollout_id")
            }
        if not found:
            return False, f"{target} has not been rolled out"
        mine = [(r, next((d for d in r.devices if d.device == self.device), None)) for r in found]
        mine = [(r, d) for r, d in mine if d is not None]
        for r, d in mine:
            if d.state == "healthy" and d.attempts >= 2 and r.created_by != "reconcile":
                return True, (
                    f"{self.device} was cut off and rollout {r.id} resumed it "
                    f"({d.attempts} deliveries)"
                )
        if cut_in:
            for r, d in mine:
                if d.state == "healthy" and r.created_by == "reconcile":
                    return True, f"{self.device} was cut off; reconcile ({r.id}) brought it"
        states = ", ".join(f"{r.id}: {d.state} after {d.attempts}" for r, d in mine)
        if not mine:
            return False, f"no rollout of {target} included {self.device}"
        return False, f"{self.device} has not been resumed onto {target} ({states})"
