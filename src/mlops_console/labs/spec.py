"""The scenario format: one TOML file per scenario (plus an assets folder), parsed strictly.

A scenario says what the starting workspace holds (`[[setup]]` steps, built once and
snapshotted), what happens to it (`[[timeline]]`: steps fired on `start` or once an
objective passes), what the student must reach (`[[objectives]]`, each a checker of the
workspace's real state, with progressive hints) and how a trainer shows it done
(`[[solution]]` steps). Every table forbids unknown keys: a typo is an error naming the
file and the key (docs/labs.md documents each one).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from mlops_console.config import Strict, load_toml
from mlops_console.errors import ConfigError

if TYPE_CHECKING:
    from mlops_console.labs.state import LabState
    from mlops_console.workspace import Workspace

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")


# --- steps: what setup, the timeline and the solution do -----------------------------


class CopyStep(Strict):
    """Copy an asset (a file of the scenario's assets folder) into the workspace."""

    do: Literal["copy"]
    asset: str
    to: str


class EditStep(Strict):
    """Replace text in a workspace file (a contract's range, a fixed row, a setting)."""

    do: Literal["edit"]
    file: str
    replace: str = Field(description="a regular expression")
    by: str = ""


class DropRowsStep(Strict):
    """Remove the rows of a CSV in the workspace whose `column` equals `value` (a fix)."""

    do: Literal["drop_rows"]
    file: str
    column: str
    value: str


class AddDatasetStep(Strict):
    do: Literal["add_dataset"]
    name: str
    source: str
    timestamp: str | None = None
    entities: list[str] = Field(default_factory=list)


class IngestStep(Strict):
    do: Literal["ingest"]
    dataset: str
    force: bool = False


class TrainStep(Strict):
    """Train a pipeline (`set`: KEY=VALUE overrides as `mlops run --set` takes them);
    `remember`: a name under which the new version is kept in the lab's variables."""

    do: Literal["train"]
    pipeline: str
    set: dict[str, Any] = Field(default_factory=dict)
    promote: bool = True
    remember: str | None = None


class PromoteStep(Strict):
    """Point an alias at a version; `version` is a number, `latest` or `$variable`."""

    do: Literal["promote"]
    model: str
    version: int | str = "latest"
    alias: str = "champion"
    reason: str = ""


class RollbackModelStep(Strict):
    do: Literal["rollback_model"]
    model: str
    alias: str = "champion"
    reason: str = ""


class DeployStep(Strict):
    do: Literal["deploy"]
    ref: str
    name: str | None = None
    strategy: Literal["replace", "canary"] = "replace"
    canary_percent: float = Field(default=50.0, gt=0, le=100)


class RollbackDeploymentStep(Strict):
    do: Literal["rollback_deployment"]
    deployment: str
    reason: str = ""


class PromoteDeploymentStep(Strict):
    do: Literal["promote_deployment"]
    deployment: str
    reason: str = ""


class JudgeStep(Strict):
    """Judge a canary by its health (`mlops deployments judge`): promote or roll back."""

    do: Literal["judge"]
    deployment: str
    max_error_rate: float = 0.01
    max_p99_ms: float = 250.0
    min_requests: int = 20


class KillServerStep(Strict):
    """Kill a deployment's server process (SIGKILL), as a crash would."""

    do: Literal["kill_server"]
    deployment: str


class TrafficStep(Strict):
    """Replay `requests` rows of a workspace CSV against a deployment (the load generator,
    `mlops deployments traffic`): the model's inputs and the dataset's entity keys."""

    do: Literal["traffic"]
    deployment: str
    rows_from: str
    requests: int = Field(default=100, ge=1, le=100_000)
    rate: float = Field(default=500.0, gt=0, description="requests per second at most")


class LabelsStep(Strict):
    """Write the true labels of the rows a deployment served to a CSV in the workspace
    (late labels: keyed by entity), `flip` of them inverted to show decay."""

    do: Literal["labels"]
    deployment: str
    rows_from: str
    to: str
    entity: str
    label: str
    flip: float = Field(default=0.0, ge=0, le=1)
    rows: int | None = Field(default=None, ge=1, description="the first N rows (those served)")


class ImportLabelsStep(Strict):
    do: Literal["import_labels"]
    deployment: str
    file: str
    entity: str
    label: str


class AppendStep(Strict):
    """Append text to a workspace file (an alert rule to mlops.toml)."""

    do: Literal["append"]
    file: str
    text: str


class EvaluateAlertsStep(Strict):
    do: Literal["evaluate_alerts"]


CoreStep = Annotated[
    CopyStep
    | EditStep
    | DropRowsStep
    | AddDatasetStep
    | IngestStep
    | TrainStep
    | PromoteStep
    | RollbackModelStep
    | DeployStep
    | RollbackDeploymentStep
    | PromoteDeploymentStep
    | JudgeStep
    | KillServerStep
    | TrafficStep
    | LabelsStep
    | ImportLabelsStep
    | AppendStep
    | EvaluateAlertsStep,
    Field(discriminator="do"),
]


# --- checkers: probes of the workspace's real state -----------------------------------


class DatasetAcceptedCheck(Strict):
    """The dataset's current version is accepted (not forced) and was read from `file`."""

    kind: Literal["dataset_accepted"]
    dataset: str
    file: str | None = None
    allow_forced: bool = False


class QuarantineSeenCheck(Strict):
    """A version of the dataset read from `file` was quarantined (the contract caught it)."""

    kind: Literal["quarantine_seen"]
    dataset: str
    file: str


class ModelRegisteredCheck(Strict):
    kind: Literal["model_registered"]
    model: str
    alias: str = "champion"


class ChampionTrainedOnCheck(Strict):
    """The alias's version was trained on a version of `dataset` read from `file`."""

    kind: Literal["champion_trained_on"]
    model: str
    dataset: str
    file: str
    alias: str = "champion"


class ServingChampionCheck(Strict):
    """The deployment runs (its server answers) and serves the alias's version, no canary;
    with `file`, that version was trained on a version of `dataset` read from it."""

    kind: Literal["serving_champion"]
    deployment: str
    alias: str = "champion"
    dataset: str | None = None
    file: str | None = None


class ServedRequestsCheck(Strict):
    """The deployment's server answered at least `min_requests`, with no failed one since
    its current version started serving."""

    kind: Literal["served_requests"]
    deployment: str
    min_requests: int = 1
    dataset: str | None = Field(default=None, description="with file: what serves was trained on")
    file: str | None = None


class ThroughCanaryCheck(Strict):
    """The version serving came in as a canary and was promoted (deployment history)."""

    kind: Literal["through_canary"]
    deployment: str


class CanaryRolledBackCheck(Strict):
    """The canary of version `version` was rolled back with a reason; the primary serves."""

    kind: Literal["canary_rolled_back"]
    deployment: str
    version: int | str


class NotServingCheck(Strict):
    """Version `version` is neither served nor the alias's, and the alias history says why
    it moved away (a reason)."""

    kind: Literal["not_serving"]
    deployment: str
    model: str
    version: int | str
    alias: str = "champion"


class LabelsImportedCheck(Strict):
    """Labels were imported for the deployment: monitoring measures its decay."""

    kind: Literal["labels_imported"]
    deployment: str
    window: str = "30d"


class LatencyBelowCheck(Strict):
    """The deployment's server answered at least `min_requests` since its current version
    started serving, with a p99 latency under `p99_ms`."""

    kind: Literal["latency_below"]
    deployment: str
    p99_ms: float = Field(gt=0)
    min_requests: int = Field(default=50, ge=1)


class AlertRaisedCheck(Strict):
    """An alert on a measure starting with `measure` was raised for the deployment."""

    kind: Literal["alert_raised"]
    deployment: str
    measure: str


CoreCheck = Annotated[
    DatasetAcceptedCheck
    | QuarantineSeenCheck
    | ModelRegisteredCheck
    | ChampionTrainedOnCheck
    | ServingChampionCheck
    | ServedRequestsCheck
    | ThroughCanaryCheck
    | CanaryRolledBackCheck
    | NotServingCheck
    | LabelsImportedCheck
    | LatencyBelowCheck
    | AlertRaisedCheck,
    Field(discriminator="kind"),
]


# --- plugins' steps and checkers: `do = "fleet.devices"`, `kind = "fleet.serving"` --------


class PluginStep(Strict):
    """The base of a plugin's step kind (`mlops_lab_steps`): a strict model whose `do` is
    its namespaced name, and what it does."""

    do: str

    def run(self, ws: Workspace, scenario: Scenario, state: LabState) -> str:
        """Do the step; returns what it did, in words, for the event timeline."""
        raise NotImplementedError


class PluginCheck(Strict):
    """The base of a plugin's checker kind (`mlops_lab_checks`)."""

    kind: str

    def verdict(self, ws: Workspace, state: LabState) -> tuple[bool, str]:
        """(passed, why) on the workspace's real state now; MlopsError: not passed."""
        raise NotImplementedError


_NAMESPACED = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


def plugin_kinds(hook: str) -> dict[str, type[PluginStep | PluginCheck]]:
    """{namespaced name: model class} the installed plugins give for steps (`steps`) or
    checkers (`checks`); a name that is not `namespace.kind` or a class of the wrong base
    is left out (a plugin never shadows a core kind)."""
    from mlops_console.plugins import load_plugins

    plugins = load_plugins()
    found = plugins.lab_steps() if hook == "steps" else plugins.lab_checks()
    base = PluginStep if hook == "steps" else PluginCheck
    return {
        name: cls
        for name, cls in found.items()
        if _NAMESPACED.match(name) and isinstance(cls, type) and issubclass(cls, base)
    }


def _missing_kind(what: str, key: str, name: str, known: dict[str, type]) -> ValueError:
    namespace = name.partition(".")[0]
    same = sorted(n for n in known if n.startswith(namespace + "."))
    if same:
        return ValueError(f"{key} {name!r} is not a {what} of a plugin; its plugin has {same}")
    return ValueError(
        f"{key} {name!r} comes from a plugin that is not installed (none provides "
        f"{namespace}.* {what}s): install it (`mlops plugins list` shows what is installed)"
    )


def _plugin_model(what: str, key: str):
    def validate(value: Any) -> Any:
        if isinstance(value, PluginStep | PluginCheck):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"a {what} is a table")
        known = plugin_kinds("steps" if what == "step" else "checks")
        cls = known.get(str(value.get(key)))
        if cls is None:
            raise _missing_kind(what, key, str(value.get(key)), known)
        return cls.model_validate(value)

    return validate


