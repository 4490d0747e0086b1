"""Drift speed and verdicts: mlops-console vs Evidently's data drift report, same data, same run.

    make bench            # or: .venv/bin/python bench/drift.py --anchor-python .venv-bench/bin/python

Workload (from the monitoring issue): a reference of 100,000 rows against a current
window of 100,000 rows, 10 numeric and 2 categorical columns. Four columns drift (a mean
shift of 0.3 standard deviations, a doubled spread, a shifted mixture component, a
changed category mix); eight do not. Timed for us: the whole drift computation (PSI on
the reference's deciles, Kolmogorov-Smirnov, chi-squared and Jensen-Shannon, the dataset
drift share), once with the reference prepared from raw values (`cold`) and once per
window with the reference prepared already (`window`: what the daemon pays each time;
the prepared reference is cached per model version). Timed for Evidently 0.7:
`Report([DataDriftPreset()]).run(current, reference)` in .venv-bench. Best of 3 each.
Each column's verdict is compared with Evidently's (its default for 100,000 rows:
normed Wasserstein distance >= 0.1 for numeric columns, Jensen-Shannon distance >= 0.1 for
categorical ones). Target: under 0.5 s, at least 10x faster than Evidently, the same
verdicts. Writes bench/results/drift.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROWS = 100_000
DRIFTED = {"n0", "n1", "n2", "c0"}


def make_frames():
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)

    def frame(current: bool):
        cols = {}
        for i in range(10):
            x = rng.normal(10 + i, 1 + i / 5, ROWS)
            if current and i == 0:
                x = x + 0.3 * (1 + i / 5)  # mean shift
            if current and i == 1:
                x = (x - (10 + i)) * 2 + (10 + i)  # spread doubled
            if current and i == 2:
                mix = rng.random(ROWS) < 0.3
                x = np.where(mix, x + 3 * (1 + i / 5), x)  # a new mode
            cols[f"n{i}"] = x
        p0 = [0.5, 0.3, 0.2] if not current else [0.3, 0.3, 0.4]
        cols["c0"] = rng.choice(["a", "b", "c"], ROWS, p=p0)
        cols["c1"] = rng.choice([f"k{j}" for j in range(8)], ROWS)
        return pd.DataFrame(cols)

    return frame(False), frame(True)


def ours(ref, cur):
    from mlops_console.monitoring.drift import (
        Thresholds,
        dataset_drift,
        measure_column,
        prepare_column,
    )

    t = Thresholds()
    from pandas.api.types import is_numeric_dtype

    kinds = {c: ("numeric" if is_numeric_dtype(ref[c]) else "categorical") for c in ref.columns}
    arrays_ref = {c: ref[c].to_numpy() for c in ref.columns}
    arrays_cur = {c: cur[c].to_numpy() for c in cur.columns}

    def prepare():
        return {c: prepare_column(c, arrays_ref[c], kinds[c]) for c in ref.columns}

    def window(prepared):
        results = [measure_column(prepared[c], arrays_cur[c], t) for c in ref.columns]
        return results, dataset_drift(results, t)

    cold, warm = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        prepared = prepare()
        t1 = time.perf_counter()
        results, summary = window(prepared)
        t2 = time.perf_counter()
        cold.append(t2 - t0)
        warm.append(t2 - t1)
    return min(cold), min(warm), results, summary


EVIDENTLY = r"""
import json, sys, time
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
ref = pd.read_parquet(sys.argv[1]); cur = pd.read_parquet(sys.argv[2])
times, out = [], None
for _ in range(3):
    t = time.perf_counter()
    snap = Report([DataDriftPreset()]).run(cur, ref)
    times.append(time.perf_counter() - t)
    out = snap.dict()
verdicts = {}
for m in out["metrics"]:
    cfg = m["config"]
    if cfg.get("type", "").endswith("ValueDrift"):
        verdicts[cfg["column"]] = {"method": cfg["method"], "value": m["value"],
                                   "drifted": bool(m["value"] >= cfg["threshold"])}
import evidently
print(json.dumps({"seconds": min(times), "verdicts": verdicts, "version": evidently.__version__}))
"""


def evidently(python: str, ref, cur) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        rp, cp = Path(tmp) / "ref.parquet", Path(tmp) / "cur.parquet"
        ref.to_parquet(rp)
        cur.to_parquet(cp)
        out = subprocess.run(
            [python, "-c", EVIDENTLY, str(rp), str(cp)],
            capture_output=True,
            text=True,
            timeout=900,
        )
    if out.returncode != 0:
        raise SystemExit(f"Evidently failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--anchor-python", help="Python with evidently installed (.venv-bench)")
    a = ap.parse_args()
    ref, cur = make_frames()
    cold, warm, results, summary = ours(ref, cur)
    print(f"reference {len(ref):,} rows x current {len(cur):,} rows, 10 numeric + 2 categorical")
    print(f"mlops-console drift, reference prepared in the run: {cold:.3f} s")
    print(f"mlops-console drift, per window (prepared reference): {warm:.3f} s")
    report = {
        "rows": ROWS,
        "ours_cold_s": cold,
        "ours_window_s": warm,
        "ours": {r["column"]: r["drifted"] for r in results},
        "drift_share": summary["drift_share"],
    }
    ev = None
    if a.anchor_python:
        ev = evidently(a.anchor_python, ref, cur)
        report["evidently_s"] = ev["seconds"]
        report["evidently_version"] = ev["version"]
        report["evidently"] = {c: v["drifted"] for c, v in ev["verdicts"].items()}
        print(f"Evidently {ev['version']} DataDriftPreset: {ev['seconds']:.3f} s")
        print(
            f"ratio: {ev['seconds'] / cold:.1f}x faster (cold), "
            f"{ev['seconds'] / warm:.1f}x faster (per window)"
        )
    print()
    print(
        f"{'column':8} {'truth':8} {'ours':8} {'psi':>7} {'ks/js':>7} {'evidently':10} {'value':>7}"
    )
    agree = True
    for r in results:
        c = r["column"]
        e = (ev or {}).get("verdicts", {}).get(c)
        stat = r.get("ks") if r["kind"] == "numeric" else r.get("js")
        line = (
            f"{c:8} {'drift' if c in DRIFTED else 'same':8} {'DRIFT' if r['drifted'] else 'ok':8} "
            f"{r['psi']:7.3f} {stat:7.3f} "
        )
        if e is not None:
            line += f"{'DRIFT' if e['drifted'] else 'ok':10} {e['value']:7.3f}"
            agree &= e["drifted"] == r["drifted"]
        print(line)
        agree &= r["drifted"] == (c in DRIFTED)
    report["verdicts_agree"] = agree
    print(
        f"\nverdicts: {'all agree (with the truth' + (' and Evidently)' if ev else ')') if agree else 'DISAGREE'}"
    )
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "drift.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent / "src"))
    main()
