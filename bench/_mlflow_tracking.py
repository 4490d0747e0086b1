"""The MLflow side of bench/tracking.py; runs inside .venv-bench, prints JSON."""

import json
import logging
import os
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

runs, params, metrics, search_total, reg_ops = (int(a) for a in sys.argv[1:6])
root = tempfile.mkdtemp(prefix="mlflow-bench-")
os.chdir(root)
uri = f"sqlite:///{root}/mlflow.db"
mlflow.set_tracking_uri(uri)
client = MlflowClient(uri)
exp = client.create_experiment(
    "bench", artifact_location=f"file://{root}/artifacts"
)  # schema set up here, untimed
out = {"mlflow": mlflow.__version__}

t = time.perf_counter()
for r in range(runs):
    run = client.create_run(exp)
    rid = run.info.run_id
    for p in range(params):
        client.log_param(rid, f"p{p}", p * r)
    for m in range(metrics):
        client.log_metric(rid, "loss", 1.0 / (m + 1), step=m)
    client.set_terminated(rid)
out["log_one_at_a_time_s"] = time.perf_counter() - t

# Fill up to `search_total` runs with the fast batch API (untimed), then time a search.
from mlflow.entities import Metric, Param  # noqa: E402

for r in range(runs, search_total):
    rid = client.create_run(exp).info.run_id
    now = int(time.time() * 1000)
    client.log_batch(
        rid,
        params=[Param(f"p{p}", str(p * r)) for p in range(params)],
        metrics=[Metric("loss", 1.0 / (m + 1) + r * 1e-6, now, m) for m in range(metrics)],
    )
    client.set_terminated(rid)
t = time.perf_counter()
found = client.search_runs(
    [exp],
    filter_string="metrics.loss < 1",
    order_by=["metrics.loss DESC"],
    max_results=search_total,
)
out["search_s"] = time.perf_counter() - t
out["search_found"] = len(found)

# Registry operations.
client.create_registered_model("m")
src_run = client.create_run(exp).info.run_id
t = time.perf_counter()
for _ in range(reg_ops):
    v = client.create_model_version("m", source=f"runs:/{src_run}/model", run_id=src_run)
out["register_version_ms"] = (time.perf_counter() - t) * 1000 / reg_ops
t = time.perf_counter()
for i in range(reg_ops):
    client.set_registered_model_alias("m", "champion", str(1 + i % int(v.version)))
out["move_alias_ms"] = (time.perf_counter() - t) * 1000 / reg_ops
t = time.perf_counter()
for _ in range(reg_ops):
    client.get_model_version_by_alias("m", "champion")
out["resolve_alias_ms"] = (time.perf_counter() - t) * 1000 / reg_ops
print(json.dumps(out))
