"""`mlops data diff`: what changed between two versions of a dataset."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mlops_console.data.types import NUMERIC, quote_ident

if TYPE_CHECKING:
    from mlops_console.data.datasets import DatasetStore


def psi(expected: list[float], actual: list[float], eps: float = 1e-4) -> float:
    """Population stability index between two distributions over the same bins."""
    te, ta = sum(expected) or 1, sum(actual) or 1
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        pe, pa = max(e / te, eps), max(a / ta, eps)
        total += (pa - pe) * math.log(pa / pe)
    return total


def diff_versions(store: DatasetStore, name: str, v1: int, v2: int) -> dict[str, Any]:
    import duckdb

    a, b = store.version(name, v1), store.version(name, v2)
    pa_, pb = store.profile(name, v1), store.profile(name, v2)
    ta = {c["name"]: c["type"] for c in a.columns}
    tb = {c["name"]: c["type"] for c in b.columns}
    schema = {
        "added": sorted(set(tb) - set(ta)),
        "removed": sorted(set(ta) - set(tb)),
        "type_changed": {c: [ta[c], tb[c]] for c in sorted(set(ta) & set(tb)) if ta[c] != tb[c]},
    }
    # verified like every read of a snapshot; a quarantined version can be compared too
    path_a = store.path(name, v1, allow_quarantined=True)
    path_b = store.path(name, v2, allow_quarantined=True)
    con = duckdb.connect()
    columns: dict[str, Any] = {}
    for col in sorted(set(ta) & set(tb)):
        ca, cb = pa_["columns"].get(col, {}), pb["columns"].get(col, {})
        entry: dict[str, Any] = {
            "null_rate": [_rate(ca), _rate(cb)],
            "distinct": [ca.get("distinct"), cb.get("distinct")],
        }
        if ta[col] in NUMERIC and tb[col] in NUMERIC and "quantiles" in ca and "quantiles" in cb:
            entry["mean"] = [ca["mean"], cb["mean"]]
            entry["median"] = [ca["quantiles"]["0.5"], cb["quantiles"]["0.5"]]
            entry["std"] = [ca.get("std"), cb.get("std")]
            entry["psi"] = _psi_on_reference_bins(con, path_a, path_b, col, ca)
        elif "top" in ca and "top" in cb:
            fa = {t["value"]: t["count"] / max(ca["count"], 1) for t in ca["top"]}
            fb = {t["value"]: t["count"] / max(cb["count"], 1) for t in cb["top"]}
            entry["new_categories"] = sorted(set(fb) - set(fa))
            entry["missing_categories"] = sorted(set(fa) - set(fb))
            keys = sorted(set(fa) | set(fb))
            entry["psi"] = psi([fa.get(k, 0) for k in keys], [fb.get(k, 0) for k in keys])
        columns[col] = entry
    con.close()
    return {
        "dataset": name,
        "from": v1,
        "to": v2,
        "rows": [a.rows, b.rows],
        "schema": schema,
        "columns": columns,
    }


def _rate(profile: dict[str, Any]) -> float | None:
    total = profile.get("count", 0) + profile.get("nulls", 0)
    return None if not total else profile.get("nulls", 0) / total


def _psi_on_reference_bins(con, path_a, path_b, col: str, ref: dict[str, Any]) -> float | None:
    """PSI of the new version over the reference version's decile bins (both counted)."""
    q = ref["quantiles"]
    edges = sorted({q[k] for k in ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9")})
    c = quote_ident(col)
    cases = " ".join(f"WHEN x <= {e!r} THEN {i}" for i, e in enumerate(edges))
    counts = []
    for path in (path_a, path_b):
        found: list[float] = [0] * (len(edges) + 1)
        for b, n in con.execute(
            f"SELECT CASE {cases} ELSE {len(edges)} END AS b, count(*) FROM "
            f"(SELECT {c}::DOUBLE AS x FROM read_parquet(?) WHERE {c} IS NOT NULL) GROUP BY b",
            [str(path)],
        ).fetchall():
            found[int(b)] = int(n)
        counts.append(found)
    return psi(counts[0], counts[1])
