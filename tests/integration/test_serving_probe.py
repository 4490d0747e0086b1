"""A probe (the x-mlops-probe header, sent by the fleet's health gate) is answered like any
request but stays out of the prediction log and the traffic metrics: a real server."""

import json
import time

import httpx
import pytest
from tests.integration.serving_helpers import ServerProcess, train_two_versions


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    ws, folders = train_two_versions(root / "ws")
    yield ws, folders
    ws.close()


def test_a_probe_is_answered_but_not_logged_nor_counted_as_traffic(trained, tmp_path):
    from tests.unit.test_pipeline import make_data

    _, folders = trained
    server = ServerProcess(folders[0], log_dir=tmp_path / "predlog")
    try:
        # a shadow mirrors real traffic into the log too; a probe must not reach it either
        loaded = server.admin(
            "POST", "/admin/load", json={"path": str(folders[1]), "role": "shadow"}
        )
        assert loaded.status_code == 200, loaded.text
        frame = make_data(4, seed=3)[["x1", "x2", "plan"]]
        body = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}

        def post(request_id: str, probe: bool, json_body=body):
            headers = {"x-request-id": request_id}
            if probe:
                headers["x-mlops-probe"] = "gate"
            return httpx.post(server.url + "/invocations", json=json_body, headers=headers)

        real = post("real-1", probe=False)
        probe = post("probe-1", probe=True)
        bad_probe = post("probe-bad", probe=True, json_body={"dataframe_split": {"columns": []}})
        assert real.status_code == probe.status_code == 200, (real.text, probe.text)
        assert probe.json() == real.json()  # the header never changes the answer
        assert len(probe.json()["predictions"]) == 4
        assert bad_probe.status_code == 400

        time.sleep(2.5)  # the log is written off the request path, about every second
        records = [
            json.loads(line)
            for f in (tmp_path / "predlog").glob("predictions-*")
            for line in f.read_text().splitlines()
        ]
        logged = {(r["request_id"], r["role"]) for r in records}
        assert logged == {("real-1", "primary"), ("real-1", "shadow")}

        metrics = httpx.get(server.url + "/metrics").text
        assert (
            'mlops_requests_total{route="invocations",status="200",role="primary"} 1\n' in metrics
        )
        assert 'route="invocations",status="400",role="primary"' not in metrics
        assert 'mlops_probe_requests_total{route="invocations",status="200"} 1\n' in metrics
        assert 'mlops_probe_requests_total{route="invocations",status="400"} 1\n' in metrics
        assert 'mlops_rows_total{role="primary"} 4\n' in metrics
    finally:
        server.stop()
