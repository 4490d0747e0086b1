"""The Open Inference Protocol v2 as Triton's own client speaks it: JSON tensors, the
binary tensor extension (tritonclient's default), metadata, readiness and errors."""

from __future__ import annotations

import numpy as np
import pytest
from tests.integration.serving_helpers import ServerProcess, train_two_versions
from tests.unit.test_pipeline import make_data

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2clients")
    ws, folders = train_two_versions(root / "ws")
    server = ServerProcess(folders[0])
    yield ws, server
    server.stop()
    ws.close()


def tensors(frame, binary: bool):
    out = []
    for col in ("x1", "x2", "plan"):
        values = frame[col].to_numpy()
        dtype = "BYTES" if col == "plan" else "FP64"
        t = httpclient.InferInput(col, [len(frame)], dtype)
        t.set_data_from_numpy(
            values.astype(object if col == "plan" else np.float64), binary_data=binary
        )
        out.append(t)
    return out


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_scores_like_the_model(served, binary):
    ws, server = served
    frame = make_data(9, seed=11)[["x1", "x2", "plan"]]
    expected = ws.models.bundle("m/1", runtime="sklearn").predict_proba(frame)
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("m") and client.is_model_ready("m", "1")
    assert not client.is_model_ready("m", "99")
    meta = client.get_model_metadata("m")
    assert {i["name"] for i in meta["inputs"]} == {"x1", "x2", "plan"}
    result = client.infer(
        "m",
        tensors(frame, binary),
        outputs=[
            httpclient.InferRequestedOutput("predict_proba", binary_data=binary),
            httpclient.InferRequestedOutput("predict", binary_data=binary),
        ],
    )
    np.testing.assert_allclose(result.as_numpy("predict_proba"), expected, atol=1e-4)
    assert result.as_numpy("predict").tolist() == expected.argmax(axis=1).tolist()
    assert result.get_response()["model_version"] == "1"


def test_tritonclient_reads_our_errors(served):
    _, server = served
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    frame = make_data(3, seed=2)[["x1", "x2", "plan"]]
    inputs = tensors(frame, binary=False)[:2]  # plan is missing
    with pytest.raises(InferenceServerException, match="Missing input column"):
        client.infer("m", inputs)
    with pytest.raises(InferenceServerException, match="No model 'nope'"):
        client.infer("nope", tensors(frame, binary=False))
    with pytest.raises(InferenceServerException, match="not served here"):
        client.infer("m", tensors(frame, binary=False), model_version="99")
