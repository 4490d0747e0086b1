"""Per-column profiles of a dataset version, computed by DuckDB over the Arrow table.

Stored with each version: the console shows them, `data diff` compares them and the
monitoring reference uses their quantile bins.
"""

from __future__ import annotations

import math
from typing import Any

from mlops_console.data.types import BATCH, NUMERIC, logical_type, narrow, quote_ident

QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
BINS = 20
TOP = 50


CELLS = 4_000_000  # values per batch of columns: bounds the memory a batch holds


def profile_table(con, relation: str, schema) -> dict[str, Any]:
    """Profile every column of `relation` (a name registered on the DuckDB connection).

    The columns go in batches, each unpivoted into one (column, value) relation and
    aggregated by column in a few queries: a 10,000-column file takes seconds, not the
    half hour of three queries per column.
    """
    rows = con.execute(f"SELECT count(*) FROM {relation}").fetchone()[0]
    fields = list(schema)
    per = max(1, min(BATCH, CELLS // max(rows, 1)))
    columns: dict[str, Any] = {}
    for start in range(0, len(fields), per):
        batch = fields[start : start + per]
        with narrow(con, relation, schema, [f.name for f in batch]) as rel:
            columns.update(_profile_batch(con, rel, batch, rows))
    return {"rows": int(rows), "columns": {f.name: columns[f.name] for f in fields}}


def _by_column(con, relation: str, exprs: list[str], aggregates: str) -> dict[int, tuple]:
    """{i: aggregates over the values of exprs[i]}, NULLs left out, in one query."""
    if not exprs:
        return {}
    sel = ", ".join(f"{e} AS c{i}" for i, e in enumerate(exprs))
    on = ", ".join(f"c{i}" for i in range(len(exprs)))
    found = con.execute(
        f"SELECT col, {aggregates} FROM (UNPIVOT (SELECT {sel} FROM {relation}) ON {on} "
        "INTO NAME col VALUE v) GROUP BY col"
    ).fetchall()
    return {int(r[0][1:]): r[1:] for r in found}


def _profile_batch(con, relation: str, fields, rows: int) -> dict[str, Any]:
    kinds = [logical_type(f.type) for f in fields]
    cols = [quote_ident(f.name) for f in fields]
    # Count, distinct (and the range of times) per column; UNPIVOT wants one type, so
    # the columns go by their type.
    by_type: dict[str, list[int]] = {}
    for i, f in enumerate(fields):
        by_type.setdefault(str(f.type), []).append(i)
    base: dict[int, tuple] = {}
    for type_name, idx in by_type.items():
        if type_name == "null":
            continue  # no values at all
        times = kinds[idx[0]] in ("timestamp", "date")
        aggs = "count(v), count(DISTINCT v)" + (", min(v), max(v)" if times else "")
        try:
            found = _by_column(con, relation, [cols[i] for i in idx], aggs)
        except Exception:  # a type UNPIVOT does not take (nested ones): column by column
            found = {
                k: con.execute(f"SELECT {aggs.replace('v', cols[i])} FROM {relation}").fetchone()
                for k, i in enumerate(idx)
            }
        base.update({idx[k]: v for k, v in found.items()})
    numeric = [i for i, k in enumerate(kinds) if k in NUMERIC and i in base]
    qs = "[" + ", ".join(str(q) for q in QUANTILES) + "]"
    moments = _by_column(
        con,
        relation,
        [f"{cols[i]}::DOUBLE" for i in numeric],
        f"min(v), max(v), avg(v), stddev_samp(v), quantile_cont(v, {qs}), "
        "count_if(isinf(v) OR isnan(v))",
    )
    out: dict[str, Any] = {}
    binned, text = [], []
    for i, (f, kind) in enumerate(zip(fields, kinds, strict=True)):
        count, distinct, *span = base.get(i, (0, 0))
        entry: dict[str, Any] = {
            "type": kind,
            "count": int(count),
            "nulls": int(rows - count),
            "distinct": int(distinct),
        }
        if kind in NUMERIC and count > 0:
            lo, hi, mean, std, quantiles, nonfinite = moments[numeric.index(i)]
            entry.update(
                {
                    "min": float(lo),
                    "max": float(hi),
                    "mean": float(mean),
                    "std": None if std is None else float(std),
                    "quantiles": {
                        str(q): float(v) for q, v in zip(QUANTILES, quantiles, strict=True)
                    },
                    "non_finite": int(nonfinite),
                }
            )
            binned.append((cols[i], entry))
        elif kind in ("timestamp", "date") and count > 0:
            entry["min"], entry["max"] = str(span[0]), str(span[1])
        elif kind in ("string", "boolean") and count > 0:
            text.append((cols[i], entry))
        out[f.name] = entry
    _histograms(con, relation, binned)
    _top_values(con, relation, text)
    return out


def _histograms(con, relation: str, numeric) -> None:
    """BINS equal-width bins between min and max, all columns of the batch in one query."""
    binned = []
    for col, entry in numeric:
        lo, hi = entry["min"], entry["max"]
        width = (hi - lo) / BINS if hi > lo else 0.0
        if width > 0:
            binned.append((col, entry, lo, width))
        else:
            entry["histogram"] = {"edges": [lo, hi], "counts": [entry["count"]]}
    if not binned:
        return
    # One row per (column, bin); each column's min and width come from a VALUES list
    # (500 CASE expressions, or histogram() MAPs, make a slow plan).
    sel = ", ".join(f"{col}::DOUBLE AS c{i}" for i, (col, _, _, _) in enumerate(binned))
    on = ", ".join(f"c{i}" for i in range(len(binned)))
    bounds = ", ".join(
        f"('c{i}', {_lit(lo)}, {_lit(width)})" for i, (_, _, lo, width) in enumerate(binned)
    )
    counts = [[0] * BINS for _ in binned]
    for col, b, n in con.execute(
        f"SELECT col, least(floor((v - lo) / width)::BIGINT, {BINS - 1}) AS b, count(*) "
        f"FROM (UNPIVOT (SELECT {sel} FROM {relation}) ON {on} INTO NAME col VALUE v) "
        f"JOIN (VALUES {bounds}) AS bounds(col, lo, width) USING (col) "
        "WHERE isfinite(v) GROUP BY ALL"
    ).fetchall():
        counts[int(col[1:])][int(b)] = int(n)
    for (_, entry, lo, width), found in zip(binned, counts, strict=True):
        entry["histogram"] = {"edges": [lo + i * width for i in range(BINS + 1)], "counts": found}


def _top_values(con, relation: str, text) -> None:
    """The TOP most frequent values of each text column of the batch, in one query."""
    if not text:
        return
    sel = ", ".join(f"{col}::VARCHAR AS c{i}" for i, (col, _) in enumerate(text))
    on = ", ".join(f"c{i}" for i in range(len(text)))
    found = con.execute(
        f"SELECT col, v, n FROM (SELECT col, v, count(*) AS n FROM "
        f"(UNPIVOT (SELECT {sel} FROM {relation}) ON {on} INTO NAME col VALUE v) "
        f"GROUP BY col, v) "
        f"QUALIFY row_number() OVER (PARTITION BY col ORDER BY n DESC, v) <= {TOP} "
        f"ORDER BY col, n DESC, v"
    ).fetchall()
    tops: dict[int, list[dict[str, Any]]] = {}
    for col, v, n in found:
        tops.setdefault(int(col[1:]), []).append({"value": v, "count": int(n)})
    for i, (_, entry) in enumerate(text):
        top = tops.get(i, [])
        entry["top"] = top
        entry["other"] = int(entry["count"] - sum(t["count"] for t in top))


def _lit(x: float) -> str:
    return repr(x) if math.isfinite(x) else f"'{x}'::DOUBLE"
