"""`mlops deploy ... --target kubernetes --render DIR` on a real trained workspace, with no
kubectl context (none exists on these machines): rendered, checked, never applied, and
said so in one line; bad options, a raw-mode canary and a version skew refused before
anything is written."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from k8s_cli import mlops
from kserve_schema import validate_inference_service

NO_KUBECTL = {"PATH": os.path.dirname(sys.executable)}  # python, and no kubectl


def _load(folder: Path) -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml"))}


def test_render_plain_without_a_cluster(workspace: Path, tmp_path: Path, monkeypatch):
    out = tmp_path / "manifests"
    r = mlops(
        "deploy", "churn/1", "--target", "kubernetes", "--render", str(out),
        "--runtime", "sklearn", cwd=workspace, env=NO_KUBECTL,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines == [
        f"kubernetes: wrote 5 manifests to {out}; not applied (no kubectl on PATH): render only."
    ]
    files = _load(out)
    assert set(files) == {"secret.yaml", "deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"}
    # the Secret carries the deployment's own token, owner-only, and nothing else shows it
    token = (workspace / ".mlops" / "deployments" / "churn" / "admin-token").read_text().strip()
    assert base64.b64decode(files["secret.yaml"]["data"]["admin-token"]).decode() == token
    assert stat.S_IMODE((out / "secret.yaml").stat().st_mode) == 0o600
    for name in files:
        if name != "secret.yaml":
            assert token not in (out / name).read_text()
    assert token not in r.stdout + r.stderr
    for db in (workspace / ".mlops").glob("registry.db*"):
        assert token.encode() not in db.read_bytes()
    # the image of that very bundle, checked at start against the registry's digest
    server = files["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in server["env"]}
    bundle = next((workspace / ".mlops" / "deployments" / "churn" / "bundles").iterdir())
    assert server["image"] == f"mlops-serve-churn:{bundle.name}"
    assert len(env["MLOPS_BUNDLE_DIGEST"]) == 64 and bundle.name[3:] in env["MLOPS_BUNDLE_DIGEST"]
    # kubernetes-validate's own command, strict: every resource passed, no warning (it
    # only warns on a kind it has no schema for and exits 0: a failure here)
    kv = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubernetes_validate",
            "--strict",
            *map(str, sorted(out.glob("*.yaml"))),
        ],
        capture_output=True,
        text=True,
    )
    assert kv.returncode == 0, kv.stdout + kv.stderr
    assert "WARN" not in kv.stdout and "ERROR" not in kv.stdout
    assert kv.stdout.count(" passed for resource ") == 5
    monkeypatch.setenv("PATH", NO_KUBECTL["PATH"])
    # status says what it is: rendered, not running
    from mlops_console.workspace import Workspace

    ws = Workspace.open(workspace)
    try:
        live = ws.deployments.status("churn").live
    finally:
        ws.close()
    assert live["status"] == "rendered" and "no kubectl on PATH" in live["reason"]


@pytest.fixture
def ws(workspace: Path, monkeypatch):
    from mlops_console.workspace import Workspace

    monkeypatch.setenv("PATH", NO_KUBECTL["PATH"])
    w = Workspace.open(workspace)
    yield w
    w.close()


def test_bad_options_get_a_clear_error(workspace: Path, tmp_path: Path):
    r = mlops(
        "deploy", "churn/1", "--target", "kubernetes", "--render", str(tmp_path / "m"),
        "-o", "formm=plain", cwd=workspace, env=NO_KUBECTL,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "The kubernetes target has no option 'formm'; it takes" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "option, expected",
    [
        ({"form": "helm"}, "-o form='helm' is not known; use plain or kserve."),
        ({"kserve_mode": "fast"}, "is not a KServe deployment mode"),
        ({"memory": "lots"}, "is not a Kubernetes quantity"),
        ({"replicas": "two"}, "-o replicas='two' is not a whole number."),
        ({"replicas": 3, "max_replicas": 2}, "is below -o replicas=3"),
        ({"storage_uri": "/srv/models"}, "is not an object store address"),
        ({"namespace": "Prod_1"}, "is not a Kubernetes name"),
        ({"apply": "maybe"}, "is not true or false"),
    ],
)
def test_bad_option_values_are_refused_before_anything_is_written(ws, tmp_path, option, expected):
    from mlops_console.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        ws.deployments.deploy(
            "churn/1", target="kubernetes", options={"render": str(tmp_path / "m"), **option}
        )
    assert expected in str(err.value)
    assert not (tmp_path / "m").exists()


def test_kserve_without_storage_is_refused(ws, tmp_path: Path):
    from mlops_console.errors import ConfigError

    with pytest.raises(ConfigError, match="storage_uri=s3://BUCKET/PREFIX"):
        ws.deployments.deploy(
            "churn/1", target="kubernetes", options={"form": "kserve", "render": str(tmp_path)}
        )


def test_kserve_raw_renders_and_refuses_a_canary(ws, tmp_path: Path):
    from mlops_console.errors import ConfigError

    out = tmp_path / "isvc"
    opts = {"form": "kserve", "storage_uri": "s3://models/prod", "render": str(out)}
    rec = ws.deployments.deploy("churn/1", target="kubernetes", runtime="onnx", options=opts)
    assert rec.version == 1
    isvc = _load(out)["inferenceservice.yaml"]
    validate_inference_service(isvc)
    model = isvc["spec"]["predictor"]["model"]
    bundle = model["storageUri"].rsplit("/", 1)[1]
    assert model["modelFormat"] == {"name": "onnx"} and model["protocolVersion"] == "v2"
    assert (out / "model" / "churn" / bundle / "churn" / "1" / "model.onnx").is_file()
    before = (out / "inferenceservice.yaml").read_text()
    with pytest.raises(ConfigError, match="raw deployment mode ignores canaryTrafficPercent"):
        ws.deployments.deploy("churn/2", target="kubernetes", strategy="canary", canary_percent=20)
    assert (out / "inferenceservice.yaml").read_text() == before  # nothing was written
    assert ws.deployments.get("churn").canary_version is None


def test_kserve_serverless_canary_then_promote(ws, tmp_path: Path):
    out = tmp_path / "isvc"
    opts = {
        "form": "kserve",
        "kserve_mode": "serverless",
        "pvc": "models",
        "render": str(out),
    }
    ws.deployments.deploy("churn/1", target="kubernetes", runtime="onnx", options=opts)
    ws.deployments.deploy("churn/2", target="kubernetes", strategy="canary", canary_percent=20)
    isvc = _load(out)["inferenceservice.yaml"]
    validate_inference_service(isvc)
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert isvc["metadata"]["labels"]["mlops-console/version"] == "2"
    ws.deployments.promote("churn")
    isvc = _load(out)["inferenceservice.yaml"]
    validate_inference_service(isvc)
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    assert isvc["spec"]["predictor"]["model"]["storageUri"].startswith("pvc://models/churn/v2-")
    assert ws.deployments.get("churn").version == 2


def test_plain_canary_promote_and_rollback(ws, tmp_path: Path):
    from mlops_console.errors import ConfigError

    out = tmp_path / "plain"
    ws.deployments.deploy(
        "churn/1", target="kubernetes", runtime="sklearn", options={"render": str(out)}
    )
    with pytest.raises(ConfigError, match="A 5% canary needs about 20 pods"):
        ws.deployments.deploy("churn/2", target="kubernetes", strategy="canary", canary_percent=5)
    assert not (out / "deployment-canary.yaml").exists()
    ws.deployments.deploy("churn/2", target="kubernetes", strategy="canary", canary_percent=25)
    files = _load(out)
    assert files["deployment-canary.yaml"]["spec"]["replicas"] == 1
    assert files["hpa.yaml"]["spec"]["minReplicas"] == 3
    canary_image = files["deployment-canary.yaml"]["spec"]["template"]["spec"]["containers"][0][
        "image"
    ]
    assert ":v2-" in canary_image
    ws.deployments.rollback("churn")
    files = _load(out)
    assert "deployment-canary.yaml" not in files  # a stale file would be applied again
    assert ":v1-" in files["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]["image"]
    ws.deployments.deploy("churn/2", target="kubernetes", strategy="canary", canary_percent=25)
    ws.deployments.promote("churn")
    files = _load(out)
    assert set(files) == {"secret.yaml", "deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"}
    assert ":v2-" in files["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert files["hpa.yaml"]["spec"]["minReplicas"] == 2


def test_preflight_refuses_a_scikit_learn_skew(ws, tmp_path: Path):
    """KServe 0.20's sklearn server has scikit-learn 1.5.2 and joblib 1.5.3; this bundle was
    pickled here with newer ones, which that server could not load (kserve #2818)."""
    from importlib import metadata

    from mlops_console.deploy.base import DeployRefused

    out = tmp_path / "isvc"
    sk = metadata.version("scikit-learn")
    assert sk != "1.5.2", "this test needs a scikit-learn other than KServe 0.20's"
    opts = {"form": "kserve", "storage_uri": "s3://m", "render": str(out)}
    with pytest.raises(DeployRefused) as err:
        ws.deployments.deploy("churn/1", target="kubernetes", runtime="sklearn", options=opts)
    text = str(err.value)
    assert f"scikit-learn {sk} made it and KServe 0.20's sklearn server has 1.5.2" in text
    assert "kserve #2818" in text
    assert not out.exists()  # refused before anything was written
    assert ws.deployments.find("churn") is None
    # a runtime declared with this bundle's versions passes, and the model is loaded here
    here = {"runtime_sklearn": sk, "runtime_joblib": metadata.version("joblib")}
    rec = ws.deployments.deploy(
        "churn/1", target="kubernetes", runtime="sklearn", options={**opts, **here}
    )
    assert rec.version == 1 and (out / "inferenceservice.yaml").exists()


def test_preflight_refuses_a_plain_image_declared_older(ws, tmp_path: Path):
    from mlops_console.deploy.base import DeployRefused

    opts = {"render": str(tmp_path / "p"), "runtime_sklearn": "1.5.2", "runtime_joblib": "1.2.0"}
    with pytest.raises(DeployRefused) as err:
        ws.deployments.deploy("churn/1", target="kubernetes", runtime="sklearn", options=opts)
    assert "scikit-learn" in str(err.value) and "joblib" in str(err.value)
    assert "cannot read it" in str(err.value)
