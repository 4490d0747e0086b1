"""A scoring loop that dies anyway: readiness says so, the watchdog restarts it, and the
server scores again. The server runs in this process (a real uvicorn on a loopback port)
so the test can break the loop from inside, which no request can do any more."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import uvicorn
from tests.integration.serving_helpers import free_port, train_two_versions

GOOD = {"inputs": {"x1": [0.3], "x2": [-1.2], "plan": ["pro"]}}


class Fatal(BaseException):
    """What `except Exception` does not catch (as a bug deep in a runtime might raise)."""


@pytest.fixture
def live(tmp_path):
    from mlops_console.serving.app import Server, build_app
    from mlops_console.serving.model import ServedModel

    ws, folders = train_two_versions(tmp_path / "ws")
    model = ServedModel.from_folder(folders[0])
    server = Server(model)
    server.watch_every = 3.0  # slow enough to see readiness fail before the restart
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(build_app(server), port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(url + "/ping", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield server, model, url
    uv.should_exit = True
    thread.join(30)
    ws.close()


def test_a_dead_scoring_loop_fails_readiness_and_is_restarted(live):
    server, model, url = live
    assert httpx.post(url + "/invocations", json=GOOD).status_code == 200
    real = model.predict
    broken = {"left": 1}

    def predict(arrays, n):
        if broken["left"]:
            broken["left"] -= 1
            raise Fatal("simulated runtime failure")
        return real(arrays, n)

    model.predict = predict
    r = httpx.post(url + "/invocations", json=GOOD, timeout=10)
    assert r.status_code == 503 and "restarting" in r.json()["message"], r.text
    ping = httpx.get(url + "/ping")
    assert ping.status_code == 503 and "scoring loop of m/1 ended" in ping.text
    assert httpx.get(url + "/v2/health/ready").json() == {"ready": False}
    deadline = time.time() + 30
    while httpx.get(url + "/ping").status_code != 200:
        assert time.time() < deadline, "the scoring loop was not restarted"
        time.sleep(0.2)
    assert httpx.post(url + "/invocations", json=GOOD).status_code == 200
    assert "mlops_batcher_restarts_total 1" in httpx.get(url + "/metrics").text
    assert server.metrics.window("primary")["errors"] == 1
