"""`ws.labs`: start a scenario in the workspace, check its objectives, give hints, fire its
timeline, demonstrate its solution and reset it to the starting state.

The CLI (`mlops lab`), the console's Lab panel and the class commands all use this API:
`current()`, `status()` (objectives with pass/fail and reasons), `next_hint()`, `events()`.
"""

from __future__ import annotations

import builtins
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.errors import Conflict, MlopsError
from mlops_console.labs import actions, snapshot
from mlops_console.labs import state as lab_state
from mlops_console.labs.catalog import find_scenario, scenarios
from mlops_console.labs.checks import check

if TYPE_CHECKING:
    from mlops_console.labs.catalog import ScenarioInfo
    from mlops_console.labs.spec import Scenario
    from mlops_console.labs.state import LabEvent, LabState
    from mlops_console.workspace import Workspace


@dataclass(frozen=True)
class ObjectiveStatus:
    id: str
    title: str
    passed: bool
    reason: str
    hints_shown: int
    hints_total: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class LabStatus:
    scenario: str
    title: str
    summary: str
    started_at: float
    objectives: list[ObjectiveStatus]
    fired: list[str] = field(default_factory=list)  # what the timeline did, in words
    seconds: float = 0.0  # how long the verdicts took

    @property
    def done(self) -> bool:
        return all(o.passed for o in self.objectives)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "title": self.title,
            "summary": self.summary,
            "started_at": self.started_at,
            "done": self.done,
            "objectives": [o.to_dict() for o in self.objectives],
            "fired": self.fired,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class Hint:
    objective: str
    title: str
    number: int  # 1-based, of `total`
    total: int
    text: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Labs:
    def __init__(self, ws: Workspace):
        self.ws = ws

    # --- what exists ------------------------------------------------------------------

    def list(self) -> builtins.list[ScenarioInfo]:
        """Every scenario found: shipped ones, `[labs] paths`, $MLOPS_LABS_PATH."""
        return scenarios(self.ws)

    def scenario(self, name: str) -> Scenario:
        return find_scenario(self.ws, name)

    def _state(self) -> LabState:
        found = lab_state.load(self.ws.state)
        if found is None or not found.scenario:
            raise Conflict("No lab runs in this workspace; `mlops lab start SCENARIO` starts one.")
        return found

    def current(self) -> Scenario | None:
        """The scenario running here, or None."""
        found = lab_state.load(self.ws.state)
        if found is None or not found.scenario:
            return None
        return self._load(found)

    def _load(self, st: LabState) -> Scenario:
        from mlops_console.labs.spec import load_scenario

        path = Path(st.scenario_path)
        if path.is_file():
            return load_scenario(path)
        return self.scenario(st.scenario)

    # --- start and reset --------------------------------------------------------------

    def start(self, name: str, from_snapshot: Path | None = None) -> LabStatus:
        """Build the scenario's starting state (or take it from `from_snapshot`, a snapshot
        another workspace built), keep it as this workspace's snapshot and fire `start`."""
        sc = self.scenario(name)
        if sc.requires_target and not self.ws.deployments.provides(sc.requires_target):
            raise MlopsError(
                f"Scenario {sc.name} needs the deploy target {sc.requires_target!r}; install "
                "the plugin that provides it (`mlops plugins list` shows what is installed)."
            )
        if lab_state.load(self.ws.state) is None and (self.ws.data.list() or self.ws.models.list()):
            raise Conflict(
                f"{self.ws.root} already holds datasets or models, and a lab's reset replaces "
                f"what is in its workspace; start it in a new folder: "
                f"`mlops lab start {sc.name} DIR`."
            )
        self._stop_processes()
        st = lab_state.LabState(
            scenario=sc.name,
            scenario_path=str(sc.path),
            scenario_sha256=_sha256(sc.path),
            started_at=time.time(),
        )
        if from_snapshot is not None:
            port = self.ws.config.serving.port  # this workspace's, not the snapshot's
            st.vars = snapshot.restore(self.ws, from_snapshot)
            snapshot.set_serving_port(self.ws.root, port)
            self.ws.reload_config(force=True)
            snapshot.take(self.ws, st.vars)
            st.log("start", f"{sc.title}: starting state copied from {from_snapshot}")
        else:
            for step in sc.setup:
                actions.run_step(self.ws, sc, st, step)
            snapshot.take(self.ws, st.vars)
            st.log("start", f"{sc.title}: starting state built")
        lab_state.save(self.ws.state, st)
        self._fire(sc, st, "start")
        return self.status()

    def reset(self) -> LabStatus:
        """Back to the starting state: servers and daemon stopped, the snapshot restored,
        the `start` timeline fired again; hints and events start over."""
        st = self._state()
        sc = self._load(st)
        if not snapshot.snapshot_dir(self.ws).is_dir():
            raise MlopsError(
                f"The starting state of {sc.name} is missing; `mlops lab start {sc.name}` "
                "builds it again."
            )
        self._stop_processes()
        variables = snapshot.restore(self.ws)
        self.ws.reload_config(force=True)
        fresh = lab_state.LabState(
            scenario=sc.name,
            scenario_path=st.scenario_path,
            scenario_sha256=st.scenario_sha256,
            started_at=time.time(),
            vars=variables,
            events=st.events,
        )
        fresh.log("reset", "back to the starting state")
        lab_state.save(self.ws.state, fresh)
        self._fire(sc, fresh, "start")
        return self.status()

    def stop(self) -> None:
        """Stop the lab's servers and daemon (its files stay; `reset` starts them again)."""
        self._stop_processes()

    def _stop_processes(self) -> None:
        """Stop the daemon, every deployment's server (a restore replaces their files) and
        what plugins' lab steps started (`mlops_lab_stop`: a fleet lab's devices)."""
        from mlops_console.automation import lifecycle
        from mlops_console.plugins import load_plugins

        errors = load_plugins().lab_stop(self.ws)
        if errors:
            raise MlopsError(
                "A plugin could not stop its lab processes: " + "; ".join(errors) + "."
            )

        if lifecycle.status(self.ws).running:
            lifecycle.stop(self.ws)
        for rec in self.ws.deployments.list():
            if rec.running and self.ws.deployments.provides(rec.target):
                self.ws.deployments.target(rec.target, rec).delete(rec.name, rec.config)

    def _fire(self, sc: Scenario, st: LabState, at: str) -> builtins.list[str]:
        done = []
        for n, entry in enumerate(sc.timeline):
            key = str(n)
            if entry.at != at or (at != "start" and key in st.fired):
                continue
            for step in entry.steps:
                actions.run_step(self.ws, sc, st, step)
            if key not in st.fired:
                st.fired.append(key)
            st.log("inject", entry.say)
            done.append(entry.say)
            lab_state.save(self.ws.state, st)
        return done

    # --- objectives, hints, events ----------------------------------------------------

    def status(self) -> LabStatus:
        """Every objective's verdict now; an objective passing for the first time fires
        the timeline entries waiting on it (recorded as events)."""
        t0 = time.perf_counter()
        st = self._state()
        sc = self._load(st)
        out: builtins.list[ObjectiveStatus] = []
        fired: builtins.list[str] = []
        for o in sc.objectives:
            v = check(self.ws, st, o.check)
            if v.passed and o.id not in st.passed:
                st.passed.append(o.id)
                st.log("pass", f"{o.title}: {v.reason}")
                lab_state.save(self.ws.state, st)
                fired += self._fire(sc, st, f"after:{o.id}")
            out.append(
                ObjectiveStatus(
                    o.id, o.title, v.passed, v.reason, st.hints_shown.get(o.id, 0), len(o.hints)
                )
            )
        return LabStatus(
            sc.name, sc.title, sc.summary, st.started_at, out, fired, time.perf_counter() - t0
        )

    def check(self) -> LabStatus:
        """`status()`, recorded in the event timeline."""
        result = self.status()
        st = self._state()
        passed = sum(o.passed for o in result.objectives)
        st.log("check", f"{passed} of {len(result.objectives)} objectives pass")
        lab_state.save(self.ws.state, st)
        return result

    def next_hint(self, objective: str | None = None) -> Hint | None:
        """The next hint of the first objective not passed (or of `objective`); None when
        every hint of it has been shown or everything passes."""
        status = self.status()
        st = self._state()
        sc = self._load(st)
        by_id = {o.id: o for o in sc.objectives}
        if objective is not None:
            if objective not in by_id:
                raise MlopsError(
                    f"No objective {objective!r} in {sc.name}; it has {', '.join(by_id)}."
                )
            wanted = by_id[objective]
        else:
            pending = [o for o in status.objectives if not o.passed]
            if not pending:
                return None
            wanted = by_id[pending[0].id]
        shown = st.hints_shown.get(wanted.id, 0)
        if shown >= len(wanted.hints):
            return None
        st.hints_shown[wanted.id] = shown + 1
        st.log("hint", f"{wanted.title}: hint {shown + 1}")
        lab_state.save(self.ws.state, st)
        return Hint(wanted.id, wanted.title, shown + 1, len(wanted.hints), wanted.hints[shown])

    def events(self) -> builtins.list[LabEvent]:
        """The lab's event timeline, oldest first."""
        return list(self._state().events)

    def solve(self) -> LabStatus:
        """Run the reference solution (a trainer's demo), then check."""
        st = self._state()
        sc = self._load(st)
        st.log("solve", "the reference solution runs")
        lab_state.save(self.ws.state, st)
        for step in sc.solution:
            st = self._state()
            text = actions.run_step(self.ws, sc, st, step)
            st.log("solve", text)
            lab_state.save(self.ws.state, st)
            self.status()  # objectives passing along the way fire what waits on them
        return self.check()
