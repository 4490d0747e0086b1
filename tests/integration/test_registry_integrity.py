"""Issue 19: the registry and its store never lose or silently misstate what they hold.

Real SQLite files, real `mlops` subprocesses, a real full disk (a small tmpfs).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import run_cli

from mlops_console.workspace import Workspace

FAST = ("--set", "search.method=none")


def _one_sentence(proc: subprocess.CompletedProcess, starts: str) -> str:
    """The command failed with exit 1 and a single `Error:` line, no traceback."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and lines[0].startswith(f"Error: {starts}"), proc.stderr
    return lines[0]


def _statuses(root: Path) -> dict[str, str]:
    out = json.loads(run_cli("-w", str(root), "runs", "list", "--json", check=True).stdout)
    return {r["id"]: r["status"] for r in out["runs"]}


@pytest.fixture(scope="module")
def sample_ws(tmp_path_factory) -> Path:
    """A workspace from `init --sample` (its dataset ingested: a snapshot in the lake) with
    one trained version; each test copies it."""
    root = tmp_path_factory.mktemp("sample") / "w"
    run_cli("init", str(root), "--sample", check=True)
    run_cli("-w", str(root), "run", "churn", *FAST, check=True)
    return root


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    return dest


# --- 1. an empty registry is never started next to stored objects -------------------------


@pytest.mark.parametrize("damage", ["empty", "missing", "garbage"])
def test_a_lost_registry_is_refused_not_replaced_by_an_empty_one(sample_ws, tmp_path, damage):
    root = _copy(sample_ws, tmp_path / "w")
    db = root / ".mlops" / "registry.db"
    for extra in (".mlops/registry.db-wal", ".mlops/registry.db-shm"):
        (root / extra).unlink(missing_ok=True)
    if damage == "empty":
        db.write_bytes(b"")  # what a crash or a full disk can leave
    elif damage == "missing":
        db.unlink()
    else:
        db.write_bytes(b"SQLite format 3\x00" + b"\x17" * 3000)  # half-written, not a database
    before = db.read_bytes() if db.exists() else None
    for args in (("runs", "list"), ("gc", "--dry-run", "--grace", "0"), ("models", "list")):
        line = _one_sentence(run_cli("-w", str(root), *args), str(db))
        assert "restore" in line and "backup" in line and str(root / ".mlops" / "objects") in line
        assert "move it away" not in line and "empty registry" not in line.split(";")[0]
    # nothing was created or changed: the objects are all still there, the file as it was
    assert (db.read_bytes() if db.exists() else None) == before
    assert any((root / ".mlops" / "objects").rglob("*"))
    # `init` on the same folder (idempotent otherwise) refuses too
    _one_sentence(run_cli("init", str(root)), str(db))


def test_a_new_workspace_still_starts_an_empty_registry(tmp_path):
    root = tmp_path / "fresh"
    run_cli("init", str(root), check=True)
    (root / ".mlops" / "registry.db").unlink()  # nothing stored yet: nothing to lose
    assert run_cli("-w", str(root), "runs", "list", check=True).stdout.startswith("No runs")


def test_gc_refuses_a_registry_that_knows_too_few_objects(tmp_path):
    root = tmp_path / "w"
    with Workspace.init(root) as ws:
        ws.models.register("m", artifact=b"model one")
        backup = tmp_path / "backup.db"
        with sqlite3.connect(ws.db.path) as src, sqlite3.connect(backup) as dest:
            src.backup(dest)  # an old backup: it knows one object
        for i in range(3):
            ws.models.register("m", artifact=f"model {i + 2}".encode())
    shutil.copyfile(backup, root / ".mlops" / "registry.db")  # the old backup restored
    for extra in ("registry.db-wal", "registry.db-shm"):
        (root / ".mlops" / extra).unlink(missing_ok=True)
    stored = sorted(p for p in (root / ".mlops" / "objects").rglob("*") if p.is_file())
    assert len(stored) == 4

    line = _one_sentence(run_cli("-w", str(root), "gc", "--grace", "0"), "gc would remove 3 of")
    assert "--trust-registry" in line and "nothing was removed" in line
    _one_sentence(run_cli("-w", str(root), "gc", "--dry-run", "--grace", "0"), "gc would remove")
    assert sorted(p for p in (root / ".mlops" / "objects").rglob("*") if p.is_file()) == stored

    args = ("-w", str(root), "gc", "--grace", "0", "--trust-registry", "--json")
    report = json.loads(run_cli(*args, check=True).stdout)
    assert report["removed"] == 3 and report["kept"] == 1


# --- 2. a full or read-only disk is one sentence, and leaves nothing half-recorded -------


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs of our own (we are root in the test image); unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system holding `folder`, leaving about `leave` bytes free."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as out:
        for size in (1 << 20, 1 << 12, 1):
            while shutil.disk_usage(folder).free >= leave + size:
                try:
                    out.write(b"\0" * size)
                except OSError:
                    break
    return filler


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as con:
        return con.execute("PRAGMA integrity_check").fetchone()[0]


