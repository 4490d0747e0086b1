"""Model serving speed: mlops-console's server vs `mlflow models serve`, same model, same run.

    make bench            # or: .venv/bin/python bench/serving.py --anchor-python .venv-bench/bin/python
    .venv/bin/python bench/serving.py --anchor-python .venv-bench/bin/python --only lanes,memory

Model: GradientBoostingClassifier, 100 trees, 20 numeric features, trained by an
mlops-console pipeline; MLflow serves the very same scikit-learn pipeline (saved with
mlflow.sklearn from the bundle's model.joblib). Three groups of cases, each run against
both servers; `--only` picks some of them (comma-separated; default: all three):

wrk     Load: wrk on loopback, 8 connections, ~15 s per case, single-row and 100-row
        requests in MLflow's dataframe_split format. Prints requests/s, rows/s, p50/p99
        latency, non-2xx responses and the server's CPU use. Targets: single-row
        requests/s >= 30x MLflow's with p99 < 10 ms; 100-row rows/s >= 5x MLflow's.
lanes   A small request behind a big one: the latency of a 1-row JSON request sent 1.0,
        1.5, 2.0, 2.5 and 3.0 s after a 500,000-row request (3 big requests, so up to 15
        small ones; only those sent while the big one is still in flight count), against
        the same request's idle latency (median of 20). Big bodies: CSV (text/csv with a
        header line) and JSON (dataframe_split). Our server is started with
        MLOPS_MAX_BODY_BYTES=512 MiB and MLOPS_MAX_ROWS=1,000,000 for this (its defaults
        refuse such bodies). Target: behind/idle within 2x.
memory  Peak memory for a ~28 MiB CSV request: the server's peak RSS (server process and
        its children, VmRSS sampled every 20 ms, and VmHWM after resetting it through
        /proc/PID/clear_refs) while it answers one such request, minus its RSS just
        before; then the same with four at once. Each on a freshly started server warmed
        up with a 2,000-row CSV request (imports, thread pools). Our server is started with
        MLOPS_MAX_ROWS=1,000,000 (the body is under the 32 MiB body cap but has more rows
        than the 100,000-row cap). Also the RSS 2 s and 10 s after the answer (memory given
        back?).
        Target: peak growth under 3x the body size.

Writes bench/results/serving.json; with --only, the figures of the cases not run are kept
from the previous file. MB below means 2**20 bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")
MB = 1 << 20
CASES = ("wrk", "lanes", "memory")
JSON = "application/json"
CSV = "text/csv"
BIG_ROWS = 500_000
SMALL_AFTER_S = (1.0, 1.5, 2.0, 2.5, 3.0)  # when the small requests go, after the big one
BIG_REPEATS = 3
IDLE_REQUESTS = 20
MEMORY_BODY_BYTES = 28 * MB
# our server refuses bodies over 32 MiB and requests over 100,000 rows by default
LANES_ENV = {"MLOPS_MAX_BODY_BYTES": str(512 * MB), "MLOPS_MAX_ROWS": "1000000"}
MEMORY_ENV = {"MLOPS_MAX_ROWS": "1000000"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, seconds: float = 180, log: Path | None = None):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            said = log.read_text() if log else proc.stderr.read() if proc.stderr else ""
            raise SystemExit(f"server exited: {said}")
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


# --- servers ---------------------------------------------------------------------------


@contextlib.contextmanager
def our_server(bundle: Path, log: Path, env: dict[str, str] | None = None):
    """mlops-console's server on a free port: yields (process, url); its stderr goes to `log`."""
    port = free_port()
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlops_console.serving.app", str(bundle), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, **(env or {})},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, proc, log=log)
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def save_mlflow_model(anchor_python: str, bundle: Path, frame, root: Path) -> Path:
    """The bundle's scikit-learn pipeline saved as an MLflow model (by the anchor venv)."""
    mlflow_dir = root / "mlflow-model"
    example = root / "example.json"
    frame.head(2).to_json(example, orient="split", index=False)
    subprocess.run(
        [
            anchor_python,
            str(HERE / "_mlflow_model.py"),
            str(bundle / "model.joblib"),
            str(mlflow_dir),
            str(example),
        ],
        check=True,
        capture_output=True,
    )
    return mlflow_dir


