"""Pydantic models of the workspace's TOML files, and their loading with clear errors.

Every model forbids unknown keys: a typo in `mlops.toml` is reported with the file, the
key and what was expected, instead of being silently ignored.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlops_console.errors import ConfigError


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


class RegistrySection(Strict):
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"


class ServingSection(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)


class StoreSection(Strict):
    # Objects nothing refers to are removed by `mlops gc` only once older than this,
    # so a writer that stored an object but has not yet recorded its use never loses it.
    gc_grace_seconds: int = Field(default=3600, ge=0)


class WorkspaceConfig(Strict):
    workspace: WorkspaceSection = WorkspaceSection()
    tracking: TrackingSection = TrackingSection()
    registry: RegistrySection = RegistrySection()
    serving: ServingSection = ServingSection()
    store: StoreSection = StoreSection()


# --- pipeline specs (pipelines/*.toml); the training issue extends these ------------


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
    features: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.dataset is None) == (self.path is None):
            raise ValueError("give exactly one of `dataset` (a registered dataset) or `path`")
        return self


class PipelineModel(Strict):
    estimator: str = "sklearn.linear_model.LogisticRegression"
    params: dict[str, Any] = Field(default_factory=dict)


class PipelineValidation(Strict):
    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    primary_metric: str = "roc_auc"


class PipelineSpec(Strict):
    name: str
    experiment: str | None = None
    task: Literal["classification", "regression"] = "classification"
    seed: int = 42
    data: PipelineData
    model: PipelineModel = PipelineModel()
    validation: PipelineValidation = PipelineValidation()
    register_as: str | None = None


M = TypeVar("M", bound=BaseModel)


def _describe(err: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key `{key}` (check its spelling; see the documented keys)"
    if kind == "missing":
        return f"missing required key `{key}`"
    if kind == "value_error":
        return f"{key}: {err['msg'].removeprefix('Value error, ')}"
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


def load_pipeline(path: Path) -> PipelineSpec:
    return parse(PipelineSpec, load_toml(path), path)