def _which(key: str):
    def tag(value: Any) -> str:
        name = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
        return "plugin" if isinstance(name, str) and "." in name else "core"

    return tag


Step = Annotated[
    Annotated[CoreStep, Tag("core")]
    | Annotated[Any, BeforeValidator(_plugin_model("step", "do")), Tag("plugin")],
    Discriminator(_which("do")),
]
Check = Annotated[
    Annotated[CoreCheck, Tag("core")]
    | Annotated[Any, BeforeValidator(_plugin_model("checker", "kind")), Tag("plugin")],
    Discriminator(_which("kind")),
]


class Objective(Strict):
    id: str
    title: str
    check: Check
    hints: list[str] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("an id is lowercase letters, digits and dashes")
        return v


class TimelineEntry(Strict):
    """Steps fired `at = "start"` (every start and reset) or `at = "after:OBJECTIVE"`
    (once, the first time that objective passes)."""

    at: str
    say: str = Field(description="what the event timeline shows when it fires")
    steps: list[Step] = Field(default_factory=list)

    @field_validator("at")
    @classmethod
    def _at(cls, v: str) -> str:
        if v != "start" and not (v.startswith("after:") and _ID.match(v[6:])):
            raise ValueError('at is "start" or "after:OBJECTIVE-ID"')
        return v


