"""A real model server on a loopback port, as MLflow and v2 clients use it."""

import io
import json
import threading
import time

import httpx
import numpy as np
import pytest
from tests.integration.serving_helpers import ServerProcess, train_two_versions


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    ws, folders = train_two_versions(root / "ws")
    yield ws, folders, root
    ws.close()


@pytest.fixture
def server(trained, tmp_path):
    _, folders, _ = trained
    s = ServerProcess(folders[0], log_dir=tmp_path / "predlog")
    yield s
    s.stop()


def rows(n=5, seed=4):
    from tests.unit.test_pipeline import make_data

    frame = make_data(n, seed=seed)
    return frame[["x1", "x2", "plan"]]


def test_same_predictions_through_every_format(trained, server):
    ws, _, _ = trained
    frame = rows(6)
    bundle_sk = ws.models.bundle("m/1", runtime="sklearn")
    bundle_onnx = ws.models.bundle("m/1", runtime="onnx")
    expected = bundle_sk.predict_proba(frame)
    np.testing.assert_allclose(bundle_onnx.predict_proba(frame), expected, atol=1e-4)
    records = json.loads(frame.to_json(orient="records"))
    bodies = {
        "dataframe_split": {
            "dataframe_split": json.loads(frame.to_json(orient="split", index=False))
        },
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs records": {"inputs": records},
        "inputs columns": {"inputs": {c: frame[c].tolist() for c in frame.columns}},
    }
    for label, body in bodies.items():
        r = httpx.post(server.url + "/invocations?output=predict_proba", json=body)
        assert r.status_code == 200, (label, r.text)
        np.testing.assert_allclose(r.json()["predictions"], expected, atol=1e-4, err_msg=label)
        assert r.headers["x-model-version"] == "1"
    csv = io.StringIO()
    frame.to_csv(csv, index=False)
    r = httpx.post(
        server.url + "/invocations?output=predict_proba",
        content=csv.getvalue(),
        headers={"content-type": "text/csv"},
    )
    np.testing.assert_allclose(r.json()["predictions"], expected, atol=1e-4)
    labels = httpx.post(server.url + "/invocations", json=bodies["instances"]).json()["predictions"]
    assert labels == bundle_sk.predict(frame).tolist()
    v2 = {
        "inputs": [
            {
                "name": c,
                "shape": [len(frame)],
                "datatype": "BYTES" if c == "plan" else "FP64",
                "data": frame[c].tolist(),
            }
            for c in frame.columns
        ],
        "outputs": [{"name": "predict_proba"}, {"name": "predict"}],
    }
    out = httpx.post(server.url + "/v2/models/m/infer", json=v2).json()
    proba = next(o for o in out["outputs"] if o["name"] == "predict_proba")
    np.testing.assert_allclose(np.reshape(proba["data"], proba["shape"]), expected, atol=1e-4)
    assert next(o for o in out["outputs"] if o["name"] == "predict")["data"] == labels
    assert httpx.post(server.url + "/v2/models/m/versions/1/infer", json=v2).status_code == 200


def test_health_metadata_metrics_openapi(server):
    assert httpx.get(server.url + "/ping").status_code == 200
    assert httpx.get(server.url + "/health").json()["model"] == "m/1"
    assert httpx.get(server.url + "/version").json()["version"] == 1
    assert httpx.get(server.url + "/v2").json()["name"] == "mlops-console"
    assert httpx.get(server.url + "/v2/health/live").json() == {"live": True}
    assert httpx.get(server.url + "/v2/health/ready").json() == {"ready": True}
    meta = httpx.get(server.url + "/v2/models/m").json()
    assert {i["name"] for i in meta["inputs"]} == {"x1", "x2", "plan"}
    assert httpx.get(server.url + "/v2/models/m/ready").json()["ready"] is True
    assert httpx.get(server.url + "/v2/models/nope/ready").status_code == 404
    httpx.post(
        server.url + "/invocations",
        json={"instances": json.loads(rows(2).to_json(orient="records"))},
    )
    text = httpx.get(server.url + "/metrics").text
    assert 'mlops_requests_total{route="invocations",status="200",role="primary"}' in text
    assert 'mlops_model_info{model="m",version="1"' in text
    assert "/invocations" in httpx.get(server.url + "/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    "kwargs, status, message",
    [
        (
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "not valid JSON",
        ),
        ({"json": {"instances": [{"x1": 1.0, "plan": "pro"}]}}, 400, "Missing input column(s): x2"),
        (
            {"json": {"instances": [{"x1": "abc", "x2": 1, "plan": "pro"}]}},
            400,
            "'x1' must be numeric",
        ),
        ({"json": {"rows": []}}, 400, "exactly one of"),
        ({"content": b"x1,x2\n1", "headers": {"content-type": "text/csv"}}, 400, "line 2"),
        (
            {"content": b"<xml/>", "headers": {"content-type": "application/xml"}},
            415,
            "not supported",
        ),
        (
            {"json": {"dataframe_split": {"columns": ["x1", "x2", "plan"], "data": [[1, 2]]}}},
            400,
            "3 values",
        ),
    ],
)
def test_bad_input_is_a_4xx_that_names_the_problem(server, kwargs, status, message):
    r = httpx.post(server.url + "/invocations", **kwargs)
    assert r.status_code == status and message in r.json()["message"], r.text