@contextlib.contextmanager
def mlflow_server(anchor_python: str, mlflow_dir: Path, log: Path):
    """`mlflow models serve` (its defaults: one uvicorn worker, 60 s request timeout)."""
    port = free_port()
    mlflow_bin = str(Path(anchor_python).with_name("mlflow"))
    with open(log, "w") as err:
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
            stderr=err,
            start_new_session=True,
            # MLflow starts `uvicorn` by name: its venv's bin must come first
            env={**os.environ, "PATH": f"{Path(mlflow_bin).parent}:{os.environ['PATH']}"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, proc, log=log)
        yield proc, url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def servers(args, bundle: Path, mlflow_dir: Path | None, root: Path, ours_env=None):
    """(label, key, start) for our server and, with an anchor venv, MLflow's; start(tag)
    is a context manager running the server with its stderr in ROOT/KEY-TAG.log."""
    yield (
        "mlops-console",
        "ours",
        lambda tag: our_server(bundle, root / f"ours-{tag}.log", ours_env),
    )
    if mlflow_dir is not None:
        yield (
            "MLflow",
            "mlflow",
            lambda tag: mlflow_server(args.anchor_python, mlflow_dir, root / f"mlflow-{tag}.log"),
        )


def report_server_log(log: Path) -> list[str]:
    """Print what our server said beyond its start line (errors, restarts)."""
    try:
        lines = [line for line in log.read_text().splitlines()[1:] if line.strip()]
    except OSError:
        return []
    for line in lines[:20]:
        print(f"    server log: {line}")
    if len(lines) > 20:
        print(f"    server log: ... {len(lines) - 20} more lines in {log}")
    return lines


# --- wrk: throughput and latency under load -----------------------------------------------


def wrk_cases(args, bundle: Path, frame, mlflow_dir: Path | None, root: Path) -> dict:
    results: dict = {"seconds_per_case": args.seconds, "connections": 8}
    for label, key, start in servers(args, bundle, mlflow_dir, root):
        with start("wrk") as (proc, url):
            for rows in (1, 100):
                print(f"{label}, {rows}-row requests ...", flush=True)
                results[f"{key}_{rows}"] = run_case(url, proc.pid, rows, frame, args.seconds)

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
            f"\nsingle-row requests/s: {ratios['single_row_rps_vs_mlflow']:.1f}x MLflow (target >= 30x), "
            f"p99 {results['ours_1']['p99_ms']:.2f} ms (target < 10 ms)"
        )
        print(
            f"100-row rows/s: {ratios['hundred_row_rows_per_s_vs_mlflow']:.1f}x MLflow (target >= 5x)"
        )
    results["ratios"] = ratios
    return results


# --- requests from threads ------------------------------------------------------------------


def client(timeout: float = 600.0) -> httpx.Client:
    """A client opening a new connection per request: no stale keep-alive connections
    (both servers close idle ones after 5 s), the same cost for every request."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=10.0),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=0),
    )


def timed_post(http: httpx.Client, url: str, body: bytes, ctype: str) -> dict:
    """POST /invocations: status, seconds, start/end (perf_counter), error text if it failed."""
    start = time.perf_counter()
    try:
        r = http.post(url + "/invocations", content=body, headers={"content-type": ctype})
    except httpx.HTTPError as exc:
        end = time.perf_counter()
        error = f"{type(exc).__name__}: {exc}"[:300]
        return {"status": None, "seconds": end - start, "start": start, "end": end, "error": error}
    end = time.perf_counter()
    out = {"status": r.status_code, "seconds": end - start, "start": start, "end": end}
    if r.status_code != 200:
        out["error"] = f"HTTP {r.status_code}: {r.text[:300]}"
    out["response"] = r
    return out


def predictions_ok(result: dict, rows: int) -> bool:
    r = result.get("response")
    if r is None or r.status_code != 200:
        return False
    try:
        return len(r.json()["predictions"]) == rows
    except (ValueError, KeyError, TypeError):
        return False


def in_thread(fn, *args) -> tuple[threading.Thread, dict]:
    """Run fn(*args) in a started thread; its result dict fills in when it returns."""
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(fn(*args)), daemon=True)
    t.start()
    return t, out


def wait_idle(pid: int, seconds: float = 180.0) -> float:
    """Wait until the server uses under 0.15 cores over a second (a request that timed out
    may still be computing); return how long that took."""
    t0 = time.time()
    while time.time() - t0 < seconds:
        c0 = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - c0 < 0.15:
            break
    return time.time() - t0


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


# --- lanes: a small request behind a big one ------------------------------------------------


def random_features(rows: int, columns: list[str], seed: int):
    """Rows like the bench model's training data (standard normal, 5 decimals)."""
    import numpy as np
    import pandas as pd

    values = np.random.default_rng(seed).normal(size=(rows, len(columns))).round(5)
    return pd.DataFrame(values, columns=columns)


