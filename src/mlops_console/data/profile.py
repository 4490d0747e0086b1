"""Per-column profiles of a dataset version, computed by DuckDB over the Arrow table.

Stored with each version: the console shows them, `data diff` compares them and the
monitoring reference uses their quantile bins.
"""

from __future__ import annotations

from typing import Any

from mlops_console.data.types import NUMERIC, logical_type, quote_ident

QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
BINS = 20
TOP = 50


def profile_table(con, relation: str, schema) -> dict[str, Any]:
    """Profile every column of `relation` (a name registered on the DuckDB connection)."""
    rows = con.execute(f"SELECT count(*) FROM {relation}").fetchone()[0]
    columns: dict[str, Any] = {}
    for field in schema:
        kind = logical_type(field.type)
        col = quote_ident(field.name)
        base = con.execute(f"SELECT count({col}), count(DISTINCT {col}) FROM {relation}").fetchone()
        entry: dict[str, Any] = {
            "type": kind,
            "count": int(base[0]),
            "nulls": int(rows - base[0]),
            "distinct": int(base[1]),
        }
        if kind in NUMERIC and base[0] > 0:
            entry.update(_numeric(con, relation, col))
        elif kind in ("timestamp", "date") and base[0] > 0:
            lo, hi = con.execute(f"SELECT min({col}), max({col}) FROM {relation}").fetchone()
            entry["min"], entry["max"] = str(lo), str(hi)
        elif kind in ("string", "boolean") and base[0] > 0:
            top = con.execute(
                f"SELECT {col}::VARCHAR, count(*) AS n FROM {relation} WHERE {col} IS NOT NULL "
                f"GROUP BY 1 ORDER BY n DESC, 1 LIMIT {TOP}"
            ).fetchall()
            entry["top"] = [{"value": v, "count": int(n)} for v, n in top]
            entry["other"] = int(base[0] - sum(n for _, n in top))
        columns[field.name] = entry
    return {"rows": int(rows), "columns": columns}


def _numeric(con, relation: str, col: str) -> dict[str, Any]:
    qs = "[" + ", ".join(str(q) for q in QUANTILES) + "]"
    lo, hi, mean, std, quantiles, nonfinite = con.execute(
        f"SELECT min(x), max(x), avg(x), stddev_samp(x), quantile_cont(x, {qs}), "
        f"count(*) FILTER (WHERE isinf(x) OR isnan(x)) "
        f"FROM (SELECT {col}::DOUBLE AS x FROM {relation} WHERE {col} IS NOT NULL)"
    ).fetchone()
    out: dict[str, Any] = {
        "min": float(lo),
        "max": float(hi),
        "mean": float(mean),
        "std": None if std is None else float(std),
        "quantiles": {str(q): float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
        "non_finite": int(nonfinite),
    }
    width = (hi - lo) / BINS if hi > lo else 0.0
    if width > 0:
        counts = [0] * BINS
        for b, n in con.execute(
            f"SELECT least(floor(({col}::DOUBLE - {lo!r}) / {width!r})::BIGINT, {BINS - 1}) AS b, "
            f"count(*) FROM {relation} WHERE {col} IS NOT NULL AND isfinite({col}::DOUBLE) GROUP BY b"
        ).fetchall():
            counts[int(b)] = int(n)
        out["histogram"] = {"edges": [lo + i * width for i in range(BINS + 1)], "counts": counts}
    else:
        out["histogram"] = {
            "edges": [lo, hi],
            "counts": [int(con.execute(f"SELECT count({col}) FROM {relation}").fetchone()[0])],
        }
    return out