def test_a_full_disk_is_one_clear_sentence_and_no_run_stays_running(sample_ws, small_disk):
    root = _copy(sample_ws, small_disk / "w")
    with open(root / "data" / "churn.csv", "a") as f:  # new rows: ingest must write a snapshot
        f.write((root / "data" / "churn.csv").read_text().splitlines()[-1] + "\n")
    _fill(small_disk)
    attempts = {
        "ingest": ("data", "ingest", "churn"),
        "run": ("run", "churn", *FAST),
        "promote": ("models", "promote", "churn/1", "--alias", "staging"),
    }
    for what, args in attempts.items():
        line = _one_sentence(run_cli("-w", str(root), *args), "The disk holding")
        assert "is full (" in line and "bytes free); free some space" in line, (what, line)
        assert "corrupt" not in line and "move it away" not in line, (what, line)
    for f in small_disk.glob("filler*"):
        f.unlink()
    assert "RUNNING" not in _statuses(root).values()
    assert _integrity(root / ".mlops" / "registry.db") == "ok"
    # with space again, everything works and the registry is whole
    run_cli("-w", str(root), "models", "promote", "churn/1", "--alias", "staging", check=True)


def test_a_run_that_fills_the_disk_ends_failed(sample_ws, small_disk):
    root = _copy(sample_ws, small_disk / "w")
    before = set(_statuses(root))
    # room to open the registry and start the run, not for its artifacts
    _fill(small_disk, leave=160 << 10)
    line = _one_sentence(run_cli("-w", str(root), "run", "churn", *FAST), "The disk holding")
    assert "is full (" in line
    for f in small_disk.glob("filler*"):
        f.unlink()
    statuses = _statuses(root)
    new = {k: v for k, v in statuses.items() if k not in before}
    assert len(new) == 1 and set(new.values()) <= {"FAILED", "KILLED"}, new
    assert _integrity(root / ".mlops" / "registry.db") == "ok"


def test_a_read_only_workspace_is_one_clear_sentence(sample_ws, small_disk):
    root = _copy(sample_ws, small_disk / "w")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    line = _one_sentence(
        run_cli("-w", str(root), "models", "promote", "churn/1", "--alias", "staging"),
        str(root / ".mlops"),
    )
    assert "read-only file system; remount it read-write" in line


# --- 4. a version's gates are never skipped ------------------------------------------------


def test_a_pipeline_version_without_gate_results_is_not_promoted(tmp_path):
    root = tmp_path / "w"
    with Workspace.init(root, sample=True) as ws:
        run = ws.runs.start(experiment="churn", spec="pipelines/churn.toml")
        run.log_artifact(b"a model", "model")
        run.end()
        # what a crash between registering and evaluating left before both were one write
        ws.models.register("churn", run=run.id)
    for alias in ("challenger", "champion"):
        proc = run_cli("-w", str(root), "models", "promote", "churn/1", "--alias", alias)
        line = _one_sentence(proc, "v1 has no recorded gate results")
        assert "its evaluation never finished" in line and "`mlops test churn/1`" in line
    shown = json.loads(run_cli("-w", str(root), "models", "show", "churn/1", "--json").stdout)
    assert shown["aliases"] == []


def test_a_version_is_registered_with_its_gate_results_in_one_write(tmp_path):
    root = tmp_path / "w"
    with Workspace.init(root) as ws:
        failing = {
            "passed": False,
            "results": [{"name": "min roc_auc", "passed": False, "detail": "0.81 < 0.99"}],
        }
        mv = ws.models.register("churn", artifact=b"m", checks=[{"name": "x"}], gates=failing)
        assert mv.gates_passed is False
        assert ws.models.get_version("churn", 1).gates_passed is False
    proc = run_cli("-w", str(root), "models", "promote", "churn/1")
    assert "failed its promotion gates (min roc_auc: 0.81 < 0.99)" in _one_sentence(proc, "churn/1")


# --- 5. alias history is in the order the moves were made -------------------------------

_PROMOTER = """
import random, sys, time
from pathlib import Path
from mlops_console.workspace import Workspace

root, seed, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
with Workspace.open(root) as ws:
    while not go.exists():
        time.sleep(0.01)
    rng = random.Random(seed)
    for _ in range(40):
        ws.models.promote(f"m/{rng.randint(1, 4)}")
"""


def test_concurrent_promotes_keep_the_history_in_order(tmp_path):
    root = tmp_path / "w"
    with Workspace.init(root) as ws:
        for i in range(4):
            ws.models.register("m", artifact=f"model {i}".encode())
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", _PROMOTER, str(root), str(seed), str(go)])
        for seed in range(4)
    ]
    time.sleep(1.0)  # every process has opened the workspace
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]

    hist = json.loads(
        run_cli("-w", str(root), "models", "history", "m", "--json", check=True).stdout
    )
    events = [h for h in hist["history"] if h["alias"] == "champion"]
    assert len(events) > 40  # the race did happen (no-op promotes are not events)
    current = json.loads(run_cli("-w", str(root), "models", "show", "m@champion", "--json").stdout)
    assert events[-1]["to_version"] == current["version"]
    for before, after in itertools.pairwise(events):
        assert after["from_version"] == before["to_version"], (before, after)
        assert after["from_version"] != after["to_version"]
        assert after["at"] >= before["at"]


