"""The Feast side of bench/features.py; runs inside .venv-bench, prints JSON."""

import json
import logging
import sys
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

import pandas as pd  # noqa: E402
from feast import Entity, FeatureStore, FeatureView, Field, FileSource  # noqa: E402
from feast.types import Float64  # noqa: E402

features_path, entities_path, n_features, ttl_days = (
    sys.argv[1],
    sys.argv[2],
    int(sys.argv[3]),
    float(sys.argv[4]),
)
out = {}
entity_df = pd.read_parquet(entities_path)[["entity_id", "event_timestamp"]]
refs = [f"fv:f{i}" for i in range(n_features)]


def repo(offline: str) -> FeatureStore:
    root = Path(tempfile.mkdtemp(prefix=f"feast-{offline}-"))
    (root / "feature_store.yaml").write_text(
        "project: bench\n"
        f"registry: {root}/registry.db\n"
        "provider: local\n"
        f"online_store:\n  type: sqlite\n  path: {root}/online.db\n"
        f"offline_store:\n  type: {offline}\n"
        "entity_key_serialization_version: 3\n"
    )
    store = FeatureStore(repo_path=str(root))
    entity = Entity(name="entity", join_keys=["entity_id"])
    view = FeatureView(
        name="fv",
        entities=[entity],
        ttl=timedelta(days=ttl_days),
        schema=[Field(name=f"f{i}", dtype=Float64) for i in range(n_features)],
        source=FileSource(path=features_path, timestamp_field="ts"),
        online=True,
    )
    store.apply([entity, view])
    return store


for offline in ("duckdb", "file"):
    try:
        store = repo(offline)
        t = time.perf_counter()
        df = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
        out[f"pit_{offline}_s"] = time.perf_counter() - t
        out[f"pit_{offline}_rows"] = len(df)
    except Exception as exc:  # an anchor that fails is reported, not hidden
        out[f"pit_{offline}_error"] = f"{type(exc).__name__}: {exc}"[:300]

store = repo("duckdb")
feats = pd.read_parquet(features_path, columns=["ts"])
t = time.perf_counter()
store.materialize(
    feats["ts"].min().to_pydatetime() - timedelta(seconds=1),
    feats["ts"].max().to_pydatetime() + timedelta(seconds=1),
)
out["materialize_s"] = time.perf_counter() - t
ids = entity_df["entity_id"].unique()[:100].tolist()
store.get_online_features(features=refs, entity_rows=[{"entity_id": ids[0]}]).to_dict()
n = 200
t = time.perf_counter()
for i in range(n):
    store.get_online_features(features=refs, entity_rows=[{"entity_id": ids[i % 100]}]).to_dict()
out["online_1_ms"] = (time.perf_counter() - t) * 1000 / n
n = 50
t = time.perf_counter()
for _ in range(n):
    store.get_online_features(features=refs, entity_rows=[{"entity_id": k} for k in ids]).to_dict()
out["online_100_ms"] = (time.perf_counter() - t) * 1000 / n
import feast  # noqa: E402

out["feast"] = feast.__version__
print(json.dumps(out))
