"""Tracking and registry speed: mlops-console vs MLflow (SQLite store) vs plain SQLite.

    make bench            # or: .venv/bin/python bench/tracking.py --anchor-python .venv-bench/bin/python

Workload (from the foundation issue): 100 runs, each with 10 params and 50 metric values
logged one at a time; then a search over 1,000 runs; then registry operations (register
a version, move an alias, resolve name@alias). MLflow runs in its own environment
(.venv-bench), driven as a subprocess. Prints the figures and the ratios; writes
bench/results/tracking.json. Targets: >= 30x faster than MLflow on the logging workload,
within 3x of plain SQLite, registry operations under 1 ms.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent


def ours(runs: int, params: int, metrics: int, search_total: int, reg_ops: int) -> dict:
    from mlops_console.workspace import Workspace

    root = Path(tempfile.mkdtemp(prefix="mlops-bench-")) / "ws"
    ws = Workspace.init(root)
    ws.runs.start(experiment="bench").end()  # experiment exists, as in the MLflow side
    out: dict = {}
    t = time.perf_counter()
    for r in range(runs):
        run = ws.runs.start(experiment="bench")
        for p in range(params):
            run.log_param(f"p{p}", p * r)
        for m in range(metrics):
            run.log_metric("loss", 1.0 / (m + 1), step=m)
        run.end()
    out["log_one_at_a_time_s"] = time.perf_counter() - t

    for r in range(runs, search_total):
        with ws.runs.start(
            experiment="bench", params={f"p{p}": p * r for p in range(params)}
        ) as run:
            for m in range(metrics):
                run.log_metric("loss", 1.0 / (m + 1) + r * 1e-6, step=m)
    t = time.perf_counter()
    found = ws.runs.search(
        experiment="bench",
        filter="metrics.loss < 1",
        order_by="metrics.loss DESC",
        limit=search_total,
    )
    out["search_s"] = time.perf_counter() - t
    out["search_found"] = len(found)

    digest = ws.artifacts.put_bytes(b"model")
    src = ws.runs.start(experiment="bench")
    src.end()
    t = time.perf_counter()
    for _ in range(reg_ops):
        v = ws.models.register("m", run=src.id, artifact=digest, signature={}, metrics={})
    out["register_version_ms"] = (time.perf_counter() - t) * 1000 / reg_ops
    t = time.perf_counter()
    for i in range(reg_ops):
        ws.models.set_alias("m", "champion", 1 + i % v.version)
    out["move_alias_ms"] = (time.perf_counter() - t) * 1000 / reg_ops
    t = time.perf_counter()
    for _ in range(reg_ops):
        ws.models.resolve("m@champion")
    out["resolve_alias_ms"] = (time.perf_counter() - t) * 1000 / reg_ops
    ws.close()
    return out


def plain_sqlite(runs: int, params: int, metrics: int, per_value_commit: bool) -> dict:
    """Hand-written SQL on sqlite3 in WAL mode: either a commit per logged value (what a
    simple tracker does; the issue's reference) or one transaction per run (the floor)."""
    path = Path(tempfile.mkdtemp(prefix="sqlite-bench-")) / "plain.db"
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.executescript(
        "CREATE TABLE run (id TEXT PRIMARY KEY, status TEXT, start REAL, end REAL);"
        "CREATE TABLE param (run_id TEXT, key TEXT, value TEXT, PRIMARY KEY (run_id, key));"
        "CREATE TABLE metric (run_id TEXT, key TEXT, value REAL, step INT, ts REAL);"
    )
    t = time.perf_counter()
    if per_value_commit:
        for r in range(runs):
            rid = uuid.uuid4().hex
            con.execute("INSERT INTO run VALUES (?, 'RUNNING', ?, NULL)", (rid, time.time()))
            for p in range(params):
                con.execute("INSERT INTO param VALUES (?,?,?)", (rid, f"p{p}", str(p * r)))
            for m in range(metrics):
                con.execute(
                    "INSERT INTO metric VALUES (?,?,?,?,?)",
                    (rid, "loss", 1.0 / (m + 1), m, time.time()),
                )
            con.execute("UPDATE run SET status='FINISHED', end=? WHERE id=?", (time.time(), rid))
        return {"log_one_at_a_time_s": time.perf_counter() - t}
    for r in range(runs):
        rid = uuid.uuid4().hex
        con.execute("BEGIN")
        con.execute("INSERT INTO run VALUES (?, 'RUNNING', ?, NULL)", (rid, time.time()))
        con.execute("COMMIT")
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO param VALUES (?,?,?)", [(rid, f"p{p}", str(p * r)) for p in range(params)]
        )
        con.execute("COMMIT")
        rows = []
        for m in range(metrics):
            rows.append((rid, "loss", 1.0 / (m + 1), m, time.time()))
        con.execute("BEGIN")
        con.executemany("INSERT INTO metric VALUES (?,?,?,?,?)", rows)
        con.execute("UPDATE run SET status='FINISHED', end=? WHERE id=?", (time.time(), rid))
        con.execute("COMMIT")
    return {"log_one_at_a_time_s": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--anchor-python", help="Python of .venv-bench (with MLflow); omit to skip MLflow"
    )
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--params", type=int, default=10)
    ap.add_argument("--metrics", type=int, default=50)
    ap.add_argument("--search-runs", type=int, default=1000)
    ap.add_argument("--registry-ops", type=int, default=200)
    args = ap.parse_args()
    w = (args.runs, args.params, args.metrics)
    results = {
        "workload": {
            "runs": args.runs,
            "params": args.params,
            "metrics": args.metrics,
            "search_runs": args.search_runs,
            "registry_ops": args.registry_ops,
        }
    }
    print(
        f"workload: {args.runs} runs x {args.params} params x {args.metrics} metric values "
        f"one at a time; search over {args.search_runs} runs",
        flush=True,
    )
    results["plain_sqlite_commit_per_value"] = plain_sqlite(*w, per_value_commit=True)
    results["plain_sqlite"] = plain_sqlite(*w, per_value_commit=False)
    results["mlops_console"] = ours(*w, args.search_runs, args.registry_ops)
    if args.anchor_python:
        print("running MLflow (takes a minute) ...", flush=True)
        proc = subprocess.run(
            [
                args.anchor_python,
                str(HERE / "_mlflow_tracking.py"),
                *map(str, w),
                str(args.search_runs),
                str(min(args.registry_ops, 50)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            sys.exit(f"MLflow side failed:\n{proc.stderr[-3000:]}")
        results["mlflow"] = json.loads(proc.stdout.strip().splitlines()[-1])

    ours_r, plain, mlf = results["mlops_console"], results["plain_sqlite"], results.get("mlflow")
    rows = [
        ("log 100 runs one value at a time (s)", "log_one_at_a_time_s", "{:.3f}"),
        ("search 1,000 runs (s)", "search_s", "{:.3f}"),
        ("register a version (ms)", "register_version_ms", "{:.3f}"),
        ("move an alias (ms)", "move_alias_ms", "{:.3f}"),
        ("resolve name@alias (ms)", "resolve_alias_ms", "{:.3f}"),
    ]
    per_value = results["plain_sqlite_commit_per_value"]["log_one_at_a_time_s"]
    print(
        f"\n{'measure':40} {'mlops-console':>14} {'MLflow':>10} {'plain SQLite':>13} {'MLflow/ours':>12}"
    )
    for label, key, fmt in rows:
        a = ours_r.get(key)
        b = mlf.get(key) if mlf else None
        c = plain.get(key)
        ratio = f"{b / a:.1f}x" if (a and b) else "-"
        print(
            f"{label:40} {fmt.format(a):>14} {fmt.format(b) if b is not None else '-':>10} "
            f"{fmt.format(c) if c is not None else '-':>13} {ratio:>12}"
        )
    print(f"{'  plain SQLite, a commit per value (s)':40} {'':>14} {'':>10} {per_value:>13.3f}")
    ratios = {
        "ours_vs_plain_sqlite_commit_per_value": ours_r["log_one_at_a_time_s"] / per_value,
        "ours_vs_plain_sqlite": ours_r["log_one_at_a_time_s"] / plain["log_one_at_a_time_s"],
    }
    if mlf:
        ratios["mlflow_vs_ours_logging"] = (
            mlf["log_one_at_a_time_s"] / ours_r["log_one_at_a_time_s"]
        )
        ratios["mlflow_vs_ours_search"] = mlf["search_s"] / ours_r["search_s"]
        results["anchor_version"] = mlf.get("mlflow")
    results["ratios"] = ratios
    print(
        f"\nours / plain SQLite (a commit per value): {ratios['ours_vs_plain_sqlite_commit_per_value']:.2f}x "
        "(target <= 3x)"
    )
    print(
        f"ours / plain SQLite (one transaction per run, the floor): {ratios['ours_vs_plain_sqlite']:.2f}x"
    )
    if mlf:
        print(
            f"MLflow {mlf.get('mlflow')} / ours on logging: {ratios['mlflow_vs_ours_logging']:.1f}x (target >= 30x)"
        )
    ok_reg = all(
        ours_r[k] < 1.0 for k in ("register_version_ms", "move_alias_ms", "resolve_alias_ms")
    )
    print(f"registry operations under 1 ms each: {'yes' if ok_reg else 'NO'}")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "tracking.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
