"""Every shipped scenario, for real: start (its setup trains, its servers run), the
objectives fail, the reference solution runs, they pass, reset puts the starting state
back and they fail again. Each also checks the workspace's state directly, apart from
the scenario's own checkers. And a class of 3 students on distinct ports."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from tests.conftest import run_cli

from mlops_console.labs import classroom
from mlops_console.workspace import Workspace

pytestmark = pytest.mark.slow


def _champion(ws: Workspace) -> int:
    return ws.models.resolve("churn@champion").version


def _serving(ws: Workspace) -> int | None:
    """The version the server itself says it serves (not the registry's record)."""
    rec = ws.deployments.get("churn")
    return httpx.get(rec.endpoint + "/version", timeout=5).json().get("version")


def _after_solve(name: str, ws: Workspace) -> None:
    """What the solution must have done, read from the workspace, not from the checkers."""
    if name == "first-model":
        assert _serving(ws) == _champion(ws) == 1
    elif name == "drift":
        assert _champion(ws) == 2 and _serving(ws) == 2
        actions = [e.action for e in ws.deployments.history("churn")]
        assert actions[-2:] == ["canary", "promote"], actions
    elif name == "broken-file":
        statuses = [v.status for v in ws.data.versions("churn")]
        assert "quarantined" in statuses and "forced" not in statuses, statuses
    elif name == "bad-model":
        bad = ws.labs._state().vars["bad"]
        assert _champion(ws) != bad and _serving(ws) != bad
        assert ws.models.history("churn", "champion")[-1].reason.startswith("predictions")
    elif name == "canary-gate":
        rec = ws.deployments.get("churn")
        assert rec.canary_version is None and _serving(ws) == _champion(ws) == 1
    elif name == "decay":
        assert any(a.measure == "decay:roc_auc" for a in ws.alerts.list(deployment="churn"))
    elif name == "latency":
        slow = ws.labs._state().vars["slow"]
        assert _champion(ws) != slow and _serving(ws) != slow
        stats = ws.deployments.status("churn").stats["primary_stats"]
        assert stats["requests"] >= 50 and stats["p99_ms"] < 70, stats


@pytest.fixture(scope="module")
def drift_lab(tmp_path_factory):
    """The drift scenario, started once: its test and the class test share its build."""
    ws = Workspace.init(tmp_path_factory.mktemp("drift") / "ws")
    yield ws, ws.labs.start("drift")
    ws.labs.stop()
    ws.close()


def _cycle(name: str, ws: Workspace, started) -> None:
    assert not started.done
    versions_at_start = len(ws.models.versions("churn")) if ws.models.list() else 0
    solved = ws.labs.solve()
    assert solved.done, [(o.id, o.reason) for o in solved.objectives if not o.passed]
    _after_solve(name, ws)
    again = ws.labs.reset()
    failing = [o.id for o in again.objectives if not o.passed]
    assert failing, "after reset every objective still passes"
    assert [o.passed for o in again.objectives] == [o.passed for o in started.objectives]
    now = len(ws.models.versions("churn")) if ws.models.list() else 0
    assert now == versions_at_start  # what the solution trained is gone
    kinds = [e.kind for e in ws.labs.events()]
    for kind in ("start", "inject", "solve", "pass", "check", "reset"):
        assert kind in kinds, (kind, kinds)


def test_drift(drift_lab):
    from mlops_console.automation import lifecycle

    ws, started = drift_lab
    assert lifecycle.start(ws).running  # a student's daemon: reset must stop it first
    _cycle("drift", ws, started)
    assert not lifecycle.status(ws).running
    assert _serving(ws) == 1  # reset brought churn/1's server back


@pytest.mark.parametrize(
    "name", ["first-model", "broken-file", "bad-model", "canary-gate", "decay", "latency"]
)
def test_scenario(tmp_path: Path, name: str):
    ws = Workspace.init(tmp_path / "ws")
    try:
        _cycle(name, ws, ws.labs.start(name))
        if name == "first-model":  # the kill after the queries fired; the CLI over it
            said = [e.text for e in ws.labs.events() if e.kind == "inject"]
            assert any("crashes" in text for text in said), said
            ran = run_cli("-w", str(ws.root), "lab", "check", "--json")
            assert ran.returncode == 1 and json.loads(ran.stdout)["done"] is False
            hint = run_cli("-w", str(ws.root), "lab", "hint", check=True)
            assert "hint 1 of 3" in hint.stdout and "mlops data add" in hint.stdout
            events = json.loads(run_cli("-w", str(ws.root), "lab", "events", "--json").stdout)
            assert events["events"][-1]["kind"] in ("check", "hint")
    finally:
        ws.labs.stop()
        ws.close()


def test_class_of_three(drift_lab, tmp_path: Path):
    ws, _ = drift_lab
    root = tmp_path / "class"
    snap = ws.state / "lab" / "start"
    found = classroom.init(root, 3, "drift", base_port=18300, snapshot=snap)
    try:
        assert [s.student for s in found] == ["student-01", "student-02", "student-03"]
        endpoints = set()
        for s in found:
            with Workspace.open(s.root) as student:
                rec = student.deployments.get("churn")
                assert httpx.get(rec.endpoint + "/ping", timeout=5).status_code == 200
                assert 18300 <= rec.config["port"] < 18330
                endpoints.add(rec.endpoint)
                assert student.root.is_relative_to(root.resolve())
        assert len(endpoints) == 3
        assert all(s.done < s.total and not s.error for s in found)
        shown = run_cli("lab", "class", "status", "--root", str(root), "--json", check=True)
        assert [s["student"] for s in json.loads(shown.stdout)["students"]] == [
            s.student for s in found
        ]
        with Workspace.open(found[0].root) as first:
            first.labs.solve()
        marks = {s.student: s.done for s in classroom.status(root)}
        assert marks["student-01"] == found[0].total > marks["student-02"]
        assert classroom.reset(root)[0].done == found[0].done
    finally:
        classroom.stop(root)