def csv_body(frame) -> bytes:
    return frame.to_csv(index=False).encode()


def json_body(frame) -> bytes:
    return b'{"dataframe_split": ' + frame.to_json(orient="split", index=False).encode() + b"}"


def idle_latency(http: httpx.Client, url: str, small: bytes) -> dict:
    """Median latency of IDLE_REQUESTS 1-row requests, one at a time, after 3 to warm up."""
    for _ in range(3):
        timed_post(http, url, small, JSON)
    runs = [timed_post(http, url, small, JSON) for _ in range(IDLE_REQUESTS)]
    ok = [r["seconds"] for r in runs if r["status"] == 200]
    errors = sorted({r["error"] for r in runs if r.get("error")})
    return {"idle_ms": ms(median(ok)), "idle_ok": len(ok), "idle_errors": errors}


def small_latency_behind_big(url: str, pid: int, small: bytes, big: bytes, ctype: str) -> dict:
    """Send a big request, then 1-row requests SMALL_AFTER_S seconds after it (each in its
    own thread, so a slow one does not delay the next), BIG_REPEATS times. A small request
    counts as behind the big one if it was sent before the big one's answer arrived."""
    small_http, big_http = client(), client()
    out = idle_latency(small_http, url, small)
    behind: list[float] = []
    behind_at: list[list[float]] = []  # [seconds after the big one, latency ms]
    after: list[float] = []  # sent once the big one had been answered: not behind it
    bigs, errors = [], []
    for _ in range(BIG_REPEATS):
        t0 = time.perf_counter()
        big_thread, big_out = in_thread(timed_post, big_http, url, big, ctype)

        def small_at(t0: float, offset: float) -> dict:
            time.sleep(max(0.0, t0 + offset - time.perf_counter()))
            return timed_post(small_http, url, small, JSON)

        smalls = [in_thread(small_at, t0, offset) for offset in SMALL_AFTER_S]
        big_thread.join()
        for t, _ in smalls:
            t.join()
        bigs.append(
            {
                "seconds": big_out["seconds"],
                "status": big_out["status"],
                "all_predictions": predictions_ok(big_out, BIG_ROWS),
                "error": big_out.get("error"),
            }
        )
        if big_out.get("error"):
            errors.append(f"big request: {big_out['error']}")
        elif not bigs[-1]["all_predictions"]:
            errors.append(f"big request: answered without {BIG_ROWS} predictions")
        for offset, (_, r) in zip(SMALL_AFTER_S, smalls, strict=True):
            if r["status"] != 200:
                errors.append(f"small request: {r.get('error')}")
            elif r["start"] < big_out["end"]:  # the big one may have failed: still behind it
                behind.append(r["seconds"])
                behind_at.append([offset, r["seconds"] * 1000])
            else:
                after.append(r["seconds"])
        waited = wait_idle(pid)
        if waited > 2.5:
            print(f"    (the server was busy for {waited:.0f} s after the big request)")
    small_http.close()
    big_http.close()
    big_ok = [b["seconds"] for b in bigs if b["status"] == 200]
    out.update(
        behind_ms=ms(median(behind)),
        behind_max_ms=ms(max(behind)) if behind else None,
        behind_n=len(behind),
        behind_by_offset=behind_at,
        not_behind_n=len(after),
        behind_vs_idle=(
            median(behind) / (out["idle_ms"] / 1000) if behind and out["idle_ms"] else None
        ),
        big_s=median(big_ok),
        big_requests=bigs,
        errors=errors,
    )
    return out


