"""Drift tests of one column, current against reference, in numpy and scipy.

Numeric columns: PSI on the reference's decile bins, and the two-sample
Kolmogorov-Smirnov test. Categorical columns: PSI on the categories, Pearson's
chi-squared test and the Jensen-Shannon distance (base 2, so between 0 and 1).

A column is drifted when PSI >= `psi` or, numeric, when the KS statistic >= `ks_statistic`
with p < `ks_pvalue`, or, categorical, when the JS distance >= `js`. The KS and chi-squared
p-values alone are not used for the verdict: with tens of thousands of rows they call any
difference significant, however small.

The reference side is prepared once per model version (`Reference`): sorted numeric
values, decile edges and category frequencies, so a window costs one sort of the current
values per numeric column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EPS = 1e-4
DECILES = np.linspace(0.1, 0.9, 9)


@dataclass(frozen=True)
class Thresholds:
    psi: float = 0.2
    ks_statistic: float = 0.1
    ks_pvalue: float = 0.05
    js: float = 0.1
    drift_share: float = 0.5


@dataclass
class RefColumn:
    name: str
    kind: str  # numeric | categorical
    sorted: np.ndarray | None = None  # numeric: finite values, sorted
    edges: np.ndarray | None = None  # numeric: inner decile edges
    bin_share: np.ndarray | None = None  # numeric: share per decile bin
    categories: dict[str, float] = field(default_factory=dict)  # categorical: share each
    counts: dict[str, int] = field(default_factory=dict)
    null_share: float = 0.0
    lo: float = math.nan
    hi: float = math.nan
    std: float = math.nan


def prepare_column(name: str, values, kind: str) -> RefColumn:
    if kind == "numeric":
        x = np.asarray(values, dtype=np.float64)
        finite = x[np.isfinite(x)]
        s = np.sort(finite)
        col = RefColumn(name, kind, sorted=s, null_share=1 - len(s) / max(len(x), 1))
        if len(s):
            edges = np.unique(np.quantile(s, DECILES))
            col.edges = edges
            col.bin_share = _shares(np.searchsorted(s, edges, side="right"), len(s))
            col.lo, col.hi, col.std = float(s[0]), float(s[-1]), float(s.std())
        return col
    keys, counts = _value_counts(values)
    total = max(int(counts.sum()), 1)
    col = RefColumn(name, kind)
    col.counts = {k: int(c) for k, c in zip(keys, counts, strict=True)}
    col.categories = {k: c / total for k, c in col.counts.items()}
    col.null_share = 1 - total / max(len(values), 1)
    return col


def _shares(cuts: np.ndarray, n: int) -> np.ndarray:
    """Shares of n sorted values per bin, given the count at or below each inner edge."""
    counts = np.diff(np.concatenate(([0], cuts, [n])))
    return counts / max(n, 1)


def _value_counts(values) -> tuple[list[str], np.ndarray]:
    """Category counts, nulls left out (pandas hashes; numpy's unique would sort strings)."""
    import pandas as pd

    counts = pd.Series(values).value_counts(dropna=True)
    return [str(k) for k in counts.index], counts.to_numpy()


def psi(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    r = np.clip(ref_share, EPS, None)
    c = np.clip(cur_share, EPS, None)
    return float(np.sum((c - r) * np.log(c / r)))


def ks_2samp_sorted(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic and asymptotic p-value of two sorted arrays.

    Both empirical CDFs are step functions that only jump at sample values, so the
    largest gap is at one of them: each array's distinct values (their last occurrence
    gives its own CDF without a search) are looked up in the other array only."""
    from scipy.special import kolmogorov

    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return math.nan, math.nan
    d = 0.0
    for x, y, nx, ny in ((a, b, n, m), (b, a, m, n)):
        last = np.empty(len(x), dtype=bool)
        last[:-1] = x[1:] != x[:-1]
        last[-1] = True
        at = x[last]
        own = (np.flatnonzero(last) + 1) / nx
        other = np.searchsorted(y, at, side="right") / ny
        d = max(d, float(np.max(np.abs(own - other))))
    en = math.sqrt(n * m / (n + m))
    p = float(kolmogorov((en + 0.12 + 0.11 / en) * d))  # Stephens' correction
    return d, min(max(p, 0.0), 1.0)


def measure_column(ref: RefColumn, values, t: Thresholds = Thresholds()) -> dict[str, Any]:
    """Every drift measure of one column of the current window, and the verdict."""
    if ref.kind == "numeric":
        x = np.asarray(values, dtype=np.float64)
        finite = np.sort(x[np.isfinite(x)])
        out: dict[str, Any] = {"column": ref.name, "kind": "numeric", "rows": len(x)}
        if (
            not len(finite)
            or ref.sorted is None
            or ref.edges is None
            or ref.bin_share is None
            or not len(ref.sorted)
        ):
            return {**out, "psi": None, "ks": None, "ks_p": None, "drifted": False}
        cur_share = _shares(np.searchsorted(finite, ref.edges, side="right"), len(finite))
        value = psi(ref.bin_share, cur_share)
        d, p = ks_2samp_sorted(ref.sorted, finite)
        drifted = value >= t.psi or (d >= t.ks_statistic and p < t.ks_pvalue)
        return {
            **out,
            "psi": value,
            "ks": d,
            "ks_p": p,
            "mean_ref": float(ref.sorted.mean()),
            "mean_cur": float(finite.mean()),
            "drifted": bool(drifted),
        }
    keys, counts = _value_counts(values)
    cur = dict(zip(keys, counts.tolist(), strict=True))
    cats = sorted(set(ref.categories) | set(cur))
    total = max(sum(cur.values()), 1)
    r = np.array([ref.categories.get(c, 0.0) for c in cats])
    c = np.array([cur.get(k, 0) / total for k in cats])
    value = psi(r, c)
    js = _js_distance(r, c)
    chi2, chi_p = _chi2(
        np.array([ref.counts.get(k, 0) for k in cats]), np.array([cur.get(k, 0) for k in cats])
    )
    return {
        "column": ref.name,
        "kind": "categorical",
        "rows": len(values),
        "psi": value,
        "js": js,
        "chi2": chi2,
        "chi2_p": chi_p,
        "unseen": sorted(set(cur) - set(ref.categories))[:20],
        "drifted": bool(value >= t.psi or js >= t.js),
    }


def _js_distance(p: np.ndarray, q: np.ndarray) -> float:
    p = p / max(p.sum(), EPS)
    q = q / max(q.sum(), EPS)
    m = (p + q) / 2

    def kl(a, b):
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return math.sqrt(max((kl(p, m) + kl(q, m)) / 2, 0.0))


def _chi2(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    """Pearson's chi-squared test of homogeneity on a 2 x k table."""
    from scipy.special import (
        chdtrc,
    )  # the chi-squared survival function (scipy.stats: 0.6 s import)

    table = np.vstack((ref_counts, cur_counts)).astype(np.float64)
    keep = table.sum(axis=0) > 0
    table = table[:, keep]
    if table.shape[1] < 2 or table.sum() == 0:
        return 0.0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    return stat, float(chdtrc(table.shape[1] - 1, stat))


def dataset_drift(results: list[dict[str, Any]], t: Thresholds = Thresholds()) -> dict[str, Any]:
    tested = [r for r in results if r.get("psi") is not None]
    drifted = [r["column"] for r in tested if r["drifted"]]
    share = len(drifted) / len(tested) if tested else 0.0
    return {
        "columns": len(tested),
        "drifted_columns": drifted,
        "drift_share": share,
        "drifted": bool(tested) and share >= t.drift_share,
    }
