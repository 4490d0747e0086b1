"""The bounded load generator against a real local deployment: counts, bounds, both
protocols, failures by status, and `mlops deployments traffic` as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import httpx
import pandas as pd
import pytest
from tests.integration.serving_helpers import free_port, train_two_versions

from mlops_console.errors import MlopsError
from mlops_console.loadgen import (
    check_endpoint,
    parse_dataset_ref,
    replay,
    rows_for,
    send_traffic,
)

pytestmark = pytest.mark.slow  # the fixture trains two versions: ~15 s on a busy machine


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    ws, _ = train_two_versions(tmp_path_factory.mktemp("traffic") / "ws")
    ws.deployments.deploy("m/1", name="svc", port=free_port())
    yield ws
    for d in ws.deployments.list():
        ws.deployments.stop(d.name)
    ws.close()


def served_requests(endpoint: str, route: str = "invocations") -> dict[str, int]:
    """The server's own count of requests per status on a route (its /metrics)."""
    text = httpx.get(endpoint + "/metrics").text
    found: dict[str, int] = {}
    pattern = rf'mlops_requests_total{{route="{route}",status="(\d+)",role="\w+"}} (\d+)'
    for status, n in re.findall(pattern, text):
        found[status] = found.get(status, 0) + int(n)
    return found


def test_a_request_count_is_sent_and_answered_and_the_server_saw_each(served):
    endpoint = served.deployments.get("svc").endpoint
    before = served_requests(endpoint).get("200", 0)
    seen = []
    report = send_traffic(served, "svc", requests=40, rate=200, batch=3, progress=seen.append)
    assert report.sent == 40 and report.ok == 40 and report.failed == {}
    assert report.rows == 120 and report.versions == {"1": 40}
    assert report.stopped_by == "requests"
    assert 0 < report.latency_p50_ms <= report.latency_p99_ms
    assert served_requests(endpoint).get("200", 0) - before == 40
    assert seen and seen[-1] is report  # the last progress call sees the final figures
    # the rows came from the data the served version was trained on, inputs only
    rows = rows_for(served, "svc")
    assert rows.source == "dataset d v1" and set(rows.columns) == {"x1", "x2", "plan"}
    assert rows.keys == ["id"] and set(rows.records[0]) == {"x1", "x2", "plan", "id"}


def test_a_duration_bound_and_the_rate_bound_the_requests(served):
    report = send_traffic(served, "svc", seconds=1.0, rate=10)
    assert report.stopped_by == "seconds" and 1 <= report.sent <= 11
    assert report.seconds >= 1.0 and report.ok == report.sent
    # a stop from another thread ends it at once, however far the bounds are
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    report = send_traffic(served, "svc", seconds=60, rate=5, stop=stop)
    assert report.stopped_by == "stop" and report.seconds < 30


def test_v2_protocol_from_a_file_leaves_out_rows_with_a_missing_number(served, tmp_path):
    frame = pd.DataFrame(
        {
            "x1": [0.1, None, 0.5, 1.2],
            "x2": [1.0, 2.0, 3.0, 4.0],
            "plan": ["pro", "max", "basic", "pro"],
        }
    )
    path = tmp_path / "rows.parquet"
    frame.to_parquet(path)
    endpoint = served.deployments.get("svc").endpoint
    before = served_requests(endpoint, "v2_infer").get("200", 0)
    report = send_traffic(served, "svc", path=path, requests=6, batch=2, rate=100, protocol="v2")
    assert report.ok == 6 and report.rows_left_out == 1 and report.versions == {"1": 6}
    assert served_requests(endpoint, "v2_infer").get("200", 0) - before == 6


def test_failures_are_counted_by_status_and_by_transport(served, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("x1,x2,plan\nnot-a-number,1.0,pro\n")
    report = send_traffic(served, "svc", path=bad, requests=5, rate=100)
    assert report.ok == 0 and report.failed == {"400": 5}
    rows = rows_for(served, "svc")
    nobody = f"http://127.0.0.1:{free_port()}"
    report = replay(nobody, rows, requests=3, rate=100)
    assert report.sent == 3 and report.failed == {"connection": 3}


def test_user_mistakes_get_clear_errors(served, tmp_path):
    with pytest.raises(MlopsError, match="not on this machine"):
        check_endpoint("http://192.0.2.10:8080")
    assert check_endpoint("http://localhost:8080/") == "http://localhost:8080"
    with pytest.raises(MlopsError, match="NAME@VERSION"):
        parse_dataset_ref("d@latest")
    assert parse_dataset_ref("d@v2") == ("d", 2) and parse_dataset_ref("d") == ("d", None)
    with pytest.raises(MlopsError, match="requests must be"):
        send_traffic(served, "svc", requests=0)
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(MlopsError, match="no column x1, x2, plan"):
        send_traffic(served, "svc", path=other, requests=1)


def test_the_command_prints_progress_and_a_report(served):
    env = {**os.environ, "COLUMNS": "120"}
    mlops = [sys.executable, "-m", "mlops_console.cli.main", "-w", str(served.root)]
    out = subprocess.run(
        [
            *mlops,
            "deployments",
            "traffic",
            "svc",
            "--dataset",
            "d@1",
            "-n",
            "30",
            "-r",
            "100",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["sent"] == 30 and report["ok"] == 30 and report["failed_total"] == 0
    assert "sent " in out.stderr and "ok " in out.stderr  # the progress line
    out = subprocess.run(
        [*mlops, "deployments", "traffic", "svc", "--dataset", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "nope" in out.stderr