def lanes_cases(args, bundle: Path, frame, mlflow_dir: Path | None, root: Path) -> dict:
    columns = list(frame.columns)
    big_frame = random_features(BIG_ROWS, columns, seed=1)
    small = json_body(frame.head(1))
    bodies = {"csv": (csv_body(big_frame), CSV), "json": (json_body(big_frame), JSON)}
    del big_frame
    print(
        f"\nsmall request behind a big one: {BIG_ROWS:,} rows x {len(columns)} features; "
        f"CSV body {len(bodies['csv'][0]) / MB:.1f} MB, JSON body {len(bodies['json'][0]) / MB:.1f} MB; "
        f"the small request: 1 row, JSON, {len(small)} bytes",
        flush=True,
    )
    print(f"  our server runs with {LANES_ENV} for this (its defaults refuse such bodies)")
    results: dict = {
        "big_rows": BIG_ROWS,
        "features": len(columns),
        "body_bytes": {fmt_: len(b) for fmt_, (b, _) in bodies.items()},
        "small_body_bytes": len(small),
        "small_after_s": list(SMALL_AFTER_S),
        "big_repeats": BIG_REPEATS,
        "ours_env": LANES_ENV,
    }
    for label, key, start in servers(args, bundle, mlflow_dir, root, LANES_ENV):
        try:
            with start("lanes") as (proc, url):
                for name, (body, ctype) in bodies.items():
                    print(f"{label}, 1-row requests behind {name.upper()} big ones ...", flush=True)
                    r = small_latency_behind_big(url, proc.pid, small, body, ctype)
                    results[f"{key}_{name}"] = r
                    for e in sorted(set(r["errors"]))[:5]:
                        print(f"    {label} failed: {e}")
        except SystemExit as exc:  # the server did not come up
            print(f"  {label} did not start: {str(exc)[-500:]}")
        if key == "ours":
            report_server_log(root / "ours-lanes.log")

    print(
        f"\n{'case':34} {'idle ms':>8} {'behind ms':>10} {'(n)':>4} {'max ms':>8} "
        f"{'behind/idle':>12} {'big s':>7}"
    )
    for name in bodies:
        for key, label in (("ours", "mlops-console"), ("mlflow", "MLflow")):
            r = results.get(f"{key}_{name}")
            if r:
                print(
                    f"{label + ', behind ' + name.upper() + ' 500k':34} {fmt(r['idle_ms']):>8} "
                    f"{fmt(r['behind_ms']):>10} {r['behind_n']:>4} {fmt(r['behind_max_ms'], '.1f'):>8} "
                    f"{fmt(r['behind_vs_idle'], '.1f', 'x'):>12} {fmt(r['big_s']):>7}"
                )
    ratios = {}
    for name in bodies:
        ours, theirs = results.get(f"ours_{name}"), results.get(f"mlflow_{name}")
        if ours:
            print(
                f"{name.upper()}: ours behind/idle {fmt(ours['behind_vs_idle'], '.1f', 'x')} "
                f"(target within 2x)",
                end="",
            )
        if ours and theirs:
            for what, field in (("behind", "behind_ms"), ("big", "big_s")):
                if ours[field] and theirs[field]:
                    ratios[f"{name}_{what}_mlflow_vs_ours"] = theirs[field] / ours[field]
            print(
                f"; small request behind the big one: MLflow's "
                f"{fmt(ratios.get(f'{name}_behind_mlflow_vs_ours'), '.1f', 'x')} ours; "
                f"big request: MLflow's {fmt(ratios.get(f'{name}_big_mlflow_vs_ours'), '.1f', 'x')} ours",
                end="",
            )
        print()
    results["ratios"] = ratios
    return results


