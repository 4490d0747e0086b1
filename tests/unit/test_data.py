import json
import stat

import pytest

from mlops_console.data.reading import DataError
from mlops_console.errors import Conflict, NotFound

HEADER = "customer_id,event_time,amount,plan,churned\n"


def rows(n, start=0, plan="basic", amount=10.0):
    return "".join(
        f"C{i:03d},2025-01-{1 + i % 28:02d}T00:00:00,{amount + i % 7},{plan if i % 2 else 'pro'},{i % 2}\n"
        for i in range(start, start + n)
    )


@pytest.fixture
def dws(ws):
    (ws.root / "data" / "sales.csv").write_text(HEADER + rows(200))
    ws.data.add("sales", "data/sales.csv", timestamp="event_time", entities=["customer_id"])
    return ws


def registry_state(ws):
    with ws.db.read() as conn:
        return conn.exec_driver_sql(
            "SELECT dataset_name, version, status, digest FROM dataset_version ORDER BY 1, 2"
        ).all()


def test_ingest_snapshot_contract_and_profile(dws):
    r = dws.data.ingest("sales")
    assert r.created and r.version.version == 1 and r.version.status == "accepted"
    assert (dws.root / "contracts" / "sales.toml").exists()
    frame = dws.data.read("sales")
    assert len(frame) == 200 and list(frame.columns) == [
        "customer_id",
        "event_time",
        "amount",
        "plan",
        "churned",
    ]
    prof = dws.data.profile("sales")
    assert prof["rows"] == 200
    amount = prof["columns"]["amount"]
    assert (
        amount["min"] == 10.0
        and amount["max"] == 16.0
        and sum(amount["histogram"]["counts"]) == 200
    )
    assert {t["value"] for t in prof["columns"]["plan"]["top"]} == {"basic", "pro"}
    contract = dws.data.contract("sales")
    assert contract.columns["plan"].categories == ["basic", "pro"]
    assert contract.keys.unique == ["customer_id", "event_time"]
    snap = dws.data.path("sales")
    # immutable and the owner's alone; the mode, not os.access, since root may write anyway
    assert snap.is_file() and stat.S_IMODE(snap.stat().st_mode) == 0o400


def test_unchanged_files_make_no_new_version(dws):
    dws.data.ingest("sales")
    again = dws.data.ingest("sales")
    assert not again.created and again.version.version == 1 and "unchanged" in again.message
    assert len(dws.data.versions("sales")) == 1


def test_new_data_new_version_and_diff(dws):
    dws.data.ingest("sales")
    (dws.root / "data" / "sales.csv").write_text(HEADER + rows(300, amount=12.0))
    v2 = dws.data.ingest("sales").version
    assert v2.version == 2 and v2.status == "accepted" and v2.rows == 300
    d = dws.data.diff("sales")
    assert (d["from"], d["to"], d["rows"]) == (1, 2, [200, 300])
    assert d["columns"]["amount"]["median"][1] > d["columns"]["amount"]["median"][0]
    assert d["columns"]["amount"]["psi"] > 0.1
    assert d["schema"] == {"added": [], "removed": [], "type_changed": {}}


@pytest.mark.parametrize(
    "body, rule",
    [
        (rows(200, plan="enterprise"), "categories"),
        (rows(200, amount=1000.0), "range"),
        (rows(200) + "C999,2025-02-01T00:00:00,,basic,1\n", "not_null"),
        (rows(50), "row_count"),
        (rows(200) + rows(1), "unique_keys"),
    ],
)
def test_contract_breaks_quarantine_the_version(dws, body, rule):
    dws.data.ingest("sales")
    (dws.root / "data" / "sales.csv").write_text(HEADER + body)
    r = dws.data.ingest("sales")
    assert r.version.status == "quarantined" and "QUARANTINED" in r.message
    assert rule in {x["rule"] for x in r.version.failed_rules}
    assert dws.data.get("sales").current_version == 1
    assert len(dws.data.read("sales")) == 200  # still v1
    with pytest.raises(Conflict, match="quarantined"):
        dws.data.path("sales", 2)
    assert (dws.root / "data" / "sales.csv").exists()  # the raw file is never touched
    again = dws.data.ingest("sales")
    assert not again.created and "quarantine" in again.message


def test_type_change_is_reported_per_column(dws):
    dws.data.ingest("sales")
    (dws.root / "data" / "sales.csv").write_text(HEADER + rows(200).replace(",10.0,", ",ten,", 1))
    r = dws.data.ingest("sales")
    failed = {(x["rule"], x["column"]) for x in r.version.failed_rules}
    assert ("type", "amount") in failed
    detail = next(x["detail"] for x in r.version.failed_rules if x["rule"] == "type")
    assert "float" in detail and "string" in detail


def test_force_accepts_deliberately_and_runs_say_so(dws):
    dws.data.ingest("sales")
    (dws.root / "data" / "sales.csv").write_text(HEADER + rows(200, plan="enterprise"))
    dws.data.ingest("sales")
    forced = dws.data.ingest("sales", force=True)
    assert forced.version.status == "forced" and "--force" in forced.message
    assert dws.data.get("sales").current_version == 2
    with dws.runs.start() as run:
        dws.data.read("sales", run=run)
    rec = dws.runs.get(run.id)
    assert rec.inputs[0]["forced"] is True and rec.inputs[0]["version"] == "v2"
    assert rec.tags["data_forced"] == "sales@v2"


