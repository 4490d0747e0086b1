"""Feature store speed: mlops-console vs a hand-written DuckDB ASOF JOIN vs Feast.

    make bench            # or: .venv/bin/python bench/features.py --anchor-python .venv-bench/bin/python

Workload (from the data/features issue): a point-in-time join of 100,000 entity rows
against 1,000,000 feature rows (10,000 entities x 100 timestamps, 10 features, TTL 7
days); the same join written by hand as a DuckDB ASOF JOIN with the same semantics (TTL,
row order kept) in the same run; Feast's get_historical_features (DuckDB and file offline
stores) from .venv-bench. The same join at a small size (20,000 entity rows x 100,000
feature rows of 1,000 entities), where the fixed cost of a call shows. Online lookups of
1 and 100 entities. Ingesting the 1,000,000 row CSV (hash, parse, profile, contract
inference and check, Parquet snapshot). Targets: within 1.5x of the hand-written join at
both sizes; online 1 entity < 0.2 ms, 100 < 2 ms; ingest < 5 s. Writes
bench/results/features.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TTL_DAYS = 7


def make_data(folder: Path, entities: int, steps: int, n_features: int, entity_rows: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(42)
    base = np.datetime64("2024-01-01T00:00:00", "s")
    ids = np.repeat(np.arange(entities, dtype=np.int64), steps)
    offsets = np.tile(np.arange(steps, dtype=np.int64) * 86400, entities) + (ids % 3600) * 7
    feats = pd.DataFrame({"entity_id": ids, "ts": base + offsets.astype("timedelta64[s]")})
    for i in range(n_features):
        feats[f"f{i}"] = rng.normal(size=len(feats)).round(6)
    ent = pd.DataFrame(
        {
            "entity_id": rng.integers(0, entities, entity_rows, dtype=np.int64),
            "event_timestamp": base
            + rng.integers(-5 * 86400, (steps + 10) * 86400, entity_rows).astype("timedelta64[s]"),
        }
    )
    (folder / "data").mkdir(parents=True, exist_ok=True)
    feats.to_parquet(folder / "features.parquet", index=False)
    feats.to_csv(folder / "data" / "features.csv", index=False)
    ent.to_parquet(folder / "entities.parquet", index=False)
    return ent


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def pit_join(root: Path, size, n_features: int, repeat: int, ingest: dict | None = None):
    """Make a workspace with one feature view over `size` = (entities, steps, entity rows),
    then time the point-in-time join, ours and the hand-written ASOF JOIN; `ingest`
    receives the ingest time."""
    import duckdb
    import numpy as np

    from mlops_console.workspace import Workspace

    entities, steps, entity_rows = size
    print(
        f"generating {entities * steps:,} feature rows, {entity_rows:,} entity rows ...",
        flush=True,
    )
    ent = make_data(root, entities, steps, n_features, entity_rows)
    ws = Workspace.init(root)
    ws.data.add("feats", "data/features.csv", timestamp="ts", entities=["entity_id"])
    t = time.perf_counter()
    ingested = ws.data.ingest("feats")
    if ingest is not None:
        ingest["ingest_1m_csv_s"] = time.perf_counter() - t
    assert ingested.version.status == "accepted", ingested.message
    (root / "features" / "fv.toml").write_text(
        f'entities = ["entity_id"]\ntimestamp = "ts"\nttl = "{TTL_DAYS}d"\nsource = "feats"\n'
        f"features = {json.dumps([f'f{i}' for i in range(n_features)])}\n"
    )
    refs = [f"fv:f{i}" for i in range(n_features)]
    ours_s, ours = timed(lambda: ws.features.training_frame(ent, refs), repeat)

    snapshot = ws.data.path("feats")
    cols = ", ".join(
        f"CASE WHEN f.ts >= e.event_timestamp - INTERVAL {TTL_DAYS} DAY THEN f.f{i} END AS f{i}"
        for i in range(n_features)
    )

    def by_hand():
        con = duckdb.connect()
        frame = ent.assign(__row=np.arange(len(ent)))
        con.register("ent", frame)
        out = con.execute(
            f"SELECT e.entity_id, e.event_timestamp, {cols} FROM ent e ASOF LEFT JOIN "
            f"read_parquet('{snapshot}') f ON e.entity_id = f.entity_id AND e.event_timestamp >= f.ts "
            "ORDER BY e.__row"
        ).df()
        con.close()
        return out

    hand_s, hand = timed(by_hand, repeat)
    same = all(
        np.allclose(
            ours[f"f{i}"].to_numpy(dtype=float), hand[f"f{i}"].to_numpy(dtype=float), equal_nan=True
        )
        for i in range(n_features)
    )
    join = {
        "ours_s": ours_s,
        "duckdb_by_hand_s": hand_s,
        "same_result_as_by_hand": bool(same),
        "null_rows": int(ours["f0"].isna().sum()),
    }
    return ws, ent, join


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--anchor-python", help="Python of .venv-bench (with Feast); omit to skip Feast"
    )
    ap.add_argument("--entities", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--features", type=int, default=10)
    ap.add_argument("--entity-rows", type=int, default=100_000)
    ap.add_argument("--small-entities", type=int, default=1_000)
    ap.add_argument("--small-entity-rows", type=int, default=20_000)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="features-bench-"))
    results: dict = {"workload": vars(args) | {"ttl_days": TTL_DAYS}}
    big = (args.entities, args.steps, args.entity_rows)
    root = tmp / "ws"
    ws, ent, join = pit_join(root, big, args.features, repeat=3, ingest=results)
    ours_s, hand_s, same = join["ours_s"], join["duckdb_by_hand_s"], join["same_result_as_by_hand"]
    results |= {"pit_ours_s": ours_s, "pit_duckdb_by_hand_s": hand_s}
    results |= {"same_result_as_by_hand": same, "null_rows": join["null_rows"]}
    # the fixed cost per call shows at a small size (issue 14: 20k entity rows x 100k rows)
    small = (args.small_entities, args.steps, args.small_entity_rows)
    ws_small, _, join_small = pit_join(tmp / "ws-small", small, args.features, repeat=9)
    ws_small.close()
    results.update({f"pit_small_{k}": v for k, v in join_small.items()})

    ws.features.materialize(["fv"])
    ids = ent["entity_id"].unique()[:100].tolist()
    ws.features.online("fv", [ids[0]])
    n = 2000
    t = time.perf_counter()
    for i in range(n):
        ws.features.online("fv", {"entity_id": ids[i % 100]})
    results["online_1_ms"] = (time.perf_counter() - t) * 1000 / n
    n = 500
    t = time.perf_counter()
    for _ in range(n):
        ws.features.online("fv", ids)
    results["online_100_ms"] = (time.perf_counter() - t) * 1000 / n

    if args.anchor_python:
        print("running Feast (takes a minute) ...", flush=True)
        proc = subprocess.run(
            [
                args.anchor_python,
                str(HERE / "_feast_features.py"),
                str(root / "features.parquet"),
                str(root / "entities.parquet"),
                str(args.features),
                str(TTL_DAYS),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            sys.exit(f"Feast side failed:\n{proc.stderr[-3000:]}")
        results["feast"] = json.loads(proc.stdout.strip().splitlines()[-1])

    f = results.get("feast", {})
    print(f"\n{'measure':44} {'mlops-console':>14} {'by hand':>9} {'Feast':>12}")
    size = f"{args.entity_rows:,} x {args.entities * args.steps:,}"
    print(
        f"{f'point-in-time join, {size} (s)':44} {ours_s:>14.3f} {hand_s:>9.3f} "
        f"{f.get('pit_duckdb_s', float('nan')):>12.3f}"
    )
    small_s, small_hand_s = join_small["ours_s"], join_small["duckdb_by_hand_s"]
    size = f"{args.small_entity_rows:,} x {args.small_entities * args.steps:,}"
    print(f"{f'point-in-time join, {size} (s)':44} {small_s:>14.3f} {small_hand_s:>9.3f}")
    if f:
        print(
            f"{'  Feast with its file offline store (s)':44} {'':>14} {'':>9} {f.get('pit_file_s', float('nan')):>12.3f}"
        )
    print(
        f"{'online lookup, 1 entity (ms)':44} {results['online_1_ms']:>14.3f} {'':>9} "
        f"{f.get('online_1_ms', float('nan')):>12.3f}"
    )
    print(
        f"{'online lookup, 100 entities (ms)':44} {results['online_100_ms']:>14.3f} {'':>9} "
        f"{f.get('online_100_ms', float('nan')):>12.3f}"
    )
    print(
        f"{'ingest a 1M-row CSV with profile+contract (s)':44} {results['ingest_1m_csv_s']:>14.3f}"
    )
    ratios = {"ours_vs_by_hand": ours_s / hand_s, "ours_vs_by_hand_small": small_s / small_hand_s}
    if "pit_duckdb_s" in f:
        ratios["feast_duckdb_vs_ours"] = f["pit_duckdb_s"] / ours_s
    if "pit_file_s" in f:
        ratios["feast_file_vs_ours"] = f["pit_file_s"] / ours_s
    if "online_100_ms" in f:
        ratios["feast_vs_ours_online_100"] = f["online_100_ms"] / results["online_100_ms"]
    results["ratios"] = ratios
    print(
        f"\nours / hand-written ASOF JOIN: {ratios['ours_vs_by_hand']:.2f}x (target <= 1.5x); "
        f"same values: {same}; rows with no match in TTL: {results['null_rows']:,}"
    )
    print(
        f"ours / hand-written ASOF JOIN at the small size: {ratios['ours_vs_by_hand_small']:.2f}x "
        f"(target <= 1.5x); same values: {join_small['same_result_as_by_hand']}"
    )
    for k, v in ratios.items():
        if not k.startswith("ours_vs_by_hand"):
            print(f"{k}: {v:.1f}x")
    for k in ("pit_duckdb_error", "pit_file_error"):
        if k in f:
            print(f"Feast {k}: {f[k]}")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "features.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
