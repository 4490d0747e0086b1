"""Drills: kill -9 at random points of real commands, then check the workspace with a
checker that does not use the project's code (tests/integrity.py).

Each drill ends the same way: the next command that opens the workspace recovers what
the killed one left (a run it was recording), the checker finds nothing wrong, and the
workspace still trains, registers and promotes.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import run_cli
from tests.integrity import problems
from tests.unit.test_pipeline import SPEC, make_data

from mlops_console.workspace import Workspace

pytestmark = pytest.mark.slow


def _workspace(root: Path) -> Path:
    ws = Workspace.init(root)
    make_data().to_parquet(ws.root / "data" / "d.parquet")
    ws.data.add("d", "data/d.parquet", timestamp="ts", entities=["id"])
    ws.data.ingest("d")
    (ws.root / "pipelines" / "p.toml").write_text(
        SPEC.format(auto="true", extra="").replace("candidates = 4", "candidates = 2")
    )
    ws.close()
    return root


def _start(root: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_WORKSPACE"}
    return subprocess.Popen(
        [sys.executable, "-m", "mlops_console.cli.main", "-w", str(root), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # its search workers die with it
    )


def _kill_at(proc: subprocess.Popen, delay: float) -> bool:
    """SIGKILL the command's whole process group after `delay` s; False if it ended first."""
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    proc.wait(timeout=30)
    return True


def _timed(root: Path, *args: str) -> float:
    t0 = time.monotonic()
    proc = _start(root, *args)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err.decode()
    return time.monotonic() - t0


def test_kill_9_at_random_points_of_ingest_training_and_promotion(tmp_path):
    root = _workspace(tmp_path / "ws")
    rng = random.Random(int(os.environ.get("MLOPS_DRILL_SEED", "19")))
    # How long each command takes here, now: the kill points spread over its whole run
    # whatever the machine's load.
    durations = {"run": _timed(root, "run", "p")}
    (root / "data" / "d.parquet").unlink()
    make_data(seed=1).to_parquet(root / "data" / "d.parquet")
    durations["ingest"] = _timed(root, "data", "ingest", "d")
    durations["promote"] = _timed(root, "models", "promote", "m/1", "-a", "staging")
    killed = {"run": 0, "ingest": 0, "promote": 0}
    for i in range(12):
        op = ("run", "ingest", "promote")[i % 3]
        if op == "run":
            args = ("run", "p")
        elif op == "ingest":
            make_data(seed=10 + i).to_parquet(root / "data" / "d.parquet")
            args = ("data", "ingest", "d")
        else:
            args = ("models", "promote", f"m/{rng.randint(1, 2)}", "-r", f"drill {i}")
        proc = _start(root, *args)
        killed[op] += _kill_at(proc, rng.uniform(0.05, durations[op]))
        # the next command to open the workspace recovers what the killed one left
        listing = run_cli("-w", str(root), "runs", "list")
        assert listing.returncode == 0, listing.stderr
        assert "Traceback" not in listing.stderr
        found = problems(root)
        assert not found, f"after killing `mlops {' '.join(args)}` (drill {i}): {found}"
    assert sum(killed.values()) >= 6, killed  # most commands were killed, not finished
    # and the workspace still does the whole job
    _timed(root, "run", "p")
    assert problems(root) == []
    con = sqlite3.connect(root / ".mlops" / "registry.db")
    statuses = {s for (s,) in con.execute("SELECT DISTINCT status FROM run")}
    con.close()
    assert "RUNNING" not in statuses, statuses


def test_the_checker_finds_what_is_wrong(tmp_path):
    """The checker itself can fail: each kind of damage is reported."""
    root = _workspace(tmp_path / "ws")
    _timed(root, "run", "p")
    assert problems(root) == []

    def damaged(name: str, harm) -> list[str]:
        copy = tmp_path / name
        shutil.copytree(root, copy)
        harm(copy)
        return problems(copy)

    def flip_snapshot(copy: Path) -> None:
        snap = next((copy / ".mlops" / "lake").rglob("*.parquet"))
        data = bytearray(snap.read_bytes())
        data[len(data) // 2] ^= 0x10
        snap.write_bytes(bytes(data))

    def drop_object(copy: Path) -> None:
        con = sqlite3.connect(copy / ".mlops" / "registry.db")
        (digest,) = con.execute("SELECT artifact_hash FROM model_version").fetchone()
        con.close()
        (copy / ".mlops" / "objects" / digest[:2] / digest[2:]).unlink()

    def move_alias_behind_history(copy: Path) -> None:
        con = sqlite3.connect(copy / ".mlops" / "registry.db")
        con.execute("UPDATE model_alias SET version = 7 WHERE alias = 'champion'")
        con.commit()
        con.close()

    def leave_a_run_running(copy: Path) -> None:
        con = sqlite3.connect(copy / ".mlops" / "registry.db")
        con.execute("UPDATE run SET status = 'RUNNING', pid = 999999999")
        con.commit()
        con.close()

    assert any("does not match" in p for p in damaged("flip", flip_snapshot))
    assert any("is missing" in p for p in damaged("drop", drop_object))
    assert any("history ends at" in p for p in damaged("alias", move_alias_behind_history))
    assert any("no process runs it" in p for p in damaged("run", leave_a_run_running))