def test_oversized_body_and_v2_errors(trained, tmp_path):
    _, folders, _ = trained
    s = ServerProcess(folders[0], env={"MLOPS_MAX_BODY_BYTES": "1000"})
    try:
        big = {"instances": [{"x1": 1.0, "x2": 2.0, "plan": "pro"}] * 100}
        r = httpx.post(s.url + "/invocations", json=big)
        assert r.status_code == 413 and "larger than 1000 bytes" in r.json()["message"]
        v2 = {"inputs": [{"name": "x1", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
        assert httpx.post(s.url + "/v2/models/m/infer", json=v2).status_code == 400
        assert httpx.post(s.url + "/v2/models/other/infer", json=v2).status_code == 404
        full = {
            "inputs": [
                {"name": "x1", "shape": [1], "datatype": "FP64", "data": [1.0]},
                {"name": "x2", "shape": [1], "datatype": "FP64", "data": [1.0]},
                {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]},
            ],
            "outputs": [{"name": "nope"}],
        }
        r = httpx.post(s.url + "/v2/models/m/infer", json=full)
        assert r.status_code == 400 and "Unknown output" in r.json()["error"]
    finally:
        s.stop()


def test_admin_needs_the_token(server):
    assert httpx.get(server.url + "/admin/status").status_code == 401
    assert (
        httpx.get(
            server.url + "/admin/status", headers={"Authorization": "Bearer wrong"}
        ).status_code
        == 401
    )
    assert server.admin("GET", "/admin/status").json()["primary"]["version"] == 1


def test_failed_load_leaves_the_old_version_serving(server, tmp_path):
    r = server.admin(
        "POST", "/admin/load", json={"path": str(tmp_path / "nowhere"), "role": "primary"}
    )
    assert r.status_code == 422 and "cannot be loaded" in r.json()["message"]
    assert httpx.get(server.url + "/version").json()["version"] == 1


def test_canary_shadow_and_prediction_log(trained, server, tmp_path):
    _, folders, _ = trained
    body = {"instances": json.loads(rows(3).to_json(orient="records"))}
    assert (
        server.admin(
            "POST", "/admin/load", json={"path": str(folders[1]), "role": "canary", "percent": 50}
        ).status_code
        == 200
    )
    seen = {
        httpx.post(server.url + "/invocations", json=body).headers["x-model-version"]
        for _ in range(60)
    }
    assert seen == {"1", "2"}
    assert server.admin("POST", "/admin/rollback").status_code == 200
    assert {
        httpx.post(server.url + "/invocations", json=body).headers["x-model-version"]
        for _ in range(20)
    } == {"1"}
    assert (
        server.admin(
            "POST", "/admin/load", json={"path": str(folders[1]), "role": "shadow"}
        ).status_code
        == 200
    )
    r = httpx.post(server.url + "/invocations", json=body, headers={"x-request-id": "req-shadowed"})
    assert r.headers["x-model-version"] == "1"
    time.sleep(2.5)  # the log is written off the request path, about every second
    records = [
        json.loads(line)
        for f in (tmp_path / "predlog").glob("predictions-*")
        for line in f.read_text().splitlines()
    ]
    mine = [x for x in records if x["request_id"] == "req-shadowed"]
    assert {x["role"] for x in mine} == {"primary", "shadow"}
    assert {x["version"] for x in mine} == {1, 2}
    assert mine[0]["rows"] == 3 and set(mine[0]["inputs"]) == {"x1", "x2", "plan"}


def test_zero_failed_requests_through_swaps_and_canaries(trained, server):
    _, folders, _ = trained
    body = {"instances": json.loads(rows(4).to_json(orient="records"))}
    stop = threading.Event()
    results = {"ok": 0, "failed": []}
    lock = threading.Lock()

    def client():
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                try:
                    r = c.post(server.url + "/invocations", json=body)
                    with lock:
                        if r.status_code == 200 and len(r.json()["predictions"]) == 4:
                            results["ok"] += 1
                        else:
                            results["failed"].append(r.status_code)
                except httpx.HTTPError as exc:
                    with lock:
                        results["failed"].append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        for i in range(20):
            r = server.admin(
                "POST", "/admin/load", json={"path": str(folders[i % 2]), "role": "primary"}
            )
            assert r.status_code == 200
            time.sleep(0.1)
        assert (
            server.admin(
                "POST",
                "/admin/load",
                json={"path": str(folders[1]), "role": "canary", "percent": 30},
            ).status_code
            == 200
        )
        time.sleep(0.3)
        assert server.admin("POST", "/admin/promote").status_code == 200
        assert (
            server.admin(
                "POST",
                "/admin/load",
                json={"path": str(folders[0]), "role": "canary", "percent": 30},
            ).status_code
            == 200
        )
        time.sleep(0.3)
        assert server.admin("POST", "/admin/rollback").status_code == 200
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert results["failed"] == [] and results["ok"] > 100, results
    assert server.admin("GET", "/admin/status").json()["swaps"] == 22
