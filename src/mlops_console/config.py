"""Pydantic models of the workspace's TOML files, and their loading with clear errors.

Every model forbids unknown keys: a typo in `mlops.toml` is reported with the file, the
key and what was expected, instead of being silently ignored.
"""

from __future__ import annotations

import os
import tomllib
from itertools import pairwise
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


def _name(kind: str, value: str) -> str:
    from mlops_console.errors import InvalidName
    from mlops_console.names import check_name

    try:
        return check_name(kind, value)
    except InvalidName as exc:
        raise ValueError(str(exc).rstrip(".")) from None


# Notifiers and deploy targets the package itself provides: naming one of these never
# needs the plugins loaded (that costs an import of every plugin).
BUILTIN_NOTIFIERS = ("console", "log", "webhook", "desktop")
BUILTIN_TARGETS = ("local", "docker")


def _check_provided(what: str, names: list[str], builtin: tuple[str, ...]) -> None:
    """Refuse names no built-in and no loaded plugin provides. When a plugin failed to load
    (or MLOPS_PLUGINS leaves some out) an unknown name may be one of its own: let it pass,
    the point of use says what is missing."""
    unknown = [n for n in names if n not in builtin]
    if not unknown:
        return
    from mlops_console.plugins import load_plugins

    plugins = load_plugins()
    provided = {
        "notifier": plugins.notifiers,
        "deploy target": plugins.deploy_targets,
        "check": plugins.model_checks,
    }[what]()
    known = set(builtin) | set(provided)
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
        return _name("alias", value)

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
            _check_provided("notifier", self.notify, BUILTIN_NOTIFIERS)
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
            _check_provided("notifier", self.notifiers, BUILTIN_NOTIFIERS)
        except ValueError as exc:
            raise ValueError(f"notifiers: {exc}") from None
        return self


class ConsoleSection(Strict):
    """`mlops console`: key remapping by binding id (see `?` in the console) and polling."""

    keys: dict[str, str] = Field(
        default_factory=dict, description='binding id -> keys, e.g. refresh = "ctrl+r,f5"'
    )
    poll_seconds: float = Field(default=5.0, ge=0.5, le=3600)


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

    @model_validator(mode="after")
    def _unique_alerts(self):
        names = [a.name for a in self.alerts]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"alert names must be unique; repeated: {sorted(dup)}")
        return self


# --- pipeline specs (pipelines/*.toml) -----------------------------------------------

CLASSIFICATION_METRICS = (
    "roc_auc",
    "pr_auc",
    "log_loss",
    "f1",
    "precision",
    "recall",
    "accuracy",
    "calibration_error",
)
REGRESSION_METRICS = ("rmse", "mae", "r2", "mape")
CHECK_NAMES = (
    "signature",
    "robustness",
    "out_of_time",
    "no_regression",
    "fairness",
    "interpretability",
    "performance",
    "reproducibility",
)


class PipelineData(Strict):
    dataset: str | None = Field(
        default=None, description="A registered dataset (its current version)"
    )
    path: str | None = Field(
        default=None, description="Or a CSV/Parquet file, relative to the workspace"
    )
    target: str
    time_column: str | None = None
    entity_column: str | None = None
    # Columns of the dataset to use as features (default: all but target, time, entity,
    # sensitive and excluded ones), and feature view features joined point-in-time.
    features: list[str] = Field(default_factory=list)
    feature_views: list[str] = Field(default_factory=list, description="VIEW:FEATURE refs")
    exclude: list[str] = Field(default_factory=list)
    sensitive: str | None = Field(default=None, description="Attribute for fairness checks")
    positive_class: str | int | bool | None = Field(
        default=None,
        description="The class binary metrics describe (default: the minority class)",
    )

    @model_validator(mode="after")
    def _one_source(self):
        if (self.dataset is None) == (self.path is None):
            raise ValueError("give exactly one of `dataset` (a registered dataset) or `path`")
        if self.feature_views and (
            self.dataset is None or self.entity_column is None or self.time_column is None
        ):
            raise ValueError("`feature_views` needs `dataset`, `entity_column` and `time_column`")
        return self


class PipelinePreprocess(Strict):
    # "auto": scale numeric columns only for estimators that need it (not trees).
    scale: Literal["auto", "standard", "none"] = "auto"
    categorical: Literal["onehot", "ordinal"] = "onehot"
    custom: str | None = Field(default=None, description="module:function returning a transformer")


