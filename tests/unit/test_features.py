import datetime as dt
import random

import numpy as np
import pandas as pd
import pytest

from mlops_console.data.reading import DataError
from mlops_console.errors import MlopsError, NotFound

T0 = dt.datetime(2025, 1, 1)


def _ts(hours):
    return T0 + dt.timedelta(hours=hours)


def make_view(ws, name, rows, ttl="0", created=False, extra=""):
    """rows: (entity, hours, value[, created_hours])"""
    frame = pd.DataFrame(
        {
            "eid": [r[0] for r in rows],
            "ts": [_ts(r[1]) for r in rows],
            "value": [r[2] for r in rows],
            **({"created": [_ts(r[3]) for r in rows]} if created else {}),
        }
    )
    path = ws.root / "data" / f"{name}.parquet"
    frame.to_parquet(path)
    ws.data.add(name, f"data/{name}.parquet", timestamp="ts", entities=[] if created else ["eid"])
    assert ws.data.ingest(name).version.status == "accepted"
    (ws.root / "features" / f"{name}.toml").write_text(
        f'entities = ["eid"]\ntimestamp = "ts"\nttl = "{ttl}"\nsource = "{name}"\n'
        f'features = ["value"]\n' + ('created_timestamp = "created"\n' if created else "") + extra
    )


def entities(*pairs):
    return pd.DataFrame(
        {"eid": [p[0] for p in pairs], "event_timestamp": [_ts(p[1]) for p in pairs]}
    )


def values(ws, ent, refs=("f:value",), **kw):
    return ws.features.training_frame(ent, list(refs), **kw)["value"].tolist()


def test_point_in_time_bounds_and_missing_rows(ws):
    make_view(ws, "f", [("a", 0, 1.0), ("a", 10, 2.0), ("b", 5, 7.0)], ttl="5h")
    ent = entities(
        ("a", 10),
        ("a", 4),
        ("a", 5),
        ("a", 5.01),
        ("a", 15),
        ("a", 15.01),
        ("a", -1),
        ("zz", 10),
        ("b", 5),
    )
    got = values(ws, ent)
    # the exact timestamp matches; the TTL bound is inclusive (5h), a second later is too old
    assert got[:3] == [2.0, 1.0, 1.0] and np.isnan(got[3])
    assert got[4] == 2.0 and np.isnan(got[5])
    # before any row, and an unknown entity: kept, with nulls
    assert np.isnan(got[6]) and np.isnan(got[7]) and got[8] == 7.0


def test_ttl_zero_means_no_limit(ws):
    make_view(ws, "f", [("a", 0, 1.0)], ttl="0")
    assert values(ws, entities(("a", 10_000))) == [1.0]


def test_ties_broken_by_created_timestamp(ws):
    make_view(ws, "f", [("a", 1, 1.0, 5), ("a", 1, 2.0, 9), ("a", 1, 3.0, 7)], created=True)
    assert values(ws, entities(("a", 1), ("a", 2))) == [2.0, 2.0]


def test_row_order_and_duplicates_preserved_and_deterministic(ws):
    make_view(ws, "f", [("a", 0, 1.0), ("b", 0, 2.0), ("a", 5, 3.0)])
    ent = entities(("b", 9), ("a", 1), ("a", 9), ("a", 1), ("b", 1))
    ent.index = [50, 40, 30, 20, 10]
    first = ws.features.training_frame(ent, ["f:value"])
    assert first["value"].tolist() == [2.0, 1.0, 3.0, 1.0, 2.0]
    assert first["eid"].tolist() == ["b", "a", "a", "a", "b"]
    pd.testing.assert_frame_equal(first, ws.features.training_frame(ent, ["f:value"]))


def test_matches_a_brute_force_reference_on_random_data(ws):
    rng = random.Random(7)
    rows = []
    for e in range(30):
        hours = sorted(rng.sample(range(0, 500), 12))
        rows += [(f"e{e}", h, float(rng.randint(0, 1000))) for h in hours]
    make_view(ws, "f", rows, ttl="48h")
    ent = entities(*[(f"e{rng.randint(0, 32)}", rng.uniform(-10, 520)) for _ in range(400)])
    got = values(ws, ent)
    for (eid, ts), value in zip(
        zip(ent["eid"], ent["event_timestamp"], strict=True), got, strict=True
    ):
        cands = [
            r
            for r in rows
            if r[0] == eid and _ts(r[1]) <= ts and _ts(r[1]) >= ts - dt.timedelta(hours=48)
        ]
        want = max(cands, key=lambda r: r[1])[2] if cands else None
        assert (want is None and np.isnan(value)) or want == value, (eid, ts)


def test_several_views_names_and_errors(ws):
    make_view(ws, "f", [("a", 0, 1.0)])
    make_view(ws, "g", [("a", 0, 5.0)])
    ent = entities(("a", 1))
    with pytest.raises(MlopsError, match="full_feature_names"):
        ws.features.training_frame(ent, ["f:value", "g:value"])
    out = ws.features.training_frame(ent, ["f:value", "g:*"], full_feature_names=True)
    assert out["f__value"].tolist() == [1.0] and out["g__value"].tolist() == [5.0]
    with pytest.raises(NotFound, match="no feature"):
        ws.features.training_frame(ent, ["f:nope"])
    with pytest.raises(NotFound, match="No feature view"):
        ws.features.training_frame(ent, ["nope:x"])
    with pytest.raises(MlopsError, match="VIEW:FEATURE"):
        ws.features.training_frame(ent, ["value"])
    with pytest.raises(DataError, match="timestamp"):
        ws.features.training_frame(ent.rename(columns={"event_timestamp": "t"}), ["f:value"])
    with pytest.raises(DataError, match="key column"):
        ws.features.training_frame(ent.rename(columns={"eid": "x"}), ["f:value"])
    bad = ent.assign(eid=[1])
    with pytest.raises(DataError, match="convert one of them"):
        ws.features.training_frame(bad, ["f:value"])


