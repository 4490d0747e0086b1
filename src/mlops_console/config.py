"""Pydantic models of `mlops.toml`, and the loading of every TOML file with clear errors.

Pipeline specs are in pipeline_spec.py, feature views in features/spec.py, data contracts
in data/contract.py; all parse through `parse` here.

Every model forbids unknown keys: a typo in `mlops.toml` is reported with the file, the
key and what was expected, instead of being silently ignored.
"""

from __future__ import annotations

import functools
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops_console.durations import parse_duration
from mlops_console.errors import ConfigError
from mlops_console.events import DEFAULT_EVENTS, LIFECYCLE


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WorkspaceSection(Strict):
    name: str = "workspace"
    description: str = ""


class TrackingSection(Strict):
    default_experiment: str = "default"
    # Metric values are buffered in memory and written in one transaction at most this
    # often (and at the end of a run), so logging one value at a time stays cheap.
    metric_flush_seconds: float = Field(default=1.0, ge=0.0, le=60.0)
    metric_flush_rows: int = Field(default=1000, ge=1)


def checked_name(kind: str, value: str) -> str:
    from mlops_console.errors import InvalidName
    from mlops_console.names import check_name

    try:
        return check_name(kind, value)
    except InvalidName as exc:
        raise ValueError(str(exc).rstrip(".")) from None


def _provided(plugins, what: str) -> set[str]:
    hook = {
        "notifier": plugins.notifiers,
        "deploy target": plugins.deploy_targets,
        "check": plugins.model_checks,
    }[what]
    return set(hook())


@functools.cache
def _builtin_provided(what: str) -> frozenset[str]:
    """What the package's own plugins provide (imported once per process)."""
    from mlops_console.plugins import load_builtin_plugins

    return frozenset(_provided(load_builtin_plugins(), what))


# "console" is not a plugin: it is the event log the console shows, written by the core.
CORE_NOTIFIERS = ("console",)


def check_provided(what: str, names: list[str], builtin: tuple[str, ...] = ()) -> None:
    """Refuse names no plugin provides (the package's own first, through the same entry
    points as third parties'; `builtin`: names the core itself defines). When a plugin
    failed to load (or MLOPS_PLUGINS leaves some out) an unknown name may be one of its
    own: let it pass, the point of use says what is missing."""
    from mlops_console.plugins import load_plugins

    unknown = [n for n in names if n not in builtin]
    if unknown:  # the package's own plugins first; third parties' may be costly to import
        unknown = [n for n in unknown if n not in _builtin_provided(what)]
    if not unknown:
        return
    plugins = load_plugins()
    known = set(builtin) | _provided(plugins, what)
    unknown = [n for n in unknown if n not in known]
    if not unknown or not all(p.loaded for p in plugins.info) or os.environ.get("MLOPS_PLUGINS"):
        return
    raise ValueError(
        f"unknown {what}(s) {unknown}; known: {sorted(known)} (plugins add more: "
        "`mlops plugins list` shows what loaded)"
    )


