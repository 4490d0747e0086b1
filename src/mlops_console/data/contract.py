"""Data contracts: what a dataset's versions must satisfy, inferred then edited by hand.

A contract lives in `contracts/NAME.toml` in the workspace. A version that breaks it is
quarantined with a report per rule; `--force` accepts it deliberately.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from mlops_console.config import Strict, load_toml, parse
from mlops_console.data.types import NUMERIC, accepts, logical_type, quote_ident

MAX_CATEGORIES = 50


class ColumnRule(Strict):
    type: str
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None


class RowsRule(Strict):
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)


class KeysRule(Strict):
    unique: list[str] = Field(default_factory=list)


class FreshnessRule(Strict):
    column: str | None = None
    max_age_days: float | None = Field(default=None, gt=0)


class Contract(Strict):
    dataset: str
    allow_extra_columns: bool = True
    rows: RowsRule = RowsRule()
    keys: KeysRule = KeysRule()
    freshness: FreshnessRule = FreshnessRule()
    columns: dict[str, ColumnRule] = Field(default_factory=dict)


@dataclass
class RuleResult:
    rule: str
    passed: bool
    detail: str
    column: str | None = None
    examples: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- inference -------------------------------------------------------------------------


def infer(
    name: str, table, profile: dict[str, Any], timestamp: str | None, entities: list[str]
) -> Contract:
    """A contract that the first version satisfies, with room for normal variation:
    numeric ranges widened by half their span, categories as seen (when few),
    at least half the first version's rows."""
    cols: dict[str, ColumnRule] = {}
    for f in table.schema:
        kind = logical_type(f.type)
        prof = profile["columns"][f.name]
        rule = ColumnRule(type=kind, nullable=prof["nulls"] > 0)
        if kind in NUMERIC and prof["count"]:
            lo, hi = prof["min"], prof["max"]
            margin = (hi - lo) * 0.5
            new_lo, new_hi = _round_out(lo - margin, down=True), _round_out(hi + margin, down=False)
            if lo >= 0:
                new_lo = max(0.0, new_lo)
            if kind == "integer":
                new_lo, new_hi = math.floor(new_lo), math.ceil(new_hi)
            rule.min, rule.max = new_lo, new_hi
        top = prof.get("top", [])
        few = (
            0 < prof["distinct"] <= min(MAX_CATEGORIES, len(top))
            and prof["distinct"] * 20 <= prof["count"]
        )
        if kind == "string" and f.name not in entities and few:
            rule.categories = sorted(t["value"] for t in top)
        cols[f.name] = rule
    keys = [*entities, timestamp] if entities and timestamp else list(entities)
    return Contract(
        dataset=name,
        rows=RowsRule(min=max(1, table.num_rows // 2)),
        keys=KeysRule(unique=keys),
        freshness=FreshnessRule(column=timestamp),
        columns=cols,
    )


def _round_out(x: float, down: bool, digits: int = 3) -> float:
    """Round to `digits` significant digits, away from the data (so the bound still holds)."""
    if x == 0 or not math.isfinite(x):
        return x
    scale = 10 ** (math.floor(math.log10(abs(x))) - digits + 1)
    return (math.floor(x / scale) if down else math.ceil(x / scale)) * scale


# --- checking --------------------------------------------------------------------------


def check(
    con, relation: str, schema, contract: Contract, now: float | None = None
) -> list[RuleResult]:
    """Every rule of the contract against the data registered as `relation`."""
    results: list[RuleResult] = []
    present = {f.name: logical_type(f.type) for f in schema}
    rows = con.execute(f"SELECT count(*) FROM {relation}").fetchone()[0]

    lo, hi = contract.rows.min, contract.rows.max
    ok = (lo is None or rows >= lo) and (hi is None or rows <= hi)
    bounds = f"[{lo if lo is not None else '-'}, {hi if hi is not None else '-'}]"
    results.append(RuleResult("row_count", ok, f"{rows} rows; allowed {bounds}"))

    for name, rule in contract.columns.items():
        if name not in present:
            results.append(RuleResult("column_present", False, "column is missing", name))
            continue
        actual = present[name]
        if not accepts(rule.type, actual):
            results.append(
                RuleResult(
                    "type",
                    False,
                    f"type changed: the contract says {rule.type}, the data has {actual}",
                    name,
                )
            )
            continue
        results.append(RuleResult("type", True, actual, name))
        col = quote_ident(name)
        if not rule.nullable:
            nulls = con.execute(f"SELECT count(*) - count({col}) FROM {relation}").fetchone()[0]
            ex = []
            if nulls:
                ex = [
                    r[0] + 1
                    for r in con.execute(
                        f"SELECT rn FROM (SELECT row_number() OVER () - 1 AS rn, {col} AS v FROM {relation}) "
                        "WHERE v IS NULL LIMIT 5"
                    ).fetchall()
                ]
            results.append(
                RuleResult(
                    "not_null",
                    nulls == 0,
                    f"{nulls} null value(s)" + (f"; first at data rows {ex}" if ex else ""),
                    name,
                    ex,
                )
            )
        if (rule.min is not None or rule.max is not None) and actual in NUMERIC:
            cond = " OR ".join(
                c
                for c in ([f"{col} < {rule.min!r}"] if rule.min is not None else [])
                + ([f"{col} > {rule.max!r}"] if rule.max is not None else [])
            )
            n, lo_v, hi_v = con.execute(
                f"SELECT count(*) FILTER (WHERE {cond}), min({col}), max({col}) FROM {relation}"
            ).fetchone()
            results.append(
                RuleResult(
                    "range",
                    n == 0,
                    f"{n} value(s) outside [{rule.min}, {rule.max}] (data: {lo_v} .. {hi_v})",
                    name,
                    []
                    if n == 0
                    else [
                        r[0]
                        for r in con.execute(
                            f"SELECT DISTINCT {col} FROM {relation} WHERE {cond} ORDER BY 1 LIMIT 5"
                        ).fetchall()
                    ],
                )
            )
        if rule.categories is not None and actual == "string":
            allowed = ", ".join("'" + c.replace("'", "''") + "'" for c in rule.categories) or "NULL"
            unseen = con.execute(
                f"SELECT {col}, count(*) FROM {relation} WHERE {col} IS NOT NULL AND {col} NOT IN ({allowed}) "
                "GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
            ).fetchall()
            results.append(
                RuleResult(
                    "categories",
                    not unseen,
                    "all values allowed"
                    if not unseen
                    else "value(s) not in the allowed categories: "
                    + ", ".join(f"{v!r} ({n}x)" for v, n in unseen),
                    name,
                    [v for v, _ in unseen],
                )
            )
    extra = sorted(set(present) - set(contract.columns))
    if extra:
        results.append(
            RuleResult(
                "extra_columns",
                contract.allow_extra_columns,
                f"column(s) not in the contract: {', '.join(extra)}",
                None,
                extra,
            )
        )

    keys = contract.keys.unique
    if keys:
        missing = [k for k in keys if k not in present]
        if missing:
            results.append(
                RuleResult("unique_keys", False, f"key column(s) missing: {', '.join(missing)}")
            )
        else:
            cols = ", ".join(quote_ident(k) for k in keys)
            dups = con.execute(
                f"SELECT {cols}, count(*) AS n FROM {relation} GROUP BY ALL HAVING n > 1 "
                "ORDER BY n DESC LIMIT 5"
            ).fetchall()
            total = 0
            if dups:
                total = con.execute(
                    f"SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM {relation} "
                    f"GROUP BY {cols} HAVING n > 1)"
                ).fetchone()[0]
            results.append(
                RuleResult(
                    "unique_keys",
                    not dups,
                    f"({', '.join(keys)}) is unique"
                    if not dups
                    else f"{total} duplicate row(s) on ({', '.join(keys)}), e.g. "
                    + "; ".join(", ".join(str(v) for v in d[:-1]) + f" x{d[-1]}" for d in dups[:3]),
                    None,
                    [[str(v) for v in d[:-1]] for d in dups],
                )
            )

    fr = contract.freshness
    if fr.column and fr.max_age_days:
        if fr.column not in present:
            results.append(RuleResult("freshness", False, "timestamp column is missing", fr.column))
        else:
            newest = con.execute(
                f"SELECT max({quote_ident(fr.column)}) FROM {relation}"
            ).fetchone()[0]
            now_dt = dt.datetime.fromtimestamp(now or dt.datetime.now().timestamp())
            if isinstance(newest, dt.date) and not isinstance(newest, dt.datetime):
                newest = dt.datetime.combine(newest, dt.time())
            if newest is not None and newest.tzinfo is not None:
                newest = newest.astimezone().replace(tzinfo=None)
            age = None if newest is None else (now_dt - newest).total_seconds() / 86400
            ok = age is not None and age <= fr.max_age_days
            results.append(
                RuleResult(
                    "freshness",
                    ok,
                    f"newest {fr.column} is {newest} ({age:.1f} days old; allowed {fr.max_age_days})"
                    if age is not None
                    else "no timestamps at all",
                    fr.column,
                )
            )
    return results


# --- TOML --------------------------------------------------------------------------------


def load(path: Path) -> Contract:
    return parse(Contract, load_toml(path), path)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    if isinstance(v, int | float):
        return repr(round(v, 10))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def _key(name: str) -> str:
    return name if name.replace("_", "").replace("-", "").isalnum() else _toml_value(name)


def dumps(contract: Contract, note: str = "") -> str:
    out = [
        f"# Data contract for dataset {contract.dataset!r}. {note}".rstrip(),
        "# A version that breaks a rule is quarantined; edit the rules to fit your data.",
        f"dataset = {_toml_value(contract.dataset)}",
        f"allow_extra_columns = {_toml_value(contract.allow_extra_columns)}",
        "",
        "[rows]",
    ]
    if contract.rows.min is not None:
        out.append(f"min = {contract.rows.min}")
    out.append(
        f"max = {contract.rows.max}" if contract.rows.max is not None else "# max = 10000000"
    )
    out += ["", "[keys]", f"unique = {_toml_value(contract.keys.unique)}", "", "[freshness]"]
    if contract.freshness.column:
        out.append(f"column = {_toml_value(contract.freshness.column)}")
    out.append(
        f"max_age_days = {contract.freshness.max_age_days!r}"
        if contract.freshness.max_age_days
        else "# max_age_days = 7   # the newest timestamp may be at most this old"
    )
    for name, rule in contract.columns.items():
        out += [
            "",
            f"[columns.{_key(name)}]",
            f"type = {_toml_value(rule.type)}",
            f"nullable = {_toml_value(rule.nullable)}",
        ]
        if rule.min is not None:
            out.append(f"min = {_toml_value(rule.min)}")
        if rule.max is not None:
            out.append(f"max = {_toml_value(rule.max)}")
        if rule.categories is not None:
            out.append(f"categories = {_toml_value(rule.categories)}")
    return "\n".join(out) + "\n"