class Scenario(Strict):
    name: str
    title: str
    summary: str
    assets: str = Field(
        default="common",
        description='folder beside the file; "core:NAME" is a folder the core ships',
    )
    requires_target: str | None = Field(default=None, description="a plugin's deploy target")
    requires_plugin: str | None = Field(
        default=None, description="the distribution of the plugin whose steps it uses"
    )
    setup: list[Step] = Field(default_factory=list)
    timeline: list[TimelineEntry] = Field(default_factory=list)
    objectives: list[Objective] = Field(min_length=1)
    solution: list[Step] = Field(default_factory=list)

    _path: Path = PrivateAttr(default=Path())

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("a name is lowercase letters, digits and dashes")
        return v

    @model_validator(mode="after")
    def _refs(self):
        ids = [o.id for o in self.objectives]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"objective ids must be unique; repeated: {dup}")
        for n, entry in enumerate(self.timeline):
            if entry.at.startswith("after:") and entry.at[6:] not in ids:
                raise ValueError(
                    f"timeline.{n}.at names objective {entry.at[6:]!r}, which is not among "
                    f"the objectives ({', '.join(ids)})"
                )
        return self

    @property
    def path(self) -> Path:
        """The file the scenario was read from."""
        return self._path

    @field_validator("assets")
    @classmethod
    def _assets(cls, v: str) -> str:
        if v.startswith("core:") and not _ID.match(v[5:]):
            raise ValueError(
                '"core:NAME" names a folder of the core\'s scenarios, e.g. core:common'
            )
        return v

    @property
    def assets_dir(self) -> Path:
        if self.assets.startswith("core:"):  # a plugin's scenario using the core's assets
            from mlops_console.labs.catalog import SHIPPED

            return SHIPPED / self.assets[5:]
        return self.path.parent / self.assets


class PluginMissing(ConfigError):
    """The scenario needs a plugin that is not installed."""


def _require_plugin(path: Path, data: dict[str, Any]) -> None:
    wanted = data.get("requires_plugin")
    if not isinstance(wanted, str) or not wanted:
        return
    from mlops_console.plugins import installed

    have = {p.distribution.lower().replace("_", "-") for p in installed()}
    if wanted.lower().replace("_", "-") not in have:
        raise PluginMissing(
            f"{path}: scenario {data.get('name', path.stem)!r} needs the plugin {wanted}, "
            f"which is not installed; install it (`pip install {wanted}`, or `make venv` in a "
            "checkout) and check with `mlops plugins list`."
        )


def load_scenario(path: Path) -> Scenario:
    """Parse one scenario file; a mistake is a ConfigError naming the file and the key."""
    from mlops_console.config import _describe

    data: dict[str, Any] = load_toml(path)
    _require_plugin(path, data)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            # the core/plugin tags of the step and checker unions say nothing to a trainer
            loc = tuple(p for p in err["loc"] if p not in ("core", "plugin"))
            problems.append(_describe({**err, "loc": loc}))
        raise ConfigError(f"{path}: {'; '.join(problems)}.") from None
    scenario._path = path
    return scenario