class RegistrySection(Strict):
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"

    @field_validator("champion_alias", "challenger_alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        return checked_name("alias", value)

    @model_validator(mode="after")
    def _distinct(self):
        if self.champion_alias == self.challenger_alias:
            raise ValueError(
                f"champion_alias and challenger_alias are both {self.champion_alias!r}; "
                "give them different names"
            )
        return self


class ServingSection(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # the limits and switches of the servers this workspace starts (MLOPS_* in their env)
    max_body_bytes: int = Field(default=32 << 20, ge=1)
    max_rows: int = Field(default=100_000, ge=1)
    max_body_memory: int = Field(default=128 << 20, ge=1)  # bodies held at once, all requests
    impute_missing: bool = False  # let nulls in non-nullable columns reach the imputer
    max_inflight: int = Field(default=256, ge=1)
    allowed_hosts: list[str] = Field(default_factory=list)  # names clients use beside loopback
    feedback_token: bool = False  # POST /feedback needs a per-deployment token
    feedback_rate: float = Field(default=200.0, gt=0)
    predlog_rotate: float = Field(default=60.0, ge=0.1)  # seconds a prediction log segment is open
    # what the docker target builds on; MLOPS_DOCKER_BASE_IMAGE overrides it
    docker_base_image: str = Field(default="python:3.11-slim", min_length=1)

    def server_env(self) -> dict[str, str]:
        """The environment that gives a model server these settings."""
        return {
            "MLOPS_MAX_BODY_BYTES": str(self.max_body_bytes),
            "MLOPS_MAX_ROWS": str(self.max_rows),
            "MLOPS_MAX_BODY_MEMORY": str(self.max_body_memory),
            "MLOPS_IMPUTE_MISSING": "1" if self.impute_missing else "0",
            "MLOPS_MAX_INFLIGHT": str(self.max_inflight),
            "MLOPS_ALLOWED_HOSTS": ",".join(self.allowed_hosts),
            "MLOPS_FEEDBACK_RATE": str(self.feedback_rate),
            "MLOPS_PREDLOG_ROTATE": str(self.predlog_rotate),
        }


class StoreSection(Strict):
    # Objects nothing refers to are removed by `mlops gc` only once older than this,
    # so a writer that stored an object but has not yet recorded its use never loses it.
    gc_grace_seconds: int = Field(default=3600, ge=0)


MEASURES = (
    "drift_share",  # share of input columns drifted
    "prediction_psi",
    "error_rate",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "rps",
    "nan_output_rate",
    "out_of_range_rate",
    "saturated_rate",
    "collapsed",  # 1 when the prediction distribution collapsed
    "model_age_days",
    "data_age_days",
)
MEASURE_PREFIXES = ("psi:", "decay:", "metric:")  # psi:COLUMN, decay:METRIC, metric:METRIC
# what monitoring/measures.py's decay() measures on labelled rows (decay:/metric: names)
DECAY_METRICS = ("accuracy", "roc_auc", "log_loss", "rmse", "mae")


class MonitoringSection(Strict):
    """Drift thresholds and the daemon's collection cadence (defaults in docs/monitoring)."""

    window: str = Field(default="1h", description="the default window of `mlops monitor`")
    every: str = Field(default="1m", description="how often the daemon collects and evaluates")
    min_rows: int = Field(default=100, ge=1, description="fewer rows in a window: no verdict")
    psi: float = Field(default=0.2, gt=0)
    ks_statistic: float = Field(default=0.1, gt=0, le=1)
    ks_pvalue: float = Field(default=0.05, gt=0, lt=1)
    js: float = Field(default=0.1, gt=0, le=1)
    drift_share: float = Field(default=0.5, gt=0, le=1)
    keep_days: float = Field(default=90, gt=0, description="collected rows older are removed")

    @model_validator(mode="after")
    def _durations(self):
        parse_duration(self.window, "window")
        parse_duration(self.every, "every")
        return self


class AlertRule(Strict):
    name: str
    measure: str
    above: float | None = None
    below: float | None = None
    window: str = "1h"
    windows: int = Field(default=1, ge=1, description="consecutive windows over the threshold")
    deployments: list[str] = Field(default_factory=lambda: ["*"], description="name globs")
    action: Literal["none", "retrain", "rollback"] = "none"
    notify: list[str] = Field(default_factory=lambda: ["console", "log"])
    severity: Literal["info", "warning", "critical"] = "warning"

    @model_validator(mode="after")
    def _check(self):
        if (self.above is None) == (self.below is None):
            raise ValueError(f"alert {self.name!r}: give exactly one of `above` or `below`")
        if self.measure not in MEASURES and not self.measure.startswith(MEASURE_PREFIXES):
            raise ValueError(
                f"alert {self.name!r}: unknown measure {self.measure!r}; known: "
                f"{list(MEASURES)} or psi:COLUMN, decay:METRIC, metric:METRIC"
            )
        prefix, _, arg = self.measure.partition(":")
        if self.measure.startswith(MEASURE_PREFIXES) and not arg.strip():
            what = "an input column" if prefix == "psi" else "a metric"
            raise ValueError(
                f"alert {self.name!r}: measure {self.measure!r} names no {what.split()[-1]}; "
                f"write {prefix}:NAME with {what}"
                + (f" ({', '.join(DECAY_METRICS)})" if prefix != "psi" else "")
            )
        if prefix in ("decay", "metric") and arg not in DECAY_METRICS:
            raise ValueError(
                f"alert {self.name!r}: measure {self.measure!r}: {arg!r} is not a metric "
                f"monitoring measures on labelled rows; use one of {list(DECAY_METRICS)}"
            )
        parse_duration(self.window, "window")
        try:
            check_provided("notifier", self.notify, CORE_NOTIFIERS)
        except ValueError as exc:
            raise ValueError(f"alert {self.name!r}: notify: {exc}") from None
        return self


class NotifierSettings(Strict):
    url: str | None = Field(default=None, description="webhook URL (prefer url_env)")
    url_env: str | None = Field(default=None, description="environment variable with the URL")
    format: Literal["slack", "json"] = "slack"
    timeout: float = Field(default=5.0, gt=0)
    path: str | None = Field(
        default=None, description="log notifier: file (default .mlops/logs/alerts.log)"
    )


class NotifySection(Strict):
    """Which life-cycle events (chains, deployments) reach which notifiers; alert rules
    name their own notifiers in `[[alerts]] notify`."""

    events: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EVENTS), description="event kinds to send"
    )
    notifiers: list[str] = Field(
        default_factory=lambda: ["log"], description="names from [notifiers.NAME] or plugins"
    )

    @model_validator(mode="after")
    def _known_kinds(self):
        unknown = [k for k in self.events if k not in LIFECYCLE]
        if unknown:
            raise ValueError(f"unknown event kind(s) {unknown}; known: {list(LIFECYCLE)}")
        try:
            check_provided("notifier", self.notifiers, CORE_NOTIFIERS)
        except ValueError as exc:
            raise ValueError(f"notifiers: {exc}") from None
        return self


