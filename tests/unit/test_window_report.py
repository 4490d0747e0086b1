"""ws.monitor.measure returns a WindowReport whose to_dict() is the JSON `mlops monitor
show --json` has always given: the same keys in the same order, and a measure that was
not taken is absent, not null."""

from __future__ import annotations

import json
import time

import orjson
import pytest
from tests.unit.test_pipeline import SPEC, make_data

from mlops_console.errors import NotFound
from mlops_console.monitoring import collect as col
from mlops_console.monitoring.window import WindowReport

ALWAYS = [
    "deployment",
    "window",
    "start",
    "end",
    "model",
    "versions",
    "version",
    "performance",
    "rows",
]
MEASURED = ["staleness", "enough_rows", "drift", "stability", "decay"]


@pytest.fixture
def trained(ws):
    """A workspace with model m v1 (and its training reference) and two stopped
    deployments of it, `web` and `quiet`."""
    from mlops_console.training.runner import train

    make_data().to_parquet(ws.root / "data" / "d.parquet")
    ws.data.add("d", "data/d.parquet", timestamp="ts", entities=["id"])
    ws.data.ingest("d")
    (ws.root / "pipelines" / "p.toml").write_text(SPEC.format(auto="false", extra=""))
    train(ws, "p", overrides={"search.method": "none"})
    with ws.db.write() as conn:
        for name in ("web", "quiet"):
            conn.exec_driver_sql(
                "INSERT INTO deployment (name, target, model_name, version, canary_version, "
                "canary_percent, status, endpoint, config, created_at, updated_at) "
                "VALUES (?, 'local', 'm', 1, NULL, 0, 'stopped', 'http://127.0.0.1:1', "
                "'{}', 10.0, 20.5)",
                (name,),
            )
    return ws


def _serve(ws, deployment: str, rows: int, version: int = 1, role: str = "primary") -> None:
    """A closed prediction-log segment of `rows` scored rows, 20 a request, just now."""
    frame = make_data(rows, seed=3)
    lines = []
    for i in range(0, rows, 20):
        part = frame.iloc[i : i + 20]
        lines.append(
            {
                "ts": time.time() - 60 + i / 100,
                "request_id": f"{role}-{i}",
                "model": "m",
                "version": version,
                "role": role,
                "latency_ms": 2.0,
                "rows": len(part),
                "inputs": {c: part[c].tolist() for c in ("x1", "x2", "plan")},
                "outputs": {"predict": [0] * len(part), "predict_proba": [[0.6, 0.4]] * len(part)},
            }
        )
    folder = col.log_dir(ws, deployment)
    folder.mkdir(parents=True, exist_ok=True)
    segment = folder / f"predictions-{role}-{rows}-1.jsonl"
    segment.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))


def test_a_window_with_rows_has_every_measure_in_order(trained):
    ws = trained
    _serve(ws, "web", 120)
    _serve(ws, "web", 20, role="shadow")  # shadows are never measured nor counted
    r = ws.monitor.measure("web", window="1h")
    assert isinstance(r, WindowReport)
    assert (r.model, r.version, r.rows, r.enough_rows, r.note) == ("m", 1, 120, True, None)
    assert r.versions == [{"version": 1, "role": "primary", "rows": 120}]
    assert r.performance["requests"] == 6 and r.drift is not None
    assert list(r.to_dict()) == [*ALWAYS, *MEASURED]
    assert r.to_dict()["drift"] is r.drift and r.to_dict()["window"] == "1h"
    assert r.value("drift_share") == r.drift["drift_share"]
    assert r.value("latency_p99_ms") == 2.0 and r.value("metric:accuracy") is None  # no labels
    json.dumps(r.to_dict())  # what --json and the daemon send


def test_too_few_rows_are_measured_without_a_verdict_and_the_note_comes_last(trained, capsys):
    from mlops_console.cli.monitor import print_window

    ws = trained
    _serve(ws, "web", 40)
    r = ws.monitor.measure("web", window="1h")
    assert r.rows == 40 and r.enough_rows is False and r.drift is not None
    assert list(r.to_dict()) == [*ALWAYS, *MEASURED, "note"]
    assert "min_rows = 100" in r.to_dict()["note"]
    assert r.value("drift_share") is None  # no verdict on 40 rows
    print_window(r)  # what `mlops monitor web` prints: no verdict either
    shown = capsys.readouterr().out
    assert "too few rows for a verdict" in shown
    assert "DRIFT" not in shown and "(few rows)" in shown


def test_a_window_without_rows_leaves_out_what_it_did_not_measure(trained):
    ws = trained
    quiet = ws.monitor.measure("quiet", window="1h")
    assert (quiet.rows, quiet.versions, quiet.version) == (0, [], 1)
    assert (quiet.drift, quiet.stability, quiet.decay) == (None, None, None)
    assert list(quiet.to_dict()) == [*ALWAYS, "staleness", "enough_rows", "note"]
    assert quiet.to_dict()["enough_rows"] is False and "drift" not in quiet.to_dict()

    col.log_dir(ws, "ghost").mkdir(parents=True)  # a prediction log and no deployment
    ghost = ws.monitor.measure("ghost", window="30m")
    assert (ghost.model, ghost.version, ghost.staleness) == (None, None, None)
    assert list(ghost.to_dict()) == [*ALWAYS, "note"]
    assert ghost.to_dict()["note"] == "no rows served in this window"
    assert ghost.value("drift_share") is None and ghost.value("model_age_days") is None


def test_history_is_newest_first_and_an_unknown_deployment_is_refused(trained):
    ws = trained
    _serve(ws, "web", 120)
    hist = ws.monitor.history("web", "1h", 3)
    assert [type(r) for r in hist] == [WindowReport] * 3
    assert [r.rows for r in hist] == [120, 0, 0]
    assert hist[0].end > hist[1].end > hist[2].end
    assert list(hist[1].to_dict()) == [*ALWAYS, "staleness", "enough_rows", "note"]
    with pytest.raises(NotFound, match="mlops deployments list"):
        ws.monitor.measure("nobody")
