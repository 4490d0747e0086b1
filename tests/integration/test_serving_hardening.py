"""The model server tried as an outsider would: bad requests among good ones, malformed
bodies, huge and slow bodies, a crashing canary, v2 conformance, and the feedback route.
Every test runs a real server process on a loopback port."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from tests.integration.serving_helpers import ServerProcess, free_port, train_two_versions
from tests.unit.test_pipeline import make_data

GOOD = {"x1": 0.3, "x2": -1.2, "plan": "pro"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    ws, folders = train_two_versions(root / "ws")
    yield ws, folders, root
    for d in ws.deployments.list():
        ws.deployments.stop(d.name)
    ws.close()


@pytest.fixture
def server(trained, tmp_path):
    _, folders, _ = trained
    s = ServerProcess(folders[0], log_dir=tmp_path / "predlog")
    yield s
    s.stop()


def post(server, body=None, path="/invocations", **kw):
    kw.setdefault("timeout", 30)
    if body is not None:
        kw["json"] = body
    return httpx.post(server.url + path, **kw)


def v2_body(**override):
    inputs = [
        {"name": "x1", "shape": [1], "datatype": "FP64", "data": [0.3]},
        {"name": "x2", "shape": [1], "datatype": "FP64", "data": [-1.2]},
        {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]},
    ]
    for t in inputs:
        t.update(override.get(t["name"], {}))
    return {"inputs": inputs}


def log_records(folder: Path, wait_for=lambda recs: True, seconds=30) -> list[dict]:
    """The prediction log's records, once `wait_for` holds (it is written off the request path)."""
    deadline = time.time() + seconds
    while True:
        recs = [
            json.loads(line)
            for f in sorted(folder.glob("predictions-*"))
            for line in f.read_text().splitlines()
            if line.strip()
        ]
        if wait_for(recs) or time.time() > deadline:
            return recs
        time.sleep(0.2)


