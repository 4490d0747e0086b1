"""Dataset snapshots and ingests that must not lie (issue 19): a missing or damaged
snapshot is named with what to do, files put back bring their version back, concurrent
ingests take one version, a failed `data add` leaves nothing behind, binary files are
named for what they are. Real workspaces, the real `mlops` command."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from tests.conftest import run_cli

PIPELINE = """
name = "small"
experiment = "small"
task = "classification"
seed = 7
register_as = "small"

[data]
dataset = "small"
target = "churned"
time_column = "event_time"
entity_column = "customer_id"

[model]
estimator = "sklearn.linear_model.LogisticRegression"
params = { max_iter = 200 }

[search]
method = "none"

[validation]
holdout_fraction = 0.2
primary_metric = "roc_auc"
"""


def mlops(root: Path, *args: str, ok: bool = True, real: bool = False):
    """The `mlops` command on the workspace: in this process (the same code path, without
    paying Python's start-up each time), or `real`ly in a subprocess."""
    if real:
        proc = run_cli("-w", str(root), *args)
    else:
        from click.testing import CliRunner

        from mlops_console.cli.main import cli

        res = CliRunner().invoke(cli, ["-w", str(root), *args])
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            raise res.exception  # a traceback a user would see
        proc = subprocess.CompletedProcess(args, res.exit_code, res.stdout, res.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def failed(root: Path, *args: str, real: bool = False) -> str:
    proc = mlops(root, *args, ok=False, real=real)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    return proc.stderr


def versions(root: Path, name: str, *extra: str) -> dict:
    proc = mlops(root, "data", "versions", name, "--json", *extra, ok=False)
    listed = json.loads(proc.stdout)
    damaged = any(v["snapshot"] not in ("ok", "verified") for v in listed["versions"])
    # --verify that finds damage fails the command, for scripts
    assert proc.returncode == (1 if damaged and "--verify" in extra else 0), proc.stderr
    return listed


def snapshot_of(root: Path, name: str, version: int) -> Path:
    found = versions(root, name)["versions"]
    return root / ".mlops" / "lake" / next(v for v in found if v["version"] == version)["lake_path"]


def flip_a_bit(path: Path) -> None:
    path.chmod(0o600)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The sample workspace with a small dataset and a model trained on it (small/1)."""
    root = tmp_path_factory.mktemp("lake") / "ws"
    mlops(root, "init", str(root), "--sample")
    lines = (root / "data" / "churn.csv").read_text().splitlines(keepends=True)
    (root / "data" / "small.csv").write_text("".join(lines[:801]))
    mlops(
        root,
        "data",
        "add",
        "small",
        "data/small.csv",
        "--timestamp",
        "event_time",
        "--entity",
        "customer_id",
    )
    (root / "pipelines" / "small.toml").write_text(PIPELINE)
    mlops(root, "run", "small")
    run_id = json.loads(mlops(root, "runs", "list", "--json").stdout)["runs"][0]["id"]
    return root, run_id


def test_a_missing_snapshot_is_named_everywhere_and_ingest_rebuilds_it(trained):
    root, run_id = trained
    snap = snapshot_of(root, "small", 1)
    snap.unlink()
    listed = versions(root, "small")["versions"]
    assert listed[0]["snapshot"] == "missing" and listed[0]["status"] == "accepted"
    assert "MISSING" in mlops(root, "data", "versions", "small").stdout
    said = "small v1's snapshot is missing (.mlops/lake/datasets/small/"
    todo = "`mlops data rebuild small 1` rebuilds it from its source files"
    for args in (
        ("predict", "small/1", "-i", "small", "-o", str(root / "out.parquet")),
        ("test", "small/1", "--json"),
        ("reproduce", run_id),
        ("run", "small"),
        ("data", "diff", "small", "1", "1"),
    ):
        err = failed(root, *args, real=args[0] == "predict")
        assert said in err and todo in err, (args, err)
    # the sample's SQL feature view reads every dataset it names: churn, intact
    mlops(root, "features", "materialize", "region_support")
    churn = snapshot_of(root, "churn", 1)
    churn.unlink()
    err = failed(root, "features", "materialize", "customer")
    assert "churn v1's snapshot is missing" in err and "mlops data rebuild churn 1" in err
    # unchanged files: ingest rebuilds the snapshot instead of saying "unchanged"
    out = mlops(root, "data", "ingest", "small").stdout
    assert "small v1: the snapshot was missing; rebuilt it from its source files" in out
    assert "still v1" in out
    assert versions(root, "small", "--verify")["versions"][0]["snapshot"] == "verified"
    out = mlops(root, "data", "rebuild", "churn").stdout
    assert "churn v1: the snapshot was missing; rebuilt it" in out
    mlops(root, "features", "materialize", "customer")


def test_a_damaged_snapshot_is_found_on_read_and_rebuilt_to_its_digest(trained):
    root, _ = trained
    snap = snapshot_of(root, "small", 1)
    recorded = versions(root, "small")["versions"][0]["snapshot_sha256"]
    flip_a_bit(snap)
    # the quick look in the list cannot see a flipped bit; --verify and every read do
    assert versions(root, "small", "--verify")["versions"][0]["snapshot"] == "damaged"
    err = failed(root, "data", "diff", "small", "1", "1")
    assert "small v1's snapshot is damaged" in err and "do not match the sha256" in err
    assert "mlops data rebuild small 1" in err
    out = mlops(root, "data", "rebuild", "small", "1").stdout
    assert "the snapshot was damaged; rebuilt it from its source files (800 rows)." in out
    after = versions(root, "small", "--verify")["versions"][0]
    assert after["snapshot"] == "verified" and after["snapshot_sha256"] == recorded
    assert "intact; nothing to rebuild" in mlops(root, "data", "rebuild", "small").stdout


def test_a_snapshot_whose_sources_changed_says_restore_from_backup(trained):
    root, _ = trained
    src = root / "data" / "small.csv"
    kept = src.read_bytes()
    snap = snapshot_of(root, "small", 1)
    saved = snap.read_bytes()
    try:
        snap.unlink()
        src.write_bytes(kept.replace(b"\n", b"\r\n", 1))
        err = failed(root, "test", "small/1")
        assert "small v1's snapshot is missing" in err
        assert "its source files changed since it was taken (data/small.csv has" in err
        assert "Restore .mlops/lake/datasets/small/" in err and "from a backup" in err
        err = failed(root, "data", "rebuild", "small", "1")
        assert "cannot be rebuilt" in err and "from a backup" in err
        assert not snap.exists()  # nothing half-written in its place
    finally:
        src.write_bytes(kept)
        if not snap.exists():
            snap.write_bytes(saved)


def test_a_dataset_a_model_was_trained_on_cannot_be_removed(trained):
    root, _ = trained
    err = failed(root, "data", "remove", "small", "--yes")
    assert "cannot be removed" in err and "small/1 (small v1)" in err
    assert versions(root, "small")["versions"]


def _csv(path: Path, rows: list[tuple]) -> None:
    path.write_text("id,amount\n" + "".join(f"{i},{a}\n" for i, a in rows))


@pytest.fixture
def plain(tmp_path):
    root = tmp_path / "ws"
    mlops(root, "init", str(root))
    (root / "data").mkdir(exist_ok=True)
    return root


def test_files_put_back_make_their_version_current_again(plain):
    root = plain
    a, b, c = ([(i, i + k) for i in range(1, 31)] for k in (0.5, 0.25, 0.75))
    data = root / "data" / "t.csv"
    _csv(data, a)
    mlops(root, "data", "add", "t", "data/t.csv")
    _csv(data, b)
    assert "t v2:" in mlops(root, "data", "ingest", "t").stdout
    _csv(data, a)
    out = mlops(root, "data", "ingest", "t").stdout
    assert "t: the files match v1 again; v1 is current (was v2)." in out
    assert versions(root, "t")["current_version"] == 1
    assert (
        json.loads(mlops(root, "data", "show", "t", "--json").stdout)["dataset"]["current_version"]
        == 1
    )
    assert "the files are unchanged; still v1." in mlops(root, "data", "ingest", "t").stdout
    # a version put back that broke the contract stays in quarantine
    _csv(data, [(i, "") for i in range(1, 31)])  # amount is never null in the contract
    assert mlops(root, "data", "ingest", "t", ok=False).returncode == 1  # v3 quarantined
    _csv(data, c)
    assert "t v4:" in mlops(root, "data", "ingest", "t").stdout
    _csv(data, [(i, "") for i in range(1, 31)])
    proc = mlops(root, "data", "ingest", "t", ok=False)
    assert "t: the files match v3 again, which stays in quarantine" in proc.stdout
    assert "v4 stays current" in proc.stdout
    assert versions(root, "t")["current_version"] == 4
    # a --force was for its moment: putting those files back later does not take it again
    assert "ACCEPTED WITH --force" in mlops(root, "data", "ingest", "t", "--force").stdout
    _csv(data, c)
    assert "v4 is current (was v3)" in mlops(root, "data", "ingest", "t").stdout
    _csv(data, [(i, "") for i in range(1, 31)])
    out = mlops(root, "data", "ingest", "t").stdout
    assert "match v3 again, which broke its contract and was accepted with --force" in out
    assert versions(root, "t")["current_version"] == 4
    assert "v3 is current (was v4)" in mlops(root, "data", "ingest", "t", "--force").stdout


def test_concurrent_ingests_of_the_same_files_take_one_version(plain):
    root = plain
    # big enough that reading and profiling it outlasts the processes' start-up jitter
    _csv(root / "data" / "t.csv", [(i, i / 3) for i in range(1, 100_001)])
    mlops(root, "data", "add", "t", "data/t.csv", "--no-ingest")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlops_console.cli.main",
                "-w",
                str(root),
                "data",
                "ingest",
                "t",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and "Traceback" not in err, err
        results.append(json.loads(out))
    assert sorted(r["created"] for r in results) == [False, False, True]
    assert {r["version"]["version"] for r in results} == {1}
    assert [r["message"] for r in results if not r["created"]] == [
        "t: the files are unchanged; still v1."
    ] * 2
    assert [v["version"] for v in versions(root, "t")["versions"]] == [1]


def test_a_failed_add_registers_nothing_and_the_name_can_be_used_again(plain):
    root = plain
    (root / "data" / "bad.csv").write_text("id,amount\n")  # a header, no rows
    err = failed(root, "data", "add", "typo", "data/bad.csv")
    assert "Nothing was registered" in err
    assert json.loads(mlops(root, "data", "list", "--json").stdout)["datasets"] == []
    _csv(root / "data" / "good.csv", [(1, 2.0), (2, 3.0)])
    out = mlops(root, "data", "add", "typo", "data/good.csv").stdout
    assert "typo v1: 2 rows accepted" in out


def test_binary_files_are_named_for_what_they_are(plain):
    root = plain
    with zipfile.ZipFile(root / "data" / "x.csv", "w") as z:
        z.writestr("xl/workbook.xml", "<workbook/>")
    proc = mlops(root, "data", "add", "x", "data/x.csv", ok=False, real=True)
    assert proc.returncode == 1
    assert "data/x.csv looks binary (NUL bytes in its first 4 KB; it starts with " in proc.stderr
    assert "PK\\x03\\x04, a ZIP file — an .xlsx?)" in proc.stderr
    said = [line for line in proc.stderr.splitlines() if not line.startswith("  .. ")]
    assert len(said) == 1 and said[0].startswith("Error: ") and "Warning" not in proc.stderr
    assert json.loads(mlops(root, "data", "list", "--json").stdout)["datasets"] == []
    zeros = root / "data" / "z.csv"
    _csv(zeros, [(1, 2.0), (2, 3.0)])
    mlops(root, "data", "add", "z", "data/z.csv")
    zeros.unlink()
    with open(zeros, "wb") as fh:
        fh.truncate(2 << 30)  # sparse: 2 GB of NUL bytes that take no disk
    err = failed(root, "data", "ingest", "z")
    assert "data/z.csv looks binary (its first 4,096 bytes are all NUL" in err
    assert "empty" not in err


def test_edit_and_remove_a_dataset(plain):
    root = plain
    _csv(root / "data" / "t.csv", [(i, i + 0.5) for i in range(1, 21)])
    mlops(root, "data", "add", "t", "data/t.csv")
    _csv(root / "data" / "u.csv", [(i, i + 0.25) for i in range(1, 21)])
    out = mlops(
        root,
        "data",
        "edit",
        "t",
        "--source",
        "data/u.csv",
        "--entities",
        "id",
        "--timestamp",
        "when",
        "--description",
        "Test amounts",
    ).stdout
    assert "Dataset t updated" in out and "v1 has no column(s) when" in out
    ds = json.loads(mlops(root, "data", "show", "t", "--json").stdout)["dataset"]
    assert (ds["source"], ds["entities"], ds["timestamp"], ds["description"]) == (
        "data/u.csv",
        ["id"],
        "when",
        "Test amounts",
    )
    assert "timestamp column 'when' is missing" in failed(root, "data", "ingest", "t")
    mlops(root, "data", "edit", "t", "--timestamp", "")
    assert "t v2: 20 rows accepted" in mlops(root, "data", "ingest", "t").stdout
    assert "No file matches" in failed(root, "data", "edit", "t", "--source", "data/no.csv")
    lake = sorted((root / ".mlops" / "lake" / "datasets" / "t").glob("*.parquet"))
    assert len(lake) == 2
    out = mlops(root, "data", "remove", "t", "--yes").stdout
    assert "Removed dataset t and its 2 version(s)." in out
    assert "stay until `mlops gc` removes them" in out
    assert all(p.exists() for p in lake)
    assert json.loads(mlops(root, "data", "list", "--json").stdout)["datasets"] == []
    assert "No dataset named 't'" in failed(root, "data", "remove", "t", "--yes")
    gc = json.loads(mlops(root, "gc", "--grace", "0", "--trust-registry", "--json").stdout)
    assert not any(p.exists() for p in lake), gc


def test_a_rebuild_with_other_bytes_is_accepted_only_for_the_same_data(ws, monkeypatch):
    """Another pyarrow may encode the same table into other bytes; a rebuild then checks
    the data against the version's record and updates the digest. Other data: refused."""
    import hashlib

    import pyarrow.parquet as pq

    from mlops_console.data import snapshots

    (ws.root / "data").mkdir(exist_ok=True)
    _csv(ws.root / "data" / "t.csv", [(i, i + 0.5) for i in range(1, 41)])
    ws.data.add("t", "data/t.csv")
    dv = ws.data.ingest("t").version
    snap = ws.data.path("t")
    snap.unlink()
    staged = snapshots.stage_parquet

    def other_writer(table, folder):  # as a pyarrow that encodes differently would
        tmp, _ = staged(table, folder)
        tmp.chmod(0o600)
        pq.write_table(table, tmp, compression="snappy")
        return tmp, hashlib.sha256(tmp.read_bytes()).hexdigest()

    monkeypatch.setattr(snapshots, "stage_parquet", other_writer)
    read = ws.data.read_hashed
    other = read(snapshots.recorded_sources(ws.data, dv)[0], ws.data.get("t"))
    other = other.set_column(1, "amount", [[i + 0.75 for i in range(1, 41)]])
    with monkeypatch.context() as m:  # the same files read into other values
        m.setattr(ws.data, "read_hashed", lambda hashed, ds=None: other)
        with pytest.raises(snapshots.SnapshotError, match="now read into other data .*values"):
            ws.data.rebuild("t")
    assert not snap.exists() and not list(snap.parent.glob(".write-*"))
    assert ws.data.version("t", 1).snapshot_sha256 == dv.snapshot_sha256
    done = ws.data.rebuild("t")
    assert done.digest_changed and "its recorded sha256 was updated" in done.message
    after = ws.data.version("t", 1)
    assert after.snapshot_sha256 != dv.snapshot_sha256
    assert ws.data.snapshot_state(after, full=True) == "verified"
    assert list(ws.data.read("t")["amount"]) == [i + 0.5 for i in range(1, 41)]


def test_a_rebuild_reads_the_files_with_the_datasets_reading_options(plain):
    root = plain
    rows = "".join(f"{i};{i},5\n" if i % 4 else f"{i};-\n" for i in range(1, 41))
    (root / "data" / "eu.csv").write_text("id;amount\n" + rows)
    mlops(
        root, "data", "add", "eu", "data/eu.csv", "--delimiter", ";", "--decimal", ",", "--na", "-"
    )
    recorded = versions(root, "eu")["versions"][0]
    assert {c["name"]: c["type"] for c in recorded["columns"]}["amount"] == "float"
    snapshot_of(root, "eu", 1).unlink()
    assert (
        "rebuilt it from its source files (40 rows)." in mlops(root, "data", "rebuild", "eu").stdout
    )
    after = versions(root, "eu", "--verify")["versions"][0]
    assert after["snapshot"] == "verified"
    assert after["snapshot_sha256"] == recorded["snapshot_sha256"]
