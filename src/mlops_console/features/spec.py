"""Feature view specs (`features/*.toml`)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from mlops_console.config import Strict, load_toml, parse
from mlops_console.errors import ConfigError
from mlops_console.names import RULES, is_name

_TTL = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_ttl(value: str | int | float) -> float:
    """'90d', '12h', '3600' or 0 (no limit) to seconds."""
    if isinstance(value, int | float):
        return float(value)
    m = _TTL.fullmatch(value)
    if not m:
        raise ValueError(
            f"{value!r} is not a duration; use e.g. '90d', '12h', '30m' or 0 (no limit)"
        )
    return float(m.group(1)) * _UNITS[m.group(2)]


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
        parse_ttl(v)
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
        return parse_ttl(self.ttl)


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