def test_duplicates_in_the_first_version_are_quarantined_with_examples(ws):
    (ws.root / "data" / "d.csv").write_text(HEADER + rows(10) + rows(2))
    ws.data.add("d", "data/d.csv", timestamp="event_time", entities=["customer_id"])
    r = ws.data.ingest("d")
    rule = next(x for x in r.version.failed_rules if x["rule"] == "unique_keys")
    assert "2 duplicate row(s)" in rule["detail"] and "C000" in rule["detail"]
    with pytest.raises(NotFound, match="no accepted version"):
        ws.data.read("d")


@pytest.mark.parametrize(
    "content, message",
    [
        (
            HEADER + "C1,2025-01-01T00:00:00,1.0,basic,0\nC2,2025-01-02T00:00:00,2.0\n",
            "line 3: expected 5 fields, got 3",
        ),
        (HEADER.encode() + b"C1,2025-01-01T00:00:00,1.0,b\xe9sic,0\n", "not valid UTF-8"),
        ("", "is empty"),
        (HEADER, "no rows"),
        ("customer_id,amount\nC1,1\n", "timestamp column 'event_time' is missing"),
        ("customer_id,event_time\nC1,yesterday\n", "should hold timestamps"),
    ],
)
def test_bad_files_are_refused_clearly_and_change_nothing(dws, content, message):
    dws.data.ingest("sales")
    before = registry_state(dws)
    path = dws.root / "data" / "sales.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=message) as err:
        dws.data.ingest("sales")
    assert "sales.csv" in str(err.value)
    assert registry_state(dws) == before
    assert path.read_bytes() == (content if isinstance(content, bytes) else content.encode())


def test_glob_that_matches_nothing(ws):
    with pytest.raises(DataError, match="No file matches"):
        ws.data.add("x", "data/nothing*.csv")
    assert ws.data.list() == []


def test_file_changing_while_read_is_refused(dws, monkeypatch):
    from mlops_console.data import ingest

    real = ingest.read_file

    def read_while_growing(path, rel, *how):
        table = real(path, rel, *how)
        with open(path, "a") as fh:  # another program is still writing the file
            fh.write(rows(1, start=500))
        return table

    monkeypatch.setattr(ingest, "read_file", read_while_growing)
    with pytest.raises(DataError, match="changed while it was being read"):
        dws.data.ingest("sales")
    assert registry_state(dws) == []


def test_several_files_and_parquet(ws):
    import pandas as pd

    (ws.root / "data" / "a.csv").write_text(HEADER + rows(100))
    pd.read_csv(ws.root / "data" / "a.csv").iloc[:0]
    frame = pd.DataFrame(
        {
            "customer_id": ["X1"],
            "event_time": pd.to_datetime(["2025-03-01"]),
            "amount": [5.0],
            "plan": ["pro"],
            "churned": [0],
        }
    )
    frame.to_parquet(ws.root / "data" / "b.parquet")
    ws.data.add("mix", "data/[ab].*", timestamp="event_time", entities=["customer_id"])
    v = ws.data.ingest("mix").version
    assert v.rows == 101 and [s["path"] for s in v.sources] == ["data/a.csv", "data/b.parquet"]


def test_cli_data_commands(dws):
    from tests.conftest import run_cli

    w = str(dws.root)
    out = json.loads(run_cli("-w", w, "data", "ingest", "sales", "--json", check=True).stdout)
    assert out["version"]["status"] == "accepted"
    (dws.root / "data" / "sales.csv").write_text(HEADER + rows(200, plan="enterprise"))
    proc = run_cli("-w", w, "data", "ingest", "sales")
    assert proc.returncode == 1 and "QUARANTINED" in proc.stdout and "categories" in proc.stdout
    show = run_cli("-w", w, "data", "show", "sales", check=True).stdout
    assert "QUARANTINED" in show and "'enterprise'" in show and "--force" in show
    listing = json.loads(run_cli("-w", w, "data", "list", "--json", check=True).stdout)
    assert listing["datasets"][0]["quarantined"] == 1
    vers = json.loads(run_cli("-w", w, "data", "versions", "sales", "--json", check=True).stdout)
    assert [v["status"] for v in vers["versions"]] == ["accepted", "quarantined"]
    d = json.loads(run_cli("-w", w, "data", "diff", "sales", "1", "2", "--json", check=True).stdout)
    assert d["columns"]["plan"]["new_categories"] == ["enterprise"]


def test_gc_sweeps_orphaned_snapshots_but_keeps_versions(dws):
    dws.data.ingest("sales")
    orphan = dws.state / "lake" / "datasets" / "sales" / "deadbeef.parquet"
    orphan.write_bytes(b"PAR1")
    report = dws.gc(grace_seconds=0)
    assert report.lake_files_removed == ["datasets/sales/deadbeef.parquet"] and not orphan.exists()
    assert len(dws.data.read("sales")) == 200
    profile_hash = dws.data.version("sales").profile_hash
    assert dws.artifacts.exists(profile_hash)