class ConsoleSection(Strict):
    """`mlops console`: key remapping by binding id (see `?` in the console) and polling."""

    keys: dict[str, str] = Field(
        default_factory=dict, description='binding id -> keys, e.g. refresh = "ctrl+r,f5"'
    )
    poll_seconds: float = Field(default=5.0, ge=0.5, le=3600)


class LabsSection(Strict):
    """`mlops lab`: folders of a trainer's own scenarios, beside the shipped ones."""

    paths: list[str] = Field(default_factory=list, description="folders of scenario TOMLs")


class ComputeSection(Strict):
    """Where a pipeline's search runs: here, or on a cluster a plugin reaches (mlops-dask)."""

    backend: str = Field(default="local", description='"local", or a plugin\'s, e.g. "dask"')
    scheduler: str | None = Field(
        default=None,
        description='e.g. "tcp://HOST:8786", or "local-cluster" to try one on this machine',
    )
    workers: int = Field(default=2, ge=1, le=256, description="workers of a local-cluster")
    min_threads: int = Field(
        default=2, ge=1, description="a cluster with fewer threads falls back to local"
    )
    connect_timeout: float = Field(default=5.0, gt=0, le=300)
    retries: int = Field(default=2, ge=0, le=10, description="re-runs of a failed candidate")

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        # which plugin provides it is asked where it is used (a run), not on every load
        if not value.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f'backend {value!r} is not a name; e.g. "local" or "dask"')
        return value


class WorkspaceConfig(Strict):
    workspace: WorkspaceSection = WorkspaceSection()
    tracking: TrackingSection = TrackingSection()
    registry: RegistrySection = RegistrySection()
    serving: ServingSection = ServingSection()
    store: StoreSection = StoreSection()
    monitoring: MonitoringSection = Field(default_factory=MonitoringSection)
    alerts: list[AlertRule] = Field(default_factory=list)
    notifiers: dict[str, NotifierSettings] = Field(default_factory=dict)
    notify: NotifySection = Field(default_factory=NotifySection)
    console: ConsoleSection = Field(default_factory=ConsoleSection)
    labs: LabsSection = Field(default_factory=LabsSection)
    compute: ComputeSection = Field(default_factory=ComputeSection)

    @model_validator(mode="after")
    def _unique_alerts(self):
        names = [a.name for a in self.alerts]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"alert names must be unique; repeated: {sorted(dup)}")
        return self


M = TypeVar("M", bound=BaseModel)


def _describe(err: Any) -> str:  # pydantic_core.ErrorDetails, a TypedDict
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key `{key}` (check its spelling; see the documented keys)"
    if kind == "missing":
        return f"missing required key `{key}`"
    if kind == "value_error":
        msg = err["msg"].removeprefix("Value error, ")
        return f"{key}: {msg}" if err["loc"] else msg  # a whole-file check names its keys
    got = err.get("input")
    return f"key `{key}`: {err['msg'].lower()}, got {got!r}"


def parse(model: type[M], data: dict[str, Any], source: Path | str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"{source}: {problems}.") from None


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}). Fix the syntax and retry.") from None


def load_workspace_config(path: Path) -> WorkspaceConfig:
    return parse(WorkspaceConfig, load_toml(path), path)


def parse_workspace_config(raw: bytes, path: Path) -> WorkspaceConfig:
    """mlops.toml's settings from its bytes (read once, so what is checked is what is used)."""
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text. Save it as UTF-8 and retry.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}). Fix the syntax and retry.") from None
    return parse(WorkspaceConfig, data, path)
