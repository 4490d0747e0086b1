"""The sample pipeline's search here and on a 2-worker Dask cluster on loopback, in one run.

    .venv/bin/python bench/dask_search.py [--candidates 8]

Needs the mlops-dask plugin (installed by `make venv`). Starts a real `dask scheduler` and
two `dask worker --nthreads 1` on 127.0.0.1, and compares the search stage of
`mlops run churn` (the sample pipeline, `--set search.candidates=N`):
  local-1   one process, one thread (n_jobs = 1): the fit time per candidate, f
  local-2   joblib's process pool over this machine's cores (the default)
  dask-2    the same candidates on the two workers
From them: the cost of using the cluster once (connect, version check) c0, the overhead per
candidate o (scatter, ship, schedule, collect), and the break-even of N workers against this
machine's P cores. With the model  local = n f / P  and  cluster = c0 + n (f + o) / N,
a cluster pays off when  f > o P / (N - P)  and  n > c0 / (f / P - (f + o) / N).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(tmp: Path, workers: int) -> tuple[str, list[subprocess.Popen]]:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = open(tmp / "cluster.log", "wb")  # noqa: SIM115 - lives as long as the cluster
    procs = [
        subprocess.Popen(
            [
                BIN / "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    ]
    for i in range(workers):
        procs.append(
            subprocess.Popen(
                [
                    BIN / "dask",
                    "worker",
                    address,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--name",
                    f"w{i + 1}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
    from distributed import Client

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with Client(address, timeout=5, set_as_default=False) as c:
                c.wait_for_workers(workers, timeout=max(1.0, deadline - time.monotonic()))
                return address, procs
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the cluster did not start; see {tmp / 'cluster.log'}")


def stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)


def search_seconds(root: Path, n: int, **options) -> float:
    from mlops_console.workspace import Workspace

    sets = {"search.candidates": n, **options.pop("sets", {})}
    ws = Workspace.open(root)
    try:
        r = ws.pipelines.run("churn", overrides=sets, register=False, **options)
    finally:
        ws.close()
    assert len(r.search) == n, (len(r.search), n)
    return r.stage_seconds["search"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    n, W, P = args.candidates, args.workers, os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    root = tmp / "ws"
    subprocess.run([BIN / "mlops", "init", "--sample", str(root)], check=True, capture_output=True)
    address, procs = start_cluster(tmp, W)
    try:
        from mlops_dask.backend import DaskSearch

        t = time.perf_counter()
        s = DaskSearch({"scheduler": address, "connect_timeout": 10, "min_threads": 1})
        s.open()
        s.close()
        c0 = time.perf_counter() - t
        print(
            f"sample search, {n} candidates x 3 folds; this machine: {P} cores; "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # one thread, as each worker (OMP_NUM_THREADS=1)
            t1 = search_seconds(root, n, sets={"search.n_jobs": 1})
        print(f"  local-1  (one process)        {t1:7.2f} s", flush=True)
        tp = search_seconds(root, n)
        print(f"  local-{P}  (process pool)       {tp:7.2f} s", flush=True)
        td = search_seconds(root, n, compute="dask", scheduler=address)
        print(f"  dask-{W}   ({W} loopback workers)  {td:7.2f} s", flush=True)
    finally:
        stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)
    f = t1 / n
    o = max(0.0, W * td / n - f)  # what each candidate costs beyond its fit, on the cluster
    print(
        f"\nfit time per candidate f = {f:.3f} s; cluster connect + version check c0 = {c0:.2f} s"
    )
    print(f"overhead per candidate on the cluster o = {o:.3f} s ({o / f:.0%} of a fit)")
    print(f"ratios: dask-{W} / local-1 = {td / t1:.2f}, dask-{W} / local-{P} = {td / tp:.2f}")
    print(f"\nbreak-even against local-{P} (model: local n f/{P}, cluster c0 + n (f + o)/N):")
    for N in (4, 8, 16, 32):
        if N <= P:
            continue
        gain = f / P - (f + o) / N
        min_f = o * P / (N - P)
        at_f = f"from {max(1, round(c0 / gain))} candidate(s) on" if gain > 0 else "not at this f"
        print(
            f"  N = {N:2d} workers: pays off for fits over {min_f:.3f} s per candidate; "
            f"at f = {f:.3f} s: {at_f}"
        )


if __name__ == "__main__":
    main()
