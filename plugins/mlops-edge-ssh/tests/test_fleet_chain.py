"""Issue 15: a pipeline's `[deploy] target = "fleet"` with a group rolls out automatically
after promotion, under the same gates. The real automation chain (the process the daemon
starts for a claimed chain job: `python -m mlops_console.automation.chain WS JOB`) trains,
gates and registers a version, and its deploy step rolls it out to the devices of the
pipeline's group; the result is read on the devices' own files, and the other group's
devices are checked untouched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_fleet_rollout import serving, vid

from mlops_console.workspace import Workspace

pytestmark = pytest.mark.slow

PIPELINE = (
    'name = "p"\nregister_as = "m"\nseed = 7\n'
    '[data]\ndataset = "d"\ntarget = "label"\ntime_column = "ts"\nentity_column = "id"\n'
    '[model]\nestimator = "sklearn.linear_model.LogisticRegression"\n'
    "params = {{ max_iter = 500, C = {c} }}\n"
    '[search]\nmethod = "none"\n'
    '[deploy]\ntarget = "fleet"\nauto = true\n'
    'options = {{ group = "plant-a", waves = "1,100%", soak = "1s" }}\n'
)


def _frame(n: int = 600, invert: bool = False):
    """Rows whose label follows x1 and the plan (inverted: a model that learns them answers
    the opposite of a good one)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    x1 = rng.normal(size=n)
    plan = rng.choice(["basic", "pro", "max"], n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(2.5 * x1 + (plan == "pro"))))).astype(int)
    return pd.DataFrame(
        {
            "id": [f"u{i}" for i in range(n)],
            "ts": pd.date_range("2025-01-01", periods=n, freq="h"),
            "x1": x1.round(4),
            "x2": rng.normal(size=n).round(4),
            "plan": plan,
            "label": 1 - y if invert else y,
        }
    )


@pytest.fixture
def chain_ws(device_lab_factory, tmp_path):
    """Three devices (gw-01, gw-02 in plant-a; gw-03 in plant-b), and a workspace with the
    data and the pipeline, nothing trained yet."""
    lab = device_lab_factory(3)
    ws = Workspace.init(tmp_path / "ws")
    try:
        _frame().to_parquet(ws.root / "data" / "d.parquet")
        ws.data.add("d", "data/d.parquet", timestamp="ts", entities=["id"])
        (ws.root / "pipelines" / "p.toml").write_text(PIPELINE.format(c=1.0))
        (ws.root / "fleet.toml").write_text(lab.fleet_toml())
        yield lab, ws
    finally:
        ws.close()


def run_chain(ws) -> tuple:
    """Submit a chain of pipeline p, claim it as the daemon does and run its process."""
    ws.jobs.submit("chain", "p", max_attempts=1)
    job = ws.jobs.claim_next()
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_console.automation.chain", str(ws.root), str(job.id)],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    chain = ws.jobs.get(job.id)
    steps = {s.kind: s for s in ws.jobs.list(chain_id=job.id)}
    return chain, steps, ws.jobs.logs(job.id)


def untouched(root: Path) -> bool:
    """Nothing of any model ever reached this device."""
    return not (root / "current").is_symlink() and not (root / "objects").exists()


def test_a_chain_rolls_each_promoted_version_out_to_its_group_only(chain_ws):
    lab, ws = chain_ws
    a1, a2, b1 = (Path(d.root) for d in lab.devices)
    champion = ws.config.registry.champion_alias

    # the first chain: trained, gated, registered, rolled out to plant-a, promoted
    chain, steps, log = run_chain(ws)
    assert (chain.status, chain.outcome) == ("succeeded", "succeeded"), log
    assert steps["deploy"].status == "succeeded", log
    assert steps["deploy"].result == {"decision": "first"}, steps["deploy"].detail
    v1 = vid(ws, "m/1")
    assert serving(a1) == serving(a2) == v1
    assert untouched(b1)
    assert champion in ws.models.resolve("m/1").aliases
    rec = ws.deployments.get("m")
    assert (rec.target, rec.version, rec.endpoint) == ("fleet", 1, "fleet:plant-a")

    # a retrain with other weights: the next chain rolls m/2 out the same way, gated
    (ws.root / "pipelines" / "p.toml").write_text(PIPELINE.format(c=0.3))
    chain, steps, log = run_chain(ws)
    assert (chain.status, chain.outcome) == ("succeeded", "succeeded"), log
    assert steps["deploy"].result == {"decision": "promote"}, steps["deploy"].detail
    v2 = vid(ws, "m/2")
    assert v2 != v1
    assert serving(a1) == serving(a2) == v2
    for root in (a1, a2):  # m/1 kept as previous: a rollback needs no transfer
        assert (root / "previous").resolve().name == v1
    assert untouched(b1)
    assert champion in ws.models.resolve("m/2").aliases
    assert champion not in ws.models.resolve("m/1").aliases
    assert ws.deployments.get("m").version == 2

    # the rollouts were gated and kept to the group (the fleet's own record of them)
    from mlops_edge_ssh.service import FleetService

    with FleetService(ws) as svc:
        r = svc.store.rollout()
    assert (r.model, r.version, r.state) == ("m", 2, "done")
    assert sorted(d.device for d in r.devices) == ["gw-01", "gw-02"]
    assert all(d.state == "healthy" and d.detail["gate"]["passed"] for d in r.devices)

    # the same gates: golden rows recorded from m/2, then a retrain on flipped labels; m/3
    # fails them on gw-01 (the first wave), is rolled back, and the chain's deploy step
    # fails: the champion stays m/2 and no device of plant-a keeps m/3
    with FleetService(ws) as svc:
        svc.record_golden("m/2")
    _frame(invert=True).to_parquet(ws.root / "data" / "d.parquet")
    chain, steps, log = run_chain(ws)
    # a verdict of the gates, not an error: the daemon does not retrain and retry it
    assert (chain.status, chain.outcome) == ("failed", "gates_failed"), log
    assert not chain.outcome.retryable
    assert steps["train"].status == "succeeded", steps["train"].detail
    assert steps["deploy"].status == "failed", log
    assert "aborted" in steps["deploy"].detail, steps["deploy"].detail
    assert serving(a1) == serving(a2) == v2
    assert untouched(b1)
    assert champion in ws.models.resolve("m/2").aliases
    assert champion not in ws.models.resolve("m/3").aliases
    assert ws.deployments.get("m").version == 2
    with FleetService(ws) as svc:
        r = svc.store.rollout()
    states = {d.device: d for d in r.devices}
    assert (r.version, r.state) == (3, "aborted"), r.to_dict()
    assert states["gw-01"].state == "failed" and states["gw-01"].detail["gate"]["step"] == "golden"
    assert states["gw-01"].detail["rolled_back_to"] == v2
    assert states["gw-02"].state == "skipped"