# --- memory: peak RSS while answering a large request ---------------------------------------


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants (MLflow: the CLI, uvicorn, its workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def status_kb(pids: list[int], field: str) -> int:
    """Sum of one /proc/PID/status field (VmRSS, VmHWM) over the processes, in kB."""
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
    return total


def reset_peak_rss(pids: list[int]) -> bool:
    """Reset VmHWM to the current RSS (`echo 5 > /proc/PID/clear_refs`); False if refused."""
    try:
        for p in pids:
            Path(f"/proc/{p}/clear_refs").write_text("5")
    except OSError:
        return False
    return status_kb(pids, "VmHWM") <= status_kb(pids, "VmRSS") + 4096


class RssSampler(threading.Thread):
    """Sum of VmRSS over a process tree every `every` seconds; keeps the peak. The tree is
    looked up again every 10 samples: processes started during the request (a worker pool
    started on demand) are counted from then on, and kept in `pids`."""

    def __init__(self, pid: int, pids: list[int], every: float = 0.02):
        super().__init__(daemon=True)
        self.pid, self.pids, self.every = pid, list(pids), every
        self.peak_kb, self.samples = 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            if self.samples % 10 == 9:
                self.pids += [p for p in process_tree(self.pid) if p not in self.pids]
            self.peak_kb = max(self.peak_kb, status_kb(self.pids, "VmRSS"))
            self.samples += 1
            self.done.wait(self.every)

    def stop(self) -> None:
        self.done.set()
        self.join()


def peak_memory_answering(url: str, pid: int, body: bytes, rows: int, copies: int) -> dict:
    """Peak RSS growth of the server (and its children) while it answers `copies` copies of
    the CSV body sent at once, and its RSS growth 2 s and 10 s after the last answer."""
    before_pids = process_tree(pid)
    time.sleep(1.0)
    hwm_reset = reset_peak_rss(before_pids)
    before_kb = status_kb(before_pids, "VmRSS")
    sampler = RssSampler(pid, before_pids)
    sampler.start()
    http = client()
    t0 = time.perf_counter()
    posts = [in_thread(timed_post, http, url, body, CSV) for _ in range(copies)]
    for t, _ in posts:
        t.join()
    seconds = time.perf_counter() - t0
    sampler.stop()
    started = [p for p in process_tree(pid) if p not in sampler.pids]
    pids = sampler.pids + started  # a process started during the request: its HWM is its peak
    hwm_kb = status_kb(pids, "VmHWM") if hwm_reset else 0
    peak_kb = max(sampler.peak_kb, hwm_kb)
    time.sleep(2.0)
    after_kb = status_kb(pids, "VmRSS")
    time.sleep(8.0)
    later_kb = status_kb(pids, "VmRSS")
    http.close()
    answered = [r for _, r in posts if predictions_ok(r, rows)]
    growth = (peak_kb - before_kb) * 1024
    return {
        "copies": copies,
        "processes_before": len(before_pids),
        "processes_during": len(pids),
        "answered": len(answered),
        "errors": sorted({r["error"] for _, r in posts if r.get("error")}),
        "seconds": seconds,
        "before_mb": before_kb / 1024,
        "peak_mb": peak_kb / 1024,
        "peak_sampled_mb": sampler.peak_kb / 1024,
        "peak_hwm_mb": hwm_kb / 1024 if hwm_reset else None,
        "samples": sampler.samples,
        "growth_mb": growth / MB,
        "growth_x_body": growth / len(body),
        "growth_x_bodies": growth / (copies * len(body)),
        "after_2s_growth_mb": (after_kb - before_kb) / 1024,
        "after_10s_growth_mb": (later_kb - before_kb) / 1024,
    }


def memory_cases(args, bundle: Path, frame, mlflow_dir: Path | None, root: Path) -> dict:
    columns = list(frame.columns)
    probe = csv_body(random_features(10_000, columns, seed=2))
    rows = int(MEMORY_BODY_BYTES / (len(probe) / 10_000))
    body = csv_body(random_features(rows, columns, seed=2))
    warm_up = csv_body(random_features(2_000, columns, seed=3))
    print(
        f"\npeak memory: CSV body {len(body) / MB:.1f} MB ({len(body):,} bytes), {rows:,} rows x "
        f"{len(columns)} features; each case on a fresh server warmed up with a 2,000-row CSV "
        f"request ({len(warm_up) / 1024:.0f} kB)",
        flush=True,
    )
    print(f"  our server runs with {MEMORY_ENV} for this (the body has more rows than its cap)")
    results: dict = {"body_bytes": len(body), "rows": rows, "ours_env": MEMORY_ENV}
    for label, key, start in servers(args, bundle, mlflow_dir, root, MEMORY_ENV):
        for copies in (1, 4):
            print(f"{label}, {copies} x {len(body) / MB:.0f} MB CSV at once ...", flush=True)
            try:
                with start(f"memory-{copies}") as (proc, url):
                    with client() as http:
                        w = timed_post(http, url, warm_up, CSV)
                    if w["status"] != 200:
                        print(f"    warm-up request failed: {w.get('error')}")
                    r = peak_memory_answering(url, proc.pid, body, rows, copies)
            except SystemExit as exc:
                print(f"  {label} did not start: {str(exc)[-500:]}")
                continue
            results[f"{key}_{copies}"] = r
            for e in r["errors"][:5]:
                print(f"    {label} failed: {e}")
            if r["processes_during"] > r["processes_before"]:
                print(
                    f"    ({r['processes_during'] - r['processes_before']} processes started "
                    "during the request: counted from when they were seen)"
                )
            if r["peak_hwm_mb"] is None:
                print("    (VmHWM could not be reset: the peak is from 20 ms samples only)")
            if key == "ours":
                report_server_log(root / f"ours-memory-{copies}.log")

    print(
        f"\n{'case':34} {'before MB':>10} {'peak +MB':>9} {'x body':>7} {'x bodies':>9} "
        f"{'+MB 2 s after':>14} {'+MB 10 s':>9} {'answered':>9} {'s':>6}"
    )
    for copies in (1, 4):
        for key, label in (("ours", "mlops-console"), ("mlflow", "MLflow")):
            r = results.get(f"{key}_{copies}")
            if r:
                print(
                    f"{label + f', {copies} at once':34} {r['before_mb']:10.0f} {r['growth_mb']:9.0f} "
                    f"{r['growth_x_body']:6.2f}x {r['growth_x_bodies']:8.2f}x "
                    f"{r['after_2s_growth_mb']:14.0f} {r['after_10s_growth_mb']:9.0f} "
                    f"{r['answered']:>5}/{copies:<3} {r['seconds']:6.2f}"
                )
    ratios = {}
    for copies in (1, 4):
        ours, theirs = results.get(f"ours_{copies}"), results.get(f"mlflow_{copies}")
        if ours and theirs and ours["growth_mb"] > 0:
            ratios[f"peak_growth_{copies}_mlflow_vs_ours"] = theirs["growth_mb"] / ours["growth_mb"]
    if "ours_1" in results:
        print(
            f"one request: ours grows {results['ours_1']['growth_x_body']:.2f}x the body "
            f"(target under 3x)"
            + (
                f"; MLflow grows {ratios['peak_growth_1_mlflow_vs_ours']:.1f}x as much as ours"
                if "peak_growth_1_mlflow_vs_ours" in ratios
                else ""
            )
        )
    if "peak_growth_4_mlflow_vs_ours" in ratios:
        print(
            f"four at once: MLflow grows {ratios['peak_growth_4_mlflow_vs_ours']:.1f}x as much as ours"
        )
    results["ratios"] = ratios
    return results


# --- main -------------------------------------------------------------------------------------


def previous_results(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--anchor-python", help="Python of .venv-bench (with MLflow); omit to skip MLflow"
    )
    ap.add_argument("--seconds", type=int, default=15, help="seconds per wrk case")
    ap.add_argument(
        "--only",
        default=",".join(CASES),
        help=f"comma-separated cases to run, of {', '.join(CASES)} (default: all)",
    )
    args = ap.parse_args()
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in only if c not in CASES]
    if unknown or not only:
        ap.error(f"--only takes some of {', '.join(CASES)}; not {', '.join(unknown) or 'nothing'}")
    if "wrk" in only and not shutil.which("wrk"):
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
    mlflow_dir = (
        save_mlflow_model(args.anchor_python, bundle, frame, root) if args.anchor_python else None
    )
    out = HERE / "results" / "serving.json"
    results = previous_results(out)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    if "wrk" in only:
        results.update(wrk_cases(args, bundle, frame, mlflow_dir, root), measured_at=stamp)
    if "lanes" in only:
        results["lanes"] = {
            "measured_at": stamp,
            **lanes_cases(args, bundle, frame, mlflow_dir, root),
        }
    if "memory" in only:
        results["memory"] = {
            "measured_at": stamp,
            **memory_cases(args, bundle, frame, mlflow_dir, root),
        }
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
