"""The search on a real loopback Dask cluster: candidates there, lineage, fallback, a lost
worker, the version skew comparison and `mlops compute status`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from mlops_console.errors import ConfigError
from mlops_console.workspace import Workspace


def run_pipeline(root, name, stage=None, **options):
    lines: list[str] = []

    def record(text: str) -> None:
        lines.append(text)
        if stage:
            stage(text)

    ws = Workspace.open(root)
    try:
        result = ws.pipelines.run(name, stage=record, **options)
        run = ws.runs.get(result.run_id)
    finally:
        ws.close()
    return result, run, lines


def test_candidates_run_on_the_cluster_and_the_lineage_says_where(cluster, workspace):
    result, run, lines = run_pipeline(workspace, "lr", compute="dask", scheduler=cluster.address)
    assert len(result.search) == 6  # every candidate tracked, as locally
    assert sum("candidate " in line and "/6:" in line for line in lines) == 6
    assert any(f"compute: dask at {cluster.address}, 2 worker(s)" in line for line in lines)
    compute = run.lineage["compute"]
    assert compute["backend"] == "dask"
    assert compute["scheduler"] == cluster.address
    assert len(compute["worker_versions"]) == 2
    for versions in compute["worker_versions"].values():
        assert versions["scikit-learn"] == compute["local_versions"]["scikit-learn"]
    assert run.params["compute.backend"] == "dask"
    assert run.tags["compute.scheduler"] == cluster.address
    # the same seed and data give the same scores on the cluster as here
    local, local_run, _ = run_pipeline(workspace, "lr", compute="local")
    assert [r["score"] for r in result.search] == pytest.approx([r["score"] for r in local.search])
    assert local_run.params["compute.backend"] == "local"


def test_an_unreachable_scheduler_falls_back_to_local_with_one_line(workspace, closed_address):
    address = closed_address
    result, run, lines = run_pipeline(workspace, "lr", compute="dask", scheduler=address)
    why = [line for line in lines if "runs locally" in line]
    assert len(why) == 1 and f"cannot reach the Dask scheduler at {address}" in why[0]
    assert len(result.search) == 6
    assert run.params["compute.backend"] == "local"
    assert run.tags["compute.requested"] == "dask"
    assert "cannot reach" in run.tags["compute.fallback"]


def test_mlops_toml_compute_section_and_a_too_small_cluster(cluster, workspace):
    toml = workspace / "mlops.toml"
    before = toml.read_text()
    try:
        toml.write_text(
            before
            + f'\n[compute]\nbackend = "dask"\nscheduler = "{cluster.address}"\nmin_threads = 3\n'
        )
        _, run, lines = run_pipeline(workspace, "lr")
        assert any("2 thread(s), fewer than [compute].min_threads = 3" in line for line in lines)
        assert run.params["compute.backend"] == "local"
    finally:
        toml.write_text(before)


def test_an_unknown_backend_is_refused_with_what_exists(workspace):
    with pytest.raises(
        ConfigError, match="No installed plugin provides the compute backend 'ray9'.*dask"
    ):
        run_pipeline(workspace, "lr", compute="ray9")


def test_version_skew_compares_real_worker_versions(cluster):
    from distributed import Client

    from mlops_dask.versions import local_versions, version_skew, worker_versions

    with Client(cluster.address, timeout=10, set_as_default=False) as client:
        workers = worker_versions(client)
    local = local_versions()
    assert len(workers) == 2 and version_skew(local, workers) == []
    first = sorted(workers)[0]
    skewed = {k: dict(v) for k, v in workers.items()}
    skewed[first]["scikit-learn"] = "1.4.2"
    skewed[first]["mlops-console"] = None
    problems = version_skew(local, skewed)
    assert problems == [
        f"{first} has scikit-learn 1.4.2, this machine {local['scikit-learn']}",
        f"{first} does not have mlops-console installed",
    ]
    other = dict(workers)
    other[first] = {**workers[first], "numpy": "1.26.4"}
    assert version_skew(local, other) == [
        f"{first} has numpy 1.26.4, this machine {local['numpy']}"
    ]


def test_compute_status_shows_the_cluster_or_why_not(cluster, workspace, closed_address):
    def mlops(*args):
        return subprocess.run(
            [sys.executable, "-m", "mlops_console.cli.main", "-w", str(workspace), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    shown = mlops("compute", "status", "--scheduler", cluster.address, "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["workers"] == 2 and data["threads"] == 2 and data["version_skew"] == []
    assert len(data["worker_list"]) == 2
    text = mlops("compute", "status", "--scheduler", cluster.address)
    assert "2 worker(s), 2 thread(s)" in text.stdout and "Versions match" in text.stdout
    down = mlops("compute", "status", "--scheduler", closed_address)
    assert down.returncode == 1
    assert "Cannot use the cluster: cannot reach the Dask scheduler" in down.stderr
    assert "Traceback" not in down.stderr


@pytest.mark.slow  # ~20-40 s on a busy machine: a real search long enough to lose a worker in
def test_a_worker_lost_mid_search_is_rerun_and_recorded(cluster, workspace):
    """Last in the module: it kills a third worker it starts itself, while the scheduler
    says that worker holds a candidate; every candidate is still scored, so the ones it
    held were run again elsewhere."""
    from distributed import Client

    before = set(cluster.wait_for_workers(2))
    w3 = cluster.start_worker("w3")
    addresses = cluster.wait_for_workers(3)
    (w3_address,) = set(addresses) - before
    held: list[str] = []

    with Client(cluster.address, timeout=10, set_as_default=False) as watcher:

        def kill_while_it_holds_a_candidate(text: str) -> None:
            if "candidate 1/" not in text or held:
                return
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                tasks = watcher.processing(workers=[w3_address]).get(w3_address) or []
                if tasks:
                    held.extend(str(t) for t in tasks)
                    w3.send_signal(signal.SIGKILL)
                    return
                time.sleep(0.02)

        result, run, lines = run_pipeline(
            workspace,
            "trees",
            stage=kill_while_it_holds_a_candidate,
            compute="dask",
            scheduler=cluster.address,
        )
    cluster.procs.pop("w3").wait(timeout=20)
    assert held, "w3 was never seen holding a candidate before the search ended"
    assert len(result.search) == 8  # every candidate scored: those w3 held were rerun
    assert all(c.get("score") is not None for c in result.search), result.search
    compute = run.lineage["compute"]
    assert len(compute["workers_lost"]) == 1 and compute["workers_lost"][0] in addresses
    assert "left during the search" in run.tags["compute.events"]
    assert any("left during the search" in line for line in lines)
