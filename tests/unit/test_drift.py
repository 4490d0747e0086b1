"""Drift tests against scipy's reference implementations, and their verdicts."""

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from mlops_console.monitoring.drift import (
    Thresholds,
    dataset_drift,
    ks_2samp_sorted,
    measure_column,
    prepare_column,
    psi,
)
from mlops_console.monitoring.measures import roc_auc


def test_ks_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=3000), rng.normal(0.1, 1.1, size=2000)
    d, p = ks_2samp_sorted(np.sort(a), np.sort(b))
    ref = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic, abs=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=0.2, abs=1e-6)


def test_chi2_and_js_match_scipy():
    rng = np.random.default_rng(2)
    ref_values = rng.choice(["a", "b", "c"], 5000, p=[0.5, 0.3, 0.2])
    cur_values = rng.choice(["a", "b", "c", "d"], 3000, p=[0.3, 0.3, 0.3, 0.1])
    col = prepare_column("x", ref_values, "categorical")
    out = measure_column(col, cur_values)
    cats = ["a", "b", "c", "d"]
    table = np.array(
        [[np.sum(ref_values == c) for c in cats], [np.sum(cur_values == c) for c in cats]]
    )
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    assert out["chi2"] == pytest.approx(chi2)
    assert out["chi2_p"] == pytest.approx(p, abs=1e-12)
    r, c = table[0] / table[0].sum(), table[1] / table[1].sum()
    assert out["js"] == pytest.approx(jensenshannon(r, c, base=2), abs=1e-9)
    assert out["unseen"] == ["d"]
    assert out["drifted"]


def test_psi_by_hand():
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0
    expected = (0.7 - 0.5) * np.log(0.7 / 0.5) + (0.3 - 0.5) * np.log(0.3 / 0.5)
    assert psi(np.array([0.5, 0.5]), np.array([0.7, 0.3])) == pytest.approx(expected)


def test_verdicts_on_drifted_and_undrifted_columns():
    rng = np.random.default_rng(3)
    n = 20_000
    t = Thresholds()
    same = measure_column(prepare_column("a", rng.normal(size=n), "numeric"), rng.normal(size=n), t)
    shifted = measure_column(
        prepare_column("b", rng.normal(size=n), "numeric"), rng.normal(0.5, 1, size=n), t
    )
    wider = measure_column(
        prepare_column("c", rng.normal(size=n), "numeric"), rng.normal(0, 2, size=n), t
    )
    assert not same["drifted"] and same["psi"] < 0.01 and same["ks"] < 0.03
    assert shifted["drifted"] and shifted["ks"] > 0.15
    assert wider["drifted"] and wider["psi"] > 0.2
    summary = dataset_drift([same, shifted, wider], t)
    assert summary["drifted_columns"] == ["b", "c"]
    assert summary["drift_share"] == pytest.approx(2 / 3) and summary["drifted"]


def test_nan_and_empty_current_values():
    col = prepare_column("a", np.arange(100.0), "numeric")
    out = measure_column(col, np.array([np.nan, np.inf]))
    assert out["psi"] is None and not out["drifted"]


def test_roc_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) + 0.3 * y, 2)  # ties on purpose
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))