def test_run_records_the_versions_it_read(ws):
    make_view(ws, "f", [("a", 0, 1.0)])
    with ws.runs.start() as run:
        ws.features.training_frame(entities(("a", 1)), ["f:value"], run=run)
    names = {i["name"]: i for i in ws.runs.get(run.id).inputs}
    assert names["f"]["version"] == "v1" and "features:f" in names


def test_sql_view(ws):
    make_view(ws, "f", [("a", 0, 1.0), ("a", 1, 3.0), ("b", 0, 10.0)])
    (ws.root / "features" / "agg.toml").write_text(
        'entities = ["eid"]\ntimestamp = "ts"\n'
        'sql = "SELECT eid, max(ts) AS ts, sum(value) AS total FROM f GROUP BY eid"\n'
    )
    out = ws.features.training_frame(entities(("a", 2), ("b", 0), ("a", 0)), ["agg:total"])
    assert out["total"].tolist()[:2] == [4.0, 10.0] and np.isnan(out["total"].tolist()[2])
    assert ws.features.describe("agg")["features"] == ["total"]


def test_threads_and_workspaces_do_not_see_each_others_views(ws, tmp_path):
    """Joins share one DuckDB database per process; a SQL view's tables (here both named
    f, in two workspaces) and the entity rows stay each call's own."""
    from concurrent.futures import ThreadPoolExecutor

    from mlops_console.workspace import Workspace

    other = Workspace.init(tmp_path / "other")
    sql = 'sql = "SELECT eid, max(ts) AS ts, sum(value) AS total FROM f GROUP BY eid"\n'
    for w, value in ((ws, 1.0), (other, 100.0)):
        make_view(w, "f", [("a", 0, value), ("b", 0, value * 2)])
        (w.root / "features" / "agg.toml").write_text(
            f'entities = ["eid"]\ntimestamp = "ts"\n{sql}'
        )
    ent = entities(("a", 1), ("b", 1))

    def join(i):
        w, want = (ws, [1.0, 2.0]) if i % 2 else (other, [100.0, 200.0])
        out = w.features.training_frame(ent, ["agg:total"])
        return out["total"].tolist() == want

    try:
        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(join, range(40)))
    finally:
        other.close()
    assert list(ent.columns) == ["eid", "event_timestamp"]  # the caller's frame is untouched


def test_online_store_incremental(ws):
    make_view(ws, "f", [("a", 0, 1.0), ("a", 5, 2.0), ("b", 1, 7.0)])
    first = ws.features.materialize(["f"])[0]
    assert first["rebuilt"] and first["rows_written"] == 2 and first["entities"] == 2
    assert ws.features.online("f", {"eid": "a"})["value"] == 2.0
    assert [r and r["value"] for r in ws.features.online("f", ["b", "zz", "a"])] == [7.0, None, 2.0]
    # new data: only the newer rows are written
    pd.DataFrame(
        {
            "eid": ["a", "a", "b", "c"],
            "ts": [_ts(0), _ts(5), _ts(1), _ts(3)],
            "value": [1.0, 2.0, 7.0, 4.0],
        }
    ).to_parquet(ws.root / "data" / "f.parquet")
    ws.data.ingest("f")
    second = ws.features.materialize(["f"])[0]
    assert (
        not second["rebuilt"] and second["rows_written"] == 0
    )  # c at 3h is older than the watermark (5h)
    pd.DataFrame({"eid": ["a", "c"], "ts": [_ts(9), _ts(8)], "value": [9.0, 8.0]}).to_parquet(
        ws.root / "data" / "f.parquet"
    )
    ws.data.ingest("f")
    third = ws.features.materialize(["f"])[0]
    assert third["rows_written"] == 2 and third["entities"] == 3
    assert ws.features.online("f", {"eid": "a"})["value"] == 9.0
    # a changed spec rebuilds the table
    path = ws.root / "features" / "f.toml"
    path.write_text(path.read_text().replace('ttl = "0"', 'ttl = "1d"'))
    assert ws.features.materialize(["f"])[0]["rebuilt"]


def test_online_errors(ws):
    make_view(ws, "f", [("a", 0, 1.0)])
    with pytest.raises(NotFound, match="materialize"):
        ws.features.online("f", ["a"])
    ws.features.materialize()
    with pytest.raises(MlopsError, match="needs key"):
        ws.features.online("f", {"x": 1})


def test_cli_features(ws, tmp_path):
    from tests.conftest import run_cli

    make_view(ws, "f", [("a", 0, 1.0), ("a", 5, 2.0)])
    w = str(ws.root)
    run_cli("-w", w, "features", "materialize", check=True)
    out = run_cli("-w", w, "features", "get", "f", "--key", "eid=a", "--json", check=True).stdout
    assert '"value": 2.0' in out
    ent = tmp_path / "ent.csv"
    ent.write_text(
        "eid,event_timestamp\na,2025-01-01T03:00:00\na,2025-01-01T06:00:00\nq,2025-01-01T06:00:00\n"
    )
    csv = run_cli(
        "-w", w, "features", "get-training", "-e", str(ent), "-f", "f:value", check=True
    ).stdout
    assert csv.splitlines()[1:] == [
        "a,2025-01-01 03:00:00,1.0",
        "a,2025-01-01 06:00:00,2.0",
        "q,2025-01-01 06:00:00,",
    ]
    listing = run_cli("-w", w, "features", "list", check=True).stdout
    assert "f" in listing and "eid" in listing
