"""Ingesting a wide file: `mlops data add` (read, profile, infer and check the contract,
snapshot) on a 10,000-column x 50-row CSV, against DuckDB's own `SUMMARIZE` of the same
file as the anchor (what a user would run for per-column statistics; no contract, no
snapshot).

Before issue 19 the profile issued a few DuckDB queries per column and the ingest stayed
in "profile" for more than 25 minutes; the target is to take no longer than the anchor.

    .venv/bin/python bench/wide_ingest.py [--columns 10000] [--rows 50]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_wide_csv(path: Path, columns: int, rows: int) -> None:
    rng = random.Random(0)
    with open(path, "w") as fh:
        fh.write(",".join(["id"] + [f"c{i}" for i in range(columns)]) + "\n")
        for r in range(rows):
            cells = [str(r)] + [f"{rng.random():.4f}" for _ in range(columns)]
            fh.write(",".join(cells) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--columns", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        mlops = [sys.executable, "-m", "mlops_console.cli.main"]
        subprocess.run([*mlops, "init", str(root)], check=True, capture_output=True)
        csv = root / "data" / "wide.csv"
        write_wide_csv(csv, args.columns, args.rows)
        print(f"{args.columns:,} columns x {args.rows} rows, {csv.stat().st_size / 1e6:.1f} MB")

        import duckdb

        t0 = time.perf_counter()
        con = duckdb.connect()
        con.execute(f"SUMMARIZE SELECT * FROM read_csv_auto('{csv}')").fetchall()
        con.close()
        floor = time.perf_counter() - t0
        print(f"DuckDB SUMMARIZE (anchor):     {floor:7.2f} s")

        t0 = time.perf_counter()
        proc = subprocess.run(
            [*mlops, "-w", str(root), "data", "add", "wide", "data/wide.csv"],
            capture_output=True,
            text=True,
        )
        took = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"mlops data add failed:\n{proc.stderr}")
        print(
            f"mlops data add (whole ingest): {took:7.2f} s  ({floor / took:.1f}x the anchor's speed)"
        )
        print(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
