"""A day-one export as real users have them (issue 19), generated for tests.

Semicolons, comma decimals with '.' thousands, German headers with umlauts, spaces,
symbols, a dot and a quote, several NA spellings, two date formats, Windows line ends
and encoding, and a ja/nein target with about 5% "ja".
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

HEADER = [
    "Kunden.Nr",
    "Datum",
    "Alter (Jahre)",
    "Umsatz €",
    "Rabatt %",
    "Region",
    "Tarif",
    'Notiz "intern"',
    "Gekündigt",
]
REGIONS = ["Nord", "Süd", "Südwest", "Ost", "West", "Mitte", "Nordrhein-Westfalen", "Bär & Söhne"]
NEW_REGION = "Österreich"
TARIFS = ["Basis", "Komfort", "Premium"]
NA_SPELLINGS = ["NA", "n/a", "-", ""]


def german_number(x: float, decimals: int = 2) -> str:
    """1234.5 -> '1.234,50'."""
    text = f"{x:,.{decimals}f}"
    return text.replace(",", "_").replace(".", ",").replace("_", ".")


def write_messy_csv(
    path: Path,
    rows: int = 2000,
    month: int = 1,
    new_category: bool = False,
    seed: int = 0,
    encoding: str = "cp1252",
) -> Path:
    """Write the messy file for `month` of 2025; `new_category` adds a region never seen."""
    rng = random.Random(seed * 100 + month)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding=encoding, newline="") as fh:
        out = csv.writer(fh, delimiter=";", lineterminator="\r\n")
        out.writerow(HEADER)
        for i in range(rows):
            day = 1 + i % 28
            date = f"{day:02d}.{month:02d}.2025" if i % 3 else f"2025-{month:02d}-{day:02d}"
            age = rng.choice(NA_SPELLINGS) if i % 37 == 0 else str(rng.randint(18, 90))
            revenue = rng.lognormvariate(6, 1.5)  # from a few euros to tens of thousands
            region = NEW_REGION if new_category and i % 50 == 0 else rng.choice(REGIONS)
            tarif = rng.choice(TARIFS)
            # about 5% churn, three times as often on the basic tariff: a signal to learn
            churned = "ja" if rng.random() < (0.11 if tarif == "Basis" else 0.025) else "nein"
            out.writerow(
                [
                    100000 + i,
                    date,
                    age,
                    "n/a" if i % 41 == 0 else german_number(revenue),
                    german_number(rng.choice([0, 5, 10, 12.5, 15]), 1),
                    region,
                    tarif,
                    rng.choice(["", "NA", "Rückruf erbeten", 'sagt "später"', "ok; bleibt"]),
                    churned,
                ]
            )
    return path