def test_bad_requests_in_a_batch_get_their_own_400_and_scoring_goes_on(server):
    nested = {"inputs": {k: [[v]] for k, v in GOOD.items()}}  # every input as [[value]]
    good = {"inputs": {k: [v] for k, v in GOOD.items()}}
    bodies = [nested if i % 10 == 3 else good for i in range(30)]
    results: list = [None] * 30
    barrier = threading.Barrier(30)

    def send(i):
        with httpx.Client(timeout=30) as c:
            barrier.wait()
            results[i] = c.post(server.url + "/invocations", json=bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    statuses = [r.status_code for r in results]
    assert statuses.count(400) == 3 and statuses.count(200) == 27, statuses
    bad = next(r for r in results if r.status_code == 400).json()
    assert bad["error_code"] == "BAD_REQUEST" and "row 0 has a list" in bad["message"]
    # a list inside a numeric cell, and a v2 tensor of pairs, the same way
    assert post(server, {"dataframe_records": [{**GOOD, "x1": [1, 2]}]}).status_code == 400
    r = post(server, v2_body(x1={"shape": [1, 2], "data": [[1, 2]]}), path="/v2/models/m/infer")
    assert r.status_code == 400 and "one column" in r.json()["error"]
    # scoring still works, readiness is honest, and SIGTERM still stops the process
    assert post(server, good).status_code == 200
    assert httpx.post(server.url + "/v2/models/m/infer", json=v2_body()).status_code == 200
    assert httpx.get(server.url + "/v2/health/ready").json() == {"ready": True}
    metrics = httpx.get(server.url + "/metrics").text
    assert 'mlops_requests_total{route="invocations",status="400",role="primary"} 4' in metrics
    assert "mlops_batcher_restarts_total 0" in metrics
    server.proc.terminate()
    assert server.proc.wait(timeout=20) is not None


CSV_HEADER = b"x1,x2,plan\n"


@pytest.mark.parametrize(
    "kwargs, path, message",
    [
        ({"json": {"dataframe_records": [GOOD, 1]}}, None, "row 1 is 1"),
        ({"json": {"dataframe_records": [GOOD, [1, 2, 3]]}}, None, "every row must be an object"),
        (
            {"json": {"dataframe_split": {"columns": ["x1", "x2", "plan"], "data": [{"a": 1}]}}},
            None,
            "row 0 is an object",
        ),
        (
            {"json": {"dataframe_split": {"columns": ["x1", "x2", "plan"], "data": [5]}}},
            None,
            "row 0 is 5",
        ),
        (
            {
                "json": {
                    "dataframe_split": {"columns": [["x1"], "x2", "plan"], "data": [[1, 2, "a"]]}
                }
            },
            None,
            "list of column names",
        ),
        ({"json": {"instances": [{**GOOD, "x2": {"v": 1}}]}}, None, "row 0 has an object"),
        ({"json": {"instances": [{**GOOD, "x2": True}]}}, None, "true/false"),
        ({"json": {"instances": [{**GOOD, "x2": None}]}}, None, "'x2' may not be null"),
        ({"json": {"instances": [{"x1": 1.0, "plan": "pro"}, GOOD]}}, None, "'x2' may not be null"),
        ({"json": {"instances": [{**GOOD, "plan": [1]}]}}, None, "must be text"),
        (
            {"content": CSV_HEADER + b"1,2,\xff\xfe\n", "headers": {"content-type": "text/csv"}},
            None,
            "not UTF-8",
        ),
        (
            {"content": CSV_HEADER + b"1,2,pr\ro\n", "headers": {"content-type": "text/csv"}},
            None,
            "fields; the header has 3",
        ),
        (
            {"content": CSV_HEADER + b"abc,2,pro\n", "headers": {"content-type": "text/csv"}},
            None,
            "'x1'",
        ),
        ({"json": v2_body(x1={"data": 5})}, "/v2/models/m/infer", "data must be a list"),
        ({"json": v2_body(x1={"data": {}})}, "/v2/models/m/infer", "data must be a list"),
        ({"json": v2_body(x1={"shape": [5]})}, "/v2/models/m/infer", "holds 5 values; data has 1"),
        ({"json": v2_body(x1={"datatype": "BOGUS"})}, "/v2/models/m/infer", "not a v2 datatype"),
        ({"json": v2_body(plan={"data": "pro"})}, "/v2/models/m/infer", "data must be a list"),
        ({"json": v2_body(plan={"data": [1]})}, "/v2/models/m/infer", "must be a string"),
        (
            {"json": v2_body(x1={"datatype": "BYTES", "data": ["1"]})},
            "/v2/models/m/infer",
            "numeric",
        ),
        ({"json": {"instances": [{**GOOD, "x1": 1e308}]}}, None, "must be finite"),
        (
            {"content": '{"instances": [{"x1": Infinity, "x2": 1, "plan": "pro"}]}'},
            None,
            "must be finite",
        ),
        (
            {"json": {**v2_body(), "outputs": [{"name": "predict", "parameters": [None]}]}},
            "/v2/models/m/infer",
            "must be a list of",
        ),
        (
            {"json": v2_body(x1={"parameters": {"binary_data_size": 8}})},
            "/v2/models/m/infer",
            "has no binary part",
        ),
    ],
)
def test_malformed_input_is_a_400_that_names_the_problem(server, kwargs, path, message):
    r = httpx.post(server.url + (path or "/invocations"), timeout=30, **kwargs)
    assert r.status_code == 400, r.text
    text = r.json()["error"] if path else r.json()["message"]
    assert message in text, text


def test_what_mlflow_accepts_is_accepted(server):
    nan_body = json.dumps({"instances": [{**GOOD, "x1": float("nan")}, GOOD]})  # NaN literal
    assert "NaN" in nan_body
    r = post(server, content=nan_body, headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2, r.text
    bom = b"\xef\xbb\xbf" + CSV_HEADER + b"0.3,-1.2,pro\n1.0,2.0,basic\n"
    r = post(server, content=bom, headers={"content-type": "text/csv"})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2, r.text
    buf = io.BytesIO()
    make_data(7, seed=3)[["x1", "x2", "plan"]].to_parquet(buf)
    r = post(
        server,
        content=buf.getvalue(),
        headers={"content-type": "application/vnd.apache.parquet"},
        params={"output": "predict_proba"},
    )
    assert r.status_code == 200 and len(r.json()["predictions"]) == 7, r.text
    r = post(server, {"instances": [GOOD]}, params={"output": "nonsense"})
    assert r.status_code == 400 and "output='nonsense'" in r.json()["message"]


def test_a_large_json_body_is_parsed_aside_and_checked_the_same(server):
    rows = [{**GOOD, "x1": i / 1000} for i in range(30_000)]  # ~1.3 MB: parsed in a child
    body = json.dumps({"dataframe_records": rows})
    assert len(body) > 1 << 20
    r = post(server, content=body, headers={"content-type": "application/json"}, timeout=120)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 30_000, r.text[:300]
    rows[29_000]["x2"] = [1]
    body = json.dumps({"dataframe_records": rows})
    r = post(server, content=body, headers={"content-type": "application/json"}, timeout=120)
    assert (
        r.status_code == 400 and "'x2' must be numeric; row 29000 has a list" in r.json()["message"]
    )
    assert post(server, {"instances": [GOOD]}).status_code == 200


def test_nulls_are_imputed_only_when_the_server_says_so(trained, tmp_path):
    _, folders, _ = trained
    s = ServerProcess(folders[0], env={"MLOPS_IMPUTE_MISSING": "1"})
    try:
        r = post(s, {"instances": [{**GOOD, "x2": None}, {"x1": 1.0, "plan": "pro"}]})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 2, r.text
    finally:
        s.stop()


def test_admin_load_validates_before_it_changes_anything(trained, server):
    _, folders, _ = trained
    r = server.admin(
        "POST", "/admin/load", json={"path": str(folders[1]), "role": "canary", "percent": "abc"}
    )
    assert r.status_code == 400 and "percent must be a number" in r.json()["message"]
    assert httpx.get(server.url + "/version").json()["canary"] is None
    r = server.admin("POST", "/admin/load", json={"path": str(folders[1]), "role": "boss"})
    assert r.status_code == 400
    r = server.admin(
        "POST", "/admin/load", content=b"[1,2", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_chunked_body_is_cut_at_the_cap_without_being_held(trained, tmp_path):
    _, folders, _ = trained
    s = ServerProcess(folders[0], env={"MLOPS_MAX_BODY_BYTES": str(4 << 20)})
    try:
        post(s, {"instances": [GOOD]})
        before = rss_kb(s.proc.pid)

        def chunks():  # 1 GB announced by nothing: Transfer-Encoding: chunked
            block = b"[" + b"1.0," * (1 << 18)
            for _ in range(1024):
                yield block

        for path in ("/invocations", "/feedback", "/v2/models/m/infer"):
            try:
                r = httpx.post(
                    s.url + path,
                    content=chunks(),
                    headers={"content-type": "application/json"},
                    timeout=60,
                )
                assert r.status_code == 413, (path, r.status_code, r.text)
                assert "larger than 4194304 bytes" in r.text
            except httpx.RemoteProtocolError:
                pass  # the server answered 413 and closed while the client was still sending
        grown_mb = (rss_kb(s.proc.pid) - before) / 1024
        assert grown_mb < 64, f"the server grew by {grown_mb:.0f} MB"
        too_many = {"instances": [GOOD] * 11}
        assert post(s, too_many).status_code == 200
    finally:
        s.stop()


def test_row_cap_slow_clients_and_the_concurrency_bound(trained):
    _, folders, _ = trained
    s = ServerProcess(
        folders[0],
        env={"MLOPS_MAX_ROWS": "10", "MLOPS_HEADER_TIMEOUT": "1", "MLOPS_BODY_TIMEOUT": "1"},
    )
    try:
        r = post(s, {"instances": [GOOD] * 11})
        assert r.status_code == 413 and "at most 10 per request" in r.json()["message"]
        # a client that never finishes its headers is disconnected
        slow = socket.create_connection(("127.0.0.1", s.port))
        slow.sendall(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow.settimeout(30)
        t0 = time.time()
        assert slow.recv(100) == b""  # closed by the server
        assert time.time() - t0 < 25
        slow.close()
        # a body that never arrives whole gets a 408
        slow = socket.create_connection(("127.0.0.1", s.port))
        slow.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b'content-length: 100\r\n\r\n{"instances"'
        )
        slow.settimeout(30)
        answer = b""
        while b"MLOPS_BODY_TIMEOUT" not in answer and (chunk := slow.recv(4096)):
            answer += chunk
        assert b" 408 " in answer.split(b"\r\n")[0] and b"MLOPS_BODY_TIMEOUT" in answer, answer
        slow.close()
        assert post(s, {"instances": [GOOD]}).status_code == 200
    finally:
        s.stop()


def test_requests_beyond_the_in_flight_bound_get_a_503(trained):
    _, folders, _ = trained
    s = ServerProcess(folders[0], env={"MLOPS_MAX_INFLIGHT": "1"})
    try:
        held = socket.create_connection(("127.0.0.1", s.port))  # a body still on its way
        held.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\n\r\n{"
        )
        deadline = time.time() + 30
        while (r := post(s, {"instances": [GOOD]})).status_code != 503:
            assert time.time() < deadline, "the in-flight bound was never reached"
            time.sleep(0.1)
        assert "MLOPS_MAX_INFLIGHT" in r.json()["message"] and r.headers["retry-after"] == "1"
        held.close()
        deadline = time.time() + 30
        while post(s, {"instances": [GOOD]}).status_code != 200:
            assert time.time() < deadline
            time.sleep(0.1)
    finally:
        s.stop()


def test_bodies_held_at_once_stay_within_the_memory_budget(trained):
    _, folders, _ = trained
    env = {"MLOPS_MAX_BODY_BYTES": "1000", "MLOPS_MAX_BODY_MEMORY": "1200"}
    s = ServerProcess(folders[0], env=env)
    try:
        body = json.dumps({"instances": [GOOD] * 14}).encode()
        assert 200 < len(body) < 1000
        held = socket.create_connection(("127.0.0.1", s.port))  # holds 1000 of the 1200 bytes
        held.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\n\r\n{"
        )
        # a body sent without a length cannot wait for room: refused at once
        deadline = time.time() + 30
        while (
            r := post(s, content=iter([body]), headers={"content-type": "application/json"})
        ).status_code != 503:
            assert time.time() < deadline, r.text
            time.sleep(0.1)
        assert "MLOPS_MAX_BODY_MEMORY" in r.json()["message"]
        # one with a length waits for room, and gets it when the held body goes away
        answer = {}

        def waiting():
            t0 = time.time()
            answer["r"] = post(s, content=body, headers={"content-type": "application/json"})
            answer["waited"] = time.time() - t0

        t = threading.Thread(target=waiting)
        t.start()
        time.sleep(1.0)
        assert "r" not in answer  # still waiting
        held.close()
        t.join(30)
        assert answer["r"].status_code == 200 and answer["waited"] >= 0.9, answer
    finally:
        s.stop()


def test_v2_routes_honour_versions_and_answer_json_everywhere(trained, server):
    _, folders, _ = trained
    assert httpx.get(server.url + "/v2/models/m/versions/1/ready").json()["ready"] is True
    r = httpx.get(server.url + "/v2/models/m/versions/99/ready")
    assert r.status_code == 404 and "Version 99" in r.json()["error"]
    r = httpx.post(server.url + "/v2/models/m/versions/99/infer", json=v2_body())
    assert r.status_code == 404 and "error" in r.json()
    assert httpx.get(server.url + "/v2/models/m/versions/99").status_code == 404
    r = httpx.get(server.url + "/v2/nothing/here")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert "error" in r.json()
    r = httpx.get(server.url + "/nothing")
    assert r.status_code == 404 and r.json()["error_code"] == "NOT_FOUND"
    r = httpx.get(server.url + "/invocations")
    assert r.status_code == 405 and r.json()["error_code"] == "METHOD_NOT_ALLOWED"
    # a version route scores with that very version, canary included
    server.admin(
        "POST", "/admin/load", json={"path": str(folders[1]), "role": "canary", "percent": 1}
    )
    out = httpx.post(server.url + "/v2/models/m/versions/2/infer", json=v2_body()).json()
    assert out["model_version"] == "2"
    assert httpx.get(server.url + "/v2/models/m").json()["versions"] == ["1", "2"]


def test_feedback_is_guarded(server, tmp_path):
    url = server.url + "/feedback"
    label = {"request_id": "r1", "label": 1}
    r = httpx.post(url, content=json.dumps(label), headers={"content-type": "text/plain"})
    assert r.status_code == 415  # what a web page can send without a preflight
    r = httpx.post(url, json=label, headers={"host": "evil.example:80"})
    assert r.status_code == 421 and "MLOPS_ALLOWED_HOSTS" in r.json()["message"]
    assert httpx.post(url, json=label).json() == {"accepted": 1, "duplicates": 0}
    again = httpx.post(url, json=[{**label, "label": 0}, {"request_id": "r2", "label": 0}])
    assert again.status_code == 202 and again.json() == {"accepted": 1, "duplicates": 1}
    recs = log_records(
        tmp_path / "predlog", lambda rs: sum(r.get("kind") == "feedback" for r in rs) >= 2
    )
    fb = [r for r in recs if r.get("kind") == "feedback"]
    assert [(r["request_id"], r["label"]) for r in fb] == [("r1", 1), ("r2", 0)]
    assert all(r["source"].startswith("feedback:127.0.0.1") for r in fb)


def test_feedback_token_and_rate_limit(trained):
    _, folders, _ = trained
    s = ServerProcess(
        folders[0], env={"MLOPS_FEEDBACK_TOKEN": "fb-secret", "MLOPS_FEEDBACK_RATE": "2"}
    )
    try:
        url = s.url + "/feedback"
        label = {"request_id": "r1", "label": 1}
        assert httpx.post(url, json=label).status_code == 401
        auth = {"authorization": "Bearer fb-secret"}
        codes = [httpx.post(url, json=label, headers=auth).status_code for _ in range(12)]
        assert codes[0] == 202 and 429 in codes, codes
    finally:
        s.stop()


FAULTY = '''
import numpy as np
from sklearn.linear_model import LogisticRegression


class Faulty(LogisticRegression):
    """Fails on inputs far outside what it was trained on."""

    def predict_proba(self, X):
        if np.any(np.abs(np.asarray(X, dtype=float)) > 1000):
            raise ValueError("input out of range")
        return super().predict_proba(X)


def build(**params):
    return Faulty(**params)
'''


def faulty_version(ws):
    """A version built by workspace code (faulty.py, module:function), trained once."""
    from mlops_console.training.runner import train

    if getattr(ws, "faulty_version", None) is None:
        (ws.root / "faulty.py").write_text(FAULTY)
        overrides = {"search.method": "none", "model.estimator": "faulty:build"}
        ws.faulty_version = train(ws, "p", overrides=overrides).version
    return ws.faulty_version


def test_a_crashing_canary_is_counted_logged_and_rolled_back(trained):
    ws, _, _ = trained
    mv = faulty_version(ws)
    ws.deployments.deploy("m/1", name="crashy", port=free_port())
    ws.deployments.deploy(mv.ref, name="crashy", strategy="canary", canary_percent=50)
    endpoint = ws.deployments.get("crashy").endpoint
    far = {"instances": [{**GOOD, "x1": 1e6}]}
    answers = [httpx.post(endpoint + "/invocations", json=far, timeout=30) for _ in range(60)]
    failed = [r for r in answers if r.status_code == 500]
    assert failed and all(r.headers["content-type"] == "application/json" for r in failed)
    assert failed[0].json()["error_code"] == "INTERNAL_ERROR"
    assert {r.status_code for r in answers} == {200, 500}  # the primary answers the rest
    metrics = httpx.get(endpoint + "/metrics").text
    assert f'route="invocations",status="500",role="canary"}} {len(failed)}' in metrics
    stats = ws.deployments.status("crashy").stats
    assert stats["canary_stats"]["errors"] == len(failed)
    assert stats["primary_stats"]["errors"] == 0
    verdict = ws.deployments.judge_canary("crashy", min_requests=10)
    assert verdict.decision == "rollback" and verdict.errors == len(failed)
    assert httpx.get(endpoint + "/version").json()["canary"] is None
    # the failures reached the prediction log by role, so monitoring's error rate sees them
    logdir = ws.state / "logs" / "predictions" / "crashy"
    recs = log_records(logdir, lambda rs: sum(r.get("status") == 500 for r in rs) >= len(failed))
    errors = [r for r in recs if r.get("status") == 500]
    assert len(errors) == len(failed) and {r["role"] for r in errors} == {"canary"}
    assert {r["version"] for r in errors} == {mv.version}
    deadline = time.time() + 60  # the log is written off the request path
    while (perf := ws.monitor.measure("crashy", window="1h").performance)["requests"] < 60:
        assert time.time() < deadline, perf
        time.sleep(0.5)
    assert perf["requests"] == 60 and perf["errors"] == len(failed)  # what error_rate alerts read
    ws.deployments.stop("crashy")


def test_serving_settings_of_the_workspace_reach_its_servers(trained):
    ws, _, _ = trained
    before = ws.config.serving
    ws.config.serving = before.model_copy(update={"max_rows": 5, "feedback_token": True})
    try:
        ws.deployments.deploy("m/1", name="capped", port=free_port())
        endpoint = ws.deployments.get("capped").endpoint
        r = httpx.post(endpoint + "/invocations", json={"instances": [GOOD] * 6})
        assert r.status_code == 413 and "at most 5" in r.json()["message"]
        fb = {"request_id": "x", "label": 1}
        assert httpx.post(endpoint + "/feedback", json=fb).status_code == 401
        token_file = ws.state / "deployments" / "capped" / "feedback-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        auth = {"authorization": f"Bearer {token_file.read_text().strip()}"}
        assert httpx.post(endpoint + "/feedback", json=fb, headers=auth).status_code == 202
    finally:
        ws.config.serving = before
        ws.deployments.stop("capped")


def tamper(folder: Path, dest: Path) -> Path:
    """A copy of a bundle folder with a replaced pickle and a bundle.json rewritten to match
    (ONNX removed to force the pickle path): consistent with itself, not with the registry."""
    import hashlib
    import shutil

    shutil.copytree(folder, dest)
    (dest / "model.onnx").unlink(missing_ok=True)
    (dest / "model.joblib").write_bytes((dest / "model.joblib").read_bytes() + b"\0")
    manifest = json.loads((dest / "bundle.json").read_text())
    manifest["files"].pop("model.onnx", None)
    manifest["runtimes"] = ["sklearn"]
    data = (dest / "model.joblib").read_bytes()
    manifest["files"]["model.joblib"] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    (dest / "bundle.json").write_text(json.dumps(manifest))
    return dest


def test_only_the_bundle_the_registry_vouches_for_is_loaded(trained, tmp_path):
    import subprocess
    import sys

    ws, folders, _ = trained
    digest = ws.models.resolve("m/1").artifact_hash
    bad = tamper(folders[0], tmp_path / "tampered")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlops_console.serving.app",
            str(bad),
            "--port",
            str(free_port()),
            "--digest",
            digest,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "not the bundle the registry vouches for" in out.stderr
    assert "Traceback" not in out.stderr
    s = ServerProcess(folders[0], env={"MLOPS_BUNDLE_DIGEST": digest})
    try:
        assert s.admin("GET", "/admin/status").json()["primary"]["bundle_digest"] == digest
        r = s.admin(
            "POST", "/admin/load", json={"path": str(bad), "role": "canary", "digest": digest}
        )
        assert r.status_code == 422 and "vouches for" in r.json()["message"]
        r = s.admin("POST", "/admin/load", json={"path": str(bad), "role": "canary"})
        assert r.status_code == 400 and "digest" in r.json()["message"]
        v2 = ws.models.resolve("m/2").artifact_hash
        r = s.admin(
            "POST", "/admin/load", json={"path": str(folders[1]), "role": "canary", "digest": v2}
        )
        assert r.status_code == 200
        assert httpx.get(s.url + "/version").json()["canary"]["version"] == 2
    finally:
        s.stop()


def test_workspace_code_travels_in_the_bundle_not_through_sys_path(trained):
    """A model built by workspace code (module:function) serves from the code in its bundle:
    editing the workspace's file afterwards changes nothing, and a planted numpy.py is
    never imported."""
    ws, _, _ = trained
    mv = faulty_version(ws)
    files = json.loads(ws.artifacts.get_bytes(mv.artifact_hash))["files"]
    assert "code.faulty.py" in files
    marker = ws.root / "imported"
    (ws.root / "faulty.py").write_text(f"open({str(marker)!r}, 'w').write('edited')\n")
    (ws.root / "numpy.py").write_text(f"open({str(marker)!r}, 'w').write('numpy')\n")
    try:
        ws.deployments.deploy(mv.ref, name="codepath", port=free_port())
        endpoint = ws.deployments.get("codepath").endpoint
        r = httpx.post(endpoint + "/invocations", json={"instances": [{**GOOD, "x1": 1e6}]})
        assert r.status_code == 500  # the trained Faulty, from the bundle's copy of faulty.py
        assert httpx.post(endpoint + "/invocations", json={"instances": [GOOD]}).status_code == 200
        assert not marker.exists(), marker.read_text()
    finally:
        ws.deployments.stop("codepath")
        (ws.root / "numpy.py").unlink()
        (ws.root / "faulty.py").write_text(FAULTY)
