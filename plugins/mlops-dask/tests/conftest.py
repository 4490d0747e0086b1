"""A real Dask scheduler and two workers on loopback, started once for the module's tests
and stopped by pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DASK = str(Path(sys.executable).parent / "dask")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackCluster:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        env = {**os.environ, "OMP_NUM_THREADS": "1", "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        proc = subprocess.Popen([DASK, *args], stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs[name] = proc
        return proc

    def start_scheduler(self) -> None:
        self._spawn(
            "scheduler",
            ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"],
        )

    def start_worker(self, name: str) -> subprocess.Popen:
        # no nanny: the pid we hold is the worker itself, so killing it loses the worker
        return self._spawn(
            name,
            [
                "worker",
                self.address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--name",
                name,
                "--memory-limit",
                "1GiB",
            ],
        )

    def wait_for_workers(self, n: int, timeout: float = 90) -> list[str]:
        """Wait until the scheduler lists exactly n workers; their addresses."""
        from distributed import Client

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                with Client(self.address, timeout=5, set_as_default=False) as c:
                    while time.monotonic() < deadline:
                        workers = c.scheduler_info(n_workers=-1)["workers"]
                        if len(workers) == n:
                            return sorted(workers)
                        time.sleep(0.2)
            except OSError as exc:
                last = exc
                time.sleep(0.3)
        raise AssertionError(f"the cluster did not reach {n} workers in {timeout}s ({last})")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def stop_all(self) -> None:
        for name in [n for n in self.procs if n != "scheduler"] + ["scheduler"]:
            if name in self.procs:
                self.stop(name)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LoopbackCluster(tmp_path_factory.mktemp("dask"))
    try:
        c.start_scheduler()
        c.start_worker("w1")
        c.start_worker("w2")
        c.wait_for_workers(2)
        yield c
    finally:
        c.stop_all()


PIPELINE = """
name = "{name}"
task = "classification"
seed = 7

[data]
path = "data/train.csv"
target = "y"

[model]
estimator = "{estimator}"
params = {params}

[search]
method = "random"
candidates = {candidates}
cv_folds = 3

[search.space]
{space}

[validation]
primary_metric = "roc_auc"
min_rows = 50
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A small workspace with a fast pipeline (`lr`) and a slower one (`trees`)."""
    from mlops_console.workspace import Workspace

    root = tmp_path_factory.mktemp("ws") / "ws"
    ws = Workspace.init(root)
    rng = np.random.default_rng(0)
    n = 600
    X = rng.normal(size=(n, 4))
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    df["y"] = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.8, size=n) > 0).astype(int)
    (root / "data").mkdir(exist_ok=True)
    df.to_csv(root / "data" / "train.csv", index=False)
    (root / "pipelines" / "lr.toml").write_text(
        PIPELINE.format(
            name="lr",
            estimator="sklearn.linear_model.LogisticRegression",
            params="{ max_iter = 200 }",
            candidates=6,
            space="C = { low = 0.01, high = 10.0, log = true }",
        )
    )
    (root / "pipelines" / "trees.toml").write_text(
        PIPELINE.format(
            name="trees",
            estimator="sklearn.ensemble.RandomForestClassifier",
            params="{ n_estimators = 60, n_jobs = 1 }",
            candidates=8,
            space="max_depth = { low = 3, high = 12, int = true }",
        )
    )
    ws.close()
    return root


@pytest.fixture
def closed_address() -> str:
    """A loopback scheduler address nothing listens on (a port bound, then released)."""
    return f"tcp://127.0.0.1:{free_port()}"
