"""Feature view specs (`features/*.toml`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from mlops_console.config import Strict, load_toml, parse
from mlops_console.durations import parse_duration
from mlops_console.errors import ConfigError
from mlops_console.names import RULES, is_name


class FeatureViewSpec(Strict):
    name: str
    entities: list[str] = Field(min_length=1)
    timestamp: str
    created_timestamp: str | None = None
    ttl: str | int | float = 0
    source: str | None = None  # a dataset (its current version)
    features: list[str] = Field(default_factory=list)
    sql: str | None = None  # a SELECT over datasets, each visible as a table by its name
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v):
        if not is_name("feature view", v):
            raise ValueError(RULES["feature view"].allowed)
        return v

    @field_validator("ttl")
    @classmethod
    def _ttl_ok(cls, v):
        parse_duration(v)
        return v

    @model_validator(mode="after")
    def _one_way(self):
        if (self.sql is None) == (self.source is None):
            raise ValueError("give either `source` (a dataset) with `features`, or `sql`")
        if self.source is not None and not self.features:
            raise ValueError("`features` lists the columns of the source to serve")
        return self

    @property
    def ttl_seconds(self) -> float:
        return parse_duration(self.ttl)

    def timestamp_problem(self, duck_type: str, example: object = None) -> str | None:
        """Why the view's timestamp column (of this DuckDB type) cannot be joined as of a
        time, with how to fix it; None when it can. `example`: a text value that is not a
        timestamp (text that is, ISO 8601, is cast as it is)."""
        t = duck_type.upper()
        col = self.timestamp
        if t.startswith(("TIMESTAMP", "DATE")):
            return None
        where = "the view's SQL" if self.sql is not None else f"dataset {self.source}"
        if any(x in t for x in ("CHAR", "STRING", "TEXT")):
            if example is None:
                return None
            return (
                f"Feature view {self.name!r}: its timestamp column {col!r} is text, and "
                f"values such as {example!r} are not timestamps. Cast it in {where}, e.g. "
                f"strptime({col}, '%d.%m.%Y') AS {col} (the format of your values), or "
                f"CAST({col} AS TIMESTAMP) AS {col} for ISO text like '2025-01-31 12:00:00'."
            )
        return (
            f"Feature view {self.name!r}: its timestamp column {col!r} is {duck_type}, not a "
            f"timestamp. Convert it in {where}, e.g. to_timestamp({col}) AS {col} for "
            f"seconds since 1970, or CAST({col} AS TIMESTAMP) AS {col}."
        )


def load_view(path: Path) -> FeatureViewSpec:
    data = load_toml(path)
    data.setdefault("name", path.stem)
    return parse(FeatureViewSpec, data, path)


def load_views(folder: Path) -> dict[str, FeatureViewSpec]:
    views: dict[str, FeatureViewSpec] = {}
    for path in sorted(folder.glob("*.toml")):
        view = load_view(path)
        if view.name in views:
            raise ConfigError(f"{path}: feature view {view.name!r} is defined twice.")
        views[view.name] = view
    return views