def test_promoting_the_current_version_changes_nothing(tmp_path):
    root = tmp_path / "w"
    with Workspace.init(root) as ws:
        for i in range(2):
            ws.models.register("churn", artifact=f"model {i}".encode())
    w = ("-w", str(root))
    run_cli(*w, "models", "promote", "churn/1", check=True)
    run_cli(*w, "models", "promote", "churn/2", check=True)
    again = run_cli(*w, "models", "promote", "churn/2", check=True)
    assert again.stdout.strip() == "churn@champion is already v2; nothing changed."
    hist = json.loads(run_cli(*w, "models", "history", "churn", "--json", check=True).stdout)
    assert [(h["from_version"], h["to_version"]) for h in hist["history"]] == [(None, 1), (1, 2)]
    assert "v2 -> v1 (rollback)" in run_cli(*w, "models", "rollback", "churn", check=True).stdout


# --- 7a. a run whose process died is not RUNNING forever ----------------------------------


def _running_run(db: Path, timeout: float = 60.0) -> tuple[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                row = con.execute(
                    "SELECT id, pid FROM run WHERE status = 'RUNNING' AND pid IS NOT NULL"
                ).fetchone()
            if row:
                return row
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    raise AssertionError("no run started")


def test_a_run_killed_without_a_daemon_is_marked_killed(sample_ws, tmp_path):
    root = _copy(sample_ws, tmp_path / "w")
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_WORKSPACE"}
    # the default search (20 candidates, 3 folds) trains long enough to be killed in it
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops_console.cli.main", "-w", str(root), "run", "churn"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run_id, pid = _running_run(root / ".mlops" / "registry.db")
        assert pid == proc.pid
        assert _statuses(root)[run_id] == "RUNNING"  # a live process's run is left alone
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert _statuses(root)[run_id] == "KILLED"
    shown = json.loads(run_cli("-w", str(root), "runs", "show", run_id, "--json").stdout)
    assert shown["tags"]["error"] == f"its process (pid {pid}) ended without finishing the run"
    assert shown["end_time"] >= shown["start_time"]


def test_a_reused_pid_does_not_keep_a_run_running(ws):
    from mlops_console.tracking.runs import end_abandoned_runs

    live = ws.runs.start(experiment="e")
    other = ws.runs.start(experiment="e")
    old = ws.runs.start(experiment="e")
    with ws.db.write() as conn:
        # this process's pid, but another start time: a process that ended, its pid reused
        conn.exec_driver_sql("UPDATE run SET pid_start = pid_start + 1 WHERE id = ?", (other.id,))
        # recorded before runs had pids: nothing says whether it still runs
        conn.exec_driver_sql("UPDATE run SET pid = NULL WHERE id = ?", (old.id,))
    assert end_abandoned_runs(ws.db) == [other.id]
    assert {r.id: r.status for r in ws.runs.search()} == {
        live.id: "RUNNING",
        other.id: "KILLED",
        old.id: "RUNNING",
    }
    live.end()


def test_a_run_from_another_host_is_judged_by_its_heartbeat_not_its_pid(ws):
    from mlops_console.tracking.runs import STALE_SECONDS, end_abandoned_runs

    fresh = ws.runs.start(experiment="e")
    stale = ws.runs.start(experiment="e")
    with ws.db.write() as conn:
        # recorded in another container or on another host: a dead pid there means nothing
        conn.exec_driver_sql(
            "UPDATE run SET pid = 999999999, lineage = json_set(lineage, '$.process.machine', "
            "'elsewhere:1')"
        )
        conn.exec_driver_sql(
            "UPDATE run SET heartbeat_at = ? WHERE id = ?",
            (time.time() - STALE_SECONDS - 60, stale.id),
        )
    assert end_abandoned_runs(ws.db) == [stale.id]
    assert ws.runs.get(fresh.id).status == "RUNNING"
    assert ws.runs.get(stale.id).status == "KILLED"
    fresh.end()


def test_a_running_run_renews_its_heartbeat(ws, monkeypatch):
    from mlops_console.tracking import active

    monkeypatch.setattr(active, "HEARTBEAT_SECONDS", 0.2)
    run = ws.runs.start(experiment="e")

    def heartbeat() -> float:
        with ws.db.read() as conn:
            return conn.exec_driver_sql(
                "SELECT heartbeat_at FROM run WHERE id = ?", (run.id,)
            ).scalar()

    first = heartbeat()
    deadline = time.monotonic() + 10
    while heartbeat() == first and time.monotonic() < deadline:
        time.sleep(0.1)
    assert heartbeat() > first
    run.end()