class PipelineModel(Strict):
    estimator: str = "sklearn.linear_model.LogisticRegression"
    params: dict[str, Any] = Field(default_factory=dict)


class PipelineSearch(Strict):
    method: Literal["none", "grid", "random", "halving"] = "none"
    # Keys are model parameters ("max_iter") or step paths ("preprocess__..."); values are
    # lists of choices, or {low, high, log, int} ranges for random and halving search.
    space: dict[str, Any] = Field(default_factory=dict)
    candidates: int = Field(default=20, ge=1, le=10_000)
    cv_folds: int = Field(default=3, ge=2, le=20)
    n_jobs: int = -1

    @model_validator(mode="after")
    def _space_needed(self):
        if self.method != "none" and not self.space:
            raise ValueError("a search needs a `space` of parameters to try")
        for name, value in self.space.items():
            if isinstance(value, dict):
                check_range(name, value)
                if self.method == "grid":
                    raise ValueError(
                        f"space.{name}: a grid search tries lists of choices, e.g. "
                        f"{name} = [0.1, 0.5]; a {{ low, high }} range is for random and "
                        "halving search"
                    )
        return self


def check_range(name: str, value: dict[str, Any]) -> None:
    """A `{ low, high, log, int }` range of [search.space] that a sampler can draw from."""
    where = f"space.{name}"
    unknown = sorted(set(value) - {"low", "high", "log", "int"})
    if unknown or not {"low", "high"} <= set(value):
        raise ValueError(
            f"{where}: a range is {{ low = ..., high = ..., log = true|false, "
            f"int = true|false }}" + (f"; unknown key(s) {unknown}" if unknown else "")
        )
    low, high = value["low"], value["high"]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
        raise ValueError(f"{where}: low and high must be numbers, got {low!r} and {high!r}")
    if low > high or (low == high and not value.get("int")):
        raise ValueError(
            f"{where}: low ({low:g}) must be below high ({high:g}); for one value give a "
            f"list, {name} = [{low:g}]"
        )
    if value.get("log") and low <= 0:
        raise ValueError(
            f"{where}: a log-scale range needs low above 0, got {low:g}; use e.g. "
            f"low = 1e-4, or log = false"
        )


class PipelineValidation(Strict):
    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    primary_metric: str = "roc_auc"
    cv_folds: int = Field(default=3, ge=2, le=20)
    min_rows: int = Field(default=100, ge=10)


class PipelineChecks(Strict):
    max_oot_drop: float = Field(default=0.05, ge=0, description="CV minus holdout, primary metric")
    regression_margin: float = Field(default=0.01, ge=0)
    fairness_max_gap: float = Field(default=0.10, ge=0, le=1)
    latency_p99_1row_ms: float = Field(default=50.0, gt=0)
    latency_p99_100rows_ms: float = Field(default=200.0, gt=0)
    max_model_mb: float = Field(default=200.0, gt=0)
    max_predict_memory_mb: float = Field(default=500.0, gt=0)
    importance_rows: int = Field(default=2000, ge=50)


class PipelineGates(Strict):
    # Metric thresholds on the holdout, e.g. min = { roc_auc = 0.75 }, max = { log_loss = 0.6 }.
    min: dict[str, float] = Field(default_factory=dict)
    max: dict[str, float] = Field(default_factory=dict)
    checks: list[str] = Field(default_factory=lambda: list(CHECK_NAMES))
    auto_promote: bool = False

    @model_validator(mode="after")
    def _known_checks(self):
        _check_provided("check", self.checks, CHECK_NAMES)  # plugins' checks can gate too
        return self


class PipelineSchedule(Strict):
    cron: str | None = Field(default=None, description="five fields: minute hour day month weekday")
    interval: str | None = Field(default=None, description="e.g. '1d', '6h', '30m'")
    on_data_change: bool = False
    paused: bool = False

    @model_validator(mode="after")
    def _cadence_ok(self):
        if self.cron is not None and len(self.cron.split()) != 5:
            raise ValueError(f"cron {self.cron!r} needs five fields: minute hour day month weekday")
        if self.interval is not None:
            parse_duration(self.interval, "interval")
        return self


