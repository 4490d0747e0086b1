"""Model serving speed: mlops-console's server vs `mlflow models serve`, same model, same run.

    make bench            # or: .venv/bin/python bench/serving.py --anchor-python .venv-bench/bin/python

Model: GradientBoostingClassifier, 100 trees, 20 numeric features, trained by an
mlops-console pipeline; MLflow serves the very same scikit-learn pipeline (saved with
mlflow.sklearn from the bundle's model.joblib). Load: wrk on loopback, 8 connections,
~15 s per case, single-row and 100-row requests in MLflow's dataframe_split format.
Prints requests/s, rows/s, p50/p99 latency, non-2xx responses and the server's CPU use;
writes bench/results/serving.json. Targets: single-row requests/s >= 20x MLflow's with
p99 < 10 ms; 100-row rows/s >= 5x MLflow's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(url + "/ping", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children (MLflow runs its server as a child)."""
    total = 0.0
    pids = [pid]
    try:
        out = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True
        ).stdout.split()
        pids += [int(p) for p in out]
        for child in list(pids[1:]):
            pids += [
                int(p)
                for p in subprocess.run(
                    ["pgrep", "-P", str(child)], capture_output=True, text=True
                ).stdout.split()
            ]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except (OSError, IndexError):
            continue
    return total


def wrk(url: str, body: str, seconds: int, connections: int = 8) -> dict:
    script = Path(tempfile.mkdtemp()) / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
    )
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url + "/invocations",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "requests_per_s": rps,
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(0) if errors else "",
    }


def run_case(url: str, pid: int, rows: int, frame, seconds: int) -> dict:
    body = json.dumps(
        {"dataframe_split": json.loads(frame.head(rows).to_json(orient="split", index=False))}
    )
    r = httpx.post(
        url + "/invocations", content=body, headers={"content-type": "application/json"}, timeout=30
    )
    assert r.status_code == 200 and len(r.json()["predictions"]) == rows, r.text
    c0, t0 = cpu_seconds(pid), time.time()
    res = wrk(url, body, seconds)
    res["cpu_cores_used"] = (cpu_seconds(pid) - c0) / (time.time() - t0)
    res["rows_per_s"] = res["requests_per_s"] * rows
    return res


def build_model(root: Path):
    import numpy as np
    import pandas as pd

    from mlops_console.registry.bundle import export_bundle
    from mlops_console.training.runner import train
    from mlops_console.workspace import Workspace

    rng = np.random.default_rng(0)
    n = 5000
    frame = pd.DataFrame(rng.normal(size=(n, 20)).round(5), columns=[f"f{i}" for i in range(20)])
    frame["ts"] = pd.date_range("2025-01-01", periods=n, freq="min")
    frame["y"] = (frame["f0"] + frame["f1"] * frame["f2"] + rng.normal(0, 0.5, n) > 0).astype(int)
    ws = Workspace.init(root)
    frame.to_parquet(root / "data" / "d.parquet")
    ws.data.add("d", "data/d.parquet", timestamp="ts")
    ws.data.ingest("d")
    (root / "pipelines" / "gb.toml").write_text(
        'name = "gb"\nregister_as = "gb"\n[data]\ndataset = "d"\ntarget = "y"\ntime_column = "ts"\n'
        '[model]\nestimator = "sklearn.ensemble.GradientBoostingClassifier"\n'
        "params = { n_estimators = 100, random_state = 0 }\n"
        '[gates]\nchecks = ["signature"]\nauto_promote = true\n'
    )
    result = train(ws, "gb")
    mv = ws.models.resolve("gb@champion")
    folder = export_bundle(ws.artifacts, mv.artifact_hash, root / "bundle")
    ws.close()
    return folder, frame.drop(columns=["ts", "y"]), result.onnx


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--anchor-python", help="Python of .venv-bench (with MLflow); omit to skip MLflow"
    )
    ap.add_argument("--seconds", type=int, default=15)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install -y wrk (make bench does this).")
    root = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    print(
        "training the bench model (GradientBoostingClassifier, 100 trees, 20 features) ...",
        flush=True,
    )
    bundle, frame, onnx = build_model(root / "ws")
    print(
        f"ONNX in the bundle: {onnx.get('kept')} ({onnx.get('reason', 'max diff {:.2g}'.format(onnx.get('max_abs_diff', 0)))})"
    )
    results: dict = {"seconds_per_case": args.seconds, "connections": 8}

    port = free_port()
    ours = subprocess.Popen(
        [sys.executable, "-m", "mlops_console.serving.app", str(bundle), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, ours)
        for rows in (1, 100):
            print(f"mlops-console, {rows}-row requests ...", flush=True)
            results[f"ours_{rows}"] = run_case(url, ours.pid, rows, frame, args.seconds)
    finally:
        ours.terminate()
        ours.wait(timeout=20)

    if args.anchor_python:
        mlflow_dir = root / "mlflow-model"
        example = root / "example.json"
        frame.head(2).to_json(example, orient="split", index=False)
        subprocess.run(
            [
                args.anchor_python,
                str(HERE / "_mlflow_model.py"),
                str(bundle / "model.joblib"),
                str(mlflow_dir),
                str(example),
            ],
            check=True,
            capture_output=True,
        )
        port = free_port()
        mlflow_bin = str(Path(args.anchor_python).with_name("mlflow"))
        proc = subprocess.Popen(
            [
                mlflow_bin,
                "models",
                "serve",
                "-m",
                str(mlflow_dir),
                "-p",
                str(port),
                "--host",
                "127.0.0.1",
                "--env-manager",
                "local",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            # MLflow starts `uvicorn` by name: its venv's bin must come first
            env={**os.environ, "PATH": f"{Path(mlflow_bin).parent}:{os.environ['PATH']}"},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_up(url, proc)
            for rows in (1, 100):
                print(f"MLflow, {rows}-row requests ...", flush=True)
                results[f"mlflow_{rows}"] = run_case(url, proc.pid, rows, frame, args.seconds)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)

    print(
        f"\n{'case':34} {'req/s':>9} {'rows/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'CPU cores':>10}"
    )
    for key, label in (
        ("ours_1", "mlops-console, 1 row"),
        ("mlflow_1", "MLflow, 1 row"),
        ("ours_100", "mlops-console, 100 rows"),
        ("mlflow_100", "MLflow, 100 rows"),
    ):
        r = results.get(key)
        if r:
            print(
                f"{label:34} {r['requests_per_s']:9.0f} {r['rows_per_s']:10.0f} {r['p50_ms']:8.2f} "
                f"{r['p99_ms']:8.2f} {r['non_2xx']:8d} {r['cpu_cores_used']:10.2f}"
            )
    ratios = {}
    if "mlflow_1" in results:
        ratios["single_row_rps_vs_mlflow"] = (
            results["ours_1"]["requests_per_s"] / results["mlflow_1"]["requests_per_s"]
        )
        ratios["hundred_row_rows_per_s_vs_mlflow"] = (
            results["ours_100"]["rows_per_s"] / results["mlflow_100"]["rows_per_s"]
        )
        print(
            f"\nsingle-row requests/s: {ratios['single_row_rps_vs_mlflow']:.1f}x MLflow (target >= 20x), "
            f"p99 {results['ours_1']['p99_ms']:.2f} ms (target < 10 ms)"
        )
        print(
            f"100-row rows/s: {ratios['hundred_row_rows_per_s_vs_mlflow']:.1f}x MLflow (target >= 5x)"
        )
    results["ratios"] = ratios
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "serving.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
