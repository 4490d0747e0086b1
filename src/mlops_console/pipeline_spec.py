"""Pydantic models of a pipeline spec (`pipelines/*.toml`): data, features, model,
search, validation, checks, gates, schedule, deploy and scoring.

Every model forbids unknown keys, as in config.py, which also parses and loads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mlops_console.config import Strict, check_provided, checked_name, load_toml, parse
from mlops_console.durations import parse_duration

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
    # Rows the search scores candidates on (the most recent ones when the data has a time
    # column, else a seeded sample); the refit always uses every training row.
    max_rows: int | None = Field(default=None, ge=50)
    # "quick": a retrain in seconds, for classes and trying things (see QUICK below).
    profile: Literal["full", "quick"] = "full"

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


# What `profile = "quick"` (or `mlops run --quick`) caps; a value the spec sets lower stays.
# The refit and the checks run on one native thread: on 2 busy cores, OpenMP threads that
# wait on each other cost more than these small fits (measured: a 16k-row gradient boosting
# fit took 0.3 s on one thread, 1.6 s on two, at load 5). The search keeps [search].n_jobs.
QUICK = {"candidates": 4, "cv_folds": 3, "max_rows": 3000, "importance_rows": 300}


def effective_spec(spec: PipelineSpec) -> PipelineSpec:
    """The spec a run trains with: its own settings, with the quick profile's caps applied
    when `[search] profile = "quick"` (idempotent, so a reproduction applies them again)."""
    if spec.search.profile != "quick":
        return spec
    s = spec.search
    search = s.model_copy(
        update={
            "candidates": min(s.candidates, QUICK["candidates"]),
            "cv_folds": min(s.cv_folds, QUICK["cv_folds"]),
            "max_rows": min(s.max_rows or QUICK["max_rows"], QUICK["max_rows"]),
        }
    )
    checks = spec.checks.model_copy(
        update={"importance_rows": min(spec.checks.importance_rows, QUICK["importance_rows"])}
    )
    validation = spec.validation.model_copy(
        update={"cv_folds": min(spec.validation.cv_folds, QUICK["cv_folds"])}
    )
    return spec.model_copy(update={"search": search, "checks": checks, "validation": validation})


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
        check_provided("check", self.checks, CHECK_NAMES)  # plugins' checks can gate too
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


# A deployment's own settings, which the core writes into its config (deploy/service.py),
# and where a user sets each: [deploy] options add a target's settings beside them and
# never replace them (a `port` in options would move the server behind the core's back).
DEPLOYMENT_SETTINGS = {
    "host": "[serving] host in mlops.toml or `mlops deploy --host`",
    "port": "[serving] port in mlops.toml (the first free port from it) or `mlops deploy "
    "--port` (later deploys keep it)",
    "runtime": "`mlops deploy --runtime` (later deploys keep it)",
}


def owned_options(options: Mapping[str, Any]) -> str | None:
    """What is wrong with `options` that name a deployment's own settings, or None."""
    owned = [key for key in options if key in DEPLOYMENT_SETTINGS]
    if not owned:
        return None
    named = ", ".join(f"`{key}`" for key in owned)
    where = "; ".join(
        f"{key} with {DEPLOYMENT_SETTINGS[key]}" if len(owned) > 1 else DEPLOYMENT_SETTINGS[key]
        for key in owned
    )
    if len(owned) == 1:
        return (
            f"option {named} is the deployment's own setting, which options (the target's "
            f"settings) cannot replace; set it with {where} instead"
        )
    return (
        f"options {named} are the deployment's own settings, which options (the target's "
        f"settings) cannot replace; set {where} instead"
    )


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
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the target's own settings, recorded in the deployment's config (fleet: "
        "group, waves, soak, max_failed, max_unreachable)",
    )

    @field_validator("target")
    @classmethod
    def _target(cls, value: str | None) -> str | None:
        if value is not None:
            check_provided("deploy target", [value])
        return value

    @field_validator("alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        return checked_name("alias", value)

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, Any]) -> dict[str, Any]:
        wrong = owned_options(value)
        if wrong:
            raise ValueError(wrong)
        return value

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
        return None if value is None else checked_name("model", value)

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


def load_pipeline(path: Path) -> PipelineSpec:
    return parse(PipelineSpec, load_toml(path), path)
