"""Generate the bundled churn sample data (deterministic: same seed, same bytes).

    python sample_data/generate.py            # writes churn.csv and churn_2026_01.csv here

churn.csv: ~20,000 monthly customer snapshots over 2025-01..2025-12. churn_2026_01.csv:
the next month, whose distribution drifts (prices up, more fibre and month-to-month
contracts, more support calls), for the drift and retraining scenarios.
Columns: customer_id, event_time, tenure_months, monthly_charges, total_charges,
support_calls, contract, payment_method, internet_service, region, gender (the sensitive
attribute, for fairness checks), churned (the label).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 20251
MONTHS = pd.period_range("2025-01", "2025-12", freq="M")
ROWS_PER_MONTH = 1667
HERE = Path(__file__).resolve().parent


def _month(rng: np.random.Generator, period: pd.Period, n: int, drift: bool) -> pd.DataFrame:
    start = period.start_time
    seconds = rng.integers(0, int(period.days_in_month) * 86400, n)
    event_time = start + pd.to_timedelta(seconds, unit="s")
    ids = rng.choice(9000, size=n, replace=False)
    contract_p = [0.62, 0.24, 0.14] if drift else [0.48, 0.30, 0.22]
    internet_p = [0.58, 0.32, 0.10] if drift else [0.42, 0.40, 0.18]
    contract = rng.choice(["month-to-month", "one-year", "two-year"], n, p=contract_p)
    internet = rng.choice(["fiber", "dsl", "none"], n, p=internet_p)
    payment = rng.choice(
        ["electronic-check", "bank-transfer", "credit-card", "mailed-check"],
        n,
        p=[0.34, 0.22, 0.22, 0.22],
    )
    region = rng.choice(["north", "south", "east", "west"], n, p=[0.3, 0.25, 0.25, 0.2])
    gender = rng.choice(["female", "male"], n)
    tenure = np.clip(rng.gamma(2.0, 14.0, n).round(), 1, 72).astype(int)
    base = np.where(internet == "fiber", 82.0, np.where(internet == "dsl", 58.0, 24.0))
    charges = base + rng.normal(0, 9.0, n)
    if drift:
        charges *= 1.15
    charges = np.clip(charges, 15.0, 140.0).round(2)
    total = (charges * tenure * rng.uniform(0.93, 1.0, n)).round(2)
    calls = rng.poisson(1.9 if drift else 1.2, n)
    logit = (
        -1.6
        + 1.25 * (contract == "month-to-month")
        - 0.9 * (contract == "two-year")
        + 0.55 * (internet == "fiber")
        + 0.45 * (payment == "electronic-check")
        - 0.035 * tenure
        + 0.018 * (charges - 60)
        + 0.32 * calls
        + 0.1 * (region == "south")
    )
    if drift:
        logit += 0.35 * (calls >= 3)  # the relation between calls and churn changes
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in ids],
            "event_time": event_time.strftime("%Y-%m-%dT%H:%M:%S"),
            "tenure_months": tenure,
            "monthly_charges": charges,
            "total_charges": total,
            "support_calls": calls,
            "contract": contract,
            "payment_method": payment,
            "internet_service": internet,
            "region": region,
            "gender": gender,
            "churned": churned,
        }
    )
    # A few missing values, as real exports have.
    miss = rng.random(n) < 0.01
    frame.loc[miss, "total_charges"] = np.nan
    return frame.sort_values("event_time", kind="stable").reset_index(drop=True)


def generate(out: Path = HERE) -> list[Path]:
    rng = np.random.default_rng(SEED)
    main = pd.concat([_month(rng, m, ROWS_PER_MONTH, drift=False) for m in MONTHS])
    drift = _month(rng, pd.Period("2026-01", freq="M"), ROWS_PER_MONTH, drift=True)
    paths = [out / "churn.csv", out / "churn_2026_01.csv"]
    main.to_csv(paths[0], index=False, lineterminator="\n")
    drift.to_csv(paths[1], index=False, lineterminator="\n")
    return paths


if __name__ == "__main__":
    for p in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(p, p.stat().st_size, "bytes")