class PipelineDeploy(Strict):
    """How a chain deploys a new version: as a canary, judged step by step by its health."""

    target: str | None = None
    alias: str = "champion"

    canary_percent: float = Field(
        default=10.0, gt=0, le=100, description="the canary's share of traffic (one step)"
    )
    canary_steps: list[float] = Field(
        default_factory=list,
        description="or shares in steps, e.g. [10, 50, 100]: each judged before the next",
    )
    canary_minutes: float = Field(
        default=10.0, ge=0, description="longest a step waits for min_requests: then rollback"
    )
    min_requests: int = Field(default=20, ge=1, description="canary requests a step needs")
    min_minutes: float = Field(default=0.0, ge=0, description="shortest a step lasts")
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="errors (and refusals beyond the primary's)"
    )
    max_p99_ms: float = Field(default=250.0, gt=0, description="the canary's p99 latency")
    auto: bool = False

    @field_validator("target")
    @classmethod
    def _target(cls, value: str | None) -> str | None:
        if value is not None:
            _check_provided("deploy target", [value], BUILTIN_TARGETS)
        return value

    @field_validator("alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        return _name("alias", value)

    @model_validator(mode="after")
    def _steps_ok(self):
        steps = self.canary_steps
        shown = "[" + ", ".join(f"{p:g}" for p in steps) + "]"
        if steps and "canary_percent" in self.model_fields_set:
            raise ValueError(
                "give `canary_percent` (one step) or `canary_steps` (several), not both"
            )
        bad = [p for p in steps if not 0 < p <= 100]
        if bad:
            raise ValueError(f"canary_steps {shown}: each step is a percent above 0, up to 100")
        if any(b <= a for a, b in pairwise(steps)):
            raise ValueError(
                f"canary_steps {shown}: each step must give the canary more traffic than the "
                "one before, e.g. [10, 50, 100]"
            )
        if self.min_minutes > self.canary_minutes:
            raise ValueError(
                f"min_minutes ({self.min_minutes:g}) is longer than canary_minutes "
                f"({self.canary_minutes:g}), the longest a step may wait: every canary would "
                "be rolled back; shorten min_minutes or lengthen canary_minutes"
            )
        return self

    @property
    def steps(self) -> list[float]:
        """The canary's share of traffic at each step."""
        return list(self.canary_steps) or [self.canary_percent]


class PipelineScore(Strict):
    """Batch scoring with the champion: on a cadence and/or after each promotion."""

    input: str | None = Field(default=None, description="a dataset name or a file")
    output: str | None = Field(
        default=None, description="FILE.parquet|.csv, sqlite:PATH#T, duckdb:PATH#T"
    )
    cron: str | None = None
    interval: str | None = None
    after_promotion: bool = False

    @model_validator(mode="after")
    def _complete(self):
        if (self.cron or self.interval or self.after_promotion) and not (
            self.input and self.output
        ):
            raise ValueError(
                "[score] needs `input` and `output` to score on a cadence or after promotion"
            )
        if self.cron is not None and len(self.cron.split()) != 5:
            raise ValueError(f"cron {self.cron!r} needs five fields: minute hour day month weekday")
        return self


class PipelineSpec(Strict):
    name: str
    experiment: str | None = None
    task: Literal["classification", "regression"] = "classification"
    seed: int = 42
    description: str = ""
    intended_use: str = ""
    data: PipelineData
    preprocess: PipelinePreprocess = PipelinePreprocess()
    model: PipelineModel = PipelineModel()
    search: PipelineSearch = PipelineSearch()
    validation: PipelineValidation = PipelineValidation()
    checks: PipelineChecks = PipelineChecks()
    gates: PipelineGates = PipelineGates()
    schedule: PipelineSchedule = PipelineSchedule()
    deploy: PipelineDeploy = PipelineDeploy()
    score: PipelineScore = PipelineScore()
    register_as: str | None = None

    @field_validator("register_as")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        return None if value is None else _name("model", value)

    @model_validator(mode="after")
    def _metric_fits_task(self):
        if self.task != "classification" and self.data.positive_class is not None:
            raise ValueError(
                "data.positive_class is for a classification task; remove it or set "
                "task = 'classification'"
            )
        known = CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS
        for where, names in (
            ("validation.primary_metric", [self.validation.primary_metric]),
            ("gates.min", list(self.gates.min)),
            ("gates.max", list(self.gates.max)),
        ):
            bad = [n for n in names if n not in known]
            if bad:
                raise ValueError(
                    f"{where}: {bad} not metrics of a {self.task} task; use {list(known)}"
                )
        return self


M = TypeVar("M", bound=BaseModel)


def _describe(err: dict[str, Any]) -> str:
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


def load_pipeline(path: Path) -> PipelineSpec:
    return parse(PipelineSpec, load_toml(path), path)
