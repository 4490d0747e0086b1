"""Data contracts: what a dataset's versions must satisfy, inferred then edited by hand.

A contract lives in `contracts/NAME.toml` in the workspace. A version that breaks it is
quarantined with a report per rule; `--force` accepts it deliberately.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import Field

from mlops_console.config import Strict
from mlops_console.data.types import NUMERIC, accepts, logical_type, narrow, quote_ident

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
        # An entity key (a customer number) grows with new customers; a range would
        # quarantine next month's file for them.
        if kind in NUMERIC and prof["count"] and f.name not in entities:
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

    checked = [n for n in contract.columns if n in present]
    stats = _column_stats(con, relation, {n: contract.columns[n] for n in checked}, present)
    # Examples are looked up for the failing columns only, from a copy of just those.
    failing = [n for n in checked if any(stats.get((n, w)) for w in ("nulls", "outside"))]
    with narrow(con, relation, schema, failing) as rel:
        for name, rule in contract.columns.items():
            results += _column_results(con, rel, name, rule, present.get(name), stats)
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


def _column_stats(con, relation: str, rules: dict[str, ColumnRule], present) -> dict:
    """What decides each column rule, for a batch of columns: {(column, "nulls" |
    "outside" | "min" | "max" | "unseen"): value}. The columns are unpivoted into one
    (column, value) relation and grouped once per kind of rule: a SELECT with an aggregate
    per column is slow for thousands of columns."""
    import pyarrow as pa

    todo = {n: r for n, r in rules.items() if accepts(r.type, present[n])}
    stats: dict[tuple[str, str], Any] = {}
    notnull = [n for n, r in todo.items() if not r.nullable]
    for i, n in _unpivot(
        con, relation, [f"({quote_ident(n)} IS NULL)::INT" for n in notnull], "sum(v)"
    ):
        stats[notnull[i], "nulls"] = int(n)
    stats.update({(n, "nulls"): stats.get((n, "nulls"), 0) for n in notnull})

    ranged = [
        n
        for n, r in todo.items()
        if (r.min is not None or r.max is not None) and present[n] in NUMERIC
    ]
    for n in ranged:
        stats[n, "outside"], stats[n, "min"], stats[n, "max"] = 0, None, None
    if ranged:
        inf = float("inf")
        con.register(
            "_bounds",
            pa.table(
                {
                    "col": [f"c{i}" for i in range(len(ranged))],
                    "lo": [_bound(todo[n].min, -inf) for n in ranged],
                    "hi": [_bound(todo[n].max, inf) for n in ranged],
                }
            ),
        )
        try:
            for i, out, lo, hi in _unpivot(
                con,
                relation,
                [f"{quote_ident(n)}::DOUBLE" for n in ranged],
                "count_if(v < lo OR v > hi), min(v), max(v)",
                "JOIN _bounds USING (col)",
            ):
                n = ranged[i]
                whole = present[n] == "integer"
                stats[n, "outside"] = int(out)
                stats[n, "min"] = int(lo) if whole else lo
                stats[n, "max"] = int(hi) if whole else hi
        finally:
            con.unregister("_bounds")

    listed = [n for n, r in todo.items() if r.categories is not None and present[n] == "string"]
    for n in listed:
        stats[n, "unseen"] = []
    # An empty list allows anything (NOT IN (NULL) never holds), as it always did.
    cats = [n for n in listed if todo[n].categories]
    if cats:
        pairs = [(f"c{i}", c) for i, n in enumerate(cats) for c in todo[n].categories or ()]
        con.register(
            "_allowed", pa.table({"col": [p[0] for p in pairs], "v": [p[1] for p in pairs]})
        )
        try:
            found = _unpivot(
                con,
                relation,
                [f"{quote_ident(n)}::VARCHAR" for n in cats],
                "v, count(*) AS n",
                "ANTI JOIN _allowed USING (col, v)",
                group="col, v",
                keep="QUALIFY row_number() OVER (PARTITION BY col ORDER BY n DESC, v) <= 5 "
                "ORDER BY col, n DESC, v",
            )
        finally:
            con.unregister("_allowed")
        for i, v, n in found:
            stats[cats[i], "unseen"].append((v, int(n)))
    return stats


def _unpivot(con, relation, exprs, aggregates, join="", group="col", keep=""):
    """Rows (i, aggregates...) over the non-NULL values of exprs[i], as column `v`."""
    if not exprs:
        return []
    sel = ", ".join(f"{e} AS c{i}" for i, e in enumerate(exprs))
    on = ", ".join(f"c{i}" for i in range(len(exprs)))
    rows = con.execute(
        f"SELECT col, {aggregates} FROM (UNPIVOT (SELECT {sel} FROM {relation}) ON {on} "
        f"INTO NAME col VALUE v) {join} GROUP BY {group} {keep}"
    ).fetchall()
    return [(int(r[0][1:]), *r[1:]) for r in rows]


def _outside(col: str, rule: ColumnRule) -> str:
    return " OR ".join(
        c
        for c in ([f"{col} < {_sql_number(rule.min)}"] if rule.min is not None else [])
        + ([f"{col} > {_sql_number(rule.max)}"] if rule.max is not None else [])
    )


def _sql_number(x: float) -> str:
    return repr(x) if math.isfinite(x) else f"'{x}'::DOUBLE"  # a bound inferred from inf


def _column_results(
    con, relation: str, name: str, rule: ColumnRule, actual: str | None, stats: dict
) -> list[RuleResult]:
    if actual is None:
        return [RuleResult("column_present", False, "column is missing", name)]
    if not accepts(rule.type, actual):
        return [
            RuleResult(
                "type",
                False,
                f"type changed: the contract says {rule.type}, the data has {actual}",
                name,
            )
        ]
    results = [RuleResult("type", True, actual, name)]
    col = quote_ident(name)
    if not rule.nullable:
        nulls = stats[name, "nulls"]
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
        cond = _outside(col, rule)
        n, lo_v, hi_v = stats[name, "outside"], stats[name, "min"], stats[name, "max"]
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
        unseen = stats[name, "unseen"]
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
    return results


def _bound(value: float | None, unbounded: float) -> float:
    return unbounded if value is None else float(value)
